"""The scoring stage (``rl_eval_rewarding.py``, ``crs score``): score predictions, compare models, report.

:func:`score_predictions` scores every reply with every reward source (raw and
z-normalised), with combined scorers at several preference weights, and with the judge (the
gold judge, or an external judge's pairwise verdicts: :mod:`crs.eval.judges`); then builds
the head-to-head tables, agreement, rank aggregation, the human rankings
(:mod:`crs.eval.human`), the report (:mod:`crs.eval.score_report`) and plots
(:mod:`crs.eval.score_figures`). Items are (prompt, sampling run) pairs, aligned across models.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from crs.config import ConfigError, CRSConfig, EvalRewardSourceConfig, RewardSourceConfig, load_config
from crs.data.schema import last_user_text, user_prompt
from crs.demo.gold import resolve_judge
from crs.eval.human import HumanBallots, human_rankings, load_ballots
from crs.eval.judges import ExternalJudge, is_external, load_judge
from crs.eval.predict import listed_order, load_eval_prompts, prediction_models, read_all_predictions
from crs.eval.score_figures import plot_mean_scores, plot_win_rate_heatmap
from crs.eval.score_report import REFERENCE_SCORER, build_results, leaderboard_csv, main_table, render_report
from crs.io import write_json_atomic, write_text_atomic
from crs.processes import is_main_process
from crs.rl.combine import standardize, zscore_stats
from crs.rl.combined_reward import CombinedReward
from crs.rl.reward_sources import (
    RewardSource,
    build_sources,
    check_gold_sources,
    gold_reward,
    scoring_key,
    source_config,
)
from crs.rl.reward_state import run_reward_state
from crs.runs import mark_finished, set_seed

logger = logging.getLogger(__name__)


JUDGE = "gold"


def study_judge(
    cfg: CRSConfig,
    key: str,
    spec: str,
    eval_subset: str,
    fallback: list[EvalRewardSourceConfig],
    more_prompts: Sequence[str] = (),
) -> str:
    """The judge (a reward source path) of a sweep or an online loop, decided before anything trains.

    ``auto`` is gold when the eval subset's prompts (and ``more_prompts``, which it also
    judges) are all the demo's, else the first of ``fallback``; an explicit gold is refused on
    other prompts (:func:`crs.demo.gold.resolve_judge`). No judge at all is a ConfigError."""
    texts = [last_user_text(p.prompt) for p in load_eval_prompts(load_config(eval_subset, cfg.config_path))]
    instead = f"the first reward model ({fallback[0].name}) judges" if fallback else "name one"
    resolved = resolve_judge(spec, texts + list(more_prompts), key, cfg.run.allow_gold_outside_demo, instead)
    if resolved != "none":
        return resolved
    if not fallback:
        raise ConfigError(f"{key}: no judge for these prompts: name one (a reward-model run or python:module:function)")
    return fallback[0].path


def judge_replies(judge: RewardSource, per_model: dict[str, list[dict[str, Any]]]) -> dict[str, np.ndarray]:
    """The judge's score of every model's replies, per prompt (prediction rows as :func:`predict` writes them)."""
    return {
        m: judge.score([user_prompt(r["instruction"]) for r in rows], [r["output"] for r in rows]).numpy()
        for m, rows in per_model.items()
    }


class SourceScores:
    """Each reward source (a path with its length keys: :func:`crs.rl.reward_sources.scoring_key`) is loaded and
    scores every model's predictions once, however many scorers (plain, combined, an RL run's own reward) use it."""

    def __init__(self, per_model: dict[str, list[dict[str, Any]]], model_cfg: Any, batch_size: int) -> None:
        self.per_model, self.model_cfg, self.batch_size = per_model, model_cfg, batch_size
        self.sources: dict[tuple[Any, ...], RewardSource] = {}
        self.raw: dict[tuple[Any, ...], dict[str, torch.Tensor]] = {}

    def get(self, spec: Any) -> tuple[RewardSource, dict[str, torch.Tensor]]:
        """The source of ``spec`` (a source entry: name, path, length keys), with its saved or calibrated
        statistics if any, and its scores per model (length-calibrated where it asks for that)."""
        key = scoring_key(spec)
        if key not in self.sources:
            source = build_sources([source_config(spec, name=spec.path)], self.model_cfg)[0]  # shared: named by path
            self.raw[key] = {m: _score_in_batches(source, rows, self.batch_size) for m, rows in self.per_model.items()}
            self.sources[key] = source
        return self.sources[key], self.raw[key]

    def stats(self, spec: Any) -> dict[str, float]:
        """The z-scale of a source: its saved (or calibration) statistics, else pooled over every model's replies."""
        source, raw = self.get(spec)
        return source.stats or _pooled_stats(raw)


