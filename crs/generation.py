"""Batched generation of replies with the chat template (eval predictions, demo data).

Prompts are encoded by :func:`crs.formatting.encode_prompt`, left-padded (so every
reply starts at the same column) and sorted by length into batches, which keeps
padding, and so wasted compute, small. Results come back in the input order.
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
    top_k: int = 0
    repetition_penalty: float = 1.0


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
        kwargs: dict[str, Any] = dict(
            max_new_tokens=settings.max_new_tokens,
            do_sample=settings.do_sample,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos_id,
            repetition_penalty=settings.repetition_penalty,
        )
        if settings.do_sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k or None)
        else:
            # Unset sampling knobs a model's generation_config may carry, so greedy is greedy.
            kwargs.update(temperature=None, top_p=None, top_k=None)
        output = model.generate(input_ids=input_ids, attention_mask=torch.tensor(mask, device=device), **kwargs)
        for row, i in enumerate(index):
            reply = output[row, input_ids.shape[1] :].tolist()
            ended = eos_id in reply
            if ended:
                reply = reply[: reply.index(eos_id)]
            text = tokenizer.decode(reply, skip_special_tokens=True).strip()
            results[i] = Generation(text=text, token_ids=reply, ended_with_eos=ended)
        progress.update(len(index))
    progress.close()
    model.train(was_training)
    return [r for r in results if r is not None]
