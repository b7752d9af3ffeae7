"""The two evaluation stages: generate predictions, then score and compare them.

``rl_eval_pred.py`` (:func:`predict`) writes one AlpacaEval-format JSON per model
(``<run>/predictions/<model>.json``); a model whose file exists is skipped, so an
interrupted run picks up where it stopped.

``rl_eval_rewarding.py`` (:func:`score_predictions`) scores every reply with every
reward source (raw and z-normalised), with combined scorers at several preference
weights, and with the gold judge; then builds the head-to-head tables, agreement,
rank aggregation and plots (:mod:`crs.report`). Items are (prompt, sampling run)
pairs, aligned across models.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from crs.config import ConfigError, CRSConfig
from crs.data.schema import PromptExample, last_user_text, user_prompt
from crs.decoding import SamplingSettings, generate_replies
from crs.evaluation import read_predictions, write_predictions
from crs.human_eval import HumanBallots, human_rankings, load_ballots
from crs.io import write_json_atomic, write_text_atomic
from crs.judges import ExternalJudge, is_external, load_judge
from crs.models import load_causal_lm, load_tokenizer, resolve_dtype
from crs.runs import mark_finished, set_seed

logger = logging.getLogger(__name__)

JUDGE = "gold"


def load_eval_prompts(cfg: CRSConfig) -> list[PromptExample]:
    """Every prompt of the configured eval split (no validation carve-out)."""
    from crs.data import load_examples

    prompts, _ = load_examples(replace(cfg.data, val_fraction=0.0, val_source=None, val_split=None), "prompts", cfg.run.seed)
    return prompts


def predictions_path(run_dir: Path, model_name: str) -> Path:
    """Where one model's predictions live."""
    return run_dir / "predictions" / f"{model_name}.json"


# --------------------------------------------------------------------------- rl_eval_pred


