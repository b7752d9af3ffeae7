"""The Rollout batch: what one PPO step samples and then learns from.

Token layout (left-padded prompts, so every reply starts at the same column ``P``)::

    input_ids       [pad pad p p p p | r0 r1 r2 EOS pad]      P prompt columns, R reply columns
    attention_mask  [ 0   0  1 1 1 1 |  1  1  1  1   0 ]
    reply_mask                       [  1  1  1  1   0 ]      1 up to and including EOS

Per-token quantities (log-probs, values, rewards, advantages) are (B, R): reply columns only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from crs.data.schema import Messages
from crs.rl.combined_reward import RewardBreakdown


@dataclass
class Rollout:
    """One rollout batch on this process: token ids, masks, and per-token PPO quantities (B, R)."""

    input_ids: torch.Tensor  # (B, P + R) prompt (left-padded) then reply
    attention_mask: torch.Tensor  # (B, P + R)
    reply_mask: torch.Tensor  # (B, R)
    ref_logprobs: torch.Tensor  # log pi_ref(y_t)
    score: torch.Tensor  # (B,) the combined reward of each reply
    # The fields below are None while the old log-probs are left to the first update
    # forward (old_logprobs_from_update); :meth:`PPOTrainer.complete_rollout` fills them.
    logprobs: torch.Tensor | None = None  # log pi_old(y_t)
    values: torch.Tensor | None = None  # V_old(s_t)
    rewards: torch.Tensor | None = None  # KL penalty + score on the last token
    kl: torch.Tensor | None = None  # per-token KL estimate
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    @property
    def n_reply(self) -> int:
        """R: reply columns."""
        return self.reply_mask.shape[1]

    @property
    def complete(self) -> bool:
        """Whether old log-probs, values, rewards and advantages are all there."""
        return self.advantages is not None

    def rows(self, index: torch.Tensor) -> Rollout:
        """The sub-batch of rows ``index`` (every field shares its first dimension)."""
        return Rollout(
            **{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index] for f in fields(self)}
        )


@dataclass
class RolloutResult:
    """A rollout and what it produced beyond tensors: the texts and their scores."""

    batch: Rollout
    prompts: list[Messages]
    replies: list[str]
    scores: RewardBreakdown
    timings: dict[str, float]
