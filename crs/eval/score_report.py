"""The score stage's report (:mod:`crs.eval.score`): the results dict, its Markdown and the leaderboard CSV.

:func:`build_results` computes every number the report shows; :func:`render_report`
only formats it, so the results can be saved as JSON (:func:`write_json_atomic`) and
rendered again later without rescoring anything.

The judge is either a *scorer* (``scores[judge]``: a score per model and prompt, such as
the gold judge) or a *pairwise judge* (``pairwise_judge``: a verdict per model pair and
prompt, such as AlpacaEval annotations; some pairs or prompts may be unjudged and some
verdicts null). Every other scorer gives scores.

Results schema (``build_results`` output, JSON-serialisable)::

    {
      "schema_version": 2,
      "judge": str,                      # name of the judge
      "judge_kind": "scores" | "pairwise",
      "judge_role": str,                 # what the report calls it: "gold judge", "reference scorer", ...
      "reference": str,                  # leaderboard reference model
      "scorers": [str, ...],             # judge first, then the others in input order
      "score_scorers": [str, ...],       # the scorers with per-model scores (not a pairwise judge)
      "models": [str, ...],              # display order
      "n_prompts": int,
      "prompt_ids": [str, ...],
      "tie_eps": float,
      "tie_break": "support" | "candidate_order",
      "win_rates": {                     # ordered pairs; no diagonal entries; a pair the
        scorer: {row_model: {col_model: {   # pairwise judge never judged is absent
          "win_rate": float,             # 0..1, fraction of prompts row beats col, ties = 1/2
          "n_wins": int, "n_wins_base": int, "n_draws": int, "n_total": int,
          "standard_error": float | None, "ci_low": float, "ci_high": float,
          "n_failed": int, "discrete_win_rate": float}}}},
      "missing_pairs": [[model, model], ...],   # pairs without a verdict (pairwise judge)
      "model_stats": {
        model: {"scores": {score_scorer: {"mean", "std", "min", "max", "n"}},
                "length": {"mean", "std", "min", "max", "n"}}},   # reply length, chars
      "leaderboard": [                   # judge vs reference, best first
        {"model", "win_rate" (%), "standard_error" (%), "n_wins", "n_wins_base",
         "n_draws", "n_total", "avg_length" (int), "discrete_win_rate" (%), "n_failed",
         "ci_low" (%), "ci_high" (%), "lc_win_rate" (%), "lc_ci_low", "lc_ci_high",
         "length_coef", "lc_reliable": bool, "lc_separation": {...},   # crs.eval.length_control
         "length_matched_win_rate" (% | None), "length_matched_ci_low", "length_matched_ci_high",
         "n_length_matched": int}, ...],
      "leaderboard_missing": [model, ...],      # no verdict against the reference
      "win_rates_by_category": {         # judge vs reference, per prompt category
        model: {category: {"win_rate" (%), "n": int}}},
      "agreement": {                     # one entry per score scorer besides the judge
        scorer: {"overall": float, "n": int,
                 "by_category": {category: {"agreement": float, "n": int}}}},
      "length_aware": {...},             # crs.eval.length_aware.length_aware_results: the same
                                         # comparisons, scorer ties half, the judge's ties left out
      "rankings": {                      # Borda points (1 = best, 1/n = worst)
        "per_scorer": {scorer: {model: {"mean": float, "std": float}}},
        "n_prompts": {scorer: int},      # prompts each scorer ranked
        "combined": {model: {"mean": float, "std": float}} | None,   # Tideman over scorers
        "combined_scorers": [str, ...]}
    }

Agreement compares, for every unordered model pair and prompt the judge decided, which
reply each scorer prefers (see :func:`crs.eval.agreement.agreement` for how ties count; a
weighted judge's verdict is rounded first). ``by_category`` and
``win_rates_by_category`` are empty when no categories are given.

Markdown helpers: :mod:`crs.eval.tables`; figures: :mod:`crs.eval.score_figures`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from crs.eval.agreement import agreement, agreement_by_group
from crs.eval.leaderboard import leaderboard_from_outcomes
from crs.eval.length_aware import length_aware_notes, length_aware_results, length_aware_table
from crs.eval.length_control import MIN_MATCHED, length_matched_cell, unreliable_note
from crs.eval.ranking import (
    TIE_BREAKS,
    PairwiseVerdicts,
    aggregate_rankings,
    ballots_from_scores,
    borda_points,
    ranking_from_pairwise,
    summarize_points,
    summary_stats,
)
from crs.eval.tables import DASH, md_table, number, pct
from crs.eval.win_rates import discrete_outcome, head_to_head, pairwise_outcomes, win_rate_from_outcomes
from crs.rm.length_metrics import LENGTH_BAND, preferences

SCHEMA_VERSION = 2
REFERENCE_SCORER = "reference scorer"  # the judge's role when a reward source stands in for one


# --------------------------------------------------------------------------------------
# Building the results
# --------------------------------------------------------------------------------------


def _category_list(categories: Sequence[str] | Mapping[str, str] | None, prompt_ids: Sequence[str]) -> list[str] | None:
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


def _is_null(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class _Judge:
    """The judge's verdict on (a, b, prompt index), whichever kind it is."""

    def __init__(
        self,
        table: Mapping[str, Sequence[float]] | None,
        verdicts: PairwiseVerdicts | None,
        pids: Sequence[str],
        tie_eps: float,
    ) -> None:
        self.table, self.verdicts, self.tie_eps = table, verdicts, tie_eps
        self.index = {pid: i for i, pid in enumerate(pids)}
        self.n = len(pids)

    def outcomes(self, a: str, b: str) -> dict[int, float | None] | None:
        """``{prompt index: outcome of a vs b}`` over the prompts judged (None: the judge
        failed there); None when the pair was never judged."""
        if self.table is not None:
            return dict(enumerate(pairwise_outcomes(self.table[a], self.table[b], self.tie_eps)))
        found = self.verdicts.between(a, b)
        if found is None:
            return None
        unknown = [item for item in found if item not in self.index]
        if unknown:
            raise ValueError(f"the pairwise judge's verdicts on {a} vs {b} name unknown prompt ids {unknown[:5]}")
        return {self.index[item]: value for item, value in found.items()}


