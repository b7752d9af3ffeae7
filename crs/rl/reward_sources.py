"""Reward sources: each scores a batch of (prompt, reply) pairs; loaded from the config.

A *source* is anything that scores a batch of (prompt, reply) pairs: a reward-model run
directory (``rm_train.py`` output, loaded through :func:`crs.rm.scorer.load_reward_scorers`
so RMs that share a base load it once), ``"gold"`` (the simulated annotator's noise-free
utility, for tests and demos), ``"length"`` (the reply's length, :mod:`crs.rl.length_source`),
``"python:module:function"``, or, when built in code, any Python callable
``f(prompts, replies) -> scores``. :func:`build_sources` loads them from ``rl.rewards`` (or
``eval_rewarding.rewards``); :class:`crs.rl.combined_reward.CombinedReward` combines them into one score.

Any source may be length-calibrated (``length_calibration``): it then scores ``raw - trend(length)``
(:class:`crs.rm.length_calibration.LengthCalibration`), and its z-scale is the calibrated scores'
statistics on the calibration set, kept in the calibration file (``stats_origin`` "calibration set"):
a reward model's ``reward_stats.json`` describes its raw reward, no longer the one it gives.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from crs.config import ConfigError, CRSConfig, ModelConfig, RewardSourceConfig
from crs.config.length_keys import LENGTH_KEYS, LENGTH_PATH
from crs.data.schema import Messages, last_user_text
from crs.rl.combine import has_spread
from crs.rl.length_source import check_length_keys, length_source_fn, source_calibration
from crs.rm.length_calibration import CALIBRATION_FILE, LengthCalibration
from crs.rm.length_metrics import reply_lengths
from crs.rm.scorer import load_reward_scorers
from crs.runs import RunError

logger = logging.getLogger(__name__)

RewardFn = Callable[[list[Messages], list[str]], "torch.Tensor | Sequence[float]"]


class RewardSourceError(RunError):
    """A reward source that raised or returned something other than one number per reply."""


@dataclass
class RewardSource:
    """One term of the combined reward: ``weight * normalize(fn(prompts, replies))``."""

    name: str
    fn: RewardFn
    weight: float = 1.0
    normalize: str = "zscore"  # "zscore" | "none"
    # mean/std for zscore; None = measured on the first batch this source scores.
    stats: dict[str, float] | None = None
    stats_origin: str = "saved"  # "saved" (the RM's validation set) | "first batch"
    # Where the function comes from (a ``python:`` path, "a callable"); set for user code,
    # whose errors become one line naming the source instead of a traceback.
    user_code: str | None = None
    # Subtracted from every score: the source's trend in reply length (``length_calibration``); None: none.
    calibration: LengthCalibration | None = None

    def score(self, prompts: list[Messages], replies: list[str]) -> torch.Tensor:
        """Raw scores as a float32 CPU tensor of shape (len(replies),), length-calibrated if the source is; user
        code that raises or returns anything but one number per reply is a :class:`RewardSourceError`."""
        try:
            scores = self.fn(prompts, replies)
        except Exception as err:
            if self.user_code is None:
                raise
            raise RewardSourceError(f"{self._named()} raised {type(err).__name__}{_where(err)}: {err}") from err
        try:
            if isinstance(scores, torch.Tensor):
                scores = scores.detach().float().cpu().reshape(-1)
            else:
                scores = torch.tensor([float(x) for x in scores], dtype=torch.float32)
        except (TypeError, ValueError) as err:
            raise RewardSourceError(
                f"{self._named()} returned {_preview(scores)}: "
                f"expected a list of {len(replies)} numbers, one per reply ({err})"
            ) from None
        if scores.shape[0] != len(replies):
            raise RewardSourceError(
                f"{self._named()} returned {scores.shape[0]} scores for {len(replies)} replies: expected one per reply"
            )
        if self.calibration is not None:
            scores = torch.from_numpy(self.calibration.apply(scores.numpy(), reply_lengths(replies))).float()
        return scores

    def score_in_batches(self, prompts: list[Messages], replies: list[str], batch_size: int | None) -> torch.Tensor:
        """:meth:`score`, ``batch_size`` replies at a time (a reward model's memory bounded on a long list); None: all
        at once."""
        if batch_size is None:
            return self.score(prompts, replies)
        starts = range(0, len(replies), batch_size)
        return torch.cat([self.score(prompts[i : i + batch_size], replies[i : i + batch_size]) for i in starts])

    def _named(self) -> str:
        return f"reward source {self.name!r}" + (
            f" ({self.user_code})" if self.user_code not in (None, self.name) else ""
        )


def _where(err: BaseException) -> str:
    """`` at file:line`` of the innermost frame that raised, for a one-line error."""
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _preview(value: Any) -> str:
    text = repr(value)
    return (text[:80] + "...") if len(text) > 80 else text


def gold_reward(prompts: list[Messages], replies: list[str]) -> list[float]:
    """The simulated annotator's noise-free utility in [0, 1] (the ``"gold"`` source)."""
    from crs.demo.annotator import gold_score  # imported on use: only the gold source needs the annotator

    return [gold_score(last_user_text(p), r) for p, r in zip(prompts, replies)]


def import_callable(spec: str) -> RewardFn:
    """``"python:package.module:function"`` -> the function; ``module`` is found in the current
    directory first, then among the installed packages."""
    target = spec[len("python:") :]
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"reward path {spec!r}: expected python:package.module:function")
    if os.getcwd() not in sys.path and "" not in sys.path:  # the `crs` console script does not put it there
        sys.path.insert(0, os.getcwd())  # relative paths resolve against the current directory, modules too
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except SyntaxError as err:  # IndentationError too: the module itself does not parse
        raise ConfigError(
            f"reward path {spec!r}: {err.filename}, line {err.lineno}: syntax error ({err.msg}); fix the module"
        ) from None
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"reward path {spec!r}: {err}") from None
    if not callable(fn):
        raise ConfigError(f"reward path {spec!r} is not callable")
    return fn


