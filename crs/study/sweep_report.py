"""The sweep's report and figure: ``report.md`` (a weight curve, or a comparison of arms) and
``sweep_curves.png``, drawn from the numbers of :func:`crs.study.sweep.study_results` (``results.json``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from crs.eval import length_control
from crs.eval.figure_files import save_figure_atomic
from crs.eval.power import power_line
from crs.eval.tables import DASH, md_table, pct, pct_interval
from crs.rm.length_metrics import LENGTH_BAND


def _lc_cell(judge: Mapping[str, Any], label: str) -> str:
    """The LC column: the mean over seeds, starred where a seed's LC is unreliable."""
    flagged = not judge.get("lc_separation", {}).get(label, {"reliable": True})["reliable"]
    return pct(judge["lc_win_rate"][label]) + ("*" if flagged else "")


def _matched_cell(judge: Mapping[str, Any], label: str) -> str:
    entry = judge.get("length_matched", {}).get(label)
    return (
        DASH
        if entry is None
        else length_control.length_matched_cell(
            entry["win_rate"], entry["ci_low"], entry["ci_high"], entry["n_matched"]
        )
    )


def lc_footnote(judge: Mapping[str, Any], labels: Sequence[str]) -> list[str]:
    """What the LC column's stars mean and, per flagged label, each flagged seed's reason; the length-matched band."""
    lines = [
        "Length-matched: the raw win rate on the prompts whose two replies are within "
        f"{LENGTH_BAND:.0%} of each "
        "other in length, pooled over the seeds (interval: a Student-t seed level, then prompts; "
        f"'cannot tell' below {length_control.MIN_MATCHED})."
    ]
    flagged = [
        label for label in labels if not judge.get("lc_separation", {}).get(label, {"reliable": True})["reliable"]
    ]
    if flagged:
        lines.append(
            f"\n**\\* LC unreliable** for {', '.join(f'`{label}`' for label in flagged)}: "
            f"{length_control.unreliable_note()}."
        )
        for label in flagged:
            entry = judge["lc_separation"][label]
            lines += [
                f"- `{label}`, seed {s}: {d['reason']}"
                for s, d in zip(entry["seeds"], entry["per_seed"])
                if not d["reliable"]
            ]
    return lines


def verdict(slope: Mapping[str, float], scorer: str) -> str:
    """The inverse-relation question in plain words, with its uncertainty (none with one seed)."""
    if slope["ci_low"] is None:
        return (
            f"Under {scorer}, the slope of the win rate on the preference weight is {100 * slope['mean']:+.1f} "
            "points per unit of preference "
            "weight, with no interval: one seed per weight cannot estimate seed variance, "
            "so these runs cannot tell whether the inverse relation holds."
        )
    span = (
        f"{100 * slope['mean']:+.1f} points per unit of preference weight "
        f"(95% interval {100 * slope['ci_low']:+.1f} to {100 * slope['ci_high']:+.1f})"
    )
    if slope["ci_high"] < 0:
        return (
            f"Under {scorer}, the win rate falls as the preference weight rises: {span}. "
            "The reference study's inverse relation holds here."
        )
    if slope["ci_low"] > 0:
        return (
            f"Under {scorer}, the win rate rises with the preference weight: {span}. "
            "The reference study's inverse relation does not hold here; the opposite does."
        )
    return (
        f"Under {scorer}, the slope of the win rate on the preference weight is {span}: "
        "the interval includes 0, so these runs cannot tell whether the inverse relation holds."
    )


def arms_verdict(results: Mapping[str, Any], judge_name: str) -> str:
    """Which arm the judge prefers, and against which others its paired interval excludes a tie."""
    judge = results["scorers"]["judge"]
    best = max(results["labels"], key=lambda label: judge["win_rate"][label]["mean"])
    head = judge["each_vs_each"][best]
    beaten = [b for b, v in head.items() if v["ci_low"] is not None and v["ci_low"] > 0.5]
    tied = [b for b, v in head.items() if b not in beaten]
    rate = judge["win_rate"][best]
    line = (
        f"Judged by {judge_name}, `{best}` has the highest win rate against the reference, {pct_interval(rate)}%. "
        f"Head to head (its replies against each other arm's, seed by seed), it beats "
    )
    line += ", ".join(f"`{b}` ({pct_interval(head[b])}%)" for b in beaten) if beaten else "no other arm"
    line += " with an interval above 50%"
    if tied:
        line += (
            "; "
            + ", ".join(f"`{b}` ({pct_interval(head[b])}%)" for b in tied)
            + (" is" if len(tied) == 1 else " are")
            + " not told apart from it"
        )
    return line + "."


def _side_by_side_section(entry: Mapping[str, Any]) -> list[str]:
    m = entry["samples"]
    rows = [[w, pct_interval(r["best_of_n"]), pct_interval(r["rl"])] for w, r in entry["rows"].items()]
    return [
        "\n## Best-of-n and RL side by side",
        f"Best-of-n on one pool (`bon/report.md`): {entry['verdict']}",
        md_table(
            ["w", f"best-of-{m} win rate vs the pool % (95% CI)", "RL win rate vs the reference % (95% CI)"], rows
        ),
        f"\nPPO orders {entry['pairs_ordered_alike']} of the {entry['pairs']} pairs of weights as best-of-n does "
        "(by the point estimates; "
        "read each against its intervals).",
    ]


