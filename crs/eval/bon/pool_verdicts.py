"""An external judge's verdict on every reply of a best-of-n pool, from AlpacaEval annotation files (``bon.judge``).

Each annotation row compares a pool reply with a reference reply (``output_1`` and
``output_2``, either side): 1 when the judge prefers the pool reply, 0 when it prefers the
reference, 0.5 a tie, fractions from a weighted judge. The pool's side is the one whose text
is a reply of the pool to that instruction; when both are, the side whose generator names a
pool sample, else the second.

A real pool often holds one reply several times for a prompt (deterministic short answers),
so a text alone does not say which sample a verdict is about. Every copy gets a verdict:

* by sample, when the rows' generator names name the pool's samples: the generator of each
  sample's outputs file (a folder pool whose files each name their own), else ``<model>.<k>``
  for sample k with one ``<model>`` and every k from 0 to m - 1 (AlpacaEval's names for the
  samples of a best-of-n pool, ``allenai/tulu-2-dpo-13b.0`` ...), and each row's text is that
  sample's reply;
* else by text: every copy of a reply gets the judge's verdict on that text (the mean, when
  the judge gave one verdict per copy).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crs.data.schema import DataError
from crs.eval.bon.pool import Pool
from crs.eval.judges import judge_files, preference_outcome, read_annotation_rows

logger = logging.getLogger(__name__)

SAMPLE_SUFFIX = re.compile(r"^(?P<model>.+)\.(?P<k>\d+)$")  # AlpacaEval's name of sample k: "<model>.<k>"


@dataclass
class _Verdict:
    """One annotation row, seen from the pool's side."""

    prompt: int
    text: str  # the pool reply the row judged
    generator: str  # the pool side's generator name
    outcome: float | None  # the pool reply's outcome against the reference; None: the judge failed
    where: str


def judge_from_annotations(pool: Pool, spec: str) -> np.ndarray:
    """(P, m) the judge's verdict on every reply of the pool, from the annotation files ``spec`` names.

    Every reply needs one (a :class:`DataError` counts those without, naming the first); a file
    that is not annotations, or a row that cannot be read, is a :class:`DataError` naming ``bon.judge``,
    the file and the row.
    """
    files = judge_files(spec, "bon.judge", kinds=(".json",))
    try:
        values = _verdict_matrix(
            pool,
            [(f"{path}, annotation {i}", row) for path in files for i, row in enumerate(_annotation_objects(path))],
        )
    except DataError as err:
        raise DataError(f"bon.judge: {err}") from None
    missing = np.argwhere(np.isnan(values))
    if len(missing):
        p, k = (int(i) for i in missing[0])
        raise DataError(
            f"bon.judge {spec}: {len(missing)} of {values.size} pool replies have no verdict (or a null one), the "
            f"first: sample {k} of prompt {pool.prompt_ids[p]} ({pool.instructions[p][:60]!r}); every reply needs "
            "one: annotate the rest"
        )
    return values


def _verdict_matrix(pool: Pool, rows: Sequence[tuple[str, dict[str, Any]]]) -> np.ndarray:
    """(P, m) the verdicts, NaN where a reply has none: by sample where the rows name the samples (the files'
    generators, else ``<model>.<k>``), else by text."""
    why = "the generator names are not the pool's samples"
    for names in (pool.sample_names, _suffix_sample_names(rows, pool.shape[1])):
        if names:
            verdicts = _pool_verdicts(pool, rows, names)
            mismatch = _why_not_by_sample(pool, verdicts, names)
            if mismatch is None:
                logger.info(
                    "bon.judge: one verdict per sample, read by generator name (%s ... %s)", names[0], names[-1]
                )
                return _by_sample(pool, verdicts, names)
            why = mismatch
    logger.info(
        "bon.judge: verdicts read by reply text (%s): every copy of a repeated reply gets its text's verdict", why
    )
    return _by_text(pool, _pool_verdicts(pool, rows, []))


def _annotation_objects(path: Path) -> list[dict[str, Any]]:
    rows = read_annotation_rows(path)
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}, annotation {index}: expected an object, got {type(row).__name__}")
    return rows


