"""``report.md`` of a best-of-n study (:mod:`crs.eval.bon.instrument`): the verdict, the weight grid, the strategies,
every scorer's curves, how much of each scorer's agreement is length."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crs.eval.length_aware import length_aware_notes, length_aware_table
from crs.eval.tables import md_table, number, pct, pct_interval


def _signed_interval(entry: Mapping[str, float]) -> str:
    return f"{100 * entry['mean']:+.1f} ({100 * entry['ci_low']:+.1f} to {100 * entry['ci_high']:+.1f})"


def weight_table(results: Mapping[str, Any]) -> str:
    """Per weight: best-of-m win rate and judge value, the difference from the best weight, agreement with the judge."""
    weights, m = results["weights"], results["pool"]["samples"]
    rows = []
    for w in weights["grid"]:
        entry = results["scorers"][f"w={w:g}"]
        rows.append(
            [
                f"{w:g}",
                pct_interval(entry["win_rate"][-1]),
                number(entry["gold"][-1]["mean"], 3),
                _signed_interval(weights["vs_best"][f"w={w:g}"]),
                pct_interval(entry["pairwise_accuracy"]),
                number(entry["kendall_tau"]["mean"], 3),
                str(weights["best"]["counts"].get(w, 0)),
            ]
        )
    header = [
        "w (preference)",
        f"best-of-{m} win rate %",
        f"best-of-{m} judge",
        "vs best weight, points",
        "pairwise agreement %",
        "Kendall tau",
        "bootstrap rounds won",
    ]
    return md_table(header, rows)


def strategies_table(results: Mapping[str, Any]) -> str:
    """Per strategy (sum and sum_per_prompt at their best weight, each conservative scorer): best-of-m win rate,
    agreement with the judge, and the paired difference from sum's best weight."""
    m = results["pool"]["samples"]
    rows = []
    for row in results["strategies"]["rows"]:
        weight = (
            ""
            if row["weight"] is None
            else f"{row['weight']:g} ({row['best_weight_interval'][0]:g}-{row['best_weight_interval'][1]:g})"
        )
        versus = "" if row["vs_sum"] is None else _signed_interval(row["vs_sum"])
        rows.append(
            [
                row["strategy"],
                f"`{row['scorer']}`",
                weight,
                pct_interval(row["win_rate"]),
                pct_interval(row["pairwise_accuracy"]),
                versus,
            ]
        )
    header = [
        "strategy",
        "scorer",
        "best weight (interval)",
        f"best-of-{m} win rate %",
        "pairwise agreement %",
        "vs sum's best weight, points",
    ]
    return md_table(header, rows)


def scorer_table(results: Mapping[str, Any]) -> str:
    """Every scorer (each source alone, the judge as ceiling, each weight) at every n: win rate and length of the
    pick."""
    ns = results["ns"]
    rows = []
    for name, entry in results["scorers"].items():
        cells = [f"{pct(p['mean'])} / {entry['length'][i]['mean']:.0f}" for i, p in enumerate(entry["win_rate"])]
        rows.append([name, *cells, pct_interval(entry["pairwise_accuracy"])])
    header = ["scorer", *(f"n={n}" for n in ns), "pairwise agreement %"]
    return md_table(header, rows)


def category_table(results: Mapping[str, Any]) -> str:
    """Pairwise agreement with the judge per prompt category, every scorer."""
    names = list(results["scorers"])
    categories = sorted({c for entry in results["scorers"].values() for c in entry["pairwise_accuracy_by_category"]})
    rows = [
        [c, *(pct(results["scorers"][n]["pairwise_accuracy_by_category"].get(c, float("nan"))) for n in names)]
        for c in categories
    ]
    return md_table(["category", *names], rows)


def strategies_section(results: Mapping[str, Any]) -> list[str]:
    """The "Combination strategies" section (none when the study has no ``strategies``)."""
    if not results.get("strategies"):
        return []
    reference = results["strategies"]["reference"]
    return [
        "## Combination strategies",
        "",
        "How the sources are combined (`bon.strategies`, as `rl.combine` in RL): `sum` weights z-scores (the grid "
        "above); `sum_per_prompt` standardises each source within each prompt's replies before weighting (its best "
        "weight shown, with the bootstrap interval of that best weight); `conservative` scores a reply by the source "
        "that likes it least (`min`) or by the sources' mean minus k x their spread (`mean-<k>std`), weights unused. "
        "Last column: the paired difference "
        + (
            f"from sum's best weight (`{reference}`), the same bootstrap rounds; both best weights are picked on this "
            "pool (each optimistic alike)."
            if reference
            else "from sum's best weight: none here (no weight grid)."
        ),
        "",
        strategies_table(results),
        "",
    ]


def render_bon_report(results: Mapping[str, Any]) -> str:
    """The whole report: verdict and power first, then the weight grid, the curves, the categories."""
    pool, m = results["pool"], results["pool"]["samples"]
    lines = [
        "# Best-of-n study",
        "",
        f"Pool: `{pool['path']}`, {pool['prompts']} prompts x {m} replies. Judge: `{results['judge']}`. Every scorer "
        "picks from the same replies; intervals are 95% paired bootstrap intervals over prompts (the same resampled "
        "prompts for every scorer).",
        "",
        f"**Verdict.** {results['verdict']}",
        "",
    ]
    if results["weights"]:
        power = results["weights"]["power"]
        lines += [
            "## The weight grid",
            "",
            f"Combined scorer `w * z(preference) + (1 - w) * z(absolute)`. Win rate: the judge prefers the best-of-{m} "
            "pick to a "
            "random reply of the same pool (50% = no better than one sample). " + _power_sentence(power),
            "",
            weight_table(results),
            "",
            "![weight curve](weight_curve.png)",
            "",
        ]
    lines += strategies_section(results)
    lines += [
        "## Best-of-n curves",
        "",
        "Win rate against a random pool reply (%) / mean length of the pick (characters), at each n. KL_bon = log n "
        "- (n-1)/n is an upper bound on the KL from the sampling policy (Beirami et al. 2024): "
        + ", ".join(f"n={n}: {kl:.2f}" for n, kl in zip(results["ns"], results["kl_bon"]))
        + " nats.",
        "",
        scorer_table(results),
        "",
        "![best-of-n curves](bon_curves.png)",
        "",
        "## Agreement with the judge by prompt category",
        "",
        "Share of within-prompt pairs the judge separates that the scorer orders the same way (ties half).",
        "",
        category_table(results),
        "",
    ]
    if results.get("length_aware"):  # results written before it was measured have none
        lines += [
            "## Agreement and length",
            "",
            "How much of each scorer's agreement with the judge is reply length (the same bootstrap draws):",
            "",
            length_aware_table(results["length_aware"]),
            "",
            length_aware_notes(results["length_aware"]),
            "",
        ]
    return "\n".join(lines)


def _power_sentence(power: dict[str, float]) -> str:
    """The weight grid's power in one sentence; a standard error of 0 is "cannot tell", not 0.0 points."""
    if power["standard_error"] == 0:
        return (
            "The median pair of neighbouring weights has the same win rate in every bootstrap round (standard error "
            "0: they pick replies the judge rates alike): this pool cannot tell neighbouring weights apart."
        )
    return (
        f"Standard error of the difference between neighbouring weights: {100 * power['standard_error']:.2f} points; "
        f"smallest difference detectable at 80% power: {100 * power['minimum_detectable_difference']:.1f} points."
    )
