"""The one decoding loop: KV-cache, token by token, stop at EOS; and the one sampler.

Every stage that writes replies goes through :func:`decode_loop`: eval predictions and the
demo data (:func:`generate_replies`, on any transformers causal LM) and PPO rollouts
(:func:`crs.rl.ppo.policy.sample_replies`, which also reads the value head at each step). So the
same :class:`SamplingSettings` sample the same way in every stage.

Why a loop of our own rather than ``model.generate``: the rollout needs each token's
log-prob and each state's value as it goes, and sampling by inverse CDF over the
vocabulary is far cheaper on a CPU than ``generate``'s multinomial draw.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from crs.data.schema import Messages
from crs.models.formatting import encode_prompt, pad_batch


@dataclass
class SamplingSettings:
    """How replies are decoded; greedy unless ``do_sample``. The same defaults in every stage."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0  # keep the most likely tokens covering this probability (1 = all)
    top_k: int = 0  # keep the k most likely tokens (0 = the whole vocabulary)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding: the first real token is position 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token], computed in fp32."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def sample_next_token(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Draw one token per row from ``softmax(logits)`` (already temperature-scaled), top-k then top-p filtered."""
    index = None
    if 0 < top_k < logits.shape[-1]:
        logits, index = logits.topk(top_k, dim=-1)  # sorted, most likely first
    elif top_p < 1.0:
        logits, index = logits.sort(dim=-1, descending=True)
    probs = torch.softmax(logits.float(), dim=-1)
    if top_p < 1.0:
        # Drop a token when the tokens ranked above it already cover top_p (the top one always stays).
        probs = probs.masked_fill(probs.cumsum(-1) - probs > top_p, 0.0)
    # Inverse CDF: one uniform number per row. The same draw as torch.multinomial, which is
    # ~100x slower on CPU over a 50k vocabulary (and ~20x faster than a Gumbel/exponential race).
    cdf = probs.cumsum(-1)
    u = torch.rand(cdf.shape[0], 1, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    choice = torch.searchsorted(cdf, u).clamp(max=probs.shape[-1] - 1)
    return (choice if index is None else index.gather(-1, choice)).squeeze(-1)


def pick_tokens(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """Next token per row: argmax when greedy, else a draw at the settings' temperature, top-k and top-p."""
    if not settings.do_sample:
        return logits.argmax(-1)
    return sample_next_token(logits.float() / settings.temperature, settings.top_k, settings.top_p)


# step(input_ids, attention_mask, position_ids, cache) -> (next-token logits (B, V), cache, values (B,) or None)
StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], tuple[torch.Tensor, Any, "torch.Tensor | None"]]


@dataclass
class Decoded:
    """Replies decoded for a batch of left-padded prompts."""

    reply_ids: torch.Tensor  # (B, R), pad after EOS
    reply_mask: torch.Tensor  # (B, R), 1 up to and including EOS
    ended_with_eos: torch.Tensor  # (B,) bool
    logprobs: torch.Tensor  # (B, R) log pi(token) at the sampling temperature, 0 where masked
    values: torch.Tensor | None  # (B, R) what the step function returned as values, when it does


@torch.no_grad()
def decode_loop(
    step: StepFn,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    settings: SamplingSettings,
    eos_id: int,
    pad_id: int,
) -> Decoded:
    """Decode up to ``max_new_tokens`` with a KV cache, stopping each row at EOS.

    Finished rows only pad and are masked out of the attention of later steps.
    """
    device = prompt_ids.device
    attention = prompt_mask.long()
    positions = position_ids_from_mask(attention)
    inputs, cache = prompt_ids, None
    done = torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=device)
    tokens, alive_cols, logprobs, values = [], [], [], []
    for _ in range(settings.max_new_tokens):
        logits, cache, value = step(inputs, attention, positions, cache)
        token = pick_tokens(logits, settings).masked_fill(done, pad_id)  # finished rows only pad
        alive = ~done
        tokens.append(token)
        alive_cols.append(alive)
        logprobs.append(gather_logprobs(logits.float() / settings.temperature, token))
        if value is not None:
            values.append(value)
        done = done | (token == eos_id)
        if done.all():
            break
        attention = torch.cat([attention, alive.long().unsqueeze(1)], dim=1)
        positions = positions[:, -1:] + 1
        inputs = token.unsqueeze(1)
    reply_mask = torch.stack(alive_cols, dim=1).long()
    return Decoded(
        reply_ids=torch.stack(tokens, dim=1),
        reply_mask=reply_mask,
        ended_with_eos=done,
        logprobs=torch.stack(logprobs, dim=1) * reply_mask,
        values=torch.stack(values, dim=1) * reply_mask if values else None,
    )


