"""Tests for crs.eval.ranking: Borda points, Tideman's ranked pairs and their aggregation over prompts."""

from __future__ import annotations

import math

import pytest

from crs.eval.ranking import (
    PairwiseVerdicts,
    aggregate_rankings,
    ballots_from_scores,
    borda_points,
    ranking_from_pairwise,
    scores_to_ballot,
    summary_stats,
    tideman_ranked_pairs,
)
from crs.eval.win_rates import win_rate_from_outcomes


def test_borda_points_three_and_four_models():
    assert borda_points(["a", "b", "c"]) == pytest.approx({"a": 1.0, "b": 2 / 3, "c": 1 / 3})
    assert borda_points(["d", "c", "b", "a"]) == pytest.approx({"d": 1.0, "c": 0.75, "b": 0.5, "a": 0.25})


def test_tideman_drops_the_weakest_edge_of_a_condorcet_cycle():
    # 4 x A>B>C, 3 x B>C>A, 2 x C>A>B.
    # Tally: A>B 6:3 (margin 3), B>C 7:2 (margin 5), C>A 5:4 (margin 1) -> a cycle.
    # Lock B>C, then A>B; C>A would close the cycle, so it is dropped: A, B, C.
    ballots = [["A", "B", "C"]] * 4 + [["B", "C", "A"]] * 3 + [["C", "A", "B"]] * 2
    assert tideman_ranked_pairs(ballots) == ["A", "B", "C"]
    # Same profile with A and C renamed: the winner is not simply alphabetical.
    swap = {"A": "C", "B": "B", "C": "A"}
    renamed = [[swap[name] for name in ballot] for ballot in ballots]
    assert tideman_ranked_pairs(renamed) == ["C", "B", "A"]
    # The result does not depend on the order of the ballots.
    assert tideman_ranked_pairs(list(reversed(renamed))) == ["C", "B", "A"]


def test_tideman_equal_margins_break_alphabetically():
    # Perfect cycle: every margin is 1, so edges are taken as (A,B), (B,C), (C,A).
    ballots = [["A", "B", "C"], ["B", "C", "A"], ["C", "A", "B"]]
    assert tideman_ranked_pairs(ballots) == ["A", "B", "C"]
    assert tideman_ranked_pairs(ballots[::-1]) == ["A", "B", "C"]
    # A dead heat between two candidates: nothing locks, name order decides.
    assert tideman_ranked_pairs([["y", "x"], ["x", "y"]]) == ["x", "y"]


def test_fractional_and_null_outcomes_are_counted_as_alpaca_eval_counts_them():
    # A weighted judge: .75 is a win, .25 a loss, .5 a draw; None (the judge failed) is counted apart.
    result = win_rate_from_outcomes([1, 0.75, None, 0.5, 0.25, float("nan")], n_boot=50)
    assert (result.n_wins, result.n_wins_base, result.n_draws, result.n_total, result.n_failed) == (2, 1, 1, 4, 2)
    assert result.win_rate == pytest.approx(2.5 / 4)
    assert result.discrete_win_rate == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    # mean .625, squared deviations .140625 + .015625 + .015625 + .140625 = .3125
    assert result.standard_error == pytest.approx(math.sqrt(0.3125 / 3) / 2)
    single = win_rate_from_outcomes([1.0], n_boot=5)
    assert math.isnan(single.standard_error) and single.as_dict()["standard_error"] is None


def test_tie_break_rules_on_a_two_two_vote():
    # The worked example of docs/evaluation.md: sft-rl_crs 2:2 (margin 0), sft-base 3:1, rl_crs-base 4:0.
    ballots = [["sft", "rl_crs", "base"]] * 2 + [["rl_crs", "sft", "base"], ["rl_crs", "base", "sft"]]
    order = ["base", "sft", "rl_crs"]  # eval_pred.models
    # support: sft-rl_crs stays unlocked; rl_crs has more total support (2 + 4 = 6 against 2 + 3 = 5)
    assert tideman_ranked_pairs(ballots, "support", order) == ["rl_crs", "sft", "base"]
    # candidate_order: the 0-margin pair is locked for sft, listed before rl_crs
    assert tideman_ranked_pairs(ballots, "candidate_order", order) == ["sft", "rl_crs", "base"]
    assert tideman_ranked_pairs(ballots, "candidate_order", ["rl_crs", "sft", "base"]) == ["rl_crs", "sft", "base"]
    with pytest.raises(ValueError, match="tie_break"):
        tideman_ranked_pairs(ballots, "coin_flip")


