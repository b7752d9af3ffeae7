"""The pool of a best-of-n study (``crs pool``): every prompt answered ``bon.samples`` times by one policy.

A pool is made once and judged through any number of scorers (:mod:`crs.eval.bon`): every
candidate reward is compared on the very same replies, so what separates two scorers is the
scorers, not the sampling. The pool is written as one AlpacaEval outputs file per sample index
(``<run>/samples/sample_000.json`` ...), the way best-of-n pools are commonly published: an
interrupted run keeps the samples it finished and makes only the others.

:func:`read_pool` also reads pools made elsewhere: a folder of AlpacaEval outputs files (one
per sample index, rows lined up by prompt), or one JSON / JSONL file with a list of candidates
per prompt (``{"instruction": ..., "outputs": [...]}``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from crs.config import ConfigError, CRSConfig
from crs.data.adapters import prompt_id
from crs.data.schema import DataError, PromptExample, user_prompt
from crs.eval.predict import generate_on_every_process, load_eval_prompts, load_generator, prediction_rows
from crs.eval.predictions import read_predictions, write_predictions
from crs.io import iter_jsonl
from crs.models.decoding import SamplingSettings
from crs.processes import is_main_process, wait_for_everyone
from crs.runs import mark_finished

logger = logging.getLogger(__name__)

SAMPLES_DIR = "samples"


@dataclass
class Pool:
    """P prompts with m replies each, lined up: ``replies[p][k]`` is sample k of prompt p."""

    prompt_ids: list[str]
    instructions: list[str]
    categories: list[str]
    replies: list[list[str]]

    @property
    def shape(self) -> tuple[int, int]:
        """(prompts, replies per prompt)."""
        return len(self.replies), len(self.replies[0])

    def lengths(self) -> np.ndarray:
        """(P, m) reply lengths in characters (as AlpacaEval counts them)."""
        return np.array([[len(r) for r in row] for row in self.replies], dtype=float)


def sample_path(run_dir: Path, sample: int) -> Path:
    """Where sample ``sample`` (0-based) of every prompt lives."""
    return run_dir / SAMPLES_DIR / f"sample_{sample:03d}.json"


def pool_prompts(cfg: CRSConfig) -> list[PromptExample]:
    """The prompts of every split in ``bon.splits`` (``data.split`` when empty), each once."""
    prompts: dict[str, PromptExample] = {}
    for split in cfg.bon.splits or [cfg.data.split]:
        for prompt in load_eval_prompts(replace(cfg, data=replace(cfg.data, split=split))):
            prompts.setdefault(prompt.id, prompt)
    return list(prompts.values())


def make_pool(cfg: CRSConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Answer every prompt ``bon.samples`` times with ``bon.policy``; one file per sample index.

    Sample k samples with seed ``run.seed + k`` (each batch its own seed from it), so a pool
    made in one go, resumed, or made by several processes holds the same replies.
    """
    bon, decoding = cfg.bon, cfg.eval_pred
    prompts = pool_prompts(cfg)
    settings = SamplingSettings(decoding.max_new_tokens, do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p, top_k=decoding.top_k)
    todo = [k for k in range(bon.samples) if not sample_path(run_dir, k).exists()]
    logger.info("pool: %d prompts (splits %s) x %d samples from %s; %d to make", len(prompts), bon.splits or [cfg.data.split], bon.samples, bon.policy, len(todo))
    started, made = time.perf_counter(), 0
    if todo:
        model, tokenizer = load_generator(bon.policy, cfg)
        dataset = Path(cfg.data.source).name
        for k in todo:
            outputs = generate_on_every_process(model, tokenizer, [p.prompt for p in prompts], settings, bon.batch_size,
                                                cfg.data.max_prompt_length, seed=cfg.run.seed + k, desc=f"sample {k + 1}/{bon.samples}")
            if is_main_process():
                write_predictions(sample_path(run_dir, k), prediction_rows(prompts, outputs, Path(bon.policy).name, k, dataset))
            made += len(outputs)
    seconds = time.perf_counter() - started
    summary = {"prompts": len(prompts), "samples": bon.samples, "policy": bon.policy, "splits": bon.splits or [cfg.data.split],
               "replies_made": made, "seconds": round(seconds, 1), "replies_per_second": round(made / seconds, 2) if made else None}
    if made:
        logger.info("pool: %d replies in %.0f s (%.2f replies/s, model load included)", made, seconds, made / seconds)
    wait_for_everyone()
    if is_main_process():
        mark_finished(run_dir, summary)
    return summary


