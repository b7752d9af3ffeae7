"""The model side of PPO: the policy with its value function, its merged sampling copy, log-probs.

Token layout (left-padded prompts, so every reply starts at the same column ``P``)::

    input_ids       [pad pad p p p p | r0 r1 r2 EOS pad]      P prompt columns, R reply columns
    attention_mask  [ 0   0  1 1 1 1 |  1  1  1  1   0 ]
    reply_mask                       [  1  1  1  1   0 ]      1 up to and including EOS

The hidden state at column ``P-1+i`` predicts reply token ``i``; its value-head output
is V(s_i), the value of the state before token ``i``. So one forward gives, for the
reply tokens only, both the policy's log-probs and the values (the prompt columns never
reach the LM head: the vocabulary projection is the largest matmul of a small model).

Position ids come from the attention mask (``cumsum - 1``), in sampling and in every
forward alike, so a left-padded prompt sees the same positions as an unpadded one.
Logits are divided by the sampling temperature everywhere, so the log-probs PPO
optimises are those of the distribution the replies were sampled from.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crs.models.decoding import (
    Decoded,
    SamplingSettings,
    StepFn,
    cache_argument,
    decode_loop,
    position_ids_from_mask,
    returned_cache,
)
from crs.models.fused_decoder import FusedLlamaDecoder
from crs.models.packed_linear import PackedLinear, pack_linears


@contextlib.contextmanager
def cpu_math_attention(device: torch.device) -> Iterator[None]:
    """On CPU, run full-sequence attention with SDPA's math kernel; elsewhere change nothing.

    For the short sequences of RLHF (~100 tokens) CPU flash attention's backward is slower
    than the math kernel's (measured: docs/results.md#ppo-speed-against-trl). The rollout and
    reference forwards use it too, so every log-prob PPO compares comes from one kernel.
    """
    if device.type != "cpu":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


def causal_lm_parts(model: Any) -> tuple[nn.Module, nn.Module]:
    """(decoder body, LM head) of a HF causal LM, also through a peft wrapper.

    LoRA layers are injected into the modules themselves, so calling the body directly
    applies the adapter, and ``disable_adapter()`` switches it off there too.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def sequence_classifier_parts(model: Any) -> tuple[nn.Module, nn.Module]:
    """(decoder body, score head) of a HF sequence classifier (a reward model)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for head in ("score", "classifier"):
        if isinstance(getattr(base, head, None), nn.Module):
            return getattr(base, base.base_model_prefix), getattr(base, head)
    raise ValueError(f"{type(base).__name__}: no score head to use as a value model")


def reply_states(hidden: torch.Tensor, n_reply: int) -> torch.Tensor:
    """The hidden states that predict reply tokens 0..R-1: columns P-1 .. P+R-2.

    Made contiguous: a bf16 matmul on the strided slice is far slower on CPU (measured:
    docs/results.md#ppo-speed-against-trl), and the LM head is the largest matmul of a small model.
    """
    return hidden[:, -n_reply - 1 : -1].contiguous()


def adapter_layers(model: nn.Module) -> list[nn.Module]:
    """peft's adapter layers in ``model`` (found once: walking every module on every call costs time)."""
    return [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]


@contextlib.contextmanager
def adapter_casts_off(layers: list[nn.Module]) -> Iterator[None]:
    """Under autocast, skip peft's cast of every adapter input to the adapter's fp32 dtype.

    Autocast casts it straight back to half precision for the matmul, so the cast only
    costs time (measured: docs/results.md#ppo-speed-against-trl); the results are bit-identical.
    """
    autocasting = torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")
    if not (autocasting and layers):
        yield
        return
    before = [layer.cast_input_dtype_enabled for layer in layers]
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    try:
        yield
    finally:
        for layer, value in zip(layers, before):
            layer.cast_input_dtype_enabled = value


def logprobs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log softmax(logits)[token], entropy) per position from one log-softmax; the entropy
    is detached (a statistic): each extra pass over the vocabulary costs time in every update
    (measured: docs/results.md#ppo-speed-against-trl)."""
    logprobs = F.log_softmax(logits.float(), dim=-1)
    with torch.no_grad():
        entropy = -(logprobs.exp() * logprobs).sum(-1)
    return logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), entropy


