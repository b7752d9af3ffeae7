"""The built-in ``length`` reward source, and the length calibration a source's config asks for.

``path: length`` scores a reply by its length: in characters (``length_unit: characters``, the default;
:func:`crs.rm.length_metrics.reply_lengths`, AlpacaEval's count, which the best-of-n pool reports) or
in tokens (``tokens``: the reply re-tokenized without special tokens, by ``length_tokenizer`` or else
``model.name``'s tokenizer). It saves no statistics, so like every source without them it is z-scored
on the first rollout batch in RL (then frozen), over the pool in best-of-n and over every model's
predictions in scoring. With a negative weight beside a reward model it makes "RM minus length".

``length_calibration`` (:func:`source_calibration`) names the
:class:`~crs.rm.length_calibration.LengthCalibration` a source's scores are calibrated with: ``run``
reads a reward-model run's own file, anything else is a file's path. How a calibrated source scores
and is z-scored is :mod:`crs.rl.reward_sources`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from crs.config import ConfigError, ModelConfig, RewardSourceConfig
from crs.config.length_keys import LENGTH_PATH
from crs.data.schema import Messages
from crs.models.loading import load_tokenizer
from crs.rm.length_calibration import (
    CALIBRATION_FILE,
    DEFAULT_ITERATIONS,
    DEFAULT_SPAN,
    FIT_COMMAND,
    LengthCalibration,
    fit_length_calibration,
    read_length_calibration,
)
from crs.rm.length_metrics import reply_lengths

# What the length source scores with (reward_sources imports this module, so its RewardFn is not imported here).
LengthFn = Callable[[list[Messages], list[str]], np.ndarray]


def length_reward(unit: str, tokenizer: Any = None) -> LengthFn:
    """The ``length`` source's function: each reply's length in ``unit`` (``characters``, or ``tokens`` counted by
    ``tokenizer``)."""
    if unit == "characters":
        return lambda prompts, replies: reply_lengths(replies)

    def tokens(prompts: list[Messages], replies: list[str]) -> np.ndarray:
        if not replies:
            return np.zeros(0)
        ids = tokenizer(list(replies), add_special_tokens=False)["input_ids"]
        return np.array([len(row) for row in ids], dtype=float)

    return tokens


def length_source_fn(config: RewardSourceConfig, model_cfg: ModelConfig | None) -> LengthFn:
    """The function of a ``path: length`` source, its tokenizer loaded for ``length_unit: tokens``."""
    if config.length_unit == "characters":
        return length_reward("characters")
    name = config.length_tokenizer or (model_cfg.name if model_cfg is not None else None)
    if not name:
        raise ConfigError(
            f"reward source {config.name!r}: length_unit: tokens needs a tokenizer; set its length_tokenizer"
        )
    return length_reward("tokens", load_tokenizer(name, model_cfg.cache_dir if model_cfg else None))


def check_length_keys(config: RewardSourceConfig) -> None:
    """Refuse length keys that mean nothing for this source, in one line naming it."""
    where = f"reward source {config.name!r} ({config.path})"
    if config.path != LENGTH_PATH and config.length_unit != "characters":
        raise ConfigError(f"{where}: length_unit applies to path: length alone; drop it here")
    if config.length_tokenizer is not None and (config.path != LENGTH_PATH or config.length_unit != "tokens"):
        raise ConfigError(f"{where}: length_tokenizer applies to path: length with length_unit: tokens alone")
    if config.path == LENGTH_PATH and config.length_calibration != "none":
        raise ConfigError(
            f"{where}: length_calibration removes the trend in length, which is all the length source has; "
            "set it to none"
        )


def source_calibration(config: RewardSourceConfig) -> LengthCalibration | None:
    """The calibration ``config.length_calibration`` names (None for ``none``); a one-line ConfigError for a run
    without its file, a source that is no run under ``run``, or a file that is missing or misshapen."""
    spec = config.length_calibration
    if spec == "none":
        return None
    where = f"reward source {config.name!r}: length_calibration"
    if spec != "run":
        return read_length_calibration(spec)
    if config.path in ("gold", LENGTH_PATH) or config.path.startswith("python:") or not Path(config.path).is_dir():
        raise ConfigError(
            f"{where}: run reads a reward-model run's own {CALIBRATION_FILE}, and {config.path!r} is no run folder; "
            f"name a calibration file instead ({FIT_COMMAND} {config.path} --replies FILE --out FILE.json)"
        )
    path = Path(config.path) / CALIBRATION_FILE
    if not path.is_file():
        raise ConfigError(
            f"{where}: run, but {config.path} has no {CALIBRATION_FILE} (a run trained before crs fitted one, or not "
            f"a reward-model run); fit it from the run's validation replies: {FIT_COMMAND} {config.path}"
        )
    return read_length_calibration(path)


def fit_source_calibration(
    source: Any,
    prompts: list[Messages],
    replies: list[str],
    calibration_set: str,
    span: float = DEFAULT_SPAN,
    iterations: int = DEFAULT_ITERATIONS,
    batch_size: int = 32,
) -> LengthCalibration:
    """Fit the trend in reply length of ``source`` (a :class:`crs.rl.reward_sources.RewardSource`, uncalibrated)
    on ``replies`` to ``prompts``, scored in batches of ``batch_size``; ``calibration_set`` names those replies."""
    if source.calibration is not None:
        raise ConfigError(f"reward source {source.name!r} is calibrated already: fit on its raw scores")
    parts = [
        source.score(prompts[start : start + batch_size], replies[start : start + batch_size]).numpy()
        for start in range(0, len(replies), batch_size)
    ]
    scores = np.concatenate(parts) if parts else np.zeros(0)
    return fit_length_calibration(reply_lengths(replies), scores, calibration_set, source.name, span, iterations)


__all__ = [
    "check_length_keys",
    "fit_source_calibration",
    "length_reward",
    "length_source_fn",
    "source_calibration",
]
