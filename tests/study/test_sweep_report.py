"""The sweep's report: the arms' verdict, the LC column's flags and the length-matched rate (no training)."""

from __future__ import annotations

import numpy as np
import pytest
from length_cases import shorter_on_most

from crs.study.sweep import SweepRun, study_results
from crs.study.sweep_report import arms_verdict, render_sweep_report


def test_arms_verdict_names_the_arms_the_best_one_beats_and_those_it_ties() -> None:
    def rate(mean: float, low: float, high: float) -> dict[str, float]:
        return {"mean": mean, "ci_low": low, "ci_high": high}

    judge = {
        "win_rate": {"a": rate(0.6, 0.5, 0.7), "b": rate(0.7, 0.6, 0.8), "c": rate(0.4, 0.3, 0.5)},
        "each_vs_each": {"b": {"a": rate(0.55, 0.45, 0.65), "c": rate(0.8, 0.7, 0.9)}},
    }
    line = arms_verdict({"labels": ["a", "b", "c"], "scorers": {"judge": judge}}, "gold")
    assert "`b` has the highest win rate" in line
    assert "it beats `c` (80.0 (70.0–90.0)%) with an interval above 50%" in line
    assert "`a` (55.0 (45.0–65.0)%) is not told apart from it" in line


def test_a_strategy_whose_lc_length_separates_is_flagged_and_shows_its_length_matched_rate() -> None:
    """No training: the issue's brevity case as two seeds of one arm beside a length-blind arm."""
    rng = np.random.default_rng(0)
    n = 200
    ref = rng.integers(300, 700, n)
    lengths, judge = {"base": ref.tolist()}, {"base": np.zeros(n)}
    runs = [SweepRun(s, "rl", arm=arm) for arm in ("brief", "blind") for s in (1, 2)]
    for run in runs:
        if (
            run.arm == "brief"
        ):  # shorter by 100-200 on 88% of prompts, longer by 5-20 on the rest; the judge rewards brevity
            own = shorter_on_most(ref, rng)
            judge[run.name] = np.where(own < ref, 1.0, -1.0)
        else:  # about as long as the reference, judged without regard to length
            own = ref + rng.integers(-40, 41, n)
            judge[run.name] = rng.choice([-1.0, 1.0], n)
        lengths[run.name] = own.tolist()
    results = study_results({"judge": judge}, lengths, runs, "base", n_boot=100, seed=0)
    results.update(
        n_prompts=n, wall_time_s=1.0, train_time_s={}, arms={"brief": "sum: 1 x brevity", "blind": "sum: 1 x other"}
    )
    entry = results["scorers"]["judge"]
    assert entry["win_rate"]["brief"]["mean"] == pytest.approx(0.88) and entry["lc_win_rate"]["brief"] < 0.05
    assert entry["lc_separation"]["brief"]["reliable"] is False and entry["lc_separation"]["blind"]["reliable"] is True
    matched = entry["length_matched"]["brief"]
    assert (
        matched["n_matched"] == 48 and matched["n_total"] == 400 and matched["win_rate"] == 0.0
    )  # 24 per seed, all lost
    blind = entry["length_matched"]["blind"]
    assert blind["ci_low"] <= blind["win_rate"] <= blind["ci_high"] and blind["n_matched"] > 300
    report = render_sweep_report(results, "brevity")
    brief_row = next(line for line in report.splitlines() if line.startswith("| brief "))
    assert f"| {100 * entry['lc_win_rate']['brief']:.1f}* | 0.0 (0.0–0.0), n=48 |" in brief_row
    blind_row = next(line for line in report.splitlines() if line.startswith("| blind "))
    assert f"| {100 * entry['lc_win_rate']['blind']:.1f} | " in blind_row
    assert "**\\* LC unreliable** for `brief`:" in report and "`blind`:" not in report
    assert "- `brief`, seed 1: Length alone nearly separates the verdicts" in report and "- `brief`, seed 2:" in report
    assert "within 10% of each other in length, pooled over the seeds" in report