def _win_rates_of_judge(judge: _Judge, models: Sequence[str], n_boot: int, seed: int) -> tuple[dict, list[list[str]]]:
    matrix: dict[str, dict[str, Any]] = {m: {} for m in models}
    missing = []
    for a, b in combinations(models, 2):
        found = judge.outcomes(a, b)
        if found is None or all(_is_null(v) for v in found.values()):
            missing.append([a, b])
            continue
        values = list(found.values())
        matrix[a][b] = win_rate_from_outcomes(values, n_boot=n_boot, seed=seed).as_dict()
        flipped = [None if _is_null(v) else 1.0 - v for v in values]
        matrix[b][a] = win_rate_from_outcomes(flipped, n_boot=n_boot, seed=seed).as_dict()
    return {row: {col: matrix[row][col] for col in models if col in matrix[row]} for row in models}, missing


def _judge_rankings(
    judge: _Judge, models: Sequence[str], pids: Sequence[str], tie_break: str
) -> dict[str, dict[str, Any]] | None:
    """Borda points of a pairwise judge over the prompts on which it decided every pair."""
    per_pair = {(a, b): judge.outcomes(a, b) or {} for a, b in combinations(models, 2)}
    points: dict[str, dict[str, float]] = {}
    for index, pid in enumerate(pids):
        verdicts = {pair: found.get(index) for pair, found in per_pair.items()}
        if any(_is_null(v) for v in verdicts.values()):
            continue
        ranking = ranking_from_pairwise(verdicts, models, tie_break, models)
        for model, value in borda_points(ranking).items():
            points.setdefault(model, {})[pid] = value
    return summarize_points(points) if points else None


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
    pairwise_judge: PairwiseVerdicts | None = None,
    tie_break: str = "support",
    judge_role: str | None = None,
) -> dict[str, Any]:
    """Compute everything the report shows (schema in the module docstring).

    Args:
        scores: ``scores[scorer][model][i]`` is ``scorer``'s score for ``model``'s
            reply to prompt ``i``; every scorer must score every model on every prompt.
        outputs: ``outputs[model][i]`` is the reply text (used for lengths).
        judge: name of the judge: one of ``scores``, or the name of ``pairwise_judge``.
        prompt_ids: ids aligned with the score lists; defaults to ``"0"``, ``"1"``, ...
        categories: optional category per prompt, as a list aligned with the prompts
            or a mapping from prompt id.
        reference: leaderboard reference model; defaults to the first model.
        models: display order; defaults to the judge's model order (the first scorer's
            with a pairwise judge).
        tie_eps: score differences at most this large count as ties.
        n_boot, seed: bootstrap settings for the confidence intervals.
        pairwise_judge: a judge that gives verdicts per model pair and prompt (item ids
            are ``prompt_ids``) instead of scores; then ``judge`` is its name.
        tie_break: how Tideman's ranked pairs settles ties (:func:`crs.eval.ranking.ranked_pairs`).
        judge_role: what the judge is, as the report names it ("gold judge", "reference
            scorer": a reward source standing in when no judge applies); default "pairwise
            judge" with a pairwise judge, else "judge".
    """
    score_scorers, scorers, model_order, reference = _scorers_and_models(
        scores, outputs, judge, reference, models, pairwise_judge, tie_break
    )
    n_prompts, pids = _check_shapes(scores, outputs, score_scorers, model_order, prompt_ids)
    category_of = _category_list(categories, pids)

    # Restrict every scorer to the chosen models, in display order.
    table = {s: {m: list(map(float, scores[s][m])) for m in model_order} for s in score_scorers}
    the_judge = _Judge(table[judge] if pairwise_judge is None else None, pairwise_judge, pids, tie_eps)
    win_rates, missing_pairs = _win_rates(table, scorers, the_judge, model_order, tie_eps, n_boot, seed)
    leaderboard, leaderboard_missing, by_category = _leaderboard(
        the_judge, outputs, model_order, reference, category_of, n_boot, seed
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "judge": judge,
        "judge_kind": "scores" if pairwise_judge is None else "pairwise",
        "judge_role": judge_role or ("judge" if pairwise_judge is None else "pairwise judge"),
        "reference": reference,
        "scorers": scorers,
        "score_scorers": score_scorers,
        "models": model_order,
        "n_prompts": n_prompts,
        "prompt_ids": pids,
        "tie_eps": tie_eps,
        "tie_break": tie_break,
        "win_rates": win_rates,
        "missing_pairs": missing_pairs,
        "model_stats": {
            model: {
                "scores": {scorer: summary_stats(table[scorer][model]) for scorer in score_scorers},
                "length": summary_stats([len(text) for text in outputs[model]]),
            }
            for model in model_order
        },
        "leaderboard": leaderboard,
        "leaderboard_missing": leaderboard_missing,
        "win_rates_by_category": by_category,
        "agreement": _agreement(table, scorers, the_judge, model_order, tie_eps, category_of),
        "length_aware": _length_aware(table, scorers, the_judge, model_order, outputs, tie_eps, (n_boot, seed)),
        "rankings": _rankings(table, scorers, the_judge, model_order, pids, tie_break),
    }


