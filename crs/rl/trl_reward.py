"""The combined reward as TRL's GRPO/RLOO trainers take it: reward functions over TRL's batches.

:func:`trl_reward_func` hands TRL the combined reward as one function (the very formula PPO
optimises); :func:`trl_reward_funcs_per_source` hands it one function per source, for TRL's own
per-group normalisation (``rl.reward_normalization: trl``). Both score each TRL batch once,
through :class:`TRLRewardBridge`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import torch

from crs.config import ConfigError
from crs.data.schema import Messages, user_prompt
from crs.rl.combined_reward import CombinedReward, RewardBreakdown, gather_device
from crs.runs import RunError


def trl_reward_func(
    reward: CombinedReward, eos_token_ids: Sequence[int] | None = None, group_size: int | None = None
) -> Callable[..., list[float]]:
    """A reward function for TRL's GRPO/RLOO trainers: ``f(prompts, completions, **kw)`` -> the combined reward.

    The very formula PPO optimises (:meth:`CombinedReward.combine`). Accepts TRL's plain-text
    prompts and completions and its conversational ones (lists of messages). With ``eos_token_ids``
    and TRL's ``completion_ids`` the missing-EOS penalty applies as in PPO (TRL's
    completions end at their first EOS); without them every reply counts as ended.
    Each batch's breakdown (every source raw and normalised, combined, EOS rate) goes to
    TRL's ``log_metric`` when the trainer passes one, under PPO's metric names.

    With ``sum_per_prompt``, ``group_size`` (TRL's ``num_generations``) says where the groups
    are: TRL lays a batch out as consecutive groups of ``group_size`` replies *across all
    processes* (it gathers every process's rewards, then views them as groups), so one
    process may hold part of a group. Each process therefore gathers every process's raw
    scores (``reward.gather``; one collective per batch, as TRL's own), standardises the
    whole batch's groups, and keeps its own rows (``reward.process_index``). None: groups are
    the replies to one prompt in the batch this process sees.
    """
    return TRLRewardBridge(reward, eos_token_ids, group_size).combined_func()


def trl_reward_funcs_per_source(
    reward: CombinedReward, eos_token_ids: Sequence[int] | None = None
) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """One TRL reward function per source (raw scores) and their weights, for TRL's own normalisation.

    With GRPO's ``multi_objective_aggregation="normalize_then_sum"`` TRL normalises each
    function within each group, then sums them with ``reward_weights`` (these weights).
    The missing-EOS penalty, when set, is one more function (``missing_eos``, weight 1);
    ``reward_clip`` has no counterpart there. The breakdown of :meth:`CombinedReward.combine` is
    still logged (``reward/combined`` is then what crs's formula would give, not what is optimised).
    Only with the ``sum`` strategy: TRL combines these functions itself.
    """
    if reward.strategy != "sum":
        raise ConfigError(
            f"rl.combine={reward.strategy} with rl.reward_normalization=trl: "
            "TRL sums its reward functions itself; use rl.combine: sum"
        )
    return TRLRewardBridge(reward, eos_token_ids).per_source_funcs()


class TRLRewardBridge:
    """Scores a TRL batch once with a :class:`CombinedReward` and hands TRL what it asks for."""

    def __init__(
        self, reward: CombinedReward, eos_token_ids: Sequence[int] | None = None, group_size: int | None = None
    ) -> None:
        self.reward = reward
        self.eos_token_ids = set(eos_token_ids) if eos_token_ids is not None else None
        self.group_size = group_size
        self._last: tuple[list[str], RewardBreakdown] | None = None

    def score(
        self,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[list[int]] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
    ) -> RewardBreakdown:
        """The breakdown of one batch (computed once, however many functions ask for it)."""
        replies = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        if self._last is not None and self._last[0] == replies:
            return self._last[1]
        messages = [p if isinstance(p, list) else user_prompt(str(p)) for p in prompts]
        ended = None
        if self.eos_token_ids is not None and completion_ids is not None:
            ended = [bool(ids) and int(ids[-1]) in self.eos_token_ids for ids in completion_ids]
        if self.reward.strategy == "sum_per_prompt" and self.group_size is not None:
            scores = self.score_in_groups(messages, replies, ended)
        else:
            scores = self.reward(messages, replies, ended)
        if log_metric is not None:
            for name, value in scores.metrics().items():
                log_metric(name, value)
        self._last = (replies, scores)
        return scores

    def score_in_groups(
        self, messages: list[Messages], replies: list[str], ended: list[bool] | None
    ) -> RewardBreakdown:
        """``sum_per_prompt`` on TRL's layout: groups of ``group_size`` consecutive replies over every
        process's batch, gathered whole so that a group split between processes is standardised whole."""
        reward, size, n = self.reward, int(self.group_size or 0), len(replies)
        raw = {source.name: source.score(messages, replies) for source in reward.sources}
        eos = torch.ones(n) if ended is None else torch.tensor(ended, dtype=torch.float32)
        local = torch.stack([*raw.values(), eos], dim=1)  # (n, sources + 1): one gather for the whole batch
        every = local if reward.gather is None else reward.gather(local.to(gather_device(reward.gather))).cpu()
        offset = reward.process_index * n if reward.gather is not None else 0
        if size < 1 or every.shape[0] % size:
            raise RunError(f"TRL's batch of {every.shape[0]} replies is not whole groups of rl.group_size={size}")
        groups = torch.arange(every.shape[0]) // size
        _check_groups(messages, groups[offset : offset + n], size)
        whole = reward.combine({name: every[:, i] for i, name in enumerate(raw)}, every[:, -1] > 0.5, groups=groups)
        return whole.select(slice(offset, offset + n))

    def combined_func(self) -> Callable[..., list[float]]:
        def crs_combined_reward(
            prompts: list[Any],
            completions: list[Any],
            completion_ids: list[list[int]] | None = None,
            log_metric: Callable[[str, float], None] | None = None,
            **kwargs: Any,
        ) -> list[float]:
            return self.score(prompts, completions, completion_ids, log_metric).combined.tolist()

        return crs_combined_reward

    def per_source_funcs(self) -> tuple[list[Callable[..., list[float]]], list[float]]:
        funcs: list[Callable[..., list[float]]] = []
        weights: list[float] = []
        for position, source in enumerate(self.reward.sources):

            def raw_score(
                prompts: list[Any],
                completions: list[Any],
                completion_ids: list[list[int]] | None = None,
                log_metric: Callable[[str, float], None] | None = None,
                _name: str = source.name,
                _first: bool = position == 0,
                **kwargs: Any,
            ) -> list[float]:
                # The first function scores every source (and logs); the others reuse that batch.
                scores = self.score(prompts, completions, completion_ids, log_metric if _first else None)
                return scores.raw[_name].tolist()

            raw_score.__name__ = source.name  # TRL logs rewards/<__name__>/mean
            funcs.append(raw_score)
            weights.append(source.weight)
        penalty = self.reward.missing_eos_penalty
        if penalty is not None:

            def missing_eos(
                prompts: list[Any], completions: list[Any], completion_ids: list[list[int]] | None = None, **kwargs: Any
            ) -> list[float]:
                scores = self.score(prompts, completions, completion_ids)
                return (penalty * (~scores.ended_with_eos).float()).tolist()

            funcs.append(missing_eos)
            weights.append(1.0)
        return funcs, weights


def _check_groups(messages: list[Messages], groups: torch.Tensor, size: int) -> None:
    """Replies this process holds that TRL's layout puts in one group must answer one prompt
    (a layout TRL changed would otherwise standardise strangers together, silently)."""
    seen: dict[int, str] = {}
    for group, prompt in zip(groups.tolist(), messages):
        key = json.dumps(prompt, sort_keys=True)
        if seen.setdefault(group, key) != key:
            raise RunError(
                f"rl.combine=sum_per_prompt: TRL's batch is not laid out as groups of rl.group_size={size} "
                "replies to one prompt"
            )


__all__ = ["TRLRewardBridge", "trl_reward_func", "trl_reward_funcs_per_source"]