def _combined_scores(
    terms: list[tuple[RewardSourceConfig, dict[str, float] | None]],
    cache: SourceScores,
    reward_clip: float | None,
    missing_eos_penalty: float | None,
    eos: dict[str, torch.Tensor],
    combine: tuple[str, str, float] = ("sum", "min", 1.0),
) -> dict[str, list[float]]:
    """A combined scorer's score of every model's replies, by :meth:`CombinedReward.combine`.

    ``terms`` are (source config with name, path, weight, normalize; the statistics to use, or
    None for the source's own, see :meth:`SourceScores.stats`); ``combine`` the strategy,
    conservative method and k (``rl.combine``, ``rl.conservative``, ``rl.conservative_k``).
    """
    sources = [
        replace(cache.get(c)[0], name=c.name, weight=c.weight, normalize=c.normalize, stats=stats or cache.stats(c))
        for c, stats in terms
    ]
    combined = CombinedReward(sources, reward_clip, missing_eos_penalty, None, *combine)
    return {
        m: combined.combine({c.name: cache.get(c)[1][m] for c, _ in terms}, eos[m]).combined.tolist()
        for m in cache.per_model
    }


def _training_reward(
    run_path: str,
) -> tuple[list[RewardSourceConfig], float | None, float | None, dict[str, Any], tuple[str, str, float]] | None:
    """An RL run's reward (its ``rl.rewards``, clip, EOS penalty, the statistics its last checkpoint
    froze, and its combination strategy), or None when ``run_path`` is not an RL run that optimised
    one (PPO, GRPO, RLOO) or optimised one evaluation cannot recompute (``sum_per_prompt``)."""
    saved = Path(run_path) / "config.resolved.yaml"
    if not saved.is_file():
        return None
    blocks = [
        b for b in (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).values() if isinstance(b, dict) and b
    ]
    rl = blocks[0].get("rl") if blocks else None
    if not isinstance(rl, dict) or not rl.get("rewards") or not (Path(run_path) / "checkpoints").is_dir():
        return None
    if rl.get("algorithm") == "dpo":  # DPO learned from preference pairs: it optimised no reward
        return None
    keys = {f.name for f in fields(RewardSourceConfig)}
    configs = [RewardSourceConfig(**{k: v for k, v in r.items() if k in keys}) for r in rl["rewards"]]
    frozen = run_reward_state(run_path)
    combine = (rl.get("combine", "sum"), rl.get("conservative", "min"), float(rl.get("conservative_k", 1.0)))
    if combine[0] == "sum_per_prompt":  # standardised within groups of replies; evaluation has one per prompt and model
        logger.info(
            "%s optimised rl.combine=sum_per_prompt: evaluation has one reply per prompt, so no 'reward of' scorer",
            run_path,
        )
        return None
    return [c for c in configs if c.weight != 0], rl.get("reward_clip"), rl.get("missing_eos_penalty"), frozen, combine