def predict(cfg: CRSConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Generate replies to the eval prompts with every configured model.

    Each row's ``dataset`` and ``category`` are the prompt file's own columns where it has
    them (else ``<source file>/<split>`` and empty)."""
    settings = cfg.eval_pred
    if not settings.models:
        raise ConfigError("eval_pred.models is empty: list the models to evaluate ({name, path})")
    names = [m.name for m in settings.models]
    if len(set(names)) != len(names) or any(not n or "/" in n for n in names):
        raise ConfigError(f"eval_pred.models: names must be distinct, non-empty and contain no '/': {names}")
    prompts = load_eval_prompts(cfg)
    dataset = f"{Path(cfg.data.source).name}/{cfg.data.split}"
    runs = settings.num_runs if settings.do_sample else 1
    generation = SamplingSettings(
        max_new_tokens=settings.max_new_tokens, do_sample=settings.do_sample,
        temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
    )
    summary: dict[str, Any] = {"n_prompts": len(prompts), "runs": runs, "models": {}}
    for entry in settings.models:
        path = predictions_path(run_dir, entry.name)
        if path.exists():
            logger.info("%s: predictions exist, skipped", entry.name)
            continue
        model = load_causal_lm(entry.path, dtype=resolve_dtype(cfg.model.dtype), cache_dir=cfg.model.cache_dir)
        tokenizer = load_tokenizer(entry.path, cfg.model.cache_dir, padding_side="left")
        rows = []
        for run in range(runs):
            outputs = generate_replies(
                model, tokenizer, [p.prompt for p in prompts], generation, settings.batch_size,
                cfg.data.max_prompt_length, seed=cfg.run.seed + run, desc=f"{entry.name} run {run}",
            )
            rows += [
                {"instruction": last_user_text(p.prompt), "output": out.text, "generator": entry.name,
                 "dataset": str(p.meta.get("dataset") or dataset), "prompt_id": p.id, "run": run,
                 "category": str(p.meta.get("category") or ""),
                 "ended_with_eos": out.ended_with_eos}
                for p, out in zip(prompts, outputs)
            ]
        write_predictions(path, rows)
        summary["models"][entry.name] = {"path": entry.path, "n": len(rows)}
        del model
    mark_finished(run_dir, summary)
    return summary


# --------------------------------------------------------------------------- rl_eval_rewarding


def read_all_predictions(predictions_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every model's predictions, keyed by model name, aligned on (prompt_id, run)."""
    files = sorted((predictions_dir / "predictions").glob("*.json")) or sorted(predictions_dir.glob("*.json"))
    if not files:
        raise ConfigError(f"eval_rewarding.predictions_dir: no prediction files under {predictions_dir}")
    per_model = {f.stem: read_predictions(f) for f in files}
    order = _listed_order(predictions_dir)  # as listed in eval_pred.models, others after
    per_model = dict(sorted(per_model.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    keys = [{(r["prompt_id"], r["run"]) for r in rows} for rows in per_model.values()]
    common = set.intersection(*keys)
    if not common:
        counts = ", ".join(f"{name}: {len(k)}" for name, k in zip(per_model, keys))
        raise ConfigError(
            f"eval_rewarding.predictions_dir: the prediction files under {predictions_dir} have no prompt in common "
            f"(items per model: {counts}); models are compared on the same prompts: generate them in one "
            "rl_eval_pred.py run on one data split"
        )
    if any(k != common for k in keys):
        logger.warning("models answered different prompts; comparing the %d they share", len(common))
    order = sorted(common)
    for name, rows in per_model.items():
        by_key = {(r["prompt_id"], r["run"]): r for r in rows}
        per_model[name] = [by_key[k] for k in order]
    return per_model


def _listed_order(predictions_dir: Path) -> dict[str, int]:
    """Model name -> position in the prediction run's ``eval_pred.models`` (empty if unknown)."""
    import yaml

    resolved = predictions_dir / "config.resolved.yaml"
    if not resolved.is_file():
        return {}
    try:
        loaded = yaml.safe_load(resolved.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{resolved}: not readable YAML ({err}); that prediction run's config is damaged") from None
    blocks = [b for b in (loaded if isinstance(loaded, dict) else {}).values() if isinstance(b, dict) and b]
    models = blocks[0].get("eval_pred", {}).get("models", []) if blocks else []
    return {m.get("name"): i for i, m in enumerate(models) if isinstance(m, dict)}


def score_all(
    per_model: dict[str, list[dict[str, Any]]], cfg: CRSConfig
) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, list[float]]]]:
    """Per-item scores: (scorers, raw). scorers[name][model] holds the judge, each source
    z-normalised and the combined scorers; raw[source][model] the sources' raw outputs.
    (A z-score is monotone, so raw and normalised scores give the same win rates.)"""
    from crs.rewards import build_sources, gold_reward

    settings = cfg.eval_rewarding
    scores: dict[str, dict[str, list[float]]] = {}
    raw_scores: dict[str, dict[str, list[float]]] = {}
    if settings.judge == "gold":
        scores[JUDGE] = {
            m: gold_reward([user_prompt(r["instruction"]) for r in rows], [r["output"] for r in rows])
            for m, rows in per_model.items()
        }
    sources = build_sources([replace(s, weight=1.0) for s in settings.rewards], cfg.model)
    normalized: dict[str, dict[str, torch.Tensor]] = {}
    for source in sources:
        raw = {m: _score_in_batches(source, rows, settings.batch_size) for m, rows in per_model.items()}
        # One z-scale per source across all models: the source's saved stats, else these replies.
        stats = source.stats or _pooled_stats(raw)
        normalized[source.name] = {m: (v - stats["mean"]) / max(stats["std"], 1e-6) for m, v in raw.items()}
        raw_scores[source.name] = {m: v.tolist() for m, v in raw.items()}
        scores[source.name] = {m: v.tolist() for m, v in normalized[source.name].items()}
    if len(sources) >= 2:
        preference, absolute = sources[0].name, sources[1].name
        for w in settings.combined_weights:
            scores[f"crs w={w:g}"] = {
                m: (w * normalized[preference][m] + (1 - w) * normalized[absolute][m]).tolist() for m in per_model
            }
    return scores, raw_scores


def _score_in_batches(source: Any, rows: list[dict[str, Any]], batch_size: int) -> torch.Tensor:
    parts = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        parts.append(source.score([user_prompt(r["instruction"]) for r in chunk], [r["output"] for r in chunk]))
    return torch.cat(parts)


def _pooled_stats(raw: dict[str, torch.Tensor]) -> dict[str, float]:
    pooled = torch.cat(list(raw.values()))
    return {"mean": float(pooled.mean()), "std": float(pooled.std())}


def score_predictions(cfg: CRSConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Score predictions, compare models, and write results.json, report.md and plots."""
    from crs.report import build_results, main_table, plot_mean_scores, plot_win_rate_heatmap, render_report

    settings = cfg.eval_rewarding
    set_seed(cfg.run.seed)
    predictions_dir = Path(settings.predictions_dir)
    per_model = read_all_predictions(predictions_dir)
    missing = [str(name) for name in _listed_order(predictions_dir) if name not in per_model]
    if missing and not settings.allow_missing_models:
        raise ConfigError(
            f"eval_rewarding.predictions_dir {predictions_dir} is missing the predictions of {', '.join(missing)} "
            "(listed in its eval_pred.models): finish that run (rl_eval_pred.py --resume), or set "
            "eval_rewarding.allow_missing_models: true to score the others"
        )
    if missing:
        logger.warning("no predictions of %s (eval_rewarding.allow_missing_models): scoring %s", ", ".join(missing), ", ".join(per_model))
    if settings.reference_model is not None and settings.reference_model not in per_model:
        raise ConfigError(
            f"eval_rewarding.reference_model {settings.reference_model!r} has no predictions in {predictions_dir}; "
            f"known models: {', '.join(per_model)} (or null: the first)"
        )
    models = list(per_model)
    first = per_model[models[0]]
    item_ids = [f"{r['prompt_id']}#{r['run']}" for r in first]
    external, ballots = read_judge_and_ballots(cfg, per_model, item_ids)  # every input checked before any scoring
    scores, raw_scores = score_all(per_model, cfg)
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
    )
    _add_judge_and_human_results(results, external, ballots, settings.tie_break)
    per_item = [
        {"prompt_id": r["prompt_id"], "run": r["run"], "model": m, "output": per_model[m][i]["output"],
         "dataset": r.get("dataset", ""), "category": r.get("category", ""),
         **{s: scores[s][m][i] for s in scores}, **{f"{s} (raw)": raw_scores[s][m][i] for s in raw_scores}}
        for m in models for i, r in enumerate(first)
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
            logger.warning("eval_rewarding.human_rankings ranks models without predictions here: %s", ", ".join(unknown))
    return external, ballots


def _judge_name(external: ExternalJudge | None, scores: dict[str, Any]) -> str:
    """The external judge (renamed ``<name> (judge)`` if a scorer has its name), else the gold
    judge, else the first scorer."""
    if external is not None:
        if external.name in scores:
            external.name = f"{external.name} (judge)"
        return external.name
    return JUDGE if JUDGE in scores else next(iter(scores))


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
    """``leaderboard.csv`` in AlpacaEval's layout (:func:`crs.report.leaderboard_csv`)."""
    from crs.report import leaderboard_csv

    write_text_atomic(path, leaderboard_csv(results))
