"""The best-of-n study (``crs bon``): every scorer judged on one shared pool of replies.

The pool (:mod:`crs.eval.bon.pool`) is scored once by every reward source in ``bon.rewards`` and by
the judge; the scorers are those sources, the combinations ``w * z(preference) + (1 - w) *
z(absolute)`` over ``bon.weights`` (z-scored with each source's saved statistics, else over
the pool: the formula PPO optimises), and the judge itself (the ceiling). A ``path: length``
source is the length scorer (its pick is the longest reply), and a source with
``length_calibration`` scores with its length trend removed, each a curve like any other. For each scorer:

* best-of-n curves for n = 1, 2, 4, ..., m: the judge's value of the pick, its win rate
  against a random reply of the same pool (0.5 at n = 1), and its length, exact over all
  n-subsets (:mod:`crs.eval.bon.selection`), against KL_bon = log n - (n - 1)/n;
* the reward-model level: agreement with the judge pooled over every within-prompt pair the
  judge separates, and Kendall's tau per prompt (one tie rule), per prompt category too;
* how much of that agreement is length (``length_aware``, :mod:`crs.eval.length_aware`): agreement on
  the pairs where the judge preferred the shorter reply and on length-matched pairs, Spearman with
  length, information beyond length, for every scorer but the judge and for the length-only scorer.

Intervals come from one paired bootstrap over prompts (the same prompts for every scorer), so
the difference between two weights has its own, narrow interval. The headline is the best-of-m
win rate of each weight; the report names the best weight with its interval (the argmax over
bootstrap rounds), each weight's difference from it, and the smallest difference this pool
detects at 80% power.

``bon.strategies`` adds the other ways :mod:`crs.rl.combine` combines sources (the same
arithmetic RL uses with ``rl.combine``): ``sum_per_prompt`` (``per_prompt w=<w>``, each source
standardised within each prompt's m replies, then weighted) and ``conservative`` (``min`` and
``mean-<k>std`` over every source's z-score). Their best-of-m win rate and agreement are set
against ``sum``'s best weight in the same paired bootstrap (``results.json``: ``strategies``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crs.config import ConfigError, CRSConfig, EvalRewardSourceConfig, RewardSourceConfig
from crs.config.length_keys import LENGTH_KEYS
from crs.data.schema import user_prompt
from crs.demo.gold import resolve_judge
from crs.eval.bon import selection
from crs.eval.bon.pool import Pool, read_pool
from crs.eval.bon.pool_verdicts import judge_from_annotations
from crs.eval.length_aware import length_aware_results
from crs.eval.power import power_line, power_of_neighbours
from crs.io import write_json_atomic, write_text_atomic
from crs.processes import is_main_process
from crs.rl.combine import CONSERVATIVE_METHODS, combine_normalized, standardize, zscore_stats
from crs.rl.length_source import source_calibration
from crs.rl.reward_sources import build_sources, source_config
from crs.rm.length_metrics import Preferences, preferences
from crs.runs import mark_finished

logger = logging.getLogger(__name__)

SCORES_DIR = "scores"  # <run>/scores/<source>.json: one source's scores of the pool, reused by a rerun


def weight_name(w: float) -> str:
    """The scorer name of preference weight ``w``."""
    return f"w={w:g}"


def per_prompt_name(w: float) -> str:
    """The scorer name of preference weight ``w`` with ``sum_per_prompt``."""
    return f"per_prompt {weight_name(w)}"


def conservative_name(method: str, k: float) -> str:
    """The scorer name of a conservative method: ``min``, ``mean-1std``."""
    return "min" if method == "min" else f"mean-{k:g}std"


def score_pool(
    pool: Pool, spec: RewardSourceConfig | EvalRewardSourceConfig, cfg: CRSConfig, run_dir: Path
) -> tuple[np.ndarray, dict[str, float] | None]:
    """(P, m) scores of every reply by the source ``spec`` (length-calibrated where it asks for that), and its
    saved or calibration statistics; cached in the run.

    A NaN or infinite score is refused, naming the scorer and the reply (:meth:`Pool.check_finite`)."""
    name, path = spec.name, spec.path
    cache = run_dir / SCORES_DIR / f"{name}.json"
    scorer = f"{'bon.judge' if name == 'judge' else f'bon.rewards {name!r}'} ({path})"
    config = source_config(spec)
    variant = _cache_variant(config)
    if cache.is_file():
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if saved.get("path") == path and saved.get("variant") == variant and saved.get("prompt_ids") == pool.prompt_ids:
            cached = np.array(saved["scores"], dtype=float)
            pool.check_finite(cached, scorer)
            return cached, saved.get("stats")
    source = build_sources([config], cfg.model)[0]
    prompts, replies = [user_prompt(t) for t in pool.instructions], pool.replies
    batch = max(cfg.eval_rewarding.batch_size, 1)
    flat_prompts = [p for p, row in zip(prompts, replies) for _ in row]
    flat_replies = [r for row in replies for r in row]
    # Batches of similar lengths pad less; the scores go back to pool order after.
    order = sorted(range(len(flat_replies)), key=lambda i: len(flat_prompts[i][-1]["content"]) + len(flat_replies[i]))
    parts = [
        source.score([flat_prompts[i] for i in chunk], [flat_replies[i] for i in chunk])
        for chunk in (order[start : start + batch] for start in range(0, len(order), batch))
    ]
    scores = np.empty(len(order))
    scores[order] = torch.cat(parts).numpy()
    scores = scores.reshape(pool.shape)
    pool.check_finite(scores, scorer)
    saved = {"path": path, "prompt_ids": pool.prompt_ids, "scores": scores.tolist(), "stats": source.stats}
    write_json_atomic(cache, {**saved, **({"variant": variant} if variant else {})})
    return scores, source.stats


def _cache_variant(config: RewardSourceConfig) -> dict[str, Any] | None:
    """What beside the path decides a source's cached scores: its length keys where not the defaults, and its
    calibration's fit (a refitted file rescores); None for a plain source, as caches before these keys had."""
    defaults = RewardSourceConfig()
    variant = {key: getattr(config, key) for key in LENGTH_KEYS if getattr(config, key) != getattr(defaults, key)}
    calibration = source_calibration(config)  # the file alone: a cached pool loads no reward model
    if calibration is not None:
        variant["calibration"] = calibration.digest
    return variant or None