def _suffix_sample_names(rows: Sequence[tuple[str, dict[str, Any]]], m: int) -> list[str] | None:
    """``[<model>.0, ..., <model>.<m-1>]`` when the rows name exactly one such model with every k, else None."""
    ks: dict[str, set[int]] = {}
    for _, row in rows:
        for side in ("generator_1", "generator_2"):
            match = SAMPLE_SUFFIX.match(str(row.get(side) or ""))
            if match:
                ks.setdefault(match["model"], set()).add(int(match["k"]))
    models = [model for model, seen in ks.items() if set(range(m)) <= seen]
    return [f"{models[0]}.{k}" for k in range(m)] if len(models) == 1 else None


def _pool_verdicts(pool: Pool, rows: Sequence[tuple[str, dict[str, Any]]], names: Sequence[str]) -> list[_Verdict]:
    """Every row that judges a pool reply, from the pool's side; rows about other replies are not the pool's."""
    prompt_of = {
        (text, reply): p for p, (text, row) in enumerate(zip(pool.instructions, pool.replies)) for reply in row
    }
    verdicts = []
    for where, row in rows:
        first = preference_outcome(row.get("preference"), where)  # the outcome of output_1
        sides = [
            s
            for s in (1, 2)
            if isinstance(row.get("instruction"), str)
            and isinstance(row.get(f"output_{s}"), str)
            and (row["instruction"], row[f"output_{s}"]) in prompt_of
        ]
        if not sides:
            continue
        named = [s for s in sides if row.get(f"generator_{s}") in names]
        side = named[0] if len(named) == 1 else sides[-1]
        outcome = first if side == 1 or first is None else 1.0 - first
        text = row[f"output_{side}"]
        verdicts.append(
            _Verdict(
                prompt_of[(row["instruction"], text)], text, str(row.get(f"generator_{side}") or ""), outcome, where
            )
        )
    return verdicts


def _why_not_by_sample(pool: Pool, verdicts: Sequence[_Verdict], names: Sequence[str]) -> str | None:
    """None when every verdict names a pool sample whose reply is the text it judged; else why not, in words."""
    index = {name: k for k, name in enumerate(names)}
    for v in verdicts:
        if v.generator not in index:
            return f"{v.where}: generator {v.generator!r} names no pool sample"
        if pool.replies[v.prompt][index[v.generator]] != v.text:
            return f"{v.where}: its reply is not sample {index[v.generator]}'s ({v.generator})"
    return None


def _by_sample(pool: Pool, verdicts: Sequence[_Verdict], names: Sequence[str]) -> np.ndarray:
    index = {name: k for k, name in enumerate(names)}
    values, first_at = np.full(pool.shape, np.nan), {}
    for v in verdicts:
        cell = (v.prompt, index[v.generator])
        if cell in first_at:
            raise DataError(
                f"{v.where}: a second verdict on sample {cell[1]} of prompt {pool.prompt_ids[v.prompt]} "
                f"(the first: {first_at[cell]}); keep one verdict per reply"
            )
        first_at[cell] = v.where
        if v.outcome is not None:
            values[cell] = v.outcome
    return values


def _by_text(pool: Pool, verdicts: Sequence[_Verdict]) -> np.ndarray:
    """Every copy of a reply gets the mean of the judge's verdicts on its text (at most one verdict per copy)."""
    copies: dict[tuple[int, str], list[int]] = {}
    for p, row in enumerate(pool.replies):
        for k, reply in enumerate(row):
            copies.setdefault((p, reply), []).append(k)
    outcomes: dict[tuple[int, str], list[float | None]] = {}
    values = np.full(pool.shape, np.nan)
    for v in verdicts:
        got = outcomes.setdefault((v.prompt, v.text), [])
        got.append(v.outcome)
        if len(got) > len(copies[(v.prompt, v.text)]):
            raise DataError(
                f"{v.where}: {len(got)} verdicts on a reply that prompt {pool.prompt_ids[v.prompt]} holds "
                f"{len(copies[(v.prompt, v.text)])} time(s); keep one verdict per reply"
            )
    for key, got in outcomes.items():
        finite = [o for o in got if o is not None]
        if finite:
            values[key[0], copies[key]] = float(np.mean(finite))
    return values