class ValueModel(nn.Module):
    """A separate critic: a reward model's body and scalar head, read at every reply state.

    Initialising the critic from a reward model (``rl.value_model: <RM run dir>``) is the
    original RLHF recipe (Ziegler et al.); it costs one more forward and backward per pass.
    """

    def __init__(self, classifier: Any) -> None:
        super().__init__()
        self.classifier = classifier
        self.body, self.head = sequence_classifier_parts(classifier)
        self.adapters = adapter_layers(classifier)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_reply: int) -> torch.Tensor:
        """Values V(s_i) of the ``n_reply`` reply states, shape (B, n_reply)."""
        with adapter_casts_off(self.adapters):
            hidden = self.body(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
                use_cache=False,
            ).last_hidden_state
        return self.head(reply_states(hidden, n_reply)).squeeze(-1).float()


class PolicyValueModel(nn.Module):
    """The policy (a causal LM, usually with a LoRA adapter) and its critic.

    By default the critic is a scalar value head on the policy's last hidden state: the
    values come out of the same forward as the log-probs, at the cost of one linear layer.
    Pass ``value_model`` for a separate critic instead.
    """

    def __init__(self, policy: Any, value_model: ValueModel | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.body, self.lm_head = causal_lm_parts(policy)
        self.adapters = adapter_layers(policy)
        self.value_model = value_model
        if value_model is None:
            hidden_size = policy.config.get_text_config().hidden_size
            # Zero init: every state starts valued at 0, the return of an unchanged policy
            # before any score is known; fp32 like every trainable parameter.
            self.value_head: nn.Linear | None = nn.Linear(hidden_size, 1, dtype=torch.float32)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        else:
            self.value_head = None

    @property
    def has_value_head(self) -> bool:
        """Whether values come from the policy's own forward."""
        return self.value_head is not None

    @property
    def is_peft(self) -> bool:
        """Whether the policy is a peft (LoRA) model, so the reference is the adapter switched off."""
        return hasattr(self.policy, "disable_adapter")

    def head_values(self, hidden: torch.Tensor) -> torch.Tensor:
        """The value head on hidden states, in fp32."""
        assert self.value_head is not None
        return self.value_head(hidden.float()).squeeze(-1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        n_reply: int,
        temperature: float = 1.0,
        with_values: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Temperature-scaled logits for the ``n_reply`` reply tokens, and their values.

        Returns (logits (B, R, V), values (B, R) or None when ``with_values`` is False).
        With a value head the values come from this same forward; a separate critic
        runs its own.
        """
        with adapter_casts_off(self.adapters):
            hidden = self.body(  # no KV cache: a whole-sequence forward never reads one
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
                use_cache=False,
            ).last_hidden_state
        states = reply_states(hidden, n_reply)
        # In place: a (B, R, vocab) tensor is large, and the matmul's backward does not need it.
        logits = self.lm_head(states).float().div_(temperature)
        if not with_values:
            return logits, None
        if self.value_head is not None:
            return logits, self.head_values(states)
        assert self.value_model is not None
        return logits, self.value_model(input_ids, attention_mask, n_reply)

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """The reference policy: the same weights with the LoRA adapter switched off."""
        if not self.is_peft:
            raise RuntimeError("a fully fine-tuned policy needs a frozen copy as its reference")
        with self.policy.disable_adapter():
            yield

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trained parameters (LoRA, value head): what a checkpoint needs."""
        return {name: p.detach().cpu().clone() for name, p in self.named_parameters() if p.requires_grad}


def enable_gradient_checkpointing(model: PolicyValueModel) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of keeping them
    (``model.gradient_checkpointing``): the policy's layers, and a separate critic's.

    transformers checkpoints a layer only in training mode, while PPO keeps the model in eval
    mode (dropout off); :func:`checkpoint_in_eval_mode` reconciles the two.
    """
    models = [model.policy] + ([model.value_model.classifier] if model.value_model is not None else [])
    for part in models:
        part.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def checkpoint_in_eval_mode(model: nn.Module) -> int:
    """Let checkpointing layers checkpoint while the model stays in eval mode; returns how many.

    Only the layer objects themselves are marked as training: the dropout lives in their
    children (attention, LoRA), which stay in eval mode, so no dropout is switched on. Called
    after every ``model.eval()``, which clears the mark.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]
    for layer in layers:
        layer.training = True
    return len(layers)


@contextlib.contextmanager
def checkpointing_paused(model: nn.Module) -> Iterator[None]:
    """Keep sampling off the checkpointing path: the layers :func:`checkpoint_in_eval_mode` marked as
    training are unmarked while ``model`` samples, and marked again after.

    A checkpointing layer in training mode may drop the KV cache (transformers turns ``use_cache``
    off for it; versions differ in whether ``no_grad`` spares it), and then every decoding step
    would see only its newest token.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    marked = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]
    marked = [m for m in marked if m.training]
    for layer in marked:
        layer.training = False
    try:
        yield
    finally:
        for layer in marked:
            layer.training = True


class MergedSampler:
    """The policy with its LoRA adapter folded into a plain copy of the weights, for sampling.

    Sampling runs the model once per token at a small batch, where each adapter's two
    extra matmuls are mostly overhead (measured: docs/results.md#ppo-speed-against-trl). This costs one
    copy of the adapted weights, refreshed (W + scale * B A) before every rollout; the
    value head is the policy's own.

    ``pack_for_batch`` (CPU): also pre-pack the copy's weights for that many rows
    (:mod:`crs.models.packed_linear`), repacked at every refresh. ``fused`` (CPU, Llama family):
    decode with :class:`crs.models.fused_decoder.FusedLlamaDecoder` instead of transformers' forward.
    """

    def __init__(self, model: PolicyValueModel, pack_for_batch: int | None = None, fused: bool = False) -> None:
        self.owner = model
        merged = copy.deepcopy(model.policy).merge_and_unload().requires_grad_(False).eval()
        self.decoder = (
            FusedLlamaDecoder(merged, pack_for_batch) if fused and FusedLlamaDecoder.supports(merged) else None
        )
        self.packed = pack_linears(merged, pack_for_batch) if pack_for_batch and self.decoder is None else {}
        self.body, self.lm_head = causal_lm_parts(merged)
        if self.decoder is not None:
            self.lm_head = self.decoder.lm_head  # packed with the decoder's weights
        self.adapters: list[nn.Module] = []
        prefix = "base_model.model."
        # (adapter layer in the policy, its plain linear in the copy), matched by module name.
        self.pairs = [
            (layer, merged.get_submodule(name.removeprefix(prefix)))
            for name, layer in model.policy.named_modules()
            if hasattr(layer, "get_delta_weight") and hasattr(layer, "base_layer")
        ]

    @staticmethod
    def supported(model: PolicyValueModel) -> bool:
        """A LoRA policy whose adapted layers are plain float linears (not quantized)."""
        layers = [m for m in model.policy.modules() if hasattr(m, "get_delta_weight") and hasattr(m, "base_layer")]
        return (
            model.is_peft
            and bool(layers)
            and all(isinstance(m.base_layer, nn.Linear) and m.base_layer.weight.is_floating_point() for m in layers)
        )

    @property
    def value_head(self) -> nn.Linear | None:
        """The policy's value head."""
        return self.owner.value_head

    def head_values(self, hidden: torch.Tensor) -> torch.Tensor:
        """The policy's value head on hidden states."""
        return self.owner.head_values(hidden)

    @torch.no_grad()
    def refresh(self) -> MergedSampler:
        """Fold the adapter's current weights into the copy."""
        for layer, target in self.pairs:
            delta = sum(layer.get_delta_weight(name) for name in layer.active_adapters)
            target.weight.copy_(layer.base_layer.weight.float() + delta)  # also into the decoder's fused weights
            if isinstance(target, PackedLinear):
                target.repack()
        if self.decoder is not None:
            self.decoder.repack()
        return self


# --------------------------------------------------------------------------- sampling


def policy_step(model: PolicyValueModel | MergedSampler) -> StepFn:
    """The decoding step of the policy: next-token logits and, with a value head, V(state)."""

    cache_name = cache_argument(model.body)
    decoder = getattr(model, "decoder", None)

    def step(
        input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache: Any
    ) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
        if decoder is not None:
            state, cache = decoder(input_ids, attention_mask, position_ids, cache)
        else:
            out = model.body(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=True,
                **{cache_name: cache},
            )
            state, cache = (
                out.last_hidden_state[:, -1].contiguous(),
                returned_cache(out),
            )  # strided bf16 matmuls are slow on CPU
        values = model.head_values(state) if model.value_head is not None else None
        return model.lm_head(state), cache, values

    return step


@torch.no_grad()
def sample_replies(
    model: PolicyValueModel | MergedSampler,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    settings: SamplingSettings,
    eos_token_id: int,
    pad_token_id: int,
) -> Decoded:
    """Sample replies with :func:`crs.models.decoding.decode_loop`, stopping at EOS (or ``max_new_tokens``).

    Each step's hidden state gives the next token's distribution and the value of the
    current state, so the rollout's log-probs and values come for free with sampling. Gradient
    checkpointing is paused meanwhile (:func:`checkpointing_paused`): the KV cache is kept.
    """
    with adapter_casts_off(model.adapters), checkpointing_paused(model.body):
        return decode_loop(policy_step(model), prompt_ids, prompt_mask, settings, eos_token_id, pad_token_id)
