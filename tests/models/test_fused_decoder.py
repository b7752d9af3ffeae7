"""The lean decode-only Llama forward gives transformers' results, follows weight changes, and
is used only where it applies."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_causal_lm

from crs.models.decoding import SamplingSettings, causal_lm_step, decode_loop
from crs.models.formatting import encode_prompt, pad_batch
from crs.models.fused_decoder import FusedLlamaDecoder
from crs.models.packed_linear import PackedLinear, packing_supported

PROMPTS = ["Hi", "Tell me a long story about a cat and a dog, please.", "2+2?"]


def _batch(tokenizer):
    encoded = [encode_prompt(tokenizer, [{"role": "user", "content": p}], 64) for p in PROMPTS]
    ids, mask = pad_batch(encoded, tokenizer.pad_token_id, side="left")  # left-padded, unequal lengths
    return torch.tensor(ids), torch.tensor(mask)


def _fused_step(decoder: FusedLlamaDecoder):
    def step(input_ids, attention_mask, position_ids, cache):
        state, cache = decoder(input_ids, attention_mask, position_ids, cache)
        return decoder.lm_head(state), cache, None

    return step


def _decode(step, ids, mask, n_tokens, pad_id):
    # No EOS (id -1): every row decodes n_tokens, past the cache's first capacity (prompt + 64).
    return decode_loop(step, ids, mask, SamplingSettings(n_tokens), eos_id=-1, pad_id=pad_id)


@pytest.mark.parametrize(
    ("dtype", "batch_hint", "tol"), [(torch.float32, None, 1e-4), (torch.float32, 3, 1e-4), (torch.bfloat16, 3, 0.1)]
)
@pytest.mark.parametrize("bias", [False, True])
def test_greedy_decoding_matches_transformers(left_tokenizer, dtype, batch_hint, tol, bias):
    model = tiny_causal_lm(left_tokenizer, attention_bias=bias, mlp_bias=bias).to(dtype).eval().requires_grad_(False)
    if bias:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.5)  # zero-initialised: make them count
    ids, mask = _batch(left_tokenizer)
    expected = _decode(causal_lm_step(model), ids, mask, 80, left_tokenizer.pad_token_id)
    decoder = FusedLlamaDecoder(model, batch_hint)
    if batch_hint and packing_supported(dtype):
        assert isinstance(decoder.lm_head, PackedLinear) and isinstance(decoder.layers[0].qkv, PackedLinear)
    got = _decode(_fused_step(decoder), ids, mask, 80, left_tokenizer.pad_token_id)
    assert torch.equal(got.reply_ids, expected.reply_ids)
    assert torch.allclose(got.logprobs, expected.logprobs, atol=tol)
    # The model itself still gives its own results (its projections are now views of the fused weights).
    assert torch.equal(
        _decode(causal_lm_step(model), ids, mask, 80, left_tokenizer.pad_token_id).reply_ids, expected.reply_ids
    )


def test_writing_the_models_weights_updates_the_decoder_after_repack(left_tokenizer):
    model = tiny_causal_lm(left_tokenizer).eval().requires_grad_(False)
    decoder = FusedLlamaDecoder(model, batch_hint=3)
    ids, mask = _batch(left_tokenizer)
    before = _decode(_fused_step(decoder), ids, mask, 8, left_tokenizer.pad_token_id)
    with torch.no_grad():
        for layer in model.model.layers:  # as MergedSampler.refresh writes a new adapter in
            layer.self_attn.k_proj.weight.normal_(0, 0.5)
            layer.mlp.up_proj.weight.normal_(0, 0.5)
    decoder.repack()
    after = _decode(_fused_step(decoder), ids, mask, 8, left_tokenizer.pad_token_id)
    expected = _decode(causal_lm_step(model), ids, mask, 8, left_tokenizer.pad_token_id)
    assert not torch.allclose(after.logprobs, before.logprobs, atol=1e-3)
    assert torch.allclose(after.logprobs, expected.logprobs, atol=1e-4)


def test_only_llama_models_with_plain_linears_are_supported(left_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    assert FusedLlamaDecoder.supports(tiny_causal_lm(left_tokenizer))
    assert not FusedLlamaDecoder.supports(tiny_causal_lm(left_tokenizer, hidden_act="gelu"))
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2))
    assert not FusedLlamaDecoder.supports(gpt2)
