"""The reward-model run format: how an RM tokenizes (:class:`RMFormat`, ``rm_format.json``) and the
files an RM run keeps beside its model (``reward_stats.json``; a joint RM's head weight and statistics).

:class:`RMFormat` is saved with the run and used by the training collators and by
:class:`crs.rm.scorer.RewardScorer` alike, so a reward model always sees token ids built as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from crs.config import DataConfig
from crs.data.schema import Messages
from crs.models.formatting import encode_prompt_reply, pad_batch
from crs.models.manifest import read_run_json
from crs.models.model_error import ModelError
from crs.rm.joint_heads import JOINT_WEIGHT_KEY, JointHeads

RM_FORMAT_FILE = "rm_format.json"
REWARD_STATS_FILE = "reward_stats.json"


@dataclass
class RMFormat:
    """How (prompt, reply) pairs become token ids for one reward model.

    Copied from ``data.*`` at training time and saved with the run (``rm_format.json``)
    so that scoring later, under another stage's config, tokenizes exactly as training did.
    """

    max_length: int = 512
    max_prompt_length: int = 256
    fallback_template: str = "{role}: {content}\n"

    @classmethod
    def from_data_config(cls, data: DataConfig) -> RMFormat:
        """The format a reward model trained on ``data`` uses."""
        return cls(data.max_length, data.max_prompt_length, data.fallback_template)

    def encode(self, tokenizer: Any, prompts: list[Messages], replies: list[str]) -> dict[str, Tensor]:
        """A padded batch (``input_ids``, ``attention_mask``) of prompt + reply sequences.

        Padding uses the tokenizer's pad id, which the model's ``pad_token_id`` must equal
        (decoder classifiers read the reward at the last non-pad token).
        """
        encoded = [
            encode_prompt_reply(tokenizer, p, r, self.max_length, self.max_prompt_length, self.fallback_template)
            for p, r in zip(prompts, replies, strict=True)
        ]
        ids, mask = pad_batch([e.input_ids for e in encoded], tokenizer.pad_token_id, side=tokenizer.padding_side)
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


_REDO = "the reward-model run is damaged: rerun rm_train.py with --overwrite, or point at another run"


def read_rm_files(path: str | Path) -> tuple[RMFormat | None, dict[str, Any] | None, str | None]:
    """(format, reward stats, loss kind) saved in an RM run dir; None for what is missing.

    A joint RM's head weight (``rm_format.json``) is read by :func:`read_joint_heads`.
    """
    path = Path(path)
    fmt = stats = loss_kind = None
    if (path / RM_FORMAT_FILE).is_file():
        saved = read_run_json(path / RM_FORMAT_FILE, _REDO)
        loss_kind = saved.pop("loss", None)
        saved.pop(JOINT_WEIGHT_KEY, None)
        try:
            fmt = RMFormat(**saved)
        except TypeError as err:  # a key RMFormat does not have
            raise ModelError(f"{path / RM_FORMAT_FILE} does not describe an RM format ({err}); {_REDO}") from None
    if (path / REWARD_STATS_FILE).is_file():
        stats = read_run_json(path / REWARD_STATS_FILE, _REDO)
    return fmt, stats, loss_kind


def read_joint_heads(path: str | Path, stats: dict[str, Any] | None) -> tuple[JointHeads, dict[str, Any]]:
    """A joint RM run's :class:`JointHeads` and the statistics of the reward it gives.

    The weight is ``rm_format.json``'s (editable); ``reward_stats.json`` keeps the head
    statistics and the reward's own for the weight trained with. For another weight the
    reward's ``mean`` / ``std`` are derived (:meth:`JointHeads.combined_stats`), so consumers that
    z-score with ``stats`` stay right.
    """
    path = Path(path)
    weight = read_run_json(path / RM_FORMAT_FILE, _REDO).get(JOINT_WEIGHT_KEY)
    heads = (stats or {}).get("heads") or {}
    if not isinstance(weight, (int, float)) or not 0 <= weight <= 1 or not {"preference", "absolute"} <= set(heads):
        raise ModelError(
            f"{path} is a joint RM without a head weight in [0, 1] ({RM_FORMAT_FILE}) "
            f"or head statistics ({REWARD_STATS_FILE}); {_REDO}"
        )
    joint = JointHeads(
        float(weight), heads["preference"], heads["absolute"], float(stats.get("head_correlation") or 0.0)
    )
    if np.isclose(float(stats.get(JOINT_WEIGHT_KEY, -1)), joint.preference_weight):
        return joint, stats
    derived = {
        **joint.saved(),
        **joint.combined_stats(),
        "derived_from": f"the head statistics, for {JOINT_WEIGHT_KEY} {weight}",
    }
    return joint, {**derived, "split": stats.get("split")}