def render_sweep_report(results: Mapping[str, Any], judge_name: str) -> str:
    """The sweep's Markdown report: a weight curve, or a comparison of arms (``results["arms"]``)."""
    labels = results["labels"]
    arms = results.get("arms")
    judge = results["scorers"]["judge"]
    row = "arm" if arms else "w"
    rows = [
        [
            label,
            *([arms[label]] if arms else []),
            pct_interval(judge["win_rate"][label]),
            " / ".join(pct(v) for v in judge["per_seed"][label]),
            _lc_cell(judge, label),
            _matched_cell(judge, label),
            _score_interval(judge["mean_score"][label]),
            f"{results['mean_length'][label]:.0f}",
        ]
        for label in labels
    ]
    if arms:
        title, what, answer = (
            "# Strategy comparison",
            f"Arms {', '.join(labels)}",
            arms_verdict(results, judge_name) if len(labels) >= 2 else "One arm only.",
        )
    else:
        title, what = (
            "# Reward-weight sweep",
            f"Preference weights {', '.join(labels)} (the absolute source gets 1 - w)",
        )
        answer = (
            verdict(judge["slope"], f"the judge ({judge_name})") if "slope" in judge else "One weight only: no slope."
        )
    lines = [
        title,
        f"{what}; seeds {', '.join(map(str, results['seeds']))}; "
        f"{results['n_prompts']} eval prompts; reference model `{results['reference']}`; judge `{judge_name}`. "
        f"Wall time {results['wall_time_s'] / 60:.1f} min, training {len(results.get('train_time_s', {}))} of the "
        f"{len(labels) * len(results['seeds'])} RL runs (the others finished earlier). " + _intervals_note(results),
        "## The answer",
        answer,
        *(
            [power_line(judge["power"], "these runs", f"win rate between neighbouring {'arms' if arms else 'weights'}")]
            if "power" in judge
            else []
        ),
        f"## Against `{results['reference']}`, judged by `{judge_name}`",
        md_table(
            [
                row,
                *(["reward"] if arms else []),
                "win rate % (95% CI)",
                "per seed %",
                "LC win rate %",
                "length-matched win rate % (95% CI), n",
                "mean judge score (95% CI)",
                "mean length (chars)",
            ],
            rows,
        ),
        f"\nThe reference's mean judge score: {judge['reference_mean_score']:.3f}. "
        "LC: length-controlled (docs/study.md), mean over seeds.",
        *lc_footnote(judge, labels),
    ]
    for scorer, entry in results["scorers"].items():
        if scorer == "judge":
            continue
        lines += [
            f"\n## Under the reward model `{scorer}`",
            md_table(
                [row, "win rate % (95% CI)"], [[label, pct_interval(entry["win_rate"][label])] for label in labels]
            ),
        ]
        if "slope" in entry:
            lines.append("\n" + verdict(entry["slope"], scorer))
    if "best_of_n" in results:
        lines += _side_by_side_section(results["best_of_n"])
    each = [[a, *(DASH if a == b else pct_interval(judge["each_vs_each"][a][b]) for b in labels)] for a in labels]
    lines += [
        f"\n## Each {row} against each other (judge; row beats column, %, seed i vs seed i)",
        md_table(["row \\ col", *labels], each),
    ]
    if results.get("judge_peaks"):
        peaks = [
            [name, str(p["step"]), f"{p['kl']:.2f}", f"{p['judge']:.3f}"]
            for name, p in results["judge_peaks"].items()
            if p
        ]
        lines += [
            "\n## Over-optimisation",
            "Where each run's judge score peaked on held-out prompts during PPO (`sweep_overoptimization.png`):",
            md_table(["run", "step", "KL (nats)", "judge"], peaks),
        ]
    return "\n".join(lines) + "\n"


def _score_interval(entry: Mapping[str, float | None]) -> str:
    if entry["ci_low"] is None:
        return f"{entry['mean']:.3f} (no interval: 1 seed)"
    return f"{entry['mean']:.3f} ({entry['ci_low']:.3f}–{entry['ci_high']:.3f})"


def _intervals_note(results: Mapping[str, Any]) -> str:
    """How the report's intervals were made, or why some rows have none (one seed)."""
    if len(results["seeds"]) < 2:
        return "No intervals: 1 seed, and seed variance cannot be estimated from one run (docs/study.md)."
    return (
        "Intervals: 95%, over seeds then prompts "
        "(a Student-t seed level with seeds - 1 degrees of freedom and a paired prompt "
        "bootstrap, docs/study.md)."
    )


def plot_sweep_curves(results: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Win rate against the reference (each scorer) and the judge's mean score, against the weight
    (or per arm), with 95% intervals."""
    labels = results["labels"]
    curve = "weights" in results
    x = results["weights"] if curve else list(range(len(labels)))
    panels = [(name, "win_rate") for name in results["scorers"]] + [("judge", "mean_score")]
    fig = Figure(figsize=(4.2 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (scorer, quantity) in zip(axes, panels):
        entries = [results["scorers"][scorer][quantity][label] for label in labels]
        mean = np.array([e["mean"] for e in entries])
        # one seed: no interval, no error bar
        low = np.array([e["mean"] if e["ci_low"] is None else e["ci_low"] for e in entries])
        high = np.array([e["mean"] if e["ci_high"] is None else e["ci_high"] for e in entries])
        scale = 100.0 if quantity == "win_rate" else 1.0
        ax.errorbar(
            x, scale * mean, yerr=scale * np.stack([mean - low, high - mean]), fmt="o-" if curve else "o", capsize=3
        )
        if quantity == "win_rate":
            ax.axhline(50.0, color="grey", linewidth=0.8, linestyle="--")
        if curve:
            ax.set_xlabel("preference weight w (absolute: 1 - w)")
        else:
            ax.set_xticks(x, labels, rotation=20, ha="right")
            ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_ylabel(f"win rate vs {results['reference']} (%)" if quantity == "win_rate" else "mean judge score")
        ax.set_title(f"{scorer}: {quantity.replace('_', ' ')}")
    save_figure_atomic(fig, path)
