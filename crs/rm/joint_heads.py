"""A joint RM's two heads (``rm.loss: joint``): how its preference and absolute outputs become one reward."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from crs.rm.metrics import pearson, reward_stats

# In rm_format.json (what scores) and reward_stats.json (what the stats were measured with).
JOINT_WEIGHT_KEY = "joint_preference_weight"
MIN_HEAD_STD = 1e-6  # a head with no spread is not scaled up to infinity


@dataclass
class JointHeads:
    """How a joint RM's two outputs become one reward: ``w * z(head 0) + (1 - w) * z(head 1)``.

    Head 0 is the preference head, head 1 the absolute head; each is z-scored with its own
    ``mean`` / ``std`` (measured on the validation replies at training). ``correlation`` is
    the two heads' Pearson correlation on those replies: with it the reward's statistics
    for any weight follow without the data (:meth:`combined_stats`).
    """

    preference_weight: float
    preference: dict[str, Any]
    absolute: dict[str, Any]
    correlation: float = 0.0

    @classmethod
    def fit(cls, heads: Tensor, preference_weight: float) -> JointHeads:
        """Head statistics measured on ``heads`` (``[N, 2]`` raw outputs)."""
        columns = heads.double().numpy().T
        corr = pearson(columns[0].tolist(), columns[1].tolist()) if len(columns[0]) > 1 else None
        return cls(preference_weight, reward_stats(columns[0].tolist()), reward_stats(columns[1].tolist()), corr or 0.0)

    def combine(self, heads: Tensor) -> Tensor:
        """The reward of each row of ``heads`` (``[N, 2]``)."""
        z = [
            (heads[:, i].float() - s["mean"]) / max(float(s["std"]), MIN_HEAD_STD)
            for i, s in enumerate((self.preference, self.absolute))
        ]
        return self.preference_weight * z[0] + (1 - self.preference_weight) * z[1]

    def combined_stats(self) -> dict[str, float]:
        """Mean and std of :meth:`combine` on the replies the head statistics came from.

        Exact there (both z-scores have mean 0 and std 1): ``var = w^2 + (1-w)^2 + 2w(1-w)rho``.
        """
        w = self.preference_weight
        return {"mean": 0.0, "std": math.sqrt(max(w * w + (1 - w) ** 2 + 2 * w * (1 - w) * self.correlation, 0.0))}

    def saved(self) -> dict[str, Any]:
        """What ``reward_stats.json`` keeps of it (beside the stats of the combined reward)."""
        return {
            JOINT_WEIGHT_KEY: self.preference_weight,
            "heads": {"preference": self.preference, "absolute": self.absolute},
            "head_correlation": self.correlation,
        }
