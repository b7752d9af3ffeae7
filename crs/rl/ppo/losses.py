"""Every objective of crs's PPO: the KL penalty and its controllers, GAE, whitening, the clipped losses.

The per-token KL penalty with the score on the last token (:func:`per_token_rewards`),
fixed or adaptive KL control (Ziegler et al. 2019), GAE, advantage whitening, and the
clipped policy and value losses. :class:`crs.rl.ppo.trainer.PPOTrainer` keeps the loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from crs.config import RLConfig

ReduceFn = Callable[[torch.Tensor], torch.Tensor]  # sums a tensor over all processes


class FixedKLController:
    """A constant KL coefficient beta."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_samples: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict[str, float]:
        """The current coefficient (checkpointed)."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore the coefficient."""
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. (2019): move beta so the policy's KL from the reference tracks a target.

    ``beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon)``, with KL
    measured per sequence (nats) and ``n`` the number of rollouts since the last update.
    """

    def __init__(self, kl_coef: float, target_kl: float, horizon: int) -> None:
        super().__init__(kl_coef)
        self.target = target_kl
        self.horizon = horizon

    def update(self, current_kl: float, n_samples: int) -> None:
        """Nudge beta up when KL is above target, down when below (at most 20% per horizon)."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_samples / self.horizon


def make_kl_controller(cfg: RLConfig) -> FixedKLController:
    """Fixed or adaptive KL control, per ``rl.adaptive_kl``."""
    if cfg.adaptive_kl:
        return AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)
    return FixedKLController(cfg.kl_coef)


def last_token_index(reply_mask: torch.Tensor) -> torch.Tensor:
    """Column of each reply's last real token (EOS when it has one): where the score lands."""
    return reply_mask.long().sum(-1).clamp(min=1) - 1


def masked_mean(x: torch.Tensor, mask: torch.Tensor, reduce: ReduceFn | None = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1 (over all processes when ``reduce`` sums across them)."""
    total, count = (x * mask).sum(), mask.sum()
    if reduce is not None:
        total, count = reduce(total), reduce(count)
    return total / count.clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, reduce: ReduceFn | None = None) -> torch.Tensor:
    """``(x - mean) / std`` over the masked entries (and processes); padding stays 0."""
    mean = masked_mean(x, mask, reduce)
    var = masked_mean((x - mean) ** 2, mask, reduce)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def per_token_rewards(
    score: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, reply_mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards per reply token: ``-beta * KL_t`` everywhere, plus the score on the last token.

    KL_t = log pi(y_t) - log pi_ref(y_t) (the k1 estimator: unbiased for the sequence KL
    under the policy's own samples). Returns (rewards, kl), both (B, R), zero on padding.
    """
    kl = (logprobs - ref_logprobs) * reply_mask
    rewards = -kl_coef * kl
    last = last_token_index(reply_mask)
    rewards[torch.arange(rewards.shape[0]), last] += score.to(rewards.dtype)
    return rewards, kl


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, reply_mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the reply tokens.

    ``delta_t = r_t + gamma V(s_{t+1}) - V(s_t)``, ``A_t = delta_t + gamma lam A_{t+1}``;
    the state after the last real token is terminal (value 0). Returns (advantages,
    returns = advantages + values), zero on padding.
    """
    values = values * reply_mask
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * reply_mask[:, t]
        advantages[:, t] = next_advantage
    return advantages, (advantages + values) * reply_mask


def ppo_losses(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    reply_mask: torch.Tensor,
    cliprange: float,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate policy loss and the clipped value loss (token means).

    policy: ``max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))``
    value:  ``0.5 * max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)``
    """
    log_ratio = (logprobs - old_logprobs) * reply_mask
    ratio = torch.exp(log_ratio)
    pg_unclipped = -advantages * ratio
    pg_clipped = -advantages * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    pg_loss = masked_mean(torch.maximum(pg_unclipped, pg_clipped), reply_mask)

    values_clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    vf_unclipped = (values - returns) ** 2
    vf_clipped = (values_clipped - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.maximum(vf_unclipped, vf_clipped), reply_mask)

    with torch.no_grad():
        stats = {
            "policy/clipfrac": masked_mean((pg_clipped > pg_unclipped).float(), reply_mask),
            "policy/approx_kl": 0.5 * masked_mean(log_ratio**2, reply_mask),
            "policy/ratio": masked_mean(ratio, reply_mask),
            "value/clipfrac": masked_mean((vf_clipped > vf_unclipped).float(), reply_mask),
        }
    return pg_loss, vf_loss, stats