def reward_model_config(cfg: CRSConfig) -> ModelConfig:
    """``model.*`` as RL's reward models and judge load: ``rl.reward_model_quantization``, not the policy's
    quantization."""
    return replace(cfg.model, quantization=cfg.rl.reward_model_quantization)


def _scorer_fn(scorer: Any) -> RewardFn:
    return lambda prompts, replies: scorer.score(prompts, replies)


def scoring_key(spec: Any) -> tuple[Any, ...]:
    """What decides the scores of a source entry (``rl.rewards``, ``eval_rewarding.rewards``, ``bon.rewards``,
    ``sweep.rewards``): its path and its length keys. Equal keys score alike, whatever the entries' names."""
    return (spec.path, *(getattr(spec, key) for key in LENGTH_KEYS))


def source_config(spec: Any, name: str | None = None, **keys: Any) -> RewardSourceConfig:
    """``rl.rewards``' form of any source entry (name, path, length keys; ``keys``: weight, normalize)."""
    length = {key: getattr(spec, key) for key in LENGTH_KEYS}
    return RewardSourceConfig(name=name or spec.name, path=spec.path, **length, **keys)


def check_gold_sources(
    configs: Sequence[RewardSourceConfig], prompt_texts: Sequence[str], key: str, allow: bool
) -> None:
    """Refuse every ``gold`` source among ``configs`` on prompts that are not the demo's (see
    :func:`crs.demo.gold.check_gold_applies`); ``key`` names the config list in the message."""
    if any(c.path == "gold" and c.weight != 0 for c in configs):
        from crs.demo.gold import check_gold_applies

        check_gold_applies(prompt_texts, key, allow)


def build_sources(
    configs: Sequence[RewardSourceConfig],
    model_cfg: ModelConfig | None = None,
    callables: dict[str, RewardFn] | None = None,
) -> list[RewardSource]:
    """Reward sources from the config; weight-0 sources are skipped before anything loads, and
    length keys and calibration files are checked before any model loads (:mod:`crs.rl.length_source`).

    ``callables`` maps a source *name* to a Python function, overriding its path (tests
    and notebooks use this for programmatic rewards).
    """
    callables = callables or {}
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"reward sources need distinct names; got {names}")
    active = [c for c in configs if c.weight != 0]
    for c in configs:
        if c.weight == 0:
            logger.info("reward source %r has weight 0: not loaded", c.name)
    if not active:
        raise ConfigError("rl.rewards: no reward source with a non-zero weight")
    for c in active:
        check_length_keys(c)
    calibrations = {c.name: source_calibration(c) for c in active}  # a bad file fails before any model loads

    sources: dict[str, RewardSource] = {}
    model_paths: list[RewardSourceConfig] = []
    for c in active:
        if c.name in callables:
            sources[c.name] = RewardSource(
                c.name, callables[c.name], c.weight, c.normalize, None, "first batch", "a callable"
            )
        elif c.path == "gold":
            sources[c.name] = RewardSource(c.name, gold_reward, c.weight, c.normalize, None, "first batch")
        elif c.path == LENGTH_PATH:
            fn = length_source_fn(c, model_cfg)
            sources[c.name] = RewardSource(c.name, fn, c.weight, c.normalize, None, "first batch")
        elif c.path.startswith("python:"):
            sources[c.name] = RewardSource(
                c.name, import_callable(c.path), c.weight, c.normalize, None, "first batch", c.path
            )
        elif not c.path:
            raise ConfigError(
                f"reward source {c.name!r}: empty path (a reward-model run dir, 'gold', 'length' or python:mod:fn)"
            )
        else:
            model_paths.append(c)
    if model_paths:
        # One call, so reward models sharing a base load it once (as stacked adapters).
        scorers = load_reward_scorers([c.path for c in model_paths], model_cfg)
        for c, scorer in zip(model_paths, scorers):
            stats = getattr(scorer, "stats", None)
            if calibrations[c.name] is not None and c.length_calibration == "run":
                calibrations[c.name].check_same_reward(stats, Path(c.path) / CALIBRATION_FILE)
            sources[c.name] = RewardSource(c.name, _scorer_fn(scorer), c.weight, c.normalize, *_zscale(stats, "saved"))
    for name, calibration in calibrations.items():
        if calibration is not None:
            zscale = _zscale(calibration.stats, "calibration set")
            sources[name] = replace(sources[name], stats=zscale[0], stats_origin=zscale[1], calibration=calibration)
    return [sources[c.name] for c in active]  # config order


def _zscale(stats: dict[str, Any] | None, origin: str) -> tuple[dict[str, float] | None, str]:
    """(z-score statistics, where they come from) of a source with ``stats`` saved: those, or none to measure on the
    first batch where they are missing or have no spread (they cannot scale anything)."""
    if stats and "mean" in stats and "std" in stats and has_spread(stats):
        return {"mean": float(stats["mean"]), "std": float(stats["std"])}, origin
    return None, "first batch"


__all__ = [
    "RewardFn",
    "RewardSource",
    "RewardSourceError",
    "build_sources",
    "check_gold_sources",
    "gold_reward",
    "import_callable",
    "reward_model_config",
    "scoring_key",
    "source_config",
]