def cache_argument(module: Any) -> str:
    """The name under which ``module.forward`` takes the KV cache: ``cache`` since transformers
    5.24, ``past_key_values`` before (the old name still works there, with a warning)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The KV cache a forward returned, under either name."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def causal_lm_step(model: Any) -> StepFn:
    """The step function of a transformers causal LM (logits of the last position only)."""
    cache_name = cache_argument(model)

    def step(
        input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache: Any
    ) -> tuple[torch.Tensor, Any, None]:
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            **{cache_name: cache},
        )
        return out.logits[:, -1], returned_cache(out), None

    return step


def fastest_step(model: Any, batch_hint: int | None = None) -> StepFn:
    """The fastest decoding step ``model`` allows: crs's fused decoder (CPU, Llama family, its
    weights packed for ``batch_hint`` rows; :mod:`crs.models.fused_decoder`), else transformers' forward.

    The fused decoder does the same arithmetic with less around it; it shares the model's weights.
    """
    from crs.models.fused_decoder import FusedLlamaDecoder

    if not FusedLlamaDecoder.supports(model):
        return causal_lm_step(model)
    decoder = FusedLlamaDecoder(model, batch_hint)

    def step(
        input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache: Any
    ) -> tuple[torch.Tensor, Any, None]:
        state, cache = decoder(input_ids, attention_mask, position_ids, cache)
        return decoder.lm_head(state), cache, None

    return step


# --------------------------------------------------------------------------- batched generation


@dataclass
class Generation:
    """One generated reply."""

    text: str
    token_ids: list[int]
    ended_with_eos: bool


@torch.no_grad()
def generate_replies(
    model: Any,
    tokenizer: Any,
    prompts: list[Messages],
    settings: SamplingSettings,
    batch_size: int = 16,
    max_prompt_length: int = 256,
    seed: int | None = None,
    desc: str | None = "generating",
) -> list[Generation]:
    """One reply per prompt (eval predictions, demo data), in batches, with a progress bar.

    Results come back in the input order; see :func:`generate_reply_shard`, of which this is
    the one-process case.
    """
    replies = generate_reply_shard(model, tokenizer, prompts, settings, batch_size, max_prompt_length, seed, desc)
    return [replies[i] for i in range(len(prompts))]


def generate_reply_shard(
    model: Any,
    tokenizer: Any,
    prompts: list[Messages],
    settings: SamplingSettings,
    batch_size: int = 16,
    max_prompt_length: int = 256,
    seed: int | None = None,
    desc: str | None = "generating",
    shard: tuple[int, int] = (0, 1),
    fast: bool = True,
) -> dict[int, Generation]:
    """Replies to one process's share of ``prompts``, by prompt index.

    Prompts are left-padded (every reply starts at the same column) and sorted by length
    into batches, which keeps padding, and so wasted compute, small. With ``shard`` (rank,
    processes), batch ``b`` is generated by process ``b % processes``; each batch samples
    from its own seed (``seed``, ``b``), so that a reply depends neither on how many
    processes share the work nor on which batches ran before it. ``fast``: decode with
    :func:`fastest_step` (False: transformers' forward, e.g. to compare the two).
    """
    rank, world = shard
    encoded = [encode_prompt(tokenizer, p, max_prompt_length) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    mine = [(b, index) for b, index in enumerate(batches) if b % world == rank]
    results: dict[int, Generation] = {}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    step = fastest_step(model, min(batch_size, len(prompts))) if fast else causal_lm_step(model)
    progress = tqdm(
        total=sum(len(index) for _, index in mine), desc=desc, disable=desc is None or rank != 0, unit="prompt"
    )
    for b, index in mine:
        if seed is not None:
            torch.manual_seed(batch_seed(seed, b))
        ids, mask = pad_batch([encoded[i] for i in index], tokenizer.pad_token_id, side="left")
        decoded = decode_loop(
            step,
            torch.tensor(ids, device=device),
            torch.tensor(mask, device=device),
            settings,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
        )
        for row, i in enumerate(index):
            reply = decoded.reply_ids[row][decoded.reply_mask[row].bool()].tolist()
            ended = bool(decoded.ended_with_eos[row])
            if ended:
                reply = reply[:-1]  # the EOS itself
            results[i] = Generation(
                text=tokenizer.decode(reply, skip_special_tokens=True).strip(), token_ids=reply, ended_with_eos=ended
            )
        progress.update(len(index))
    progress.close()
    model.train(was_training)
    return results


def batch_seed(seed: int, batch: int) -> int:
    """The sampling seed of one batch: a hash of (seed, batch), far from its neighbours' seeds."""
    import numpy as np

    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])
