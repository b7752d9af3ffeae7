"""Prediction files in AlpacaEval's layout: read, checked and written atomically.

A JSON list of objects with ``instruction``, ``output`` and ``generator`` (plus crs's
``dataset``, ``prompt_id`` and ``run``), so they can be fed to AlpacaEval unchanged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crs.data.schema import DataError
from crs.io import write_json_atomic

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
            f"{where}: row {index}: missing required key(s) {missing}; "
            f"every row needs {sorted(PREDICTION_KEYS)}"
        )
    for key, expected in PREDICTION_KEYS.items():
        value = row[key]
        # bool is a subclass of int, but a boolean run index is certainly a bug.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise DataError(
                f"{where}: row {index}: key {key!r} must be {expected.__name__}, "
                f"got {type(value).__name__} ({value!r})"
            )


def write_predictions(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Write prediction rows as an AlpacaEval JSON list, atomically.

    Rows are validated first (same rules as :func:`read_predictions`) so a bad row never
    reaches disk; extra keys are written unchanged.
    """
    # Local import: crs.eval.report imports this module, so a top-level import would cycle.

    plain_rows = [dict(row) for row in rows]
    for index, row in enumerate(plain_rows):
        _check_prediction_row(row, f"{path} (writing)", index)
    write_json_atomic(path, plain_rows)


def read_predictions(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read and validate an AlpacaEval-format prediction file.

    Raises :class:`DataError` naming the file and the row index when the file is not a
    JSON list or a row lacks a required key or has the wrong type.
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of prediction rows, got {type(data).__name__}")
    for index, row in enumerate(data):
        _check_prediction_row(row, str(path), index)
    return data