def score_all(
    per_model: dict[str, list[dict[str, Any]]], cfg: CRSConfig, model_paths: dict[str, str] | None = None
) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, list[float]]]]:
    """Per-item scores: (scorers, raw). scorers[name][model] holds the judge, each reward
    source on its z-scale, the combined scorers and every evaluated RL run's own training
    reward; raw[source][model] the sources' raw outputs. The gold judge (``eval_rewarding.judge``
    gold, or auto on the demo's prompts) and gold reward sources only score the demo's prompts.

    Combined scorers and training rewards go through :meth:`CombinedReward.combine`, the
    formula PPO optimises: the same normalisation, weights, clip and missing-EOS penalty.
    (A z-score is monotone, so a source's raw and normalised scores give the same win rates.)
    """
    settings = cfg.eval_rewarding
    scores: dict[str, dict[str, list[float]]] = {}
    raw_scores: dict[str, dict[str, list[float]]] = {}
    instructions = list(
        dict.fromkeys(r["instruction"] for rows in per_model.values() for r in rows)
    )  # each prompt once
    allow_gold = cfg.run.allow_gold_outside_demo
    check_gold_sources(settings.rewards, instructions, "eval_rewarding.rewards", allow_gold)
    instead = (
        f"the first reward source ({settings.rewards[0].name}) is the reference scorer"
        if settings.rewards
        else "no judge"
    )
    if resolve_judge(settings.judge, instructions, "eval_rewarding.judge", allow_gold, instead) == "gold":
        scores[JUDGE] = {
            m: gold_reward([user_prompt(r["instruction"]) for r in rows], [r["output"] for r in rows])
            for m, rows in per_model.items()
        }
    cache = SourceScores(per_model, cfg.model, settings.batch_size)
    eos = {m: torch.tensor([bool(r.get("ended_with_eos", True)) for r in rows]) for m, rows in per_model.items()}
    names = [spec.name for spec in settings.rewards]
    if len(set(names)) != len(names):
        raise ConfigError(f"eval_rewarding.rewards: names must be distinct; got {names}")
    specs = {spec.name: spec for spec in settings.rewards}
    for name, spec in specs.items():
        raw = cache.get(spec)[1]
        stats = cache.stats(spec)
        raw_scores[name] = {m: v.tolist() for m, v in raw.items()}
        scores[name] = {m: standardize(v, stats).tolist() for m, v in raw.items()}
    for combo in settings.combined:  # their weights name known sources (checked with the config)
        terms = [(source_config(specs[n], weight=w), None) for n, w in combo.weights.items()]
        scores[combo.name] = _combined_scores(terms, cache, combo.reward_clip, combo.missing_eos_penalty, eos)
    if settings.score_with_training_reward:
        for model, path in (model_paths or {}).items():
            training = _training_reward(path) if model in per_model else None
            if training is None:
                continue
            configs, clip, penalty, frozen, combine = training
            terms = [(c, (frozen.get(c.name) or {}).get("stats")) for c in configs]  # the scale PPO froze
            scores[f"reward of {model}"] = _combined_scores(terms, cache, clip, penalty, eos, combine)
    return scores, raw_scores


def _score_in_batches(source: RewardSource, rows: list[dict[str, Any]], batch_size: int) -> torch.Tensor:
    prompts, replies = [user_prompt(r["instruction"]) for r in rows], [r["output"] for r in rows]
    return source.score_in_batches(prompts, replies, batch_size)