def is_annotations(spec: str) -> bool:
    """Whether ``bon.judge`` names AlpacaEval annotation files (a ``.json`` file or a glob) rather than a reward
    source."""
    return spec.endswith(".json") or any(c in spec for c in "*?[")


def zscore(scores: np.ndarray, stats: Mapping[str, float] | None) -> np.ndarray:
    """Scores on the source's own scale (its saved statistics), else the pool's: RL's z-score,
    :func:`crs.rl.combine.standardize` (population std; a source without spread is centred, not scaled)."""
    return standardize(np.asarray(scores, dtype=float), stats or zscore_stats(scores))


def build_scorers(
    cfg: CRSConfig, raw: Mapping[str, np.ndarray], stats: Mapping[str, Any], judge: np.ndarray
) -> dict[str, np.ndarray]:
    """Every scorer's (P, m) scores: each weight's combination, each source alone, the judge."""
    bon = cfg.bon
    scorers: dict[str, np.ndarray] = {}
    pref, absolute = bon.preference_source, bon.absolute_source
    if pref == absolute:
        raise ConfigError(
            f"bon.preference_source and bon.absolute_source both name {pref!r}; the weight grid needs two different "
            "bon.rewards sources"
        )
    if pref in raw and absolute in raw:
        shape = raw[pref].shape
        z = {name: torch.from_numpy(zscore(raw[name], stats[name]).reshape(-1)) for name in (pref, absolute)}
        for w in bon.weights:  # the arithmetic RL's `sum` uses, from its one home
            combined, _ = combine_normalized(z, {pref: w, absolute: 1 - w}, "sum")
            scorers[weight_name(w)] = combined.numpy().reshape(shape)
    else:
        logger.warning(
            "bon.rewards has no %r and %r: no weight grid, each source alone",
            bon.preference_source,
            bon.absolute_source,
        )
    scorers.update(raw)
    scorers["judge"] = judge  # the ceiling
    return scorers


