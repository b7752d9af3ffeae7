"""A lean decode-only forward for Llama-family models: what PPO sampling runs on CPU.

Sampling runs the whole network once per token for a batch of a few rows. The matmuls are
then small, and in transformers' decoder about half of a step's time goes elsewhere
(module calls, mask and cache bookkeeping, seven projections a layer). This forward does
the same arithmetic as transformers' ``LlamaModel`` with less around it:

* fused weights: q|k|v in one matrix and gate|up in another, 4 matmuls a layer instead of 7;
  the model's own ``q_proj`` ... ``up_proj`` weights become row views of them, so writing
  those weights (:meth:`crs.rl.ppo.policy.MergedSampler.refresh`) updates the fused matrices;
* every matrix pre-packed for the CPU kernels (:mod:`crs.models.packed_linear`);
* a preallocated KV cache, written in place, and RoPE applied to q and k in one go.

Only frozen copies use it (the merged sampling copy of the policy), on CPU, for the models
:meth:`FusedLlamaDecoder.supports` accepts; anything else decodes with transformers. The
rotary embedding is the model's own module, so every RoPE variant transformers implements
is honoured.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crs.models.packed_linear import PackedLinear, pack_linears


class KVCache:
    """Keys and values of every layer in preallocated buffers, grown by doubling when full."""

    def __init__(
        self, n_layers: int, batch: int, n_kv_heads: int, head_dim: int, capacity: int, like: torch.Tensor
    ) -> None:
        shape = (n_layers, batch, n_kv_heads, capacity, head_dim)
        self.keys = like.new_empty(shape)
        self.values = like.new_empty(shape)
        self.length = 0  # tokens stored (every layer alike)

    def reserve(self, new_tokens: int) -> None:
        """Make room for ``new_tokens`` more."""
        capacity = self.keys.shape[3]
        if self.length + new_tokens <= capacity:
            return
        grown = max(2 * capacity, self.length + new_tokens)
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_empty((*old.shape[:3], grown, old.shape[4]))
            new[:, :, :, : self.length] = old[:, :, :, : self.length]
            setattr(self, name, new)

    def store(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one layer's new (B, kv heads, T, head dim) keys and values; all of its keys and values so far."""
        end = self.length + keys.shape[2]
        self.keys[layer, :, :, self.length : end] = keys
        self.values[layer, :, :, self.length : end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


def _fused(parts: list[nn.Linear]) -> nn.Linear:
    """One linear computing ``parts`` side by side; each part's weight (and bias) becomes a row view of it."""
    weight = torch.cat([p.weight.detach() for p in parts])
    has_bias = parts[0].bias is not None
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias, device=weight.device, dtype=weight.dtype)
    fused.weight = nn.Parameter(weight, requires_grad=False)
    if has_bias:
        fused.bias = nn.Parameter(torch.cat([p.bias.detach() for p in parts]), requires_grad=False)
    start = 0
    for part in parts:
        rows = part.weight.shape[0]
        part.weight = nn.Parameter(fused.weight[start : start + rows], requires_grad=False)
        if has_bias:
            part.bias = nn.Parameter(fused.bias[start : start + rows], requires_grad=False)
        start += rows
    return fused


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rms_norm(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    # As transformers' LlamaRMSNorm: normalise in fp32, scale in the input's dtype.
    normed = x.float()
    normed = normed * torch.rsqrt(normed.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * normed.to(x.dtype)


class FusedLlamaDecoder(nn.Module):
    """The decoder body of a frozen Llama causal LM for token-by-token decoding.

    ``decoder(input_ids, attention_mask, position_ids, cache)`` returns the final-normed
    hidden state of each row's last position (B, hidden) and the cache, as
    :data:`crs.models.decoding.StepFn` needs. ``attention_mask`` covers every token so far (cached
    and new; 0 = left padding or a finished row). Call :meth:`repack` after changing weights.
    """

    def __init__(self, model: Any, batch_hint: int | None = None) -> None:
        super().__init__()
        config = model.config.get_text_config()
        body = model.get_decoder()
        self.embed = body.embed_tokens
        self.rotary = body.rotary_emb
        self.final_norm = body.norm
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.scaling = self.head_dim**-0.5
        self.layers = nn.ModuleList()
        for layer in body.layers:
            attn, mlp = layer.self_attn, layer.mlp
            fused = nn.Module()
            fused.input_norm, fused.post_attention_norm = layer.input_layernorm, layer.post_attention_layernorm
            fused.qkv = _fused([attn.q_proj, attn.k_proj, attn.v_proj])
            fused.o = attn.o_proj
            fused.gate_up = _fused([mlp.gate_proj, mlp.up_proj])
            fused.down = mlp.down_proj
            self.layers.append(fused)
        self.lm_head = model.get_output_embeddings()
        heads = nn.Module()
        heads.lm_head = self.lm_head
        # Packed copies share their weights with the layers they replace; the lm_head too.
        self.packed: dict[str, PackedLinear] = {}
        if batch_hint:
            self.packed = {**pack_linears(self.layers, batch_hint), **pack_linears(heads, batch_hint)}
            self.lm_head = heads.lm_head

    @staticmethod
    def supports(model: Any) -> bool:
        """A Llama-architecture causal LM (SwiGLU MLP, RMSNorm) with plain float linears, on CPU."""
        config = getattr(model, "config", None)
        if (
            config is None
            or getattr(config, "model_type", None) != "llama"
            or getattr(config, "hidden_act", None) != "silu"
        ):
            return False
        body = model.get_decoder()
        linears = [m for layer in body.layers for m in (layer.self_attn.q_proj, layer.mlp.gate_proj)]
        return all(
            type(m) is nn.Linear and m.weight.is_floating_point() and m.weight.device.type == "cpu" for m in linears
        )

    @torch.no_grad()
    def repack(self) -> None:
        """Re-pack every packed matrix from its (changed) weight."""
        for layer in self.packed.values():
            layer.repack()

    def new_cache(self, batch: int, capacity: int, like: torch.Tensor) -> KVCache:
        """An empty cache for ``batch`` rows."""
        return KVCache(len(self.layers), batch, self.n_kv_heads, self.head_dim, capacity, like)

    @torch.no_grad()
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache: KVCache | None
    ) -> tuple[torch.Tensor, KVCache]:
        """Run the new tokens ``input_ids`` (B, T) past the cached ones."""
        batch, n_new = input_ids.shape
        x = self.embed(input_ids)
        if cache is None:
            cache = self.new_cache(batch, n_new + 64, x)
        cache.reserve(n_new)
        total = cache.length + n_new
        cos, sin = (t.unsqueeze(1) for t in self.rotary(x, position_ids))  # (B, 1, T, head dim)
        group = self.n_heads // self.n_kv_heads
        keep = attention_mask[:, None, None, :total].bool()
        if n_new > 1:
            # Causal. A left-padding row then attends to nothing: SDPA gives it zeros, and no real token reads it.
            keep = keep & torch.ones(n_new, total, dtype=torch.bool, device=x.device).tril(diagonal=cache.length)
            keep = keep.repeat(1, 1, group, 1)  # the query rows of one kv head: its group's heads x T
        # Additive, in the activations' dtype, made once: a boolean mask is converted in every call.
        bias = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill_(~keep, float("-inf"))
        n_qk = self.n_heads + self.n_kv_heads
        for index, layer in enumerate(self.layers):
            qkv = (
                layer.qkv(_rms_norm(x, layer.input_norm))
                .view(batch, n_new, n_qk + self.n_kv_heads, self.head_dim)
                .transpose(1, 2)
            )
            qk = qkv[:, :n_qk]
            qk = qk * cos + _rotate_half(qk) * sin
            keys, values = cache.store(index, qk[:, self.n_heads :], qkv[:, n_qk:])
            # Grouped-query attention without repeating keys: each kv head answers its group's
            # query heads (heads kv*group .. kv*group+group-1, as transformers' repeat_kv pairs them).
            queries = qk[:, : self.n_heads].reshape(batch, self.n_kv_heads, group * n_new, self.head_dim)
            attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=bias, scale=self.scaling)
            attended = (
                attended.view(batch, self.n_heads, n_new, self.head_dim).transpose(1, 2).reshape(batch, n_new, -1)
            )
            x = x + layer.o(attended)
            gate, up = layer.gate_up(_rms_norm(x, layer.post_attention_norm)).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up)
        cache.length = total
        return _rms_norm(x[:, -1], self.final_norm), cache
