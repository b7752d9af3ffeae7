"""Intervals over seeds and prompts (crs.eval.hierarchical): coverage, components, one seed, pairing; and the power
they give."""

from __future__ import annotations

import itertools
import runpy
from types import SimpleNamespace

import numpy as np
import pytest
from paths import ROOT

from crs.eval.bon.selection import best_weight
from crs.eval.hierarchical import (
    mean_squares,
    pivotal_rounds,
    prompt_shrink,
    rounds_difference,
    rounds_slope,
    seed_prompt_intervals,
)
from crs.eval.power import power_line, power_of_neighbours, power_of_rounds
from crs.study.sweep import SweepRun, side_by_side, study_results
from crs.study.sweep_report import render_sweep_report

# benchmarks/ is a folder of scripts, not a package.
coverage_bench = SimpleNamespace(**runpy.run_path(str(ROOT / "benchmarks" / "seed_interval_coverage.py")))

T_975 = {1: 12.7062, 2: 4.3027, 3: 3.1824}  # Student t quantiles (scipy is not a dependency)


# --------------------------------------------------------------------------- coverage


@pytest.mark.parametrize("setting", ["issue 30 (seed > prompt)", "seed-dominated", "prompt-dominated"])
def test_the_intervals_cover_the_truth_95_percent_of_the_time_with_few_seeds(setting: str) -> None:
    # Chosen before measuring: issue 30's setting, one where seed variance of the mean dominates,
    # one where prompt variance does. 4000 studies: each coverage +-0.7 points (95%); the
    # benchmark measured these cells 94.4-96.4% on 40000 studies, so the 93-97 band is not a coin flip.
    rng = np.random.default_rng(30)
    sds = coverage_bench.SETTINGS[setting]
    for n_seeds in (2, 3, 5):
        result = coverage_bench.coverage(sds, n_seeds, 4000, 1000, 100, rng, ("new",))
        assert 0.93 <= result["new"] <= 0.97, (setting, n_seeds, result)


def test_the_old_seed_bootstrap_undercovers_where_the_new_rounds_do_not() -> None:
    # Issue 30's finding, reproduced at 2 seeds: resampling 2 seeds misses the truth about a quarter of the time.
    result = coverage_bench.coverage(
        coverage_bench.SETTINGS["issue 30 (seed > prompt)"], 2, 1000, 300, 100, np.random.default_rng(1), ("old", "new")
    )
    assert result["old"] < 0.85 and result["new"] > 0.93


# --------------------------------------------------------------------------- components, by hand


def test_mean_squares_and_the_prompt_shrink_match_a_two_way_table_by_hand() -> None:
    y = np.array([[1.0, 2.0, 4.0, 3.0], [2.0, 2.5, 5.0, 6.0], [0.0, 1.0, 3.5, 2.0]])
    n_seeds, n_prompts = y.shape
    grand = sum(map(sum, y)) / y.size
    rows = [sum(r) / n_prompts for r in y]
    columns = [sum(y[s][p] for s in range(n_seeds)) / n_seeds for p in range(n_prompts)]
    ss_seeds = n_prompts * sum((r - grand) ** 2 for r in rows)
    ss_prompts = n_seeds * sum((c - grand) ** 2 for c in columns)
    ss_total = sum((y[s][p] - grand) ** 2 for s in range(n_seeds) for p in range(n_prompts))
    ms_e = (ss_total - ss_seeds - ss_prompts) / ((n_seeds - 1) * (n_prompts - 1))
    ms_p = ss_prompts / (n_prompts - 1)
    squares = mean_squares(y[None])
    assert squares["seeds"][0] == pytest.approx(ss_seeds / (n_seeds - 1))
    assert squares["prompts"][0] == pytest.approx(ms_p)
    assert squares["residual"][0] == pytest.approx(ms_e)
    assert squares["prompt_shrink"][0] == pytest.approx(np.sqrt((ms_p - ms_e) / ms_p))
    # Jointly for one group the shrink is that same k; for two it gives the prompt effects' covariance.
    noise = squares["residual"] / n_seeds
    assert prompt_shrink(np.array(columns)[None, None], noise[:, None])[0, 0, 0] == pytest.approx(
        squares["prompt_shrink"][0]
    )
    other = np.array([[0.5, 3.0, 3.0, 1.0], [1.5, 2.0, 4.5, 2.0]])
    both = np.stack([np.array(columns), other.mean(axis=0)])[None]
    noises = np.array([[ms_e / n_seeds, mean_squares(other[None])["residual"][0] / 2]])
    shrink = prompt_shrink(both, noises)[0]
    covariance = np.cov(both[0])
    effects = covariance - np.diag(noises[0])
    assert np.all(np.linalg.eigvalsh(effects) > 0)  # no clipping here: the identity is exact
    np.testing.assert_allclose(shrink @ covariance @ shrink.T, effects, atol=1e-12)


