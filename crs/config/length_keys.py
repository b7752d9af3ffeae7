"""The length keys of a reward source, shared by every list of sources (``rl.rewards``, ``eval_rewarding.rewards``,
``bon.rewards``, ``sweep.rewards``): what the built-in ``length`` source counts, and any source's length
calibration. Each list's entry declares them with these fields, so the key, its default and its rule are one."""

from __future__ import annotations

from dataclasses import field
from typing import Any

from crs.config.fields import Rule

LENGTH_PATH = "length"  # the built-in source: a reply's length
LENGTH_KEYS = ("length_unit", "length_tokenizer", "length_calibration")


def length_unit_field() -> Any:
    """``length_unit``: characters or tokens (``path: length`` only)."""
    return field(
        default="characters",
        metadata={
            "help": "With `path: length`, what it counts: `characters` (the reply text's length, as AlpacaEval counts "
            "it) or `tokens` (the reply re-tokenized, without special tokens, by `length_tokenizer`). Any other "
            "source leaves it at `characters`."
        },
    )


def length_tokenizer_field() -> Any:
    """``length_tokenizer``: which tokenizer counts tokens."""
    return field(
        default=None,
        metadata={
            "help": "With `path: length` and `length_unit: tokens`: the tokenizer that counts (anything `model.name` "
            "takes); null: `model.name`'s (in RL the policy's base model, whose tokenizer an SFT run keeps)."
        },
    )


def _calibration_spec(value: str, config: Any) -> bool:
    return value in ("none", "run") or value.endswith(".json")


def length_calibration_field() -> Any:
    """``length_calibration``: none, the run's own, or a file."""
    return field(
        default="none",
        metadata={
            "help": "Post-hoc length calibration: the source's trend in reply length (LOWESS, fitted once on a "
            "calibration set) subtracted from its score. `none`; `run`: the fit on a reward-model run's own "
            "validation replies, `<path>/length_calibration.json`, which `crs rm` writes; or a calibration file's path "
            "(`scripts/fit_length_calibration.py` writes one for any source). A calibrated source is z-scored with "
            "the statistics of its calibrated scores on the calibration set, kept in the file. docs/stages.md.",
            "rule": Rule(_calibration_spec, "none, run, or the path of a length calibration file (.json)"),
        },
    )


__all__ = ["LENGTH_KEYS", "LENGTH_PATH", "length_calibration_field", "length_tokenizer_field", "length_unit_field"]