def _pooled_stats(raw: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean and std of a source over every model's replies (:func:`crs.rl.combine.zscore_stats`: population std)."""
    return zscore_stats(torch.cat(list(raw.values())))


def score_predictions(cfg: CRSConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Score predictions, compare models, and write results.json, report.md and plots.

    Under torchrun / accelerate the main process scores alone (on its accelerator), and the
    others end at once: scoring is short next to generating, and one process writes the files.
    """
    if not is_main_process():
        return {}
    settings = cfg.eval_rewarding
    set_seed(cfg.run.seed)
    predictions_dir = Path(settings.predictions_dir)
    per_model = read_all_predictions(predictions_dir)
    missing = [str(name) for name in listed_order(predictions_dir) if name not in per_model]
    if missing and not settings.allow_missing_models:
        raise ConfigError(
            f"eval_rewarding.predictions_dir {predictions_dir} is missing the predictions of {', '.join(missing)} "
            "(listed in its eval_pred.models): finish that run (rl_eval_pred.py --resume), or set "
            "eval_rewarding.allow_missing_models: true to score the others"
        )
    if missing:
        logger.warning(
            "no predictions of %s (eval_rewarding.allow_missing_models): scoring %s",
            ", ".join(missing),
            ", ".join(per_model),
        )
    if settings.reference_model is not None and settings.reference_model not in per_model:
        raise ConfigError(
            f"eval_rewarding.reference_model {settings.reference_model!r} has no predictions in {predictions_dir}; "
            f"known models: {', '.join(per_model)} (or null: the first)"
        )
    models = list(per_model)
    if len(models) < 2:
        raise ConfigError(
            f"eval_rewarding.predictions_dir {predictions_dir} holds the predictions of one model ({models[0]}): win "
            "rates compare two or more; list more models in the prediction run's eval_pred.models (e.g. the SFT "
            "policy beside the RL run)"
        )
    first = per_model[models[0]]
    item_ids = [f"{r['prompt_id']}#{r['run']}" for r in first]
    external, ballots = read_judge_and_ballots(cfg, per_model, item_ids)  # every input checked before any scoring
    scores, raw_scores = score_all(per_model, cfg, prediction_models(Path(settings.predictions_dir)))
    if not scores and external is None:
        raise ConfigError("eval_rewarding: nothing to score with (judge: none and no rewards)")
    judge = _judge_name(external, scores)
    results = build_results(
        scores,
        {m: [r["output"] for r in rows] for m, rows in per_model.items()},
        judge=judge,
        prompt_ids=item_ids,
        categories=prompt_groups(first, settings.group_by),
        reference=settings.reference_model,
        models=models,
        n_boot=settings.n_boot,
        seed=cfg.run.seed,
        pairwise_judge=external.verdicts if external else None,
        tie_break=settings.tie_break,
        judge_role=_judge_role(external, judge),
    )
    _add_judge_and_human_results(results, external, ballots, settings.tie_break)
    per_item = [
        {
            "prompt_id": r["prompt_id"],
            "run": r["run"],
            "model": m,
            "output": per_model[m][i]["output"],
            "dataset": r.get("dataset", ""),
            "category": r.get("category", ""),
            **{s: scores[s][m][i] for s in scores},
            **{f"{s} (raw)": raw_scores[s][m][i] for s in raw_scores},
        }
        for m in models
        for i, r in enumerate(first)
    ]
    write_json_atomic(run_dir / "scores.json", per_item)
    write_json_atomic(run_dir / "results.json", results)
    report = render_report(results)
    write_text_atomic(run_dir / "report.md", report)
    write_leaderboard_csv(results, run_dir / "leaderboard.csv")
    plot_win_rate_heatmap(results, judge, run_dir / "win_rates.png")
    if results["score_scorers"]:
        plot_mean_scores(results, run_dir / "mean_scores.png")
    tables = "\n\n".join(f"### {s}\n{main_table(results, s)}" for s in results["scorers"])
    print(f"\nWin rates (row model beats column model, % of {len(item_ids)} prompts):\n\n{tables}\n")
    print(f"full report: {run_dir / 'report.md'}")
    mark_finished(run_dir, {"models": models, "n_items": len(item_ids)})
    return results


def read_judge_and_ballots(
    cfg: CRSConfig, per_model: dict[str, list[dict[str, Any]]], item_ids: list[str]
) -> tuple[ExternalJudge | None, HumanBallots | None]:
    """The external judge's verdicts and the human ballots, read and checked (a bad file
    stops the run here, in one line, before any reply is scored); None where not configured."""
    settings = cfg.eval_rewarding
    external = load_judge(settings.judge, per_model, item_ids) if is_external(settings.judge) else None
    ballots = load_ballots(settings.human_rankings) if settings.human_rankings else None
    if ballots is not None:
        unknown = [m for m in ballots.models if m not in per_model]
        if unknown:
            logger.warning(
                "eval_rewarding.human_rankings ranks models without predictions here: %s", ", ".join(unknown)
            )
    return external, ballots


def _judge_name(external: ExternalJudge | None, scores: dict[str, Any]) -> str:
    """The external judge (renamed ``<name> (judge)`` if a scorer has its name), else the gold
    judge, else the first scorer."""
    if external is not None:
        if external.name in scores:
            external.name = f"{external.name} (judge)"
        return external.name
    return JUDGE if JUDGE in scores else next(iter(scores))


def _judge_role(external: ExternalJudge | None, judge: str) -> str:
    """What the report calls the judge: the external one is a pairwise judge, gold the gold
    judge; otherwise no judge applied and the first reward source stands in as the reference scorer."""
    return "pairwise judge" if external is not None else "gold judge" if judge == JUDGE else REFERENCE_SCORER


def prompt_groups(rows: list[dict[str, Any]], group_by: str) -> list[str]:
    """What each prediction is grouped by in the per-category tables: its ``category`` or its
    ``dataset``; ``auto``: category where any row has one, else dataset; "all" where empty."""
    if group_by == "auto":
        group_by = "category" if any(r.get("category") for r in rows) else "dataset"
    return [str(r.get(group_by) or "all") for r in rows]


def _add_judge_and_human_results(
    results: dict[str, Any], external: ExternalJudge | None, ballots: HumanBallots | None, tie_break: str
) -> None:
    if external is not None:
        results["judge_source"] = external.summary
    if ballots is not None:
        results["human_rankings"] = human_rankings(ballots, tie_break, results["models"])


def write_leaderboard_csv(results: dict[str, Any], path: Path) -> None:
    """``leaderboard.csv`` in AlpacaEval's layout (:func:`crs.eval.score_report.leaderboard_csv`)."""
    write_text_atomic(path, leaderboard_csv(results))
