"""The pool of a best-of-n study (``crs pool``): every prompt answered ``bon.samples`` times by one policy.

A pool is made once and judged through any number of scorers (:mod:`crs.eval.bon.instrument`): every
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
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from crs.config import ConfigError, CRSConfig
from crs.data.adapters import prompt_id
from crs.data.schema import DataError, PromptExample, user_prompt
from crs.eval.predict import generate_on_every_process, load_eval_prompts, load_generator, prediction_rows
from crs.eval.prediction_files import read_predictions, write_predictions
from crs.io import JsonLinesError, iter_jsonl
from crs.models.decoding import SamplingSettings
from crs.processes import is_main_process, wait_for_everyone
from crs.rm.length_metrics import reply_lengths
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
    # Sample k's generator name, where every sample's file names its own (AlpacaEval's ``model.0``, ``model.1``...).
    sample_names: list[str] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(prompts, replies per prompt)."""
        return len(self.replies), len(self.replies[0])

    def lengths(self) -> np.ndarray:
        """(P, m) reply lengths in characters (as AlpacaEval counts them)."""
        return np.array([reply_lengths(row) for row in self.replies], dtype=float)

    def check_finite(self, scores: np.ndarray, scorer: str) -> None:
        """Refuse a scorer's NaN or infinite score (a :class:`DataError` naming ``scorer``, the prompt and the
        reply)."""
        bad = np.argwhere(~np.isfinite(scores))
        if len(bad):
            p, k = (int(i) for i in bad[0])
            raise DataError(
                f"{scorer} gave {len(bad)} of {scores.size} pool replies a non-finite score; the first: "
                f"{scores[p, k]} for sample {k} of prompt {self.prompt_ids[p]} ({_preview(self.instructions[p])} -> "
                f"{_preview(self.replies[p][k])}); every reply needs a finite score: fix the scorer"
            )


def _preview(text: str, limit: int = 60) -> str:
    """A text shortened for an error message, quoted."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


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
    settings = SamplingSettings(
        decoding.max_new_tokens,
        do_sample=True,
        temperature=decoding.temperature,
        top_p=decoding.top_p,
        top_k=decoding.top_k,
    )
    todo = [k for k in range(bon.samples) if not sample_path(run_dir, k).exists()]
    logger.info(
        "pool: %d prompts (splits %s) x %d samples from %s; %d to make",
        len(prompts),
        bon.splits or [cfg.data.split],
        bon.samples,
        bon.policy,
        len(todo),
    )
    started, made = time.perf_counter(), 0
    if todo:
        model, tokenizer = load_generator(bon.policy, cfg)
        dataset = Path(cfg.data.source).name
        for k in todo:
            outputs = generate_on_every_process(
                model,
                tokenizer,
                [p.prompt for p in prompts],
                settings,
                bon.batch_size,
                cfg.data.max_prompt_length,
                seed=cfg.run.seed + k,
                desc=f"sample {k + 1}/{bon.samples}",
            )
            if is_main_process():
                write_predictions(
                    sample_path(run_dir, k), prediction_rows(prompts, outputs, Path(bon.policy).name, k, dataset)
                )
            made += len(outputs)
    seconds = time.perf_counter() - started
    summary = {
        "prompts": len(prompts),
        "samples": bon.samples,
        "policy": bon.policy,
        "splits": bon.splits or [cfg.data.split],
        "replies_made": made,
        "seconds": round(seconds, 1),
        "replies_per_second": round(made / seconds, 2) if made else None,
    }
    if made:
        logger.info("pool: %d replies in %.0f s (%.2f replies/s, model load included)", made, seconds, made / seconds)
    wait_for_everyone()
    if is_main_process():
        mark_finished(run_dir, summary)
    return summary


# --------------------------------------------------------------------------- reading a pool


def read_pool(path: str | Path) -> Pool:
    """A pool from a ``crs pool`` run, a folder of AlpacaEval outputs files, or one JSON / JSONL file.

    A file that is not a pool is a one-line :class:`DataError` that names ``bon.pool``, the file
    and its line or row; a prompt given twice is refused (it would count twice, unseen).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted((path / SAMPLES_DIR).glob("*.json")) or sorted(path.glob("*.json"))
        if len(files) < 2:
            raise ConfigError(
                f"bon.pool {path}: found {len(files)} outputs file(s); a pool needs at least 2 samples (one file each)"
            )
    elif not path.is_file():
        raise ConfigError(
            f"bon.pool {path}: no such file or folder; make it with `crs pool`, or point at a folder of AlpacaEval "
            "outputs files"
        )
    try:
        return _pool_from_files(files) if path.is_dir() else _pool_from_candidates(path)
    except DataError as err:
        raise DataError(f"bon.pool: {err}") from None