def test_a_group_without_prompt_spread_has_no_prompt_part_and_rounds_follow_the_t_distribution() -> None:
    # Rows differ by a constant, columns are equal: every round is g - sqrt(ms_seeds / (S P)) * T, T ~ t_(S-1).
    y = np.array([[0.0] * 50, [1.0] * 50, [0.5] * 50])
    result = seed_prompt_intervals({"flat": y}, n_rounds=50_000, seed=3)["flat"]
    half = (result["ci_high"] - result["ci_low"]) / 2
    assert result["mean"] == pytest.approx(0.5)
    assert half == pytest.approx(T_975[2] * np.sqrt(50 * np.var([0.0, 1.0, 0.5], ddof=1) / 150), rel=0.03)


def test_the_intervals_are_the_quantiles_of_the_rounds_pivotal_rounds_makes() -> None:
    rng = np.random.default_rng(4)
    groups = {"a": rng.normal(size=(3, 20)), "b": rng.normal(size=(2, 20))}
    result = seed_prompt_intervals(groups, n_rounds=300, seed=11)
    replay = np.random.default_rng(11)
    draws = replay.integers(0, 20, size=(300, 20))
    rounds = pivotal_rounds([groups["a"][None], groups["b"][None]], draws, replay)
    for name, expected in zip(groups, rounds):
        np.testing.assert_allclose(result[name]["rounds"], expected[0])
        assert [result[name]["ci_low"], result[name]["ci_high"]] == pytest.approx(
            np.quantile(expected[0], [0.025, 0.975])
        )
        assert result[name]["n_seeds"] == groups[name].shape[0]


# --------------------------------------------------------------------------- one seed, pairing


def test_one_seed_gives_no_interval_anywhere() -> None:
    rng = np.random.default_rng(5)
    one = rng.random((1, 30))
    result = seed_prompt_intervals({"one": one, "two": rng.random((2, 30))}, n_rounds=100)
    assert result["one"]["ci_low"] is None and result["one"]["ci_high"] is None and result["one"]["rounds"] is None
    assert result["one"]["mean"] == pytest.approx(one.mean()) and result["one"]["n_seeds"] == 1
    assert result["two"]["ci_low"] < result["two"]["mean"] < result["two"]["ci_high"]
    assert rounds_difference(result, "one", "two")["ci_low"] is None
    assert rounds_slope(result, {"one": 0.0, "two": 1.0})["ci_high"] is None
    with pytest.raises(ValueError, match="two seeds"):
        pivotal_rounds([rng.random((1, 1, 30))], rng.integers(0, 30, (10, 30)), rng)


def test_a_sweep_with_one_seed_prints_no_interval_and_no_power() -> None:
    rng = np.random.default_rng(6)
    runs = [SweepRun(1, "rl", 0.0), SweepRun(1, "rl", 1.0)]
    scores = {"judge": {"base": rng.random(40), "w0_s1": rng.random(40) + 0.2, "w1_s1": rng.random(40)}}
    lengths = {name: [50] * 40 for name in scores["judge"]}
    results = study_results(scores, lengths, runs, "base", n_boot=100, seed=0)
    assert results["scorers"]["judge"]["win_rate"]["0"]["ci_low"] is None
    assert results["scorers"]["judge"]["power"] == {"standard_error": None, "minimum_detectable_difference": None}
    results.update(n_prompts=40, wall_time_s=60.0, train_time_s={})
    report = render_sweep_report(results, "judge")
    assert "No intervals: 1 seed" in report and "(no interval: 1 seed)" in report and "Power: none stated" in report
    assert "points or more" not in report and "with no interval" in report  # the slope's verdict


