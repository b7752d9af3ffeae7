"""Loading models: one name as a policy or a reward model; an encoder refused as a policy."""

from __future__ import annotations

import pytest
import torch

from crs.models.loading import load_causal_lm, load_sequence_classifier, load_tokenizer
from crs.models.model_error import ModelError


def test_same_name_loads_as_policy_or_reward_model() -> None:
    rm = load_sequence_classifier("embedded:minilm-l6")  # an encoder: a reward model only
    assert rm.config.num_labels == 1
    policy = load_causal_lm("embedded:smollm2-135m-instruct", dtype=torch.bfloat16)
    assert policy.dtype == torch.bfloat16
    smol_rm = load_sequence_classifier("embedded:smollm2-135m-instruct")
    tok = load_tokenizer("embedded:smollm2-135m-instruct")
    out = smol_rm(**tok(["hello there"], return_tensors="pt"))
    assert out.logits.shape == (1, 1)


def test_an_encoder_as_policy_is_refused_before_its_weights_load() -> None:
    with pytest.raises(
        ModelError, match=r"is an encoder \(model_type 'bert', BertModel\): a policy must be a decoder-only causal LM"
    ):
        load_causal_lm("embedded:minilm-l6")
