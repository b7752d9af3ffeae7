"""Evaluation report: results dict, Markdown rendering, plots and atomic writers.

:func:`build_results` computes every number the report shows; :func:`render_report`
only formats it, so the results can be saved as JSON (:func:`write_json_atomic`) and
rendered again later without rescoring anything.

Results schema (``build_results`` output, JSON-serialisable)::

    {
      "schema_version": 1,
      "judge": str,                      # name of the gold judge scorer
      "reference": str,                  # leaderboard reference model
      "scorers": [str, ...],             # judge first, then the others in input order
      "models": [str, ...],              # display order
      "n_prompts": int,
      "prompt_ids": [str, ...],
      "tie_eps": float,
      "win_rates": {                     # ordered pairs; no diagonal entries
        scorer: {row_model: {col_model: {
          "win_rate": float,             # 0..1, fraction of prompts row beats col, ties = 1/2
          "n_wins": int, "n_wins_base": int, "n_draws": int, "n_total": int,
          "standard_error": float, "ci_low": float, "ci_high": float}}}},
      "model_stats": {
        model: {"scores": {scorer: {"mean", "std", "min", "max", "n"}},
                "length": {"mean", "std", "min", "max", "n"}}},   # reply length, chars
      "leaderboard": [                   # judge scores vs reference, best first
        {"model", "win_rate" (%), "standard_error" (%), "n_wins", "n_wins_base",
         "n_draws", "n_total", "avg_length", "ci_low" (%), "ci_high" (%)}, ...],
      "agreement": {                     # one entry per non-judge scorer
        scorer: {"overall": float, "n": int,
                 "by_category": {category: {"agreement": float, "n": int}}}},
      "rankings": {                      # Borda points (1 = best, 1/n = worst)
        "per_scorer": {scorer: {model: {"mean": float, "std": float}}},
        "combined": {model: {"mean": float, "std": float}},   # Tideman over scorers
        "combined_scorers": [str, ...]}
    }

Agreement compares, for every unordered model pair and prompt, which reply each scorer
prefers (see :func:`crs.evaluation.agreement` for how ties count). ``by_category`` is
empty when no categories are given.

Plots use matplotlib's Agg canvas directly (no pyplot), so they work headless and do
not touch global matplotlib state that other code may rely on.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crs import evaluation as ev
from crs.io import write_bytes_atomic, write_json_atomic, write_text_atomic  # noqa: F401 (re-exported)

SCHEMA_VERSION = 1
DASH = "–"  # en dash marks the diagonal of a win-rate matrix


# --------------------------------------------------------------------------------------
# Building the results
# --------------------------------------------------------------------------------------


def _category_list(
    categories: Sequence[str] | Mapping[str, str] | None, prompt_ids: Sequence[str]
) -> list[str] | None:
    """Categories aligned with ``prompt_ids`` (a mapping is looked up by prompt id)."""
    if categories is None:
        return None
    if isinstance(categories, Mapping):
        missing = [pid for pid in prompt_ids if pid not in categories]
        if missing:
            raise ValueError(f"no category for prompt id(s) {missing[:5]}")
        return [str(categories[pid]) for pid in prompt_ids]
    if len(categories) != len(prompt_ids):
        raise ValueError(f"{len(categories)} categories for {len(prompt_ids)} prompts")
    return [str(category) for category in categories]


def build_results(
    scores: Mapping[str, Mapping[str, Sequence[float]]],
    outputs: Mapping[str, Sequence[str]],
    judge: str,
    prompt_ids: Sequence[str] | None = None,
    categories: Sequence[str] | Mapping[str, str] | None = None,
    reference: str | None = None,
    models: Sequence[str] | None = None,
    tie_eps: float = 1e-9,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Compute everything the report shows (schema in the module docstring).

    Args:
        scores: ``scores[scorer][model][i]`` is ``scorer``'s score for ``model``'s
            reply to prompt ``i``; every scorer must score every model on every prompt.
        outputs: ``outputs[model][i]`` is the reply text (used for lengths).
        judge: name of the gold judge among ``scores``.
        prompt_ids: ids aligned with the score lists; defaults to ``"0"``, ``"1"``, ...
        categories: optional category per prompt, as a list aligned with the prompts
            or a mapping from prompt id.
        reference: leaderboard reference model; defaults to the first model.
        models: display order; defaults to the judge's model order.
        tie_eps: score differences at most this large count as ties.
        n_boot, seed: bootstrap settings for the confidence intervals.
    """
    if judge not in scores:
        raise KeyError(f"judge {judge!r} is not among the scorers {list(scores)}")
    scorers = [judge] + [name for name in scores if name != judge]
    model_order = list(models) if models is not None else list(scores[judge])
    if len(model_order) < 2:
        raise ValueError(f"need at least two models to compare, got {model_order}")
    reference = reference if reference is not None else model_order[0]
    if reference not in model_order:
        raise KeyError(f"reference {reference!r} is not among the models {model_order}")

    # Validate shape up front so that errors name the scorer/model, not a numpy line.
    n_prompts = len(scores[judge][model_order[0]])
    for scorer in scorers:
        for model in model_order:
            if model not in scores[scorer]:
                raise KeyError(f"scorer {scorer!r} has no scores for model {model!r}")
            if len(scores[scorer][model]) != n_prompts:
                raise ValueError(
                    f"scorer {scorer!r}, model {model!r}: {len(scores[scorer][model])} scores, "
                    f"expected {n_prompts}"
                )
    for model in model_order:
        if model not in outputs or len(outputs[model]) != n_prompts:
            raise ValueError(f"model {model!r} needs {n_prompts} outputs (one per prompt)")
    if n_prompts == 0:
        raise ValueError("no prompts to evaluate")
    pids = [str(i) for i in range(n_prompts)] if prompt_ids is None else [str(p) for p in prompt_ids]
    if len(pids) != n_prompts or len(set(pids)) != n_prompts:
        raise ValueError(f"need {n_prompts} unique prompt ids, got {len(pids)} ({len(set(pids))} unique)")
    category_of = _category_list(categories, pids)

    # Restrict every scorer to the chosen models, in display order.
    table = {s: {m: list(map(float, scores[s][m])) for m in model_order} for s in scorers}

    win_rates: dict[str, dict[str, dict[str, Any]]] = {}
    for scorer in scorers:
        pairs = ev.head_to_head(table[scorer], tie_eps=tie_eps, n_boot=n_boot, seed=seed)
        win_rates[scorer] = {
            row: {col: pairs[(row, col)].as_dict() for col in model_order if col != row}
            for row in model_order
        }

    model_stats = {
        model: {
            "scores": {scorer: ev.summary_stats(table[scorer][model]) for scorer in scorers},
            "length": ev.summary_stats([len(text) for text in outputs[model]]),
        }
        for model in model_order
    }

    leaderboard = ev.leaderboard_rows(
        table[judge], {m: outputs[m] for m in model_order}, reference,
        tie_eps=tie_eps, n_boot=n_boot, seed=seed,
    )

    # Agreement over every unordered model pair x prompt; judge outcomes computed once.
    pair_list = list(combinations(model_order, 2))
    judge_outcomes: list[float] = []
    pair_categories: list[str] = []
    for a, b in pair_list:
        judge_outcomes += ev.pairwise_outcomes(table[judge][a], table[judge][b], tie_eps)
        if category_of is not None:
            pair_categories += category_of
    agreement_results: dict[str, dict[str, Any]] = {}
    for scorer in scorers[1:]:
        scorer_outcomes: list[float] = []
        for a, b in pair_list:
            scorer_outcomes += ev.pairwise_outcomes(table[scorer][a], table[scorer][b], tie_eps)
        agreement_results[scorer] = {
            "overall": ev.agreement(scorer_outcomes, judge_outcomes),
            "n": len(scorer_outcomes),
            "by_category": (
                ev.agreement_by_group(scorer_outcomes, judge_outcomes, pair_categories)
                if category_of is not None
                else {}
            ),
        }

    def _mean_std(aggregated: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
        return {m: {"mean": aggregated[m]["mean"], "std": aggregated[m]["std"]} for m in model_order}

    per_scorer_rankings = {
        scorer: _mean_std(ev.aggregate_rankings(ev.ballots_from_scores({scorer: table[scorer]}, pids)))
        for scorer in scorers
    }
    combined = _mean_std(ev.aggregate_rankings(ev.ballots_from_scores(table, pids)))

    return {
        "schema_version": SCHEMA_VERSION,
        "judge": judge,
        "reference": reference,
        "scorers": scorers,
        "models": model_order,
        "n_prompts": n_prompts,
        "prompt_ids": pids,
        "tie_eps": tie_eps,
        "win_rates": win_rates,
        "model_stats": model_stats,
        "leaderboard": leaderboard,
        "agreement": agreement_results,
        "rankings": {
            "per_scorer": per_scorer_rankings,
            "combined": combined,
            "combined_scorers": scorers,
        },
    }


# --------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align_first_left: bool = True) -> str:
    """A GitHub-flavoured Markdown table; numeric columns are right-aligned."""
    separator = [":---" if align_first_left and i == 0 else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(separator) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(value: float) -> str:
    return f"{100.0 * value:.1f}"


def main_table(results: Mapping[str, Any], scorer: str) -> str:
    """Win-rate matrix for one scorer as Markdown.

    Cell (row, col) is the percentage of prompts on which the row model's reply scores
    higher than the column model's (ties count as half); the diagonal shows "–".
    """
    if scorer not in results["win_rates"]:
        raise KeyError(f"no win rates for scorer {scorer!r}; have {list(results['win_rates'])}")
    models = results["models"]
    matrix = results["win_rates"][scorer]
    role = "gold judge" if scorer == results["judge"] else "reward model"
    title = (
        f"**{scorer}** ({role}): % of prompts where the row model beats the column model "
        f"(ties count ½), n = {results['n_prompts']} prompts"
    )
    rows = [
        [model] + [DASH if col == model else _pct(matrix[model][col]["win_rate"]) for col in models]
        for model in models
    ]
    return title + "\n\n" + _md_table(["row \\ col", *models], rows)


def _stats_section(results: Mapping[str, Any]) -> str:
    scorers, stats = results["scorers"], results["model_stats"]
    header = ["model", *[f"{s} (mean ± std)" for s in scorers], "reply length, chars (mean ± std)"]
    rows = []
    for model in results["models"]:
        cells = [model]
        for scorer in scorers:
            s = stats[model]["scores"][scorer]
            cells.append(f"{s['mean']:.3f} ± {s['std']:.3f}")
        length = stats[model]["length"]
        cells.append(f"{length['mean']:.0f} ± {length['std']:.0f}")
        rows.append(cells)
    return _md_table(header, rows)


def _leaderboard_section(results: Mapping[str, Any]) -> str:
    header = ["model", "win_rate (%)", "standard_error (%)", "95% CI (%)", "LC win_rate (%)", "LC 95% CI (%)",
              "n_wins", "n_wins_base", "n_draws", "n_total", "avg_length"]
    rows = [
        [
            row["model"],
            f"{row['win_rate']:.2f}",
            f"{row['standard_error']:.2f}",
            f"{row['ci_low']:.1f}–{row['ci_high']:.1f}",
            f"{row['lc_win_rate']:.2f}" if "lc_win_rate" in row else DASH,
            f"{row['lc_ci_low']:.1f}–{row['lc_ci_high']:.1f}" if "lc_win_rate" in row else DASH,
            str(row["n_wins"]),
            str(row["n_wins_base"]),
            str(row["n_draws"]),
            str(row["n_total"]),
            f"{row['avg_length']:.0f}",
        ]
        for row in results["leaderboard"]
    ]
    return _md_table(header, rows)


def _agreement_section(results: Mapping[str, Any]) -> str:
    agreement = results["agreement"]
    if not agreement:
        return "_No reward model besides the judge._"
    categories = sorted({c for entry in agreement.values() for c in entry["by_category"]})
    header = ["scorer", "overall", *categories]
    rows = []
    for scorer, entry in agreement.items():
        cells = [scorer, f"{_pct(entry['overall'])}% (n={entry['n']})"]
        for category in categories:
            cell = entry["by_category"].get(category)
            cells.append(f"{_pct(cell['agreement'])}% (n={cell['n']})" if cell else DASH)
        rows.append(cells)
    return _md_table(header, rows)


def _rankings_section(results: Mapping[str, Any]) -> str:
    rankings = results["rankings"]
    scorers = list(rankings["per_scorer"])
    header = ["model", *[f"{s} (Borda)" for s in scorers], "combined (Tideman → Borda)"]
    order = sorted(results["models"], key=lambda m: (-rankings["combined"][m]["mean"], m))
    rows = []
    for model in order:
        cells = [model]
        for scorer in scorers:
            entry = rankings["per_scorer"][scorer][model]
            cells.append(f"{entry['mean']:.3f} ± {entry['std']:.3f}")
        entry = rankings["combined"][model]
        cells.append(f"**{entry['mean']:.3f}** ± {entry['std']:.3f}")
        rows.append(cells)
    return _md_table(header, rows)


def render_report(results: Mapping[str, Any]) -> str:
    """Full Markdown report from a :func:`build_results` dict."""
    judge, models = results["judge"], results["models"]
    n_models = len(models)
    parts = [
        "# Evaluation report",
        f"Models: {', '.join(models)}. Prompts: {results['n_prompts']}. "
        f"Gold judge: **{judge}**. Scores within {results['tie_eps']:g} of each other are ties.",
        "## 1. Head-to-head win rates",
        "\n\n".join(main_table(results, scorer) for scorer in results["scorers"]),
        "## 2. Per-model statistics",
        _stats_section(results),
        f"## 3. Leaderboard vs `{results['reference']}` (judged by {judge})",
        "AlpacaEval layout: win rate and standard error in percent, ties count as half; "
        "the interval is a paired bootstrap over prompts; avg_length is in characters. "
        "LC is the length-controlled win rate: the rate a logistic regression of the judge's "
        "verdicts on the length difference predicts at equal length (docs/evaluation.md).",
        _leaderboard_section(results),
        f"## 4. Agreement with the judge ({judge})",
        "Share of (model pair, prompt) comparisons where the scorer prefers the same reply "
        "as the judge; a tie agrees only with a tie.",
        _agreement_section(results),
        "## 5. Rank aggregation",
        f"Borda points per prompt (best = 1, worst = 1/{n_models}), mean ± population std "
        "over prompts. Per-scorer columns rank by that scorer alone; the combined column "
        f"merges the ballots of {', '.join(results['rankings']['combined_scorers'])} "
        "with Tideman's ranked pairs before scoring.",
        _rankings_section(results),
    ]
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------


def save_figure_atomic(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Render ``fig`` as PNG and move it into place atomically."""
    FigureCanvasAgg(fig)  # attach the Agg canvas: headless, no pyplot state
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    write_bytes_atomic(path, buffer.getvalue())


def plot_win_rate_heatmap(results: Mapping[str, Any], scorer: str, path: str | os.PathLike[str]) -> None:
    """Heatmap of one scorer's win-rate matrix (row beats column, %) saved as PNG."""
    models = results["models"]
    matrix = results["win_rates"][scorer]
    n = len(models)
    values = np.full((n, n), np.nan)  # NaN diagonal renders blank
    for i, row in enumerate(models):
        for j, col in enumerate(models):
            if row != col:
                values[i, j] = 100.0 * matrix[row][col]["win_rate"]

    size = 1.2 + 0.9 * n
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="RdYlGn", vmin=0.0, vmax=100.0)
    ax.set_xticks(range(n), labels=models, rotation=30, ha="right")
    ax.set_yticks(range(n), labels=models)
    ax.set_xlabel("column model")
    ax.set_ylabel("row model")
    ax.set_title(f"{scorer}: % prompts row beats column (n={results['n_prompts']})")
    for i in range(n):
        for j in range(n):
            text = DASH if i == j else f"{values[i, j]:.1f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    save_figure_atomic(fig, path)


def plot_mean_scores(results: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Grouped bar chart of mean score (± std) per model, one panel per scorer.

    Scorers use different scales, so each gets its own panel and y axis.
    """
    models, scorers = results["models"], results["scorers"]
    stats = results["model_stats"]
    fig = Figure(figsize=(max(4.0, 1.0 + 0.8 * len(models)) * len(scorers), 3.8))
    axes = fig.subplots(1, len(scorers), squeeze=False)[0]
    positions = np.arange(len(models))
    for ax, scorer in zip(axes, scorers):
        means = [stats[m]["scores"][scorer]["mean"] for m in models]
        stds = [stats[m]["scores"][scorer]["std"] for m in models]
        ax.bar(positions, means, yerr=stds, capsize=3, color=[f"C{i}" for i in range(len(models))])
        ax.set_xticks(positions, labels=models, rotation=30, ha="right")
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_title(scorer + (" (gold judge)" if scorer == results["judge"] else ""))
        ax.set_ylabel("mean score")
    save_figure_atomic(fig, path)


def judge_peak(rows: Sequence[Mapping[str, Any]], judge_key: str) -> dict[str, float] | None:
    """The logged step where the judge's score was highest, with its KL (None without a judge)."""
    scored = [r for r in rows if r.get(judge_key) is not None]
    if not scored:
        return None
    best = max(scored, key=lambda r: r[judge_key])
    return {"step": best["step"], "kl": best["kl/sequence"], "judge": best[judge_key]}


def plot_overoptimization(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike[str], proxy_key: str = "reward/combined"
) -> None:
    """Proxy reward and judge score against sqrt(KL to the reference) and against the step.

    ``runs[name]`` is a run's ``overoptimization.jsonl`` rows; several runs overlay (a sweep).
    The judge's best logged point is starred: past it, the policy pleases its reward models
    more and the judge less (Gao et al. 2022).
    """
    judge_keys = sorted({k for rows in runs.values() for r in rows for k in r if k.startswith("judge/")})
    judge_key = judge_keys[0] if judge_keys else None
    panels = [(proxy_key, "proxy: combined reward")] + ([(judge_key, f"judge: {judge_key[6:]}")] if judge_key else [])
    fig = Figure(figsize=(10, 3.4 * len(panels)))
    axes = fig.subplots(len(panels), 2, squeeze=False)
    for i, (name, rows) in enumerate(runs.items()):
        color = f"C{i % 10}"
        for (key, title), (ax_kl, ax_step) in zip(panels, axes):
            points = [(r["kl/sqrt"], r["step"], r[key]) for r in rows if r.get(key) is not None]
            if not points:
                continue
            kl, step, value = zip(*points)
            ax_kl.plot(kl, value, "o-", color=color, label=name, markersize=3)
            ax_step.plot(step, value, "o-", color=color, label=name, markersize=3)
            if key == judge_key:
                peak = judge_peak(rows, key)
                ax_kl.plot([peak["kl"] ** 0.5 if peak["kl"] > 0 else 0.0], [peak["judge"]], "*", color=color, markersize=14)
                ax_step.plot([peak["step"]], [peak["judge"]], "*", color=color, markersize=14)
            ax_kl.set_title(title)
            ax_kl.set_xlabel("sqrt(KL to the reference), nats")
            ax_step.set_title(title)
            ax_step.set_xlabel("PPO step")
    axes[0][1].legend(fontsize=8)
    save_figure_atomic(fig, path)