def _scorers_and_models(
    scores: Mapping[str, Any],
    outputs: Mapping[str, Sequence[str]],
    judge: str,
    reference: str | None,
    models: Sequence[str] | None,
    pairwise_judge: PairwiseVerdicts | None,
    tie_break: str,
) -> tuple[list[str], list[str], list[str], str]:
    """(scorers with scores, every scorer judge first, the models in display order, the reference), checked."""
    if pairwise_judge is None and judge not in scores:
        raise KeyError(f"judge {judge!r} is not among the scorers {list(scores)}")
    if pairwise_judge is not None and judge in scores:
        raise ValueError(f"the pairwise judge's name {judge!r} is also a scorer's")
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    score_scorers = ([judge] if pairwise_judge is None else []) + [name for name in scores if name != judge]
    scorers = [judge] + [name for name in score_scorers if name != judge]
    if models is not None:
        model_order = list(models)
    elif score_scorers:
        model_order = list(scores[score_scorers[0]])
    else:
        model_order = list(outputs)
    if len(model_order) < 2:
        raise ValueError(f"need at least two models to compare, got {model_order}")
    reference = reference if reference is not None else model_order[0]
    if reference not in model_order:
        raise KeyError(f"reference {reference!r} is not among the models {model_order}")
    return score_scorers, scorers, model_order, reference


def _check_shapes(
    scores: Mapping[str, Any],
    outputs: Mapping[str, Sequence[str]],
    score_scorers: list[str],
    model_order: list[str],
    prompt_ids: Sequence[str] | None,
) -> tuple[int, list[str]]:
    """The number of prompts and their ids, once every scorer scores every model on each
    (checked up front so that errors name the scorer and model, not a numpy line)."""
    if model_order[0] not in outputs:
        raise ValueError(f"model {model_order[0]!r} has no outputs")
    n_prompts = len(outputs[model_order[0]])
    for scorer in score_scorers:
        for model in model_order:
            if model not in scores[scorer]:
                raise KeyError(f"scorer {scorer!r} has no scores for model {model!r}")
            if len(scores[scorer][model]) != n_prompts:
                raise ValueError(
                    f"scorer {scorer!r}, model {model!r}: {len(scores[scorer][model])} scores, expected {n_prompts}"
                )
    for model in model_order:
        if model not in outputs or len(outputs[model]) != n_prompts:
            raise ValueError(f"model {model!r} needs {n_prompts} outputs (one per prompt)")
    if n_prompts == 0:
        raise ValueError("no prompts to evaluate")
    pids = [str(i) for i in range(n_prompts)] if prompt_ids is None else [str(p) for p in prompt_ids]
    if len(pids) != n_prompts or len(set(pids)) != n_prompts:
        raise ValueError(f"need {n_prompts} unique prompt ids, got {len(pids)} ({len(set(pids))} unique)")
    return n_prompts, pids