def test_a_sweeps_win_rate_intervals_stay_within_a_rates_bounds() -> None:
    # Two seeds 0.8 apart: the Student-t seed level (1 df) reaches far past [0, 1]; a rate's interval stops there.
    runs = [SweepRun(1, "rl", 0.5), SweepRun(2, "rl", 0.5)]
    lengths = {name: [50] * 40 for name in ("base", "w0.5_s1", "w0.5_s2")}
    scores = {"judge": {"base": np.zeros(40), "w0.5_s1": np.full(40, 1.0), "w0.5_s2": np.r_[np.ones(4), -np.ones(36)]}}
    results = study_results(scores, lengths, runs, "base", n_boot=500, seed=0)
    rate = results["scorers"]["judge"]["win_rate"]["0.5"]
    assert rate["mean"] == pytest.approx(0.55) and (rate["ci_low"], rate["ci_high"]) == (0.0, 1.0)


def test_a_difference_of_groups_sharing_prompt_effects_is_narrower_than_either_group() -> None:
    rng = np.random.default_rng(7)
    prompts = rng.normal(0.0, 1.0, 200)  # large shared prompt effects, small seed and cell noise
    groups = {
        name: [prompts + shift + rng.normal(0.0, 0.02) + rng.normal(0.0, 0.05, 200) for _ in range(3)]
        for name, shift in (("a", 0.1), ("b", 0.0))
    }
    result = seed_prompt_intervals(groups, n_rounds=2000, seed=0)
    diff = rounds_difference(result, "a", "b")
    width = {name: result[name]["ci_high"] - result[name]["ci_low"] for name in groups}
    assert diff["ci_high"] - diff["ci_low"] < 0.5 * min(width.values())
    assert diff["mean"] == pytest.approx(result["a"]["mean"] - result["b"]["mean"])


# --------------------------------------------------------------------------- power from the rounds


def test_power_of_rounds_reads_normal_and_heavy_tailed_rounds_alike() -> None:
    rng = np.random.default_rng(8)
    normal = power_of_rounds(rng.normal(0.0, 0.02, 400_000))
    assert normal["standard_error"] == pytest.approx(0.02, rel=0.01)
    assert normal["minimum_detectable_difference"] == pytest.approx((1.959964 + 0.841621) * 0.02, rel=0.01)
    # Two seeds: t with 1 df (Cauchy). The 95% interval is +-12.71 scales wide, and the rounds' spread at 80% power,
    # (q_0.8 - q_0.2) / 2 of t_1, is tan(0.3 pi) = 1.3764 scales: not the normal's 2.8 SE.
    cauchy = power_of_rounds(0.01 * rng.standard_cauchy(400_000))
    assert cauchy["standard_error"] == pytest.approx(0.01 * T_975[1] / 1.959964, rel=0.03)
    assert cauchy["minimum_detectable_difference"] == pytest.approx(0.01 * (T_975[1] + np.tan(0.3 * np.pi)), rel=0.03)


def test_power_of_neighbours_takes_the_median_of_several_different_spreads() -> None:
    rng = np.random.default_rng(9)
    base = rng.normal(size=100_000)
    spreads = [0.01, 0.02, 0.2, 0.05]  # neighbour differences: median 0.035, mean 0.07
    samples = [base]
    for spread in spreads:
        samples.append(samples[-1] + rng.normal(0.0, spread, base.size))
    power = power_of_neighbours(samples)
    assert power["standard_error"] == pytest.approx(np.median(spreads), rel=0.03)
    assert power["minimum_detectable_difference"] == pytest.approx(2.8016 * np.median(spreads), rel=0.03)