def test_ballots_with_ties_support_neither_side():
    # a > (b = c), b > a > c: a-b 1:1, a-c 2:0, b-c 1:0 -> a, b, c by support (a: 1 + 2 = 3 > b: 1 + 1 = 2)
    ballots = [["a", ["b", "c"]], ["b", "a", "c"]]
    assert tideman_ranked_pairs(ballots) == ["a", "b", "c"]
    assert tideman_ranked_pairs(ballots, "candidate_order", ["b", "a", "c"]) == ["b", "a", "c"]
    assert borda_points(["a", ["b", "c"]]) == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.5})
    assert borda_points([["a", "b"], "c", "d"]) == pytest.approx({"a": 0.875, "b": 0.875, "c": 0.5, "d": 0.25})
    with pytest.raises(ValueError, match="twice"):
        borda_points(["a", ["a", "b"]])


def test_a_pairwise_judge_ranks_a_prompt_by_ranked_pairs():
    verdicts = PairwiseVerdicts({("a", "b"): {"p": 0.25}, ("c", "a"): {"p": 0.0}, ("b", "c"): {"p": 0.5}})
    assert verdicts.between("b", "a") == {"p": 0.75} and verdicts.between("a", "c") == {"p": 1.0}
    assert verdicts.between("a", "z") is None and verdicts.models() == {"a", "b", "c"}
    outcomes = {("a", "b"): 0.25, ("c", "a"): 0.0, ("b", "c"): 0.5}
    # b > a (margin .5), a > c (margin 1), b-c a tie: locked a>c, b>a -> b, a, c
    assert ranking_from_pairwise(outcomes, ["a", "b", "c"]) == ["b", "a", "c"]


def test_aggregate_rankings_names_the_prompt_of_a_bad_ballot():
    with pytest.raises(ValueError, match="prompt 'p2'"):
        aggregate_rankings({"p1": [["a", "b"]], "p2": [["a", "b"], ["a"]]})


def test_tideman_rejects_inconsistent_ballots():
    with pytest.raises(ValueError):
        tideman_ranked_pairs([["a", "b"], ["a", "c"]])
    with pytest.raises(ValueError):
        tideman_ranked_pairs([["a", "a"]])


def test_scores_to_ballot_orders_best_first_with_name_tie_break():
    assert scores_to_ballot({"a": 0.1, "b": 0.5, "c": 0.1}) == ["b", "a", "c"]


def test_aggregate_rankings_mean_and_population_std():
    per_prompt = {
        "p1": [["A", "B", "C"]],  # single ballot used as is: A 1, B 2/3, C 1/3
        # B>C 3:0, A>C 2:1, B>A 2:1 -> B, A, C: B 1, A 2/3, C 1/3
        "p2": [["B", "A", "C"], ["B", "C", "A"], ["A", "B", "C"]],
    }
    result = aggregate_rankings(per_prompt)
    assert result["A"]["mean"] == pytest.approx(5 / 6)
    assert result["A"]["std"] == pytest.approx(1 / 6)
    assert result["B"]["mean"] == pytest.approx(5 / 6)
    assert result["C"]["mean"] == pytest.approx(1 / 3)
    assert result["C"]["std"] == pytest.approx(0.0)
    assert result["A"]["per_prompt"] == pytest.approx({"p1": 1.0, "p2": 2 / 3})


def test_ballots_from_scores_one_per_scorer():
    scores = {"judge": {"a": [1, 0], "b": [0, 1]}, "rm": {"a": [5, 5], "b": [1, 9]}}
    assert ballots_from_scores(scores, ["p", "q"]) == {
        "p": [["a", "b"], ["a", "b"]],
        "q": [["b", "a"], ["b", "a"]],
    }


def test_summary_stats():
    stats = summary_stats([1, 2, 3, 4])
    assert stats == pytest.approx({"mean": 2.5, "std": math.sqrt(1.25), "min": 1.0, "max": 4.0, "n": 4})