def _pool_from_files(files: list[Path]) -> Pool:
    """One AlpacaEval outputs file per sample index, lined up by prompt id (ids derived from the instruction where
    absent)."""
    samples, generators = [], []
    for file in files:
        rows = read_predictions(file)
        by_id: dict[str, dict[str, Any]] = {}
        for index, row in enumerate(rows):
            if row["prompt_id"] in by_id:
                first = rows.index(by_id[row["prompt_id"]])
                raise DataError(
                    f"{file}: row {index} answers the prompt of row {first} again ({_preview(row['instruction'])}); "
                    "a pool file holds one reply per prompt: drop one of the two rows"
                )
            by_id[row["prompt_id"]] = row
        samples.append(by_id)
        generators.append({r["generator"] for r in rows})
    common = [pid for pid in samples[0] if all(pid in s for s in samples[1:])]
    if not common:
        raise DataError(f"{files[0].parent}: the outputs files share no prompt; each must answer the same prompts")
    if any(len(s) != len(common) for s in samples):
        logger.warning(
            "%s: the outputs files answer different prompts; the pool keeps the %d all of them answer",
            files[0].parent,
            len(common),
        )
    first = samples[0]
    return Pool(
        prompt_ids=common,
        instructions=[first[pid]["instruction"] for pid in common],
        categories=[str(first[pid].get("category") or "") for pid in common],
        replies=[[s[pid]["output"] for s in samples] for pid in common],
        sample_names=_sample_names(generators),
    )


def _sample_names(generators: list[set[str]]) -> list[str] | None:
    """Each sample's generator name, when every file names one generator and no two files the same one."""
    names = [next(iter(g)) for g in generators if len(g) == 1]
    return names if len(names) == len(generators) and len(set(names)) == len(names) else None


def _candidate_rows(path: Path) -> list[tuple[str, Any]]:
    """(``line N`` of a JSON-lines file or ``row i`` of a JSON list, the row) for every row of a candidates file."""
    try:
        if path.suffix in (".jsonl", ".gz"):
            return [(f"line {number}", row) for number, row in iter_jsonl(path)]
        rows = json.loads(path.read_text(encoding="utf-8"))
    except JsonLinesError as err:
        raise DataError(f"{err}: fix or remove that line") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}, line {err.lineno}: not valid JSON ({err.msg}); fix it, or give one JSON object per line in a "
            ".jsonl file"
        ) from None
    except (OSError, EOFError, zlib.error) as err:  # a .gz that is not gzip, a file that cannot be read
        raise DataError(f"{path}: not readable ({err})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of {{instruction, outputs}} rows, got {type(rows).__name__}")
    return [(f"row {index}", row) for index, row in enumerate(rows)]


def _pool_from_candidates(path: Path) -> Pool:
    """One row per prompt: ``instruction`` (or ``prompt``), ``outputs`` (m replies, the same m on every row)."""
    pool, first_at = Pool([], [], [], []), ""
    seen: dict[str, str] = {}  # prompt id and instruction -> where it was first given
    for where, row in _candidate_rows(path):
        text = row.get("instruction", row.get("prompt")) if isinstance(row, dict) else None
        outputs = row.get("outputs") if isinstance(row, dict) else None
        if not isinstance(text, str) or not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
            raise DataError(
                f"{path}, {where}: expected an object {{instruction: text, outputs: [reply texts]}}; fix that row"
            )
        pid = str(row.get("prompt_id") or prompt_id(user_prompt(text)))
        for key in (f"id {pid}", f"text {text}"):
            if key in seen:
                raise DataError(
                    f"{path}, {where} repeats the prompt of {seen[key]} ({_preview(text)}): a pool holds each prompt "
                    "once (it would count twice); merge the two rows' outputs into one row, or drop one"
                )
            seen[key] = where
        if pool.replies and len(outputs) != len(pool.replies[0]):
            raise DataError(
                f"{path}, {where} has {len(outputs)} replies, {first_at} has {len(pool.replies[0])}: a pool has m "
                "replies per prompt"
            )
        first_at = first_at or where
        pool.prompt_ids.append(pid)
        pool.instructions.append(text)
        pool.categories.append(str(row.get("category") or ""))
        pool.replies.append(list(outputs))
    if not pool.replies or len(pool.replies[0]) < 2:
        raise DataError(f"{path}: a pool needs at least one prompt with 2 or more replies")
    return pool
