"""The combined reward of an RL subset, loaded once, scoring batches of (prompt, reply) pairs for whoever asks.

:class:`ServedReward` is :meth:`crs.rl.combined_reward.CombinedReward.for_rl`: the very sources (reward-model runs
with their ``reward_stats.json``, length sources, length calibration, ``python:`` functions), the combination
strategy, the clip and the missing-EOS penalty an RL stage of that subset optimises. Each source scores a request's
replies in batches of ``serve.batch_size`` on the process's accelerator, then :meth:`CombinedReward.combine`
combines them once, over the whole request, as ``crs score`` does.

A ``zscore`` source needs a fixed scale, or the reward of one reply would depend on the others sent with it: its
saved statistics, those of ``serve.reward_state`` (an RL run's frozen ones), or, with
``serve.fit_stats_on_first_request``, the first request's (frozen after it, as PPO freezes its first batch's).
A source with none of these is refused before the server starts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from crs.config import ConfigError, CRSConfig, RewardSourceConfig
from crs.data.schema import Messages, last_user_text
from crs.models.loading import load_tokenizer
from crs.rl.combined_reward import CombinedReward, RewardBreakdown
from crs.rl.reward_sources import check_gold_sources
from crs.rl.reward_state import read_reward_state
from crs.runs import RunError


@dataclass
class ScoringItems:
    """One request's pairs: each prompt as chat messages, its reply, and whether the reply ended with EOS
    (None: unknown, every reply counts as ended and no missing-EOS penalty applies)."""

    prompts: list[Messages]
    replies: list[str]
    ended_with_eos: list[bool] | None = None

    def __len__(self) -> int:
        return len(self.replies)


class ScoringError(RunError):
    """A request the reward could not score into finite numbers (a source that returned NaN or infinity)."""


class ServedReward:
    """The reward an RL subset optimises, answering :class:`ScoringItems` with a :class:`RewardBreakdown`.

    Calls are serialised (one at a time): the models are not shared between threads, and the first call may freeze
    the statistics every later call uses."""

    def __init__(
        self,
        reward: CombinedReward,
        eos_texts: list[str],
        batch_size: int = 32,
        fit_stats: bool = False,
        configs: Sequence[RewardSourceConfig] = (),
        allow_gold: bool = False,
    ) -> None:
        self.reward, self.eos_texts, self.batch_size = reward, eos_texts, batch_size
        self.fit_stats = fit_stats
        self.configs, self.allow_gold = list(configs), allow_gold  # for the gold judge's check on each request
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: CRSConfig) -> ServedReward:
        """Load ``cfg``'s ``rl.rewards`` and combination once (``serve.*`` for the scale and the batches)."""
        settings = cfg.serve
        reward = CombinedReward.for_rl(cfg)
        if settings.reward_state is not None:
            reward.load_state_dict(read_reward_state(settings.reward_state))
        check_scales(reward, settings.fit_stats_on_first_request)
        eos_texts = settings.eos_texts or [policy_eos_text(cfg)]
        fit, allow_gold = settings.fit_stats_on_first_request, cfg.run.allow_gold_outside_demo
        return cls(reward, eos_texts, settings.batch_size, fit, cfg.rl.rewards, allow_gold)

    def __call__(self, items: ScoringItems) -> RewardBreakdown:
        """Score ``items`` (at least one): every source in batches, then the combination over all of them at once."""
        prompt_texts = [last_user_text(p) for p in items.prompts]
        check_gold_sources(self.configs, prompt_texts, "rl.rewards", self.allow_gold)
        with self._lock:  # sum_per_prompt's groups: the replies to one prompt in this request
            scores = self.reward(
                items.prompts, items.replies, items.ended_with_eos, self.fit_stats, batch_size=self.batch_size
            )
        check_finite(scores)
        return scores

    def describe(self) -> dict[str, Any]:
        """What this reward is, for the health endpoint: sources with their scales, combination, clip, EOS texts."""
        reward = self.reward
        return {
            "sources": reward.describe(),
            "combine": reward.strategy_name,
            "reward_clip": reward.reward_clip,
            "missing_eos_penalty": reward.missing_eos_penalty,
            "eos_texts": self.eos_texts,
            "batch_size": self.batch_size,
        }


def check_scales(reward: CombinedReward, fit_on_first_request: bool) -> None:
    """Refuse ``zscore`` sources without statistics unless the first request may fit them (``sum_per_prompt``
    standardises within each prompt's replies and needs none)."""
    if fit_on_first_request or reward.strategy == "sum_per_prompt":
        return
    unscaled = [s.name for s in reward.sources if s.normalize == "zscore" and s.stats is None]
    if unscaled:
        raise ConfigError(
            f"rl.rewards: {', '.join(unscaled)} z-score(s) without saved statistics, so a served reward would depend "
            "on the replies sent with it: set serve.reward_state (an RL run that froze them, or a reward-state file), "
            "or serve.fit_stats_on_first_request: true (the first request's, as PPO's first batch), or normalize: none"
        )


def policy_eos_text(cfg: CRSConfig) -> str:
    """The end-of-sequence token of ``model.name``'s tokenizer, as text: what ends a decoded reply that stopped."""
    eos = load_tokenizer(cfg.model.name, cfg.model.cache_dir).eos_token
    if not eos:
        raise ConfigError(f"model.name {cfg.model.name}: its tokenizer has no eos_token; set serve.eos_texts")
    return str(eos)


def check_finite(scores: RewardBreakdown) -> None:
    """A :class:`ScoringError` naming the items whose combined reward, or any source's score, is NaN or infinite:
    as PPO skips such a batch (:meth:`RewardBreakdown.is_finite`), a clip must not turn one into a finite reward."""
    finite = torch.isfinite(scores.combined)
    for raw in scores.raw.values():
        finite &= torch.isfinite(raw)
    bad = (~finite).nonzero().flatten().tolist()
    if bad:
        sources = [name for name, count in scores.nonfinite.items() if count]
        raise ScoringError(
            f"non-finite reward for item(s) {bad[:10]}{' ...' if len(bad) > 10 else ''}"
            + (f" (from {', '.join(sources)})" if sources else "")
        )


__all__ = ["ScoringError", "ScoringItems", "ServedReward", "check_scales", "policy_eos_text"]