def test_a_standard_error_of_zero_is_cannot_tell_never_zero_points() -> None:
    rounds = np.random.default_rng(10).normal(size=500)
    identical = power_of_neighbours([rounds, rounds.copy(), rounds.copy()])
    assert identical == {"standard_error": 0.0, "minimum_detectable_difference": 0.0}
    line = power_line(identical, "this pool and its prompts", "win rate between neighbouring weights")
    assert "cannot tell" in line and "0.0 points" not in line
    from crs.eval.bon.instrument_report import _power_sentence

    assert "cannot tell" in _power_sentence(identical) and "0.0" not in _power_sentence(identical)
    assert "points or more" in power_line(
        {"standard_error": 0.01, "minimum_detectable_difference": 0.028}, "these runs", "win rate"
    )
    past_the_scale = power_line(
        {"standard_error": 0.71, "minimum_detectable_difference": 1.53}, "these runs", "win rate"
    )
    assert "cannot detect even the largest possible difference" in past_the_scale and "153 points" in past_the_scale
    assert "points or more" not in past_the_scale


# -------------------------------------------------------------------------- the sweep beside best-of-n; the best weight


def _bon_and_rl(bon_rates: dict[float, float], rl_rates: dict[float, float]) -> tuple[dict, dict]:
    bon = {
        "scorers": {
            f"w={w:g}": {"win_rate": [{"mean": 0.5}, {"mean": r, "ci_low": r - 0.05, "ci_high": r + 0.05}]}
            for w, r in bon_rates.items()
        },
        "pool": {"samples": 8},
        "weights": {"best": {"weight": max(bon_rates, key=bon_rates.get, default=None)}},
        "verdict": "v",
    }
    results = {
        "weights": sorted(rl_rates),
        "scorers": {
            "judge": {
                "win_rate": {f"{w:g}": {"mean": r, "ci_low": r - 0.1, "ci_high": r + 0.1} for w, r in rl_rates.items()}
            }
        },
    }
    return bon, results


def test_side_by_side_counts_the_pairs_ordered_alike() -> None:
    grid = [0.0, 0.5, 1.0]
    bon, same = _bon_and_rl(dict(zip(grid, [0.6, 0.7, 0.8])), dict(zip(grid, [0.4, 0.45, 0.55])))
    assert side_by_side(bon, same)["pairs_ordered_alike"] == 3 and side_by_side(bon, same)["pairs"] == 3
    _, reversed_rates = _bon_and_rl({}, dict(zip(grid, [0.55, 0.45, 0.4])))
    assert side_by_side(bon, reversed_rates)["pairs_ordered_alike"] == 0
    _, one_swap = _bon_and_rl({}, dict(zip(grid, [0.45, 0.4, 0.55])))  # 0 vs 0.5 reversed; the other two pairs agree
    assert side_by_side(bon, one_swap)["pairs_ordered_alike"] == 2
    _, extra = _bon_and_rl(
        {}, dict(zip([*grid, 0.25], [0.4, 0.45, 0.55, 0.9]))
    )  # a weight best-of-n never scored is left out
    assert side_by_side(bon, extra)["pairs"] == 3


def test_best_weight_interval_ends_are_grid_weights_and_ties_go_to_the_smaller_weight() -> None:
    # 1000 rounds: w=0 wins 25, w=0.5 wins 950, w=1 wins 25. The 2.5% and 97.5% quantiles of the
    # winners fall exactly on a change of winner; interpolating would give 0.4875 and 0.5125.
    n = 1000
    boot = {w: np.zeros(n) for w in (0.0, 0.5, 1.0)}
    boot[0.0][:25] = 1.0
    boot[1.0][25:50] = 1.0
    boot[0.5][50:] = 1.0
    result = best_weight(boot)
    assert result["counts"] == {0.0: 25, 0.5: 950, 1.0: 25}
    assert result["interval"] == [0.0, 0.5]
    # Exact ties in every round: the smaller weight wins each (the code's documented tie-break).
    tied = best_weight({0.75: np.ones(10), 0.25: np.ones(10), 1.0: np.zeros(10)})
    assert tied["counts"] == {0.25: 10, 0.75: 0, 1.0: 0} and tied["interval"] == [0.25, 0.25]
    for w in itertools.chain(result["interval"], tied["interval"]):
        assert w in (0.0, 0.25, 0.5, 0.75, 1.0)


# --------------------------------------------------------------------------- widths, differences and slopes


def test_seed_prompt_interval_widens_with_seed_variance() -> None:
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
