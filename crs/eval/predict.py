"""The prediction stage (``rl_eval_pred.py``, ``crs predict``): every model answers the eval prompts.

:func:`predict` writes one AlpacaEval-format JSON per model (``<run>/predictions/<model>.json``);
a model whose file exists is skipped, so an interrupted run picks up where it stopped. The
sweep and the online loop make their predictions with :func:`predict_models`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from crs.config import ConfigError, CRSConfig, EvalModelConfig, load_config, save_resolved_config
from crs.data import load_examples
from crs.data.schema import PromptExample, last_user_text
from crs.eval.prediction_files import read_predictions, write_predictions
from crs.models.decoding import Generation, SamplingSettings, generate_reply_shard
from crs.models.loading import load_causal_lm, load_tokenizer
from crs.models.precision import resolve_dtype
from crs.processes import (
    gather_shards,
    is_main_process,
    place_on_device,
    process_device,
    rank_and_world,
    wait_for_everyone,
)
from crs.runs import mark_finished

logger = logging.getLogger(__name__)


def load_eval_prompts(cfg: CRSConfig) -> list[PromptExample]:
    """Every prompt of the configured eval split (no validation carve-out)."""
    prompts, _ = load_examples(
        replace(cfg.data, val_fraction=0.0, val_source=None, val_split=None), "prompts", cfg.run.seed
    )
    return prompts


def predictions_path(run_dir: Path, model_name: str) -> Path:
    """Where one model's predictions live."""
    return run_dir / "predictions" / f"{model_name}.json"


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
        max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
    )
    summary: dict[str, Any] = {"n_prompts": len(prompts), "runs": runs, "models": {}}
    for entry in settings.models:
        path = predictions_path(run_dir, entry.name)
        if path.exists():
            logger.info("%s: predictions exist, skipped", entry.name)
            continue
        started = time.perf_counter()
        model, tokenizer = load_generator(entry.path, cfg)
        rows = []
        for run in range(runs):
            outputs = generate_on_every_process(
                model,
                tokenizer,
                [p.prompt for p in prompts],
                generation,
                settings.batch_size,
                cfg.data.max_prompt_length,
                seed=cfg.run.seed + run,
                desc=f"{entry.name} run {run}",
            )
            rows += prediction_rows(prompts, outputs, entry.name, run, dataset)
        if is_main_process():
            write_predictions(path, rows)
        rate = len(rows) / (time.perf_counter() - started)
        logger.info("%s: %d replies at %.2f replies/s (model load included)", entry.name, len(rows), rate)
        summary["models"][entry.name] = {"path": entry.path, "n": len(rows), "replies_per_second": round(rate, 2)}
        del model
    wait_for_everyone()  # every file written before any process moves on (the sweep reads them next)
    if is_main_process():
        mark_finished(run_dir, summary)
    return summary


def load_generator(path: str, cfg: CRSConfig) -> tuple[Any, Any]:
    """A causal LM on this process's accelerator in ``model.dtype``, and its left-padding tokenizer."""
    model = load_causal_lm(path, dtype=resolve_dtype(cfg.model.dtype), cache_dir=cfg.model.cache_dir)
    return place_on_device(model, process_device()), load_tokenizer(path, cfg.model.cache_dir, padding_side="left")


def prediction_rows(
    prompts: list[PromptExample], outputs: list[Generation], generator: str, run: int, dataset: str
) -> list[dict[str, Any]]:
    """AlpacaEval rows, one per prompt: its ``dataset`` and ``category`` columns where it has them
    (else ``dataset``, "")."""
    return [
        {
            "instruction": last_user_text(p.prompt),
            "output": out.text,
            "generator": generator,
            "dataset": str(p.meta.get("dataset") or dataset),
            "prompt_id": p.id,
            "run": run,
            "category": str(p.meta.get("category") or ""),
            "ended_with_eos": out.ended_with_eos,
        }
        for p, out in zip(prompts, outputs)
    ]


def generate_on_every_process(
    model: Any,
    tokenizer: Any,
    prompts: list[Any],
    settings: SamplingSettings,
    batch_size: int,
    max_prompt_length: int,
    seed: int,
    desc: str,
) -> list[Generation]:
    """Replies to ``prompts`` in input order: under torchrun / accelerate each process generates
    its share of the batches and every process gets them all (the same replies as one process)."""
    shard = generate_reply_shard(
        model, tokenizer, prompts, settings, batch_size, max_prompt_length, seed, desc, rank_and_world()
    )
    replies = gather_shards(shard)
    return [replies[i] for i in range(len(prompts))]


def predict_models(
    config_path: str, eval_subset: str, seed: int, models: list[EvalModelConfig], pred_dir: Path
) -> dict[str, list[dict[str, Any]]]:
    """``models``' predictions with ``eval_subset``'s data and settings into ``pred_dir`` (existing files are kept),
    read back.

    The sweep and the online loop evaluate their runs with this."""
    pred_cfg = load_config(eval_subset, config_path)
    pred_cfg.eval_pred = replace(pred_cfg.eval_pred, models=models)
    pred_cfg.run = replace(pred_cfg.run, seed=seed)
    pred_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(pred_cfg, pred_dir / "config.resolved.yaml")  # the model list read back when scoring
    predict(pred_cfg, pred_dir, resume=True)
    return read_all_predictions(pred_dir)


def read_all_predictions(predictions_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every model's predictions, keyed by model name, aligned on (prompt_id, run)."""
    files = sorted((predictions_dir / "predictions").glob("*.json")) or sorted(predictions_dir.glob("*.json"))
    if not files:
        raise ConfigError(f"eval_rewarding.predictions_dir: no prediction files under {predictions_dir}")
    per_model = {f.stem: read_predictions(f) for f in files}
    order = listed_order(predictions_dir)  # as listed in eval_pred.models, others after
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


def prediction_models(predictions_dir: Path) -> dict[str, str]:
    """Model name -> path, in the prediction run's ``eval_pred.models`` order (empty if unknown)."""
    resolved = predictions_dir / "config.resolved.yaml"
    if not resolved.is_file():
        return {}
    try:
        loaded = yaml.safe_load(resolved.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{resolved}: not readable YAML ({err}); that prediction run's config is damaged") from None
    blocks = [b for b in (loaded if isinstance(loaded, dict) else {}).values() if isinstance(b, dict) and b]
    models = blocks[0].get("eval_pred", {}).get("models", []) if blocks else []
    return {m.get("name"): str(m.get("path", "")) for m in models if isinstance(m, dict)}


def listed_order(predictions_dir: Path) -> dict[str, int]:
    """Model name -> position in the prediction run's ``eval_pred.models`` (empty if unknown)."""
    return {name: i for i, name in enumerate(prediction_models(predictions_dir))}