def build_strategy_scorers(
    cfg: CRSConfig, raw: Mapping[str, np.ndarray], stats: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """The (P, m) scorers of ``bon.strategies`` other than ``sum`` (whose scorers :func:`build_scorers` makes).

    ``sum_per_prompt``: per weight, ``w * s(preference) + (1 - w) * s(absolute)`` with ``s`` a
    source standardised within each prompt's m replies; ``conservative``: ``min`` and
    ``mean-<k>std`` (k: ``rl.conservative_k``) over every source's z-score (:func:`zscore`).
    Both through :func:`crs.rl.combine.combine_normalized`, as RL combines them.
    """
    bon, out = cfg.bon, {}
    if not raw:
        return out
    shape = next(iter(raw.values())).shape
    flat = {name: torch.from_numpy(np.asarray(scores, dtype=float).reshape(-1)) for name, scores in raw.items()}
    pref, absolute = bon.preference_source, bon.absolute_source
    if "sum_per_prompt" in bon.strategies and pref in raw and absolute in raw:
        groups = torch.arange(shape[0]).repeat_interleave(shape[1])  # prompt p's m replies are row p
        pair = {pref: flat[pref], absolute: flat[absolute]}
        for w in bon.weights:
            combined, _ = combine_normalized(pair, {pref: w, absolute: 1 - w}, "sum_per_prompt", groups)
            out[per_prompt_name(w)] = combined.numpy().reshape(shape)
    if "conservative" in bon.strategies and len(raw) >= 2:
        z = {name: torch.from_numpy(zscore(raw[name], stats[name]).reshape(-1)) for name in raw}
        for method in CONSERVATIVE_METHODS:
            combined, _ = combine_normalized(
                z, dict.fromkeys(z, 1.0), "conservative", method=method, k=cfg.rl.conservative_k
            )
            out[conservative_name(method, cfg.rl.conservative_k)] = combined.numpy().reshape(shape)
    elif "conservative" in bon.strategies:
        logger.warning("bon.strategies: conservative needs at least 2 bon.rewards sources; skipped")
    return out


def per_prompt_metrics(
    scorers: Mapping[str, np.ndarray], judge: np.ndarray, lengths: np.ndarray, ns: list[int]
) -> dict[str, np.ndarray]:
    """Per prompt, for every scorer: the best-of-n curves (gold, win rate, length), Kendall's tau,
    and the agreement's credits and judged pairs (``pairwise_credit``, ``pairwise_pairs``: the
    agreement is pooled over pairs, :func:`pooled_agreement`)."""
    metrics: dict[str, np.ndarray] = {}
    for name, scores in scorers.items():
        metrics[f"{name}/gold"] = selection.best_of_n_values(scores, judge, ns)
        metrics[f"{name}/win_rate"] = selection.best_of_n_win_rates(scores, judge, ns)
        metrics[f"{name}/length"] = selection.best_of_n_values(scores, lengths, ns)
        metrics[f"{name}/pairwise_credit"], metrics[f"{name}/pairwise_pairs"] = selection.pairwise_credit(scores, judge)
        metrics[f"{name}/kendall_tau"] = selection.kendall_tau_b(scores, judge)
    return metrics


def pooled_agreement(metrics: Mapping[str, np.ndarray], boot: Mapping[str, np.ndarray], name: str) -> dict[str, float]:
    """A scorer's pairwise agreement with the judge, pooled over every within-prompt pair the judge
    separates (as the ranked-group accuracy), with its interval: each bootstrap round's ratio of the
    resampled prompts' credits to their pairs (both are means over the same draws)."""
    point = selection.pooled_ratio(metrics[f"{name}/pairwise_credit"], metrics[f"{name}/pairwise_pairs"])
    with np.errstate(invalid="ignore", divide="ignore"):  # a round without a judged pair has no agreement: NaN
        rounds = boot[f"{name}/pairwise_credit"] / boot[f"{name}/pairwise_pairs"]
    return selection.interval(rounds, point)


def _curve(
    metrics: Mapping[str, np.ndarray], boot: Mapping[str, np.ndarray], key: str, ns: list[int]
) -> list[dict[str, float]]:
    point = np.nanmean(metrics[key], axis=0)
    return [{"n": n, **selection.interval(boot[key][:, i], float(point[i]))} for i, n in enumerate(ns)]


def _by_category(credit: np.ndarray, pairs: np.ndarray, categories: list[str]) -> dict[str, float]:
    """The pooled agreement within each prompt category."""
    out = {}
    for category in sorted(set(categories)):
        chosen = np.array([c == category for c in categories])
        out[category or "(none)"] = selection.pooled_ratio(credit[chosen], pairs[chosen])
    return out


def pool_preferences(judge: np.ndarray, lengths: np.ndarray, tie_eps: float = selection.TIE_EPS) -> Preferences:
    """The judge's preference on every within-prompt pair of the pool (values within ``tie_eps``: a tie, as
    :func:`crs.eval.bon.selection.pairwise_credit` counts them); replies in pool order, one cluster per prompt."""
    n_prompts, m = judge.shape
    i, j = np.triu_indices(m, k=1)
    offsets = (np.arange(n_prompts) * m)[:, None]
    diff = judge[:, i] - judge[:, j]
    outcomes = np.where(np.abs(diff) <= tie_eps, 0.5, (diff > 0).astype(float))
    return preferences(
        lengths.reshape(-1),
        np.repeat(np.arange(n_prompts), m),
        (offsets + i).ravel(),
        (offsets + j).ravel(),
        outcomes.ravel(),
        n_prompts,
    )


def summarize_scorers(
    metrics: Mapping[str, np.ndarray],
    boot: Mapping[str, np.ndarray],
    names: list[str],
    ns: list[int],
    categories: list[str],
) -> dict[str, Any]:
    """Each scorer's curves and agreement, each number with its paired-bootstrap interval."""
    out: dict[str, Any] = {}
    for name in names:
        entry: dict[str, Any] = {
            key: _curve(metrics, boot, f"{name}/{key}", ns) for key in ("gold", "win_rate", "length")
        }
        entry["pairwise_accuracy"] = pooled_agreement(metrics, boot, name)
        entry["kendall_tau"] = selection.interval(
            boot[f"{name}/kendall_tau"], float(np.nanmean(metrics[f"{name}/kendall_tau"]))
        )
        entry["pairwise_accuracy_by_category"] = _by_category(
            metrics[f"{name}/pairwise_credit"], metrics[f"{name}/pairwise_pairs"], categories
        )
        out[name] = entry
    return out


def compare_weights(
    cfg: CRSConfig, metrics: Mapping[str, np.ndarray], boot: Mapping[str, np.ndarray], headline: int
) -> dict[str, Any]:
    """The weight grid on the headline (best-of-m win rate): the best weight and its interval,
    every weight against it, and the smallest difference this pool detects (80% power, 5% level)."""
    grid = [w for w in cfg.bon.weights if f"{weight_name(w)}/win_rate" in metrics]
    if len(grid) < 2:
        return {}
    points = {w: float(np.nanmean(metrics[f"{weight_name(w)}/win_rate"][:, headline])) for w in grid}
    samples = {w: boot[f"{weight_name(w)}/win_rate"][:, headline] for w in grid}
    best = max(grid, key=lambda w: points[w])
    ordered = sorted(grid)
    return {
        "grid": ordered,
        "headline": {weight_name(w): points[w] for w in ordered},
        "best": {"weight": best, **selection.best_weight(samples)},
        "vs_best": {
            weight_name(w): selection.difference(samples[w], samples[best], points[w], points[best]) for w in ordered
        },
        "power": power_of_neighbours([samples[w] for w in ordered]),
    }


def _strategy_row(
    metrics: Mapping[str, np.ndarray],
    boot: Mapping[str, np.ndarray],
    headline: int,
    strategy: str,
    name: str,
    reference: str | None,
) -> dict[str, Any]:
    """One scorer's best-of-m win rate and agreement, and its paired difference from ``reference`` (sum's best
    weight)."""
    key = f"{name}/win_rate"
    point = float(np.nanmean(metrics[key][:, headline]))
    row: dict[str, Any] = {
        "strategy": strategy,
        "scorer": name,
        "weight": None,
        "best_weight_interval": None,
        "win_rate": selection.interval(boot[key][:, headline], point),
        "pairwise_accuracy": pooled_agreement(metrics, boot, name),
        "vs_sum": None,
    }
    if reference is not None:
        ref = f"{reference}/win_rate"
        row["vs_sum"] = selection.difference(
            boot[key][:, headline], boot[ref][:, headline], point, float(np.nanmean(metrics[ref][:, headline]))
        )
    return row


def compare_strategies(
    cfg: CRSConfig,
    metrics: Mapping[str, np.ndarray],
    boot: Mapping[str, np.ndarray],
    headline: int,
    weights: Mapping[str, Any],
) -> dict[str, Any]:
    """Each strategy on the headline (best-of-m win rate): ``sum`` and ``sum_per_prompt`` at their best
    weight (with the best weight's bootstrap interval), each conservative scorer; each against
    ``sum``'s best weight, paired (the same bootstrap rounds)."""
    bon = cfg.bon
    reference = weight_name(weights["best"]["weight"]) if weights else None
    rows = []
    if reference is not None:
        rows.append(
            {
                **_strategy_row(metrics, boot, headline, "sum", reference, reference),
                "weight": weights["best"]["weight"],
                "best_weight_interval": weights["best"]["interval"],
            }
        )
    grid = [w for w in bon.weights if f"{per_prompt_name(w)}/win_rate" in metrics]
    if grid:
        samples = {w: boot[f"{per_prompt_name(w)}/win_rate"][:, headline] for w in grid}
        best = max(
            grid, key=lambda w: float(np.nanmean(metrics[f"{per_prompt_name(w)}/win_rate"][:, headline]))
        )  # as compare_weights
        rows.append(
            {
                **_strategy_row(metrics, boot, headline, "sum_per_prompt", per_prompt_name(best), reference),
                "weight": best,
                "best_weight_interval": selection.best_weight(samples)["interval"],
            }
        )
    for method in CONSERVATIVE_METHODS:
        name = conservative_name(method, cfg.rl.conservative_k)
        if f"{name}/win_rate" in metrics:
            rows.append(_strategy_row(metrics, boot, headline, "conservative", name, reference))
    return {"reference": reference, "rows": rows} if rows else {}


def verdict(weights: Mapping[str, Any], m: int) -> str:
    """The weight comparison in plain words, with the study's power."""
    if not weights:
        return "No weight grid (bon.rewards lacks the preference or the absolute source)."
    best, grid = weights["best"], weights["grid"]
    low, high = best["interval"]
    ends = [weights["vs_best"][weight_name(w)] for w in (grid[0], grid[-1]) if w != best["weight"]]
    beaten = [e for e in ends if e["ci_high"] < 0]
    if low > grid[0] and high < grid[-1] and len(beaten) == len(ends):
        lead = (
            f"An interior weight wins: w = {best['weight']:g} (95% interval of the best weight {low:g}-{high:g}), "
            "and both ends are worse beyond their intervals."
        )
    elif len(beaten) < len(ends):
        lead = (
            f"The best weight, w = {best['weight']:g} (interval {low:g}-{high:g}), is not separated from at least "
            "one end of the grid."
        )
    else:
        lead = f"The best weight is w = {best['weight']:g} (interval {low:g}-{high:g})."
    metric = f"best-of-{m} win rate between neighbouring weights"
    return f"{lead} {power_line(weights['power'], 'this pool and its prompts', metric)}"


def run_bon_study(cfg: CRSConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Score the pool with every source and the judge, compare every scorer, write results and report."""
    from crs.eval.bon.instrument_figures import plot_bon_curves, plot_weight_curve
    from crs.eval.bon.instrument_report import render_bon_report

    if not is_main_process():  # scoring a pool is short: the main process does it alone and writes the files
        return {}
    bon = cfg.bon
    pool = read_pool(bon.pool)
    if is_annotations(bon.judge):
        judge_path, judge = bon.judge, judge_from_annotations(pool, bon.judge)
    else:
        judge_path = resolve_judge(
            bon.judge, pool.instructions, "bon.judge", cfg.run.allow_gold_outside_demo, "no judge"
        )
        if judge_path == "none":
            raise ConfigError(
                "bon.judge: a best-of-n study needs a judge; on prompts that are not the demo's name one (a "
                "reward-model run, python:..., annotations)"
            )
        judge, _ = score_pool(pool, RewardSourceConfig(name="judge", path=judge_path), cfg, run_dir)
    P, m = pool.shape
    logger.info(
        "best-of-n: %d prompts x %d replies, judge %s, %d reward sources, %d weights",
        P,
        m,
        judge_path,
        len(bon.rewards),
        len(bon.weights),
    )
    raw, stats = {}, {}
    for source in bon.rewards:
        raw[source.name], stats[source.name] = score_pool(pool, source, cfg, run_dir)
    scorers = build_scorers(cfg, raw, stats, judge)
    extra = build_strategy_scorers(cfg, raw, stats)
    if set(extra) & set(scorers):
        raise ConfigError(
            f"bon.rewards: a source named {sorted(set(extra) & set(scorers))} clashes with a strategy's scorer; "
            "rename it"
        )
    ns = selection.powers_of_two_up_to(m)
    # One bootstrap for every scorer, the strategies' too: their differences from sum's best weight are paired.
    metrics = per_prompt_metrics({**scorers, **extra}, judge, pool.lengths(), ns)
    boot = selection.paired_bootstrap_means(metrics, bon.n_boot, cfg.run.seed)
    weights = compare_weights(cfg, metrics, boot, len(ns) - 1)
    strategies = compare_strategies(cfg, metrics, boot, len(ns) - 1, weights)
    if strategies:
        strategies["scorers"] = summarize_scorers(metrics, boot, list(extra), ns, pool.categories)
    results = {
        "pool": {"path": bon.pool, "prompts": P, "samples": m},
        "judge": judge_path,
        "ns": ns,
        "kl_bon": [selection.kl_bon(n) for n in ns],
        "scorers": summarize_scorers(metrics, boot, list(scorers), ns, pool.categories),
        "weights": weights,
        "verdict": verdict(weights, m),
        "strategies": strategies,
        # The judge agrees with itself by construction: every other scorer, and the length-only one, on the same draws.
        "length_aware": length_aware_results(
            pool_preferences(judge, pool.lengths()),
            {name: values.reshape(-1) for name, values in scorers.items() if name != "judge"},
            bon.n_boot,
            cfg.run.seed,
        ),
    }
    write_json_atomic(run_dir / "results.json", results)
    write_text_atomic(run_dir / "report.md", render_bon_report(results))
    plot_bon_curves(results, run_dir / "bon_curves.png")
    if weights:
        plot_weight_curve(results, run_dir / "weight_curve.png")
    logger.info("%s", results["verdict"])
    mark_finished(run_dir, {"verdict": results["verdict"], "best_weight": weights.get("best", {}).get("weight")})
    return results