def _win_rates(
    table: Mapping[str, Mapping[str, list[float]]],
    scorers: list[str],
    the_judge: _Judge,
    model_order: list[str],
    tie_eps: float,
    n_boot: int,
    seed: int,
) -> tuple[dict[str, dict[str, dict[str, Any]]], list[list[str]]]:
    """Every scorer's head-to-head win rates, and the model pairs a pairwise judge never judged."""
    win_rates: dict[str, dict[str, dict[str, Any]]] = {}
    missing_pairs: list[list[str]] = []
    for scorer in scorers:
        if scorer not in table:  # the pairwise judge
            win_rates[scorer], missing_pairs = _win_rates_of_judge(the_judge, model_order, n_boot, seed)
            continue
        pairs = head_to_head(table[scorer], tie_eps=tie_eps, n_boot=n_boot, seed=seed)
        win_rates[scorer] = {
            row: {col: pairs[(row, col)].as_dict() for col in model_order if col != row} for row in model_order
        }
    return win_rates, missing_pairs


def _leaderboard(
    the_judge: _Judge,
    outputs: Mapping[str, Sequence[str]],
    model_order: list[str],
    reference: str,
    category_of: list[str] | None,
    n_boot: int,
    seed: int,
) -> tuple[list[dict[str, Any]], list[str], dict[str, dict[str, dict[str, Any]]]]:
    """Every model's verdicts against the reference (the reference: all draws): the leaderboard,
    the models the judge never compared with it, and win rates per category."""
    n_prompts = len(outputs[model_order[0]])
    against_reference: dict[str, dict[int, float | None]] = {}
    leaderboard_missing = []
    for model in model_order:
        found = {i: 0.5 for i in range(n_prompts)} if model == reference else the_judge.outcomes(model, reference)
        if found is None or all(_is_null(v) for v in found.values()):
            leaderboard_missing.append(model)
        else:
            against_reference[model] = found
    leaderboard = leaderboard_from_outcomes(
        against_reference,
        {m: outputs[m] for m in model_order},
        reference,
        n_boot=n_boot,
        seed=seed,
    )
    by_category: dict[str, dict[str, dict[str, Any]]] = {}
    if category_of is not None:
        for model, found in against_reference.items():
            if model == reference:
                continue
            buckets: dict[str, list[float]] = {}
            for index, value in found.items():
                if not _is_null(value):
                    buckets.setdefault(category_of[index], []).append(float(value))
            by_category[model] = {
                c: {"win_rate": 100.0 * float(np.mean(v)), "n": len(v)} for c, v in sorted(buckets.items())
            }
    return leaderboard, leaderboard_missing, by_category


def _judged_positions(the_judge: _Judge, model_order: list[str]) -> tuple[list[tuple[str, str, int]], list[float]]:
    """Every (model a, model b, prompt index) the judge has a verdict on, and that verdict rounded to its side."""
    positions: list[tuple[str, str, int]] = []
    judge_outcomes: list[float] = []
    for a, b in combinations(model_order, 2):
        for index, value in sorted((the_judge.outcomes(a, b) or {}).items()):
            if not _is_null(value):
                positions.append((a, b, index))
                judge_outcomes.append(discrete_outcome(float(value)))
    return positions, judge_outcomes


def _agreement(
    table: Mapping[str, Mapping[str, list[float]]],
    scorers: list[str],
    the_judge: _Judge,
    model_order: list[str],
    tie_eps: float,
    category_of: list[str] | None,
) -> dict[str, dict[str, Any]]:
    """Each scorer's agreement with the judge over every unordered model pair x prompt the judge decided."""
    positions, judge_outcomes = _judged_positions(the_judge, model_order)
    pair_categories = [category_of[i] for _, _, i in positions] if category_of is not None else []
    results: dict[str, dict[str, Any]] = {}
    for scorer in scorers[1:]:
        if not positions:
            break
        scorer_outcomes = [
            pairwise_outcomes([table[scorer][a][i]], [table[scorer][b][i]], tie_eps)[0] for a, b, i in positions
        ]
        results[scorer] = {
            "overall": agreement(scorer_outcomes, judge_outcomes),
            "n": len(scorer_outcomes),
            "by_category": (
                agreement_by_group(scorer_outcomes, judge_outcomes, pair_categories) if category_of is not None else {}
            ),
        }
    return results


