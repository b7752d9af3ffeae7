"""Tests for the evaluation maths (crs.eval: win rates, length control, leaderboard, agreement, ranking, intervals over seeds and prompts) against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from crs.data.schema import DataError
from crs.eval.agreement import agreement, agreement_by_group
from crs.eval.leaderboard import leaderboard_rows
from crs.eval.prediction_files import read_predictions, write_predictions
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
from crs.eval.win_rates import bootstrap_ci, head_to_head, pairwise_outcomes, win_rate, win_rate_from_outcomes

# ---------------------------------------------------------------- win rates


def test_win_rate_counts_ties_as_half_and_alpaca_eval_standard_error():
    # Outcomes per prompt: win, loss, tie, win, tie -> (1 + 0 + .5 + 1 + .5) / 5 = 0.6
    result = win_rate([3, 1, 2, 2, 5], [1, 2, 2, 0, 5])
    assert result.win_rate == pytest.approx(0.6)
    assert (result.n_wins, result.n_wins_base, result.n_draws, result.n_total) == (2, 1, 2, 5)
    # AlpacaEval: the standard error of the mean of the outcomes, sample std (ddof=1):
    # squared deviations .16 + .36 + .01 + .16 + .01 = .70; sqrt(.70 / 4) / sqrt(5) = 0.18708
    assert result.standard_error == pytest.approx(math.sqrt(0.70 / 4) / math.sqrt(5))
    # Without ties that is sqrt(p(1-p)/(n-1)): 44 wins of 100 -> 4.9889 % (AlpacaEval prints 4.988876515698589)
    assert 100 * win_rate_from_outcomes([1] * 44 + [0] * 56, n_boot=10).standard_error == pytest.approx(
        4.988876515698589
    )
    assert result.ci_low <= 0.6 <= result.ci_high


def test_tie_eps_decides_what_counts_as_a_tie():
    assert pairwise_outcomes([1.0], [1.0 + 1e-12]) == [0.5]
    assert pairwise_outcomes([1.0], [1.0 + 1e-12], tie_eps=0.0) == [0.0]
    assert pairwise_outcomes([1.0, 2.0], [1.05, 1.95], tie_eps=0.1) == [0.5, 0.5]
    assert pairwise_outcomes([1.0, 2.0], [1.2, 1.7], tie_eps=0.1) == [0.0, 1.0]


def test_win_rate_rejects_bad_input():
    with pytest.raises(ValueError, match="length"):
        win_rate([1, 2], [1])
    with pytest.raises(ValueError, match="NaN"):
        win_rate([float("nan")], [1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        win_rate_from_outcomes([1, 1.5])
    with pytest.raises(ValueError, match="not null"):
        win_rate_from_outcomes([None, float("nan")])
    with pytest.raises(ValueError):
        win_rate_from_outcomes([])


def test_win_rate_from_outcomes_matches_scores_path():
    from_scores = win_rate([3, 1, 2, 2, 5], [1, 2, 2, 0, 5], n_boot=200, seed=3)
    from_outcomes = win_rate_from_outcomes([1, 0, 0.5, 1, 0.5], n_boot=200, seed=3)
    assert from_scores == from_outcomes


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_is_seeded_and_contains_the_mean():
    values = [0.13, 0.91, 0.47, 0.22, 0.78, 0.35, 0.64, 0.05]
    first = bootstrap_ci(values, n_boot=500, seed=7)
    assert first == bootstrap_ci(values, n_boot=500, seed=7)
    assert first != bootstrap_ci(values, n_boot=500, seed=8)
    low, high = first
    assert 0.05 <= low < sum(values) / len(values) < high <= 0.91  # inside the data range


def test_bootstrap_of_a_constant_is_a_point():
    assert bootstrap_ci([0.25] * 10, n_boot=50, seed=0) == pytest.approx((0.25, 0.25))


def test_bootstrap_interval_narrows_with_more_prompts():
    pattern = [1, 0, 1, 1, 0]  # mean 0.6 at every size
    small_low, small_high = bootstrap_ci(pattern * 4, n_boot=1000, seed=0)
    large_low, large_high = bootstrap_ci(pattern * 100, n_boot=1000, seed=0)
    # Width shrinks like 1/sqrt(n): 25x more prompts -> about 5x narrower.
    assert (large_high - large_low) < 0.4 * (small_high - small_low)
    assert large_low < 0.6 < large_high


# ---------------------------------------------------------------- head to head, leaderboard


def test_head_to_head_covers_ordered_pairs_and_is_complementary():
    scores = {"a": [1, 2, 3], "b": [2, 2, 1], "c": [0, 0, 0]}
    pairs = head_to_head(scores, n_boot=50)
    assert set(pairs) == {(x, y) for x in scores for y in scores if x != y}
    # a vs b: loss, tie, win -> 0.5
    assert pairs[("a", "b")].win_rate == pytest.approx(0.5)
    assert pairs[("c", "a")].win_rate == 0.0
    for (x, y), result in pairs.items():
        assert result.win_rate + pairs[(y, x)].win_rate == pytest.approx(1.0)
        assert result.n_wins == pairs[(y, x)].n_wins_base


def test_leaderboard_rows_hand_example():
    scores = {"ref": [1, 1, 1, 1], "m1": [2, 0, 1, 3], "m2": [0, 0, 1, 0]}
    outputs = {
        "ref": ["x"] * 4,
        "m1": ["ab", "abcd", "", "abcdef"],  # 12 chars / 4
        "m2": ["abcdefghij"] * 4,
    }
    rows = leaderboard_rows(scores, outputs, reference="ref", n_boot=100)
    assert [row["model"] for row in rows] == ["m1", "ref", "m2"]
    m1, ref, m2 = rows
    # m1 vs ref: win, loss, tie, win -> 62.5 %
    assert m1["win_rate"] == pytest.approx(62.5)
    # outcomes 1, 0, .5, 1: squared deviations .140625 + .390625 + .015625 + .140625 = .6875
    assert m1["standard_error"] == pytest.approx(100 * math.sqrt(0.6875 / 3) / 2)  # 23.936
    assert (m1["n_wins"], m1["n_wins_base"], m1["n_draws"], m1["n_total"]) == (2, 1, 1, 4)
    assert m1["avg_length"] == 3 and isinstance(m1["avg_length"], int)
    # the reference against itself: all draws, 50 %, no spread
    assert ref["win_rate"] == pytest.approx(50.0)
    assert ref["standard_error"] == pytest.approx(0.0)
    assert (ref["n_wins"], ref["n_wins_base"], ref["n_draws"]) == (0, 0, 4)
    # m2 vs ref: loss, loss, tie, loss -> 12.5 %
    assert m2["win_rate"] == pytest.approx(12.5)
    assert (m2["n_wins"], m2["n_wins_base"], m2["n_draws"]) == (0, 3, 1)
    assert m2["avg_length"] == 10

    without_ref = leaderboard_rows(scores, outputs, reference="ref", n_boot=10, include_reference=False)
    assert [row["model"] for row in without_ref] == ["m1", "m2"]


# ---------------------------------------------------------------- agreement


def test_agreement_counts_tie_only_against_tie():
    scorer = [1, 0, 0.5, 0.5, 1]
    judge = [1, 1, 0.5, 0, 1]
    # agree at 0 (win/win), 2 (tie/tie), 4; disagree at 1 (loss/win), 3 (tie/loss)
    assert agreement(scorer, judge) == pytest.approx(3 / 5)
    assert agreement_by_group(scorer, judge, ["x", "x", "y", "y", "z"]) == {
        "x": {"agreement": 0.5, "n": 2},
        "y": {"agreement": 0.5, "n": 2},
        "z": {"agreement": 1.0, "n": 1},
    }
    with pytest.raises(ValueError):
        agreement([1, 0], [1])
    with pytest.raises(ValueError):
        agreement([0.3], [1])


# ---------------------------------------------------------------- rank aggregation


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


# ---------------------------------------------------------------- prediction files


def _rows():
    return [
        {"instruction": "Say hi", "output": "Hi!", "generator": "sft", "dataset": "hh", "prompt_id": "hh-0", "run": 0},
        {
            "instruction": "Add 2+2",
            "output": "4",
            "generator": "sft",
            "dataset": "gsm",
            "prompt_id": "gsm-1",
            "run": 2,
            "reward": 0.75,
            "meta": {"k": [1, 2]},
        },
    ]


def test_predictions_round_trip_keeps_extra_keys(tmp_path):
    path = tmp_path / "preds" / "sft.json"
    write_predictions(path, _rows())
    assert read_predictions(path) == _rows()
    assert isinstance(json.loads(path.read_text()), list)  # AlpacaEval: a JSON list
    assert sorted(p.name for p in path.parent.iterdir()) == ["sft.json"]  # no temp left


def test_read_predictions_names_file_and_row(tmp_path):
    rows = _rows()
    del rows[1]["output"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError) as info:
        read_predictions(path)
    message = str(info.value)
    assert str(path) in message and "row 1" in message and "output" in message

    rows = _rows()
    rows[0]["run"] = "0"
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match="row 0.*'run'"):
        read_predictions(path)


def test_alpaca_eval_outputs_rows_are_read_as_they_are(tmp_path):
    from crs.data.adapters import prompt_id
    from crs.data.schema import user_prompt
    from crs.eval.predict import read_all_predictions

    theirs = [  # what alpaca_eval's own outputs files hold: no prompt_id, no run
        {"instruction": "Say hi", "output": "Hello there", "generator": "their_model", "dataset": "helpful_base"},
        {"instruction": "Add 2+2", "output": "4", "generator": "their_model"},
        {"instruction": "Say hi", "output": "Hi again", "generator": "their_model"},
    ]
    (tmp_path / "theirs.json").write_text(json.dumps(theirs))
    rows = read_predictions(tmp_path / "theirs.json")
    assert [r["run"] for r in rows] == [0, 0, 1]  # the n-th answer to the same instruction
    assert rows[0]["prompt_id"] == rows[2]["prompt_id"] == prompt_id(user_prompt("Say hi")) != rows[1]["prompt_id"]
    assert rows[0]["dataset"] == "helpful_base" and rows[1]["dataset"] == ""
    # crs's own predictions of prompts without an id carry the same id: the two files line up
    ours = [
        {
            "instruction": t,
            "output": "x",
            "generator": "sft",
            "dataset": "d",
            "prompt_id": prompt_id(user_prompt(t)),
            "run": 0,
        }
        for t in ("Add 2+2", "Say hi")
    ]
    write_predictions(tmp_path / "sft.json", ours)
    per_model = read_all_predictions(tmp_path)
    assert {r["instruction"]: r["output"] for r in per_model["theirs"]} == {"Add 2+2": "4", "Say hi": "Hello there"}
    assert [r["instruction"] for r in per_model["sft"]] == [r["instruction"] for r in per_model["theirs"]]  # aligned


def test_write_predictions_validates_before_writing(tmp_path):
    rows = _rows()
    del rows[0]["generator"]
    path = tmp_path / "out.json"
    with pytest.raises(DataError, match="row 0"):
        write_predictions(path, rows)
    assert not path.exists()


# --------------------------------------------------------------------------------------
# Length-controlled win rates
# --------------------------------------------------------------------------------------


def test_length_controlled_equals_raw_when_lengths_are_equal() -> None:
    from crs.eval.length_control import length_controlled_win_rate

    outcomes = [1.0, 1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 1.0]
    lc = length_controlled_win_rate(outcomes, [100] * 8, [100] * 8, n_boot=200)
    assert lc.win_rate == pytest.approx(np.mean(outcomes), abs=1e-6)
    assert lc.ci_low <= lc.win_rate <= lc.ci_high


def test_a_brevity_judge_gives_about_half_only_when_the_differences_are_alike_both_ways() -> None:
    from crs.eval.length_control import length_controlled_win_rate, length_separation

    rng = np.random.default_rng(0)
    n = 200
    lengths_b = rng.integers(80, 400, n)
    # A is shorter on ~80% of prompts, by amounts drawn alike on both sides; the judge always
    # picks the shorter reply. The LC lands near 50%, but only because the differences are
    # alike both ways (tests/eval/test_length_control.py: unequal ones give 3%), so it is flagged.
    lengths_a = lengths_b + np.where(rng.random(n) < 0.8, -1, 1) * rng.integers(10, 200, n)
    outcomes = (lengths_a < lengths_b).astype(float)
    lc = length_controlled_win_rate(outcomes, lengths_a, lengths_b, n_boot=200)
    assert outcomes.mean() > 0.7  # the raw rate rewards brevity
    assert abs(lc.win_rate - 0.5) < 0.12 and lc.length_coef < 0
    assert not length_separation(outcomes, lengths_a, lengths_b).reliable
    # A real, length-independent advantage survives length control.
    better = (rng.random(n) < 0.8).astype(float)
    assert length_controlled_win_rate(better, lengths_a, lengths_b, n_boot=200).win_rate > 0.7


def test_leaderboard_rows_carry_the_length_controlled_rate() -> None:
    from crs.eval.leaderboard import leaderboard_rows

    scores = {"ref": [0.0] * 6, "short": [1.0, 1.0, 1.0, 1.0, -1.0, -1.0]}
    outputs = {"ref": ["x" * 50] * 6, "short": ["y" * 20] * 4 + ["y" * 90] * 2}
    rows = {r["model"]: r for r in leaderboard_rows(scores, outputs, "ref", n_boot=50)}
    assert rows["short"]["win_rate"] == pytest.approx(100 * 4 / 6)
    assert rows["short"]["lc_win_rate"] < rows["short"]["win_rate"]  # its wins were all the short replies


# --------------------------------------------------------------------------------------
# Intervals over seeds and prompts (more in test_seed_intervals.py)
# --------------------------------------------------------------------------------------


def test_seed_prompt_interval_widens_with_seed_variance() -> None:
    from crs.eval.hierarchical import seed_prompt_intervals

    rng = np.random.default_rng(0)
    prompt_effect = rng.normal(0.0, 1.0, 200)
    # Same prompt noise; "spread" seeds differ by a known +-1 offset, "steady" seeds do not.
    steady = [prompt_effect + rng.normal(0, 0.1, 200) for _ in range(4)]
    spread = [prompt_effect + offset + rng.normal(0, 0.1, 200) for offset in (-1.0, 1.0, -1.0, 1.0)]
    result = seed_prompt_intervals({"steady": steady, "spread": spread}, n_rounds=4000)
    width = {k: v["ci_high"] - v["ci_low"] for k, v in result.items()}
    assert result["spread"]["mean"] == pytest.approx(result["steady"]["mean"], abs=0.05)
    # Seed means +-1 over 4 seeds: sd 1.155, so the seed level is +-t_(3, 0.975) * 1.155 / 2 = +-1.84 (3.67 wide);
    # the prompt part (sd 1 / sqrt(200)) adds little.
    assert width["spread"] > 2 * width["steady"] and 3.4 < width["spread"] < 4.2
    assert width["steady"] < 0.5  # prompt variance alone: ~4 x 1/sqrt(200)


def test_difference_and_slope_come_with_intervals() -> None:
    from crs.eval.hierarchical import rounds_difference, rounds_slope, seed_prompt_intervals

    rng = np.random.default_rng(1)
    base = rng.random(100)
    groups = {
        f"w{w}": [np.clip(base - 0.4 * w + rng.normal(0, 0.05, 100), 0, 1) for _ in range(3)] for w in (0.0, 0.5, 1.0)
    }
    rounds = seed_prompt_intervals(groups, n_rounds=500)
    slope = rounds_slope(rounds, {"w0.0": 0.0, "w0.5": 0.5, "w1.0": 1.0})
    assert slope["ci_high"] < 0 and slope["mean"] == pytest.approx(-0.4, abs=0.1)  # the inverse relation, found
    diff = rounds_difference(rounds, "w0.0", "w1.0")
    assert diff["ci_low"] > 0.2
