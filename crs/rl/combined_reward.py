"""The combined reward: normalised reward sources combined into one score, shaped in one place.

    combined = clip( sum_i  w_i * normalize_i(source_i(prompt, reply)) , reward_clip )
               + missing_eos_penalty * [reply did not end with EOS]

That is the default strategy, ``sum`` (``rl.combine``); ``sum_per_prompt`` standardises each
source within each prompt's group of replies instead, and ``conservative`` takes the minimum
(or mean - k x std) of the z-scored sources. The arithmetic is :mod:`crs.rl.combine`; clip and
EOS penalty apply after it, whatever the strategy.

The sources (reward-model runs, ``"gold"``, ``python:`` functions, callables) and their
loading are :mod:`crs.rl.reward_sources`.

``normalize: zscore`` puts sources on one scale before they are weighted, so the weights
mean what they say: ``(x - mean) / std`` with the source's own validation statistics
(``RewardScorer.stats``; for a length-calibrated source, those of its calibrated scores on the
calibration set) where it has them, otherwise statistics measured on the first batch it
scores, then frozen (and logged, and checkpointed) so the scale never drifts.

The same object serves PPO (``__call__`` returns a :class:`RewardBreakdown`), the eval
scorer, and TRL's GRPO/RLOO trainers (through :mod:`crs.rl.trl_reward`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from crs.config import ConfigError, CRSConfig, ModelConfig, RewardSourceConfig
from crs.data.schema import Messages
from crs.rl.combine import (
    CONSERVATIVE_METHODS,
    STRATEGIES,
    combine_normalized,
    describe_strategy,
    group_ids,
    has_spread,
    standardize,
    zscore_stats,
)
from crs.rl.reward_sources import RewardFn, RewardSource, build_sources, reward_model_config
from crs.runs import NonFiniteError

logger = logging.getLogger(__name__)

GatherFn = Callable[[torch.Tensor], torch.Tensor]

# In a Trainer checkpoint (GRPO, RLOO): CombinedReward.state_dict(), the scale a resumed run keeps.
REWARD_STATE_FILE = "crs_reward_state.json"


# --------------------------------------------------------------------------- combination


@dataclass
class RewardBreakdown:
    """Scores of one batch: the combined reward and every source, raw and normalised."""

    combined: torch.Tensor  # (B,) the reward PPO optimises (after clip and EOS penalty)
    raw: dict[str, torch.Tensor]  # per source, as the source returned it
    # per source, as it entered the combination: after zscore (== raw for "none"); with
    # sum_per_prompt, standardised within its prompt's group
    normalized: dict[str, torch.Tensor]
    weighted_sum: torch.Tensor  # (B,) the combination before shaping (sum: sum_i w_i * normalized_i)
    ended_with_eos: torch.Tensor  # (B,) bool
    nonfinite: dict[str, int]  # per source, how many scores were NaN or infinite

    def metrics(self, prefix: str = "reward/") -> dict[str, float]:
        """Batch means, for logging: combined, each source raw and normalised, EOS rate."""
        out = {
            f"{prefix}combined": self.combined.mean().item(),
            f"{prefix}weighted_sum": self.weighted_sum.mean().item(),
        }
        for name in self.raw:
            out[f"{prefix}{name}/raw"] = self.raw[name].mean().item()
            out[f"{prefix}{name}/normalized"] = self.normalized[name].mean().item()
            out[f"{prefix}{name}/nonfinite"] = float(self.nonfinite.get(name, 0))
        out[f"{prefix}ended_with_eos"] = self.ended_with_eos.float().mean().item()
        return out

    def row(self, i: int) -> dict[str, float]:
        """Example ``i``'s scores: each source raw and normalised, and the combined reward."""
        out: dict[str, float] = {}
        for name in self.raw:
            out[name] = self.raw[name][i].item()
            out[f"{name}_normalized"] = self.normalized[name][i].item()
        out["combined"] = self.combined[i].item()
        return out

    def is_finite(self) -> bool:
        """Whether every source gave a finite score (clipping must not hide an infinite one)."""
        return not any(self.nonfinite.values()) and bool(
            torch.isfinite(self.weighted_sum).all() and torch.isfinite(self.combined).all()
        )

    def select(self, rows: slice) -> RewardBreakdown:
        """The breakdown of ``rows`` alone (a process's share of a batch scored whole)."""
        raw = {name: scores[rows] for name, scores in self.raw.items()}
        return RewardBreakdown(
            self.combined[rows],
            raw,
            {name: v[rows] for name, v in self.normalized.items()},
            self.weighted_sum[rows],
            self.ended_with_eos[rows],
            {name: int((~torch.isfinite(v)).sum()) for name, v in raw.items()},
        )