def _length_aware(
    table: Mapping[str, Mapping[str, list[float]]],
    scorers: list[str],
    the_judge: _Judge,
    model_order: list[str],
    outputs: Mapping[str, Sequence[str]],
    tie_eps: float,
    bootstrap: tuple[int, int],
) -> dict[str, Any]:
    """How much of each scorer's agreement with the judge is length (:mod:`crs.eval.length_aware`), over the
    comparisons :func:`_agreement` counts: a reply is a (model, prompt), a cluster a prompt; ``bootstrap`` is
    (n_boot, seed)."""
    n_prompts = len(outputs[model_order[0]])
    reply = {model: k * n_prompts for k, model in enumerate(model_order)}  # model's first reply; prompt i at + i
    positions, judge_outcomes = _judged_positions(the_judge, model_order)
    prefs = preferences(
        [len(outputs[m][i]) for m in model_order for i in range(n_prompts)],
        [i for _ in model_order for i in range(n_prompts)],
        [reply[a] + i for a, _, i in positions],
        [reply[b] + i for _, b, i in positions],
        judge_outcomes,
        n_prompts,
    )
    values = {scorer: np.concatenate([table[scorer][m] for m in model_order]) for scorer in scorers[1:]}
    return length_aware_results(prefs, values, *bootstrap, cluster_kind="prompts", tie_eps=tie_eps)


