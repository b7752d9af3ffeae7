"""Batched generation of replies with the chat template (eval predictions, demo data).

Prompts are encoded by :func:`crs.formatting.encode_prompt`, left-padded (so every
reply starts at the same column) and sorted by length into batches, which keeps
padding, and so wasted compute, small. Results come back in the input order.

Decoding is a small KV-cache loop rather than ``model.generate``: sampling first keeps
the ``top_k`` most likely tokens and draws among them, while ``generate`` draws over the
whole 49k-token vocabulary at every step, which on a CPU costs as much as the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from crs.data.schema import Messages
from crs.formatting import encode_prompt, pad_batch


@dataclass
class GenerationSettings:
    """Decoding settings; greedy unless ``do_sample``."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50  # sample among the k most likely tokens (0 = the whole vocabulary)


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
    settings: GenerationSettings,
    batch_size: int = 16,
    max_prompt_length: int = 256,
    seed: int | None = None,
    desc: str | None = "generating",
) -> list[Generation]:
    """Generate one reply per prompt, in batches, with a progress bar."""
    if seed is not None:
        torch.manual_seed(seed)
    encoded = [encode_prompt(tokenizer, p, max_prompt_length) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    results: list[Generation | None] = [None] * len(prompts)
    device = next(model.parameters()).device
    eos_id = tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    progress = tqdm(total=len(prompts), desc=desc, disable=desc is None, unit="prompt")
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        ids, mask = pad_batch([encoded[i] for i in index], tokenizer.pad_token_id, side="left")
        input_ids = torch.tensor(ids, device=device)
        replies = decode(model, input_ids, torch.tensor(mask, device=device), settings, eos_id, tokenizer.pad_token_id)
        for row, i in enumerate(index):
            reply = replies[row].tolist()
            ended = eos_id in reply
            if ended:
                reply = reply[: reply.index(eos_id)]
            text = tokenizer.decode(reply, skip_special_tokens=True).strip()
            results[i] = Generation(text=text, token_ids=reply, ended_with_eos=ended)
        progress.update(len(index))
    progress.close()
    model.train(was_training)
    return [r for r in results if r is not None]


def pick_tokens(logits: torch.Tensor, settings: GenerationSettings) -> torch.Tensor:
    """Next token per row: argmax, or a draw after temperature, top-k and top-p filtering."""
    if not settings.do_sample:
        return logits.argmax(-1)
    logits = logits.float() / settings.temperature
    k = settings.top_k if 0 < settings.top_k < logits.shape[-1] else logits.shape[-1]
    top_logits, top_index = logits.topk(k, dim=-1)  # sorted, most likely first
    probs = torch.softmax(top_logits, dim=-1)
    if settings.top_p < 1.0:
        # Drop a token once the tokens ranked above it cover top_p (the first always stays).
        probs = probs.masked_fill(probs.cumsum(-1) - probs > settings.top_p, 0.0)
    # Exponential race: argmax p_i / E_i with E_i ~ Exp(1) picks i with probability p_i.
    choice = (probs / torch.empty_like(probs).exponential_()).argmax(-1, keepdim=True)
    return top_index.gather(-1, choice).squeeze(-1)


def decode(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, settings: GenerationSettings, eos_id: int, pad_id: int
) -> torch.Tensor:
    """Reply token ids (B, <= max_new_tokens) for left-padded prompts; rows end at EOS, then pad."""
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding shifts nothing
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    inputs, cache, tokens = input_ids, None, []
    for _ in range(settings.max_new_tokens):
        out = model(
            input_ids=inputs, attention_mask=attention_mask, position_ids=positions,
            past_key_values=cache, use_cache=True, logits_to_keep=1,
        )
        cache = out.past_key_values
        token = pick_tokens(out.logits[:, -1], settings).masked_fill(done, pad_id)
        tokens.append(token)
        done |= token == eos_id
        if done.all():
            break
        # Tokens after a row's EOS are cut off later, so they can attend normally.
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        inputs = token.unsqueeze(1)
    return torch.stack(tokens, dim=1)
