"""The reward-model ``Trainer``: the loss ``rm.loss`` names on each collated batch, and crs's
validation metrics as its evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from crs.config import RewardModelConfig
from crs.models.hf_trainer import CRSTrainer
from crs.models.precision import autocast
from crs.rm.reward_losses import absolute_loss, disentangled_terms, joint_loss, ranking_loss, ranking_options

TWO_HEADS = ("joint", "disentangled")  # the losses of a classifier with two outputs


class RewardTrainer(CRSTrainer):
    """``Trainer`` with the reward-model losses and crs's validation metrics.

    ``evaluate_fn`` returns the validation metrics of the model being trained; it runs
    whenever Trainer would evaluate (every ``eval_steps`` and at the end). ``head`` is the
    model's trainable output layer, whose weights the disentangled loss's orthogonality term reads.
    """

    def __init__(
        self,
        *args: Any,
        rm_cfg: RewardModelConfig,
        autocast_dtype: torch.dtype,
        evaluate_fn: Callable[[], dict[str, Any]],
        head: torch.nn.Linear | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.rm_cfg, self.autocast_dtype, self.evaluate_fn, self.head = rm_cfg, autocast_dtype, evaluate_fn, head
        self.loss_is_scaled_for_ga = False  # our losses are per-batch means; Trainer divides by GA steps

    def compute_loss(
        self, model: Any, inputs: dict[str, Tensor], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        """Rewards of the batch's replies -> the ranking, absolute, joint or disentangled loss (``rm.loss``)."""
        with autocast(self.autocast_dtype, self.args.device):
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.float()
        loss = batch_loss(logits, inputs, self.rm_cfg, self.head.weight if self.head is not None else None)
        rewards = logits if self.rm_cfg.loss in TWO_HEADS else logits[:, 0]
        return (loss, rewards) if return_outputs else loss

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Our validation metrics, logged like Trainer's own ``eval_*`` numbers."""
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in self.evaluate_fn().items() if v is not None}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def batch_loss(
    logits: Tensor, inputs: dict[str, Tensor], rm: RewardModelConfig, head_weight: Tensor | None = None
) -> Tensor:
    """The loss of one collated batch under ``rm.loss``; ``logits`` is ``[N, outputs]``.

    ``head_weight``: the output layer's weight (the disentangled loss's orthogonality term).
    """
    if rm.loss == "pairwise":
        return ranking_loss(logits[:, 0], inputs["group_sizes"], **ranking_options(rm, inputs["scores"]))
    if rm.loss == "absolute":
        return absolute_loss(logits[:, 0], inputs["targets"], rm.abs_loss, inputs["weights"])
    if rm.loss == "disentangled":
        terms = disentangled_terms(
            logits, inputs["group_sizes"], inputs["lengths"], head_weight, **ranking_options(rm, inputs["scores"])
        )
        return terms.total(rm)
    return joint_loss(
        logits,
        int(inputs["n_ranking"]),
        inputs["group_sizes"],
        inputs["targets"],
        absolute_weight=rm.joint_absolute_weight,
        abs_kind=rm.abs_loss,
        weights=inputs["weights"],
        **ranking_options(rm, inputs["scores"]),
    )