def _rankings(
    table: Mapping[str, Mapping[str, list[float]]],
    scorers: list[str],
    the_judge: _Judge,
    model_order: list[str],
    pids: list[str],
    tie_break: str,
) -> dict[str, Any]:
    """Rank aggregation per scorer (Tideman per prompt, Borda across prompts) and over every scorer with scores."""

    def mean_std(aggregated: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
        return {m: {"mean": aggregated[m]["mean"], "std": aggregated[m]["std"]} for m in model_order}

    per_scorer: dict[str, dict[str, dict[str, float]]] = {}
    ranked_prompts: dict[str, int] = {}
    for scorer in scorers:
        if scorer not in table:  # the pairwise judge
            aggregated = _judge_rankings(the_judge, model_order, pids, tie_break)
        else:
            aggregated = aggregate_rankings(ballots_from_scores({scorer: table[scorer]}, pids), tie_break, model_order)
        if aggregated is not None:
            per_scorer[scorer] = mean_std(aggregated)
            ranked_prompts[scorer] = len(next(iter(aggregated.values()))["per_prompt"])
    combined = mean_std(aggregate_rankings(ballots_from_scores(table, pids), tie_break, model_order)) if table else None
    return {
        "per_scorer": per_scorer,
        "n_prompts": ranked_prompts,
        "combined": combined,
        "combined_scorers": list(table),
    }


def leaderboard_csv(results: Mapping[str, Any], mode: str = "community") -> str:
    """The leaderboard as AlpacaEval writes ``leaderboard.csv``: the model name in an unnamed
    first column, then ``win_rate, standard_error, n_wins, n_wins_base, n_draws, n_total,
    mode, avg_length`` (percentages; numbers as pandas prints them, an undefined standard
    error empty), then ``discrete_win_rate``, best first. ``pandas.read_csv(path,
    index_col=0)`` reads it beside AlpacaEval's own."""
    columns = [
        "win_rate",
        "standard_error",
        "n_wins",
        "n_wins_base",
        "n_draws",
        "n_total",
        "mode",
        "avg_length",
        "discrete_win_rate",
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["", *columns])
    for row in results["leaderboard"]:
        values = {**row, "mode": mode}
        writer.writerow(
            [
                row["model"],
                *(
                    "" if values.get(c) is None else repr(values[c]) if isinstance(values[c], float) else values[c]
                    for c in columns
                ),
            ]
        )
    return buffer.getvalue()


# --------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------


def judge_role(results: Mapping[str, Any]) -> str:
    """What the report calls its judge: ``results["judge_role"]``; results saved before it was
    recorded name a scorer judge "gold judge" as they did."""
    pairwise = results.get("judge_kind") == "pairwise"
    return results.get("judge_role") or ("pairwise judge" if pairwise else "gold judge")


def main_table(results: Mapping[str, Any], scorer: str) -> str:
    """Win-rate matrix for one scorer as Markdown.

    Cell (row, col) is the percentage of prompts on which the row model's reply scores
    higher than the column model's (ties count as half); the diagonal shows "–". With a
    pairwise judge a cell is the mean of its verdicts (AlpacaEval's win rate) and names
    its n when the judge did not decide every prompt; "n/a" marks a pair never judged.
    """
    if scorer not in results["win_rates"]:
        raise KeyError(f"no win rates for scorer {scorer!r}; have {list(results['win_rates'])}")
    models = results["models"]
    matrix = results["win_rates"][scorer]
    pairwise = scorer == results["judge"] and results.get("judge_kind") == "pairwise"
    role = judge_role(results) if scorer == results["judge"] else "reward model"
    title = (
        f"**{scorer}** ({role}): % of prompts where the row model beats the column model "
        f"(ties count ½), n = {results['n_prompts']} prompts"
    )
    if pairwise:
        title += " (cells judged on fewer say so; null verdicts are left out)"

    def cell(row: str, col: str) -> str:
        if col == row:
            return DASH
        entry = matrix[row].get(col)
        if entry is None:
            return "n/a"
        text = pct(entry["win_rate"])
        return text if entry["n_total"] == results["n_prompts"] else f"{text} (n={entry['n_total']})"

    rows = [[model] + [cell(model, col) for col in models] for model in models]
    table = title + "\n\n" + md_table(["row \\ col", *models], rows)
    lc = [
        row for row in results.get("leaderboard", []) if "lc_win_rate" in row and row["model"] != results["reference"]
    ]
    if scorer == results["judge"] and lc:
        rates = ", ".join(
            f"{row['model']} {row['lc_win_rate']:.1f} ({row['lc_ci_low']:.1f}–{row['lc_ci_high']:.1f}"
            + (
                ")"
                if row.get("lc_reliable", True)
                else "; unreliable: length alone nearly separates the verdicts, see the leaderboard)"
            )
            for row in lc
        )
        table += f"\n\nLength-controlled win rate vs {results['reference']} (%, 95% CI): {rates}."
    return table


def _stats_section(results: Mapping[str, Any]) -> str:
    scorers, stats = results.get("score_scorers", results["scorers"]), results["model_stats"]
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
    return md_table(header, rows)


def _leaderboard_section(results: Mapping[str, Any]) -> str:
    failures = any(row.get("n_failed") for row in results["leaderboard"])
    matched = any("n_length_matched" in row for row in results["leaderboard"])
    header = (
        ["model", "win_rate (%)", "standard_error (%)", "95% CI (%)", "LC win_rate (%)", "LC 95% CI (%)"]
        + ([f"length-matched win_rate (%, 95% CI, n within {LENGTH_BAND:.0%})"] if matched else [])
        + ["n_wins", "n_wins_base", "n_draws", "n_total", "avg_length"]
        + (["judge failed"] if failures else [])
    )
    rows = [
        [
            row["model"],
            f"{row['win_rate']:.2f}",
            number(row["standard_error"]),
            f"{row['ci_low']:.1f}–{row['ci_high']:.1f}",
            f"{row['lc_win_rate']:.2f}{'' if row.get('lc_reliable', True) else '*'}" if "lc_win_rate" in row else DASH,
            f"{row['lc_ci_low']:.1f}–{row['lc_ci_high']:.1f}" if "lc_win_rate" in row else DASH,
        ]
        + ([_matched_cell(row)] if matched else [])
        + [
            str(row["n_wins"]),
            str(row["n_wins_base"]),
            str(row["n_draws"]),
            str(row["n_total"]),
            str(int(row["avg_length"])),
        ]
        + ([str(row.get("n_failed", 0))] if failures else [])
        for row in results["leaderboard"]
    ]
    text = md_table(header, rows)
    flagged = [row for row in results["leaderboard"] if not row.get("lc_reliable", True)]
    if flagged:
        names = ", ".join(f"`{row['model']}`" for row in flagged)
        text += f"\n\n**\\* LC unreliable** for {names}: {unreliable_note()}."
        text += "".join(f"\n\n- `{row['model']}`: {row['lc_separation']['reason']}" for row in flagged)
    missing = results.get("leaderboard_missing") or []
    if missing:
        text += f"\n\nNo verdict against `{results['reference']}` for: {', '.join(missing)} (left out)."
    return text


def _matched_cell(row: Mapping[str, Any]) -> str:
    if "n_length_matched" not in row:
        return DASH
    return length_matched_cell(
        row["length_matched_win_rate"],
        row["length_matched_ci_low"],
        row["length_matched_ci_high"],
        row["n_length_matched"],
        scale=1.0,
    )


def _by_category_section(results: Mapping[str, Any]) -> str | None:
    table = results.get("win_rates_by_category") or {}
    categories = sorted({c for entry in table.values() for c in entry})
    if len(categories) < 2:
        return None
    rows = []
    for model, entry in table.items():
        rows.append(
            [model] + [f"{entry[c]['win_rate']:.1f} (n={entry[c]['n']})" if c in entry else DASH for c in categories]
        )
    return md_table(["model", *categories], rows)


def _agreement_section(results: Mapping[str, Any]) -> str:
    by_scorer = results["agreement"]
    if not by_scorer:
        return "_No reward model besides the judge._"
    categories = sorted({c for entry in by_scorer.values() for c in entry["by_category"]})
    header = ["scorer", "overall", *categories]
    rows = []
    for scorer, entry in by_scorer.items():
        cells = [scorer, f"{pct(entry['overall'])}% (n={entry['n']})"]
        for category in categories:
            cell = entry["by_category"].get(category)
            cells.append(f"{pct(cell['agreement'])}% (n={cell['n']})" if cell else DASH)
        rows.append(cells)
    return md_table(header, rows)


def _rankings_section(results: Mapping[str, Any]) -> str:
    rankings = results["rankings"]
    scorers = list(rankings["per_scorer"])
    combined = rankings.get("combined")
    if not scorers and combined is None:
        return "_No scorer ranked every model on a prompt._"
    header = ["model", *[f"{s} (Borda)" for s in scorers]] + (["combined (Tideman → Borda)"] if combined else [])
    first = combined or rankings["per_scorer"][scorers[0]]
    order = sorted(results["models"], key=lambda m: (-first[m]["mean"], m))
    rows = []
    for model in order:
        cells = [model]
        for scorer in scorers:
            entry = rankings["per_scorer"][scorer][model]
            cells.append(f"{entry['mean']:.3f} ± {entry['std']:.3f}")
        if combined:
            cells.append(f"**{combined[model]['mean']:.3f}** ± {combined[model]['std']:.3f}")
        rows.append(cells)
    return md_table(header, rows)


def _judge_source_section(results: Mapping[str, Any]) -> str | None:
    source = results.get("judge_source")
    if not source:
        return None
    lines = [
        f"Verdicts read from {', '.join(f'`{f}`' for f in source['files'])}: {source['n_rows']} annotations, "
        f"{source['n_used']} used, {source['n_failed']} where the judge failed (null preference: counted in "
        "`judge failed`, left out of every rate).",
    ]
    for reason, count in source.get("skipped", {}).items():
        lines.append(f"Not used: {count} {reason}.")
    if results.get("missing_pairs"):
        pairs = ", ".join(f"{a} vs {b}" for a, b in results["missing_pairs"])
        lines.append(f"Pairs the judge never decided (n/a in the tables): {pairs}.")
    return "\n\n".join(lines)


def _human_section(results: Mapping[str, Any]) -> str | None:
    human = results.get("human_rankings")
    if not human:
        return None
    groups = list(human["groups"])
    several = len(groups) > 1
    header = (
        ["model", "all annotators (Borda)"]
        + [f"group {g}" for g in groups]
        + (["across groups (mean ± std)"] if several else [])
    )
    order = sorted(human["overall"], key=lambda m: (-human["overall"][m]["mean"], m))
    rows = []
    for model in order:
        cells = [model, f"**{human['overall'][model]['mean']:.3f}** ± {human['overall'][model]['std']:.3f}"]
        cells += [f"{human['groups'][g][model]['mean']:.3f}" for g in groups]
        if several:
            spread = human["across_groups"][model]
            cells.append(f"{spread['mean']:.3f} ± {spread['std']:.3f} ({spread['min']:.3f}–{spread['max']:.3f})")
        rows.append(cells)
    intro = (
        f"{human['n_ballots']} ballots by {human['n_annotators'] or 'anonymous'} annotators on {human['n_prompts']} "
        f"prompts ({human['n_ballots_with_ties']} with tied replies), from `{human['source']}`. Per prompt, a group's "
        f"ballots are merged with Tideman's ranked pairs (ties settled by `{human['tie_break']}`), then scored as "
        "Borda points (best = 1, worst = 1/n; replies ranked equal on a prompt's only ballot share their places' "
        "points), mean ± population std over prompts."
    )
    if several:
        intro += " Across groups: the mean of the groups' means, their population std and range."
    return intro + "\n\n" + md_table(header, rows)


def _length_aware_section(results: Mapping[str, Any]) -> list[str]:
    """How much of each scorer's agreement is length (none for results saved before it was measured)."""
    if not results.get("length_aware"):
        return []
    return [
        "### How much of the agreement is length",
        "The same comparisons; here the judge's ties are left out and a scorer tie counts half, so the accuracy "
        "can differ from the agreement above. The length-only scorer prefers the longer reply.",
        length_aware_table(results["length_aware"]),
        length_aware_notes(results["length_aware"]),
    ]


def render_report(results: Mapping[str, Any]) -> str:
    """Full Markdown report from a :func:`build_results` dict."""
    judge, models = results["judge"], results["models"]
    n_models = len(models)
    pairwise = results.get("judge_kind") == "pairwise"
    role = judge_role(results)
    kind = f"{role[0].upper()}{role[1:]}" + (" (verdicts per model pair and prompt)" if pairwise else "")
    judged_by = f"the {REFERENCE_SCORER} {judge}" if role == REFERENCE_SCORER else judge
    if role == REFERENCE_SCORER:
        kind = (
            "No judge applies (`eval_rewarding.judge: none`, or `auto` on prompts that are not the demo's), so the "
            f"first reward source stands in as the {REFERENCE_SCORER}: its win rates say what that reward model "
            f"prefers, not what a gold judge does. {kind}"
        )
    parts = [
        "# Evaluation report",
        f"Models: {', '.join(models)}. Prompts: {results['n_prompts']}. "
        f"{kind}: **{judge}**. Scores within {results['tie_eps']:g} of each other are ties.",
    ]
    source = _judge_source_section(results)
    if source:
        parts += ["## The judge's verdicts", source]
    parts += [
        "## 1. Head-to-head win rates",
        "\n\n".join(main_table(results, scorer) for scorer in results["scorers"]),
        "## 2. Per-model statistics",
        _stats_section(results),
        f"## 3. Leaderboard vs `{results['reference']}` (judged by {judged_by})",
        "AlpacaEval layout and conventions: win rate and standard error in percent, ties count as half "
        "(a weighted judge's fractional preference as it is); the standard error is that of the mean verdict "
        "(sample std / sqrt(n), AlpacaEval's); the interval is a paired bootstrap over prompts; "
        "avg_length is the mean reply length in characters, truncated to a whole number. "
        "LC is the length-controlled win rate: the rate a logistic regression of the judge's "
        "verdicts on the length difference predicts at equal length (docs/evaluation.md); `*` marks an LC that "
        "length alone nearly separates, which extrapolates and is unreliable. The length-matched win rate is the raw "
        f"rate on the prompts whose two replies are within {LENGTH_BAND:.0%} of each other in length "
        f"('cannot tell' below {MIN_MATCHED} such prompts). "
        "`leaderboard.csv` holds the same rows in AlpacaEval's file layout.",
        _leaderboard_section(results),
    ]
    by_category = _by_category_section(results)
    if by_category:
        parts += [f"### Win rate vs `{results['reference']}` by category (%, judged by {judged_by})", by_category]
    parts += [
        f"## 4. Agreement with the {role} ({judge})",
        "Share of (model pair, prompt) comparisons where the scorer prefers the same reply "
        "as the judge; a tie agrees only with a tie"
        + (" (a fractional verdict is rounded to its side first)." if pairwise else "."),
        _agreement_section(results),
        *_length_aware_section(results),
        "## 5. Rank aggregation",
        f"Borda points per prompt (best = 1, worst = 1/{n_models}), mean ± population std "
        "over prompts. Per-scorer columns rank by that scorer alone"
        + (" (the pairwise judge on the prompts where it decided every pair, by ranked pairs)" if pairwise else "")
        + (
            f"; the combined column merges the ballots of {', '.join(results['rankings']['combined_scorers'])} "
            "with Tideman's ranked pairs before scoring"
            if results["rankings"].get("combined")
            else ""
        )
        + f". Ranked-pairs ties are settled by `{results.get('tie_break', 'support')}`.",
        _rankings_section(results),
    ]
    human = _human_section(results)
    if human:
        parts += ["## 6. Human rankings", human]
    return "\n\n".join(parts) + "\n"
