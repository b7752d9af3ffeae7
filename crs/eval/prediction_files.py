"""Prediction files in AlpacaEval's layout: read, checked and written atomically.

A JSON list of objects with ``instruction``, ``output`` and ``generator`` (plus crs's
``dataset``, ``prompt_id`` and ``run``), so they can be fed to AlpacaEval unchanged.

AlpacaEval's own outputs files (another tool's) lack crs's three keys; they are read as they
are (:func:`complete_alpaca_eval_rows`): the prompt id is derived from the instruction by the
rule crs uses for any prompt without an id, so they line up with crs's predictions of the same
prompts; ``run`` counts the answers to one instruction from 0; ``dataset`` is kept when given.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crs.data.adapters import prompt_id
from crs.data.schema import DataError, user_prompt
from crs.io import write_json_atomic

logger = logging.getLogger(__name__)

#: Required keys of a prediction row and the type each must have.
PREDICTION_KEYS: dict[str, type] = {
    "instruction": str,
    "output": str,
    "generator": str,
    "dataset": str,
    "prompt_id": str,
    "run": int,
}


def _check_prediction_row(row: Any, where: str, index: int) -> None:
    """Raise :class:`DataError` naming ``where`` and ``index`` if ``row`` is malformed."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: row {index}: expected an object, got {type(row).__name__}")
    missing = [key for key in PREDICTION_KEYS if key not in row]
    if missing:
        raise DataError(
            f"{where}: row {index}: missing required key(s) {missing}; every row needs {sorted(PREDICTION_KEYS)}"
        )
    for key, expected in PREDICTION_KEYS.items():
        value = row[key]
        # bool is a subclass of int, but a boolean run index is certainly a bug.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise DataError(
                f"{where}: row {index}: key {key!r} must be {expected.__name__}, got {type(value).__name__} ({value!r})"
            )


def write_predictions(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Write prediction rows as an AlpacaEval JSON list, atomically.

    Rows are validated first (same rules as :func:`read_predictions`) so a bad row never
    reaches disk; extra keys are written unchanged.
    """
    plain_rows = [dict(row) for row in rows]
    for index, row in enumerate(plain_rows):
        _check_prediction_row(row, f"{path} (writing)", index)
    write_json_atomic(path, plain_rows)


def read_predictions(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read and validate an AlpacaEval-format prediction file.

    Raises :class:`DataError` naming the file and the row index when the file is not a
    JSON list or a row lacks a required key or has the wrong type.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of prediction rows, got {type(data).__name__}")
    data = complete_alpaca_eval_rows(data, str(path))
    for index, row in enumerate(data):
        _check_prediction_row(row, str(path), index)
    return data


#: The keys an AlpacaEval outputs file may lack, and what crs puts in their place.
DERIVED_KEYS = ("prompt_id", "run", "dataset")


def complete_alpaca_eval_rows(rows: list[Any], where: str) -> list[Any]:
    """Rows in AlpacaEval's outputs format (``instruction``, ``output``, ``generator``, maybe
    ``dataset``) with crs's keys filled in: ``prompt_id`` from the instruction (the id crs gives
    a prompt without one), ``run`` the n-th row of the same instruction (from 0), ``dataset`` "".

    Rows that already have a key keep it; anything else (a missing ``output``) is left for the checks.
    """
    seen: dict[str, int] = {}
    completed, filled = [], 0
    for row in rows:
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("instruction"), str)
            or all(k in row for k in DERIVED_KEYS)
        ):
            completed.append(row)
            continue
        run = seen.get(row["instruction"], 0)
        seen[row["instruction"]] = run + 1
        derived = {"prompt_id": prompt_id(user_prompt(row["instruction"])), "run": run, "dataset": ""}
        completed.append({**derived, **row})
        filled += 1
    if filled:
        logger.info(
            "%s: %d row(s) in AlpacaEval's outputs format: prompt ids derived from the instructions, "
            "run = the n-th answer to the same instruction",
            where,
            filled,
        )
    return completed
