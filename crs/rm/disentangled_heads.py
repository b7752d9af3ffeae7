"""A disentangled RM's two heads (``rm.loss: disentangled``, after ODIN, Chen et al. 2024): which output is which,
the length they are measured against, and the one-output model the run saves.

During training the classifier has two outputs on one pooled representation: output 0 the quality
head, output 1 the length head; their sum meets the preferences (:func:`crs.rm.reward_losses.disentangled_terms`).
The run keeps the quality head alone (:func:`keep_quality_head`), so the saved model is an ordinary
one-output reward model whose reward is the quality head.
"""

from __future__ import annotations

from typing import Any

import torch

QUALITY_OUTPUT = 0
LENGTH_OUTPUT = 1
HEAD_LABELS = {QUALITY_OUTPUT: "quality", LENGTH_OUTPUT: "length"}  # named in config.json while training


def keep_quality_head(model: Any, head: torch.nn.Linear, state_dict: dict[str, Any] | None = None) -> None:
    """Cut ``model``'s two-output ``head`` (its trainable output layer) down to the quality head, in place.

    Afterwards the model has one output, the quality head's, and says so in its config: saved,
    it loads with ``num_labels=1`` like any one-head RM, in crs and outside it. Called once
    training is over; the length head's weights are dropped. ``state_dict``: a sharded model's whole
    weights, to be saved (:func:`crs.models.sharding.gathered_state_dict`): the head's rows are cut
    there, and the model's own placeholders or slices are left as they are.
    """
    keep = slice(QUALITY_OUTPUT, QUALITY_OUTPUT + 1)
    if state_dict is not None:
        mine = {id(head.weight), id(head.bias)}
        for name in [name for name, param in model.named_parameters() if id(param) in mine]:
            if name in state_dict:  # the main process holds the gathered weights, the others nothing
                state_dict[name] = state_dict[name][keep].clone()
    else:
        head.weight = torch.nn.Parameter(head.weight.detach()[keep].clone(), requires_grad=head.weight.requires_grad)
        if head.bias is not None:
            head.bias = torch.nn.Parameter(head.bias.detach()[keep].clone(), requires_grad=head.bias.requires_grad)
    head.out_features = 1
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # under peft: the base model
    inner.config.id2label, inner.config.label2id = {0: "quality"}, {"quality": 0}
    if hasattr(inner, "num_labels"):  # classifiers copy it from the config at construction
        inner.num_labels = 1