class CombinedReward:
    """``w_1 * norm(r_1) + w_2 * norm(r_2) + ...`` (or another ``strategy``), then clip and the missing-EOS penalty.

    ``strategy`` (``rl.combine``): ``sum`` (that formula), ``sum_per_prompt`` (each source
    standardised within its prompt's group of replies, then weighted and summed) or
    ``conservative`` (``method`` ``min`` or ``mean_std`` with ``k``, over >= 2 sources; weights
    ignored but 0); see :mod:`crs.rl.combine`. ``gather`` (e.g. ``accelerator.gather``) lets
    first-batch statistics be measured on every process's batch at once, so all processes
    normalise identically; ``process_index`` is this process's place in what ``gather`` returns.
    """

    def __init__(
        self,
        sources: Sequence[RewardSource],
        reward_clip: float | None = None,
        missing_eos_penalty: float | None = None,
        gather: GatherFn | None = None,
        strategy: str = "sum",
        method: str = "min",
        k: float = 1.0,
    ) -> None:
        self.sources = [s for s in sources if s.weight != 0]
        if not self.sources:
            names = ", ".join(f"{s.name} (weight {s.weight})" for s in sources) or "none"
            raise ConfigError(f"a combined reward needs at least one source with a non-zero weight; got {names}")
        if strategy not in STRATEGIES or method not in CONSERVATIVE_METHODS:
            raise ConfigError(
                f"combination {strategy!r} / {method!r}: expected one of {STRATEGIES} / {CONSERVATIVE_METHODS}"
            )
        if strategy == "conservative" and len(self.sources) < 2:
            raise ConfigError(
                f"rl.combine=conservative needs at least 2 reward sources with a non-zero weight; got {self.names}"
            )
        if strategy == "conservative" and any(s.weight < 0 for s in self.sources):
            raise ConfigError(
                "rl.combine=conservative ignores the weights, so a negative one cannot subtract its source; got "
                + ", ".join(f"{s.name} ({s.weight:g})" for s in self.sources)
            )
        self.reward_clip = reward_clip
        self.missing_eos_penalty = missing_eos_penalty
        self.gather = gather
        self.process_index = 0
        self.strategy, self.method, self.k = strategy, method, k

    @classmethod
    def from_config(
        cls,
        configs: Sequence[RewardSourceConfig],
        model_cfg: ModelConfig | None = None,
        reward_clip: float | None = None,
        missing_eos_penalty: float | None = None,
        callables: dict[str, RewardFn] | None = None,
        gather: GatherFn | None = None,
        strategy: str = "sum",
        method: str = "min",
        k: float = 1.0,
    ) -> CombinedReward:
        """Build from ``rl.rewards`` (or ``eval_rewarding.rewards``); see
        :func:`crs.rl.reward_sources.build_sources`."""
        return cls(
            build_sources(configs, model_cfg, callables), reward_clip, missing_eos_penalty, gather, strategy, method, k
        )

    @classmethod
    def for_rl(cls, cfg: CRSConfig, gather: GatherFn | None = None) -> CombinedReward:
        """The reward an RL stage optimises (``rl.rewards``, ``rl.combine``, clip, EOS penalty), its
        reward models loaded as :func:`crs.rl.reward_sources.reward_model_config` says."""
        rl = cfg.rl
        return cls.from_config(
            rl.rewards,
            reward_model_config(cfg),
            rl.reward_clip,
            rl.missing_eos_penalty,
            gather=gather,
            strategy=rl.combine,
            method=rl.conservative,
            k=rl.conservative_k,
        )

    @property
    def names(self) -> list[str]:
        """The active sources' names."""
        return [s.name for s in self.sources]

    def __call__(
        self,
        prompts: list[Messages],
        replies: list[str],
        ended_with_eos: Sequence[bool] | torch.Tensor | None = None,
        fit_stats: bool = True,
        groups: Sequence[int] | torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> RewardBreakdown:
        """Score a batch. ``ended_with_eos`` None means "all ended" (no penalty applied).

        ``fit_stats`` False leaves a source without statistics unfitted (its normalised score and
        the combined one are NaN), so an evaluation never sets the scale training will use.
        ``groups`` (``sum_per_prompt``): one group id per reply; None: replies to the same prompt.
        ``batch_size``: each source scores that many replies at a time (None: all at once); the combination
        is over the whole batch either way.
        """
        raw = {source.name: source.score_in_batches(prompts, replies, batch_size) for source in self.sources}
        if self.strategy == "sum_per_prompt" and groups is None:
            groups = group_ids([json.dumps(p, sort_keys=True) for p in prompts])
        return self.combine(raw, ended_with_eos, fit_stats, groups)

    def combine(
        self,
        raw: dict[str, torch.Tensor],
        ended_with_eos: Sequence[bool] | torch.Tensor | None = None,
        fit_stats: bool = True,
        groups: Sequence[int] | torch.Tensor | None = None,
    ) -> RewardBreakdown:
        """The one formula, for PPO and evaluation alike: normalise each source's raw scores,
        combine them (:func:`crs.rl.combine.combine_normalized`, ``self.strategy``), then shape
        (clip, missing-EOS penalty). ``raw[name]`` holds every source's scores; ``groups``, one
        group id per reply, is needed by ``sum_per_prompt`` alone."""
        n = len(next(iter(raw.values())))
        normalized, nonfinite = {}, {}
        # sum_per_prompt standardises within groups, which removes any fixed scale: no statistics to fit or freeze.
        per_group = self.strategy == "sum_per_prompt"
        for source in self.sources:
            scores = raw[source.name]
            nonfinite[source.name] = int((~torch.isfinite(scores)).sum())
            if nonfinite[source.name]:
                logger.warning(
                    "reward source %r returned %d non-finite score(s) of %d", source.name, nonfinite[source.name], n
                )
            normalized[source.name] = scores if per_group else self.normalize(source, scores, fit_stats)
        weights = {source.name: source.weight for source in self.sources}
        combination, terms = combine_normalized(normalized, weights, self.strategy, groups, self.method, self.k)
        eos = (
            torch.ones(n, dtype=torch.bool)
            if ended_with_eos is None
            else torch.as_tensor(ended_with_eos, dtype=torch.bool).cpu()
        )
        scored = {source.name: raw[source.name] for source in self.sources}
        return RewardBreakdown(self.shape(combination, eos), scored, terms, combination, eos, nonfinite)

    def normalize(self, source: RewardSource, scores: torch.Tensor, fit_stats: bool = True) -> torch.Tensor:
        """zscore with the source's stats (fitting them on this batch if it has none;
        :func:`crs.rl.combine.standardize`), or identity."""
        if source.normalize == "none":
            return scores
        if source.stats is None and not fit_stats:
            return torch.full_like(scores, float("nan"))
        if source.stats is None:
            self._fit_stats(source, scores)
        assert source.stats is not None
        return standardize(scores, source.stats)

    def _fit_stats(self, source: RewardSource, scores: torch.Tensor) -> None:
        """Measure mean/std on this batch (all processes' batches when gathering), then freeze."""
        values = scores
        if self.gather is not None:
            values = self.gather(scores.to(gather_device(self.gather))).cpu()
        n_finite = int(torch.isfinite(values).sum())
        if n_finite == 0:
            return _raise_nonfinite(source.name)
        stats = zscore_stats(values)  # the finite values, population std
        if not has_spread(stats):
            logger.warning("reward source %r is constant on its first batch: centred, not scaled", source.name)
        source.stats = stats  # the measured std, however small: standardize() centres without scaling then
        source.stats_origin = "first batch"
        logger.info(
            "reward source %r: zscore stats from the first batch (n=%d): mean %.4f std %.4g",
            source.name,
            n_finite,
            stats["mean"],
            stats["std"],
        )

    def shape(self, score: torch.Tensor, ended_with_eos: torch.Tensor) -> torch.Tensor:
        """All reward shaping, in one place: clip the score, then penalise replies without EOS."""
        if self.reward_clip is not None:
            score = score.clamp(-self.reward_clip, self.reward_clip)
        if self.missing_eos_penalty is not None:
            score = score + self.missing_eos_penalty * (~ended_with_eos).float()
        return score

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The frozen normalisation statistics (checkpointed so a resumed run keeps its scale)."""
        return {s.name: {"stats": s.stats, "origin": s.stats_origin} for s in self.sources}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore statistics saved by :meth:`state_dict`."""
        for source in self.sources:
            if source.name in state and state[source.name]["stats"] is not None:
                source.stats = dict(state[source.name]["stats"])
                source.stats_origin = state[source.name]["origin"]

    @property
    def strategy_name(self) -> str:
        """The combination as logs name it: ``sum``, ``sum_per_prompt``, ``conservative (min)``, ..."""
        return describe_strategy(self.strategy, self.method, self.k)

    def describe(self) -> list[dict[str, Any]]:
        """One dict per source: name, weight, normalize, stats and where they came from, the calibration set of its
        length calibration (None: not calibrated), and the combination strategy."""
        return [
            {
                "name": s.name,
                "weight": s.weight,
                "normalize": s.normalize,
                "stats": s.stats,
                "stats_origin": s.stats_origin,
                "length_calibration": s.calibration.calibration_set if s.calibration is not None else None,
                "combine": self.strategy_name,
            }
            for s in self.sources
        ]


def gather_device(gather: GatherFn) -> torch.device:
    """The device ``gather`` wants its tensors on: the process's (CUDA under NCCL, accelerate's gather), or
    the CPU."""
    owner = getattr(gather, "__self__", None)
    return getattr(owner, "device", torch.device("cpu"))


def _raise_nonfinite(name: str) -> None:
    raise NonFiniteError(
        f"reward source {name!r} returned no finite score on its first batch; check that reward model or function"
    )


__all__ = [
    "CombinedReward",
    "RewardBreakdown",
    "gather_device",
]