# --------------------------------------------------------------------------- reading a pool


def read_pool(path: str | Path) -> Pool:
    """A pool from a ``crs pool`` run, a folder of AlpacaEval outputs files, or one JSON / JSONL file."""
    path = Path(path)
    if path.is_dir():
        files = sorted((path / SAMPLES_DIR).glob("*.json")) or sorted(path.glob("*.json"))
        if len(files) < 2:
            raise ConfigError(f"bon.pool {path}: found {len(files)} outputs file(s); a pool needs at least 2 samples (one file each)")
        return _pool_from_files(files)
    if path.is_file():
        return _pool_from_candidates(path)
    raise ConfigError(f"bon.pool {path}: no such file or folder; make it with `crs pool`, or point at a folder of AlpacaEval outputs files")


def _pool_from_files(files: list[Path]) -> Pool:
    """One AlpacaEval outputs file per sample index, lined up by prompt id (ids derived from the instruction where absent)."""
    samples = []
    for file in files:
        rows = read_predictions(file)
        by_id = {r["prompt_id"]: r for r in rows}
        if len(by_id) != len(rows):
            raise DataError(f"{file}: {len(rows) - len(by_id)} prompt(s) answered twice; a pool file holds one reply per prompt")
        samples.append(by_id)
    common = [pid for pid in samples[0] if all(pid in s for s in samples[1:])]
    if not common:
        raise DataError(f"{files[0].parent}: the outputs files share no prompt; each must answer the same prompts")
    if any(len(s) != len(common) for s in samples):
        logger.warning("%s: the outputs files answer different prompts; the pool keeps the %d all of them answer", files[0].parent, len(common))
    first = samples[0]
    return Pool(
        prompt_ids=common,
        instructions=[first[pid]["instruction"] for pid in common],
        categories=[str(first[pid].get("category") or "") for pid in common],
        replies=[[s[pid]["output"] for s in samples] for pid in common],
    )


def _pool_from_candidates(path: Path) -> Pool:
    """One row per prompt: ``instruction`` (or ``prompt``), ``outputs`` (m replies, the same m on every row)."""
    if path.suffix in (".jsonl", ".gz"):
        rows = [row for _, row in iter_jsonl(path)]
    else:
        rows = json.loads(path.read_text(encoding="utf-8"))
    pool = Pool([], [], [], [])
    for index, row in enumerate(rows):
        text = row.get("instruction", row.get("prompt")) if isinstance(row, dict) else None
        outputs = row.get("outputs") if isinstance(row, dict) else None
        if not isinstance(text, str) or not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
            raise DataError(f"{path}: row {index}: expected {{instruction, outputs: [replies]}} with text values")
        if pool.replies and len(outputs) != len(pool.replies[0]):
            raise DataError(f"{path}: row {index} has {len(outputs)} replies, row 0 has {len(pool.replies[0])}: a pool has m replies per prompt")
        pool.prompt_ids.append(str(row.get("prompt_id") or prompt_id(user_prompt(text))))
        pool.instructions.append(text)
        pool.categories.append(str(row.get("category") or ""))
        pool.replies.append(list(outputs))
    if not pool.replies or len(pool.replies[0]) < 2:
        raise DataError(f"{path}: a pool needs at least one prompt with 2 or more replies")
    return pool
