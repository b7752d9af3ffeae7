"""The online loop's report: the rounds table's LC flags and the length-matched rate (no training)."""

from __future__ import annotations

import numpy as np
from length_cases import shorter_on_most

from crs.study.online import length_entries
from crs.study.online_report import render_online_report


def test_the_rounds_table_flags_an_lc_that_length_separates_and_shows_the_length_matched_rate() -> None:
    """No training: round 0 is the issue's brevity case against the reference, round 1 a length-blind judge."""
    rng = np.random.default_rng(0)
    n = 200
    ref = rng.integers(300, 700, n)
    brief = shorter_on_most(ref, rng)
    blind = ref + rng.integers(-40, 41, n)
    verdicts = {0: (brief < ref).astype(float).tolist(), 1: rng.choice([0.0, 1.0], n).tolist()}
    rounds = []
    for number, own in ((0, brief), (1, blind)):
        entries = length_entries(verdicts[number], own.tolist(), ref.tolist(), n_boot=100, seed=0)
        rate = {"mean": float(np.mean(verdicts[number])), "ci_low": 0.0, "ci_high": 1.0, "n": n}
        rounds.append(
            {
                "round": number,
                "win_rate_vs_reference": rate,
                "judge_mean": 0.0,
                "mean_length": float(own.mean()),
                "labels": {"rankings": 0, "scores": 0},
                "proxy": None,
                "kl": None,
                "steps": 0,
                **entries,
            }
        )
    assert rounds[0]["lc_win_rate_vs_reference"] < 0.05 and rounds[0]["lc_separation"]["reliable"] is False
    assert rounds[1]["lc_separation"]["reliable"] is True
    assert (
        rounds[0]["length_matched_vs_reference"]["n_matched"] == 24
        and rounds[0]["length_matched_vs_reference"]["win_rate"] == 0.0
    )
    settings = {
        "rounds": 2,
        "rl_steps": 1,
        "prompts_per_round": 1,
        "replies_per_prompt": 2,
        "probe_prompts": 1,
        "labeller": "simulated",
        "rm_epochs": 1.0,
        "replay_ratio": 1.0,
    }
    report = render_online_report(
        {
            "settings": settings,
            "judge": "gold",
            "n_prompts": n,
            "reference": "sft",
            "rounds": rounds,
            "reference_judge_mean": 0.0,
            "rm_accuracy": {},
            "rm_pairs": {},
        }
    )
    row0 = next(line for line in report.splitlines() if line.startswith("| 0 "))
    assert f"| {100 * rounds[0]['lc_win_rate_vs_reference']:.1f}* | 0.0 (0.0–0.0), n=24 |" in row0
    row1 = next(line for line in report.splitlines() if line.startswith("| 1 "))
    assert f"| {100 * rounds[1]['lc_win_rate_vs_reference']:.1f} | " in row1
    assert (
        "**\\* LC unreliable** in round 0:" in report
        and "- round 0: Length alone nearly separates the verdicts" in report
    )
    assert "- round 1:" not in report
