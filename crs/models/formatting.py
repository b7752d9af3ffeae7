"""One way to turn (prompt, reply) into token ids, used by every stage.

SFT training, reward-model training, reward scoring during PPO and eval scoring all
call :func:`encode_prompt_reply`, so a reward model scores exactly the token sequence
it was trained on (the reference implementation tokenized prompt and reply separately
in training and needed a duplicated-token hack at scoring time; crs has one path).

* Tokenizers with a chat template (SmolLM2 and most instruct models): the prompt is
  the template applied to the messages with the assistant's generation header, and
  the reply follows as the assistant turn, closed by the end-of-turn token (EOS).
* Tokenizers without one (encoders such as MiniLM): the prompt is rendered with
  ``data.fallback_template`` and prompt and reply are joined as a text pair with the
  tokenizer's own special tokens ([CLS] prompt [SEP] reply [SEP]).

Over-long inputs keep the *end* of the prompt (the question is usually last) and the
*start* of the reply, within ``max_prompt_length`` / ``max_length``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crs.data.schema import Messages


@dataclass
class Encoded:
    """Token ids of prompt + reply, and a 0/1 mask that is 1 on reply tokens."""

    input_ids: list[int]
    reply_mask: list[int]

    @property
    def labels(self) -> list[int]:
        """Causal-LM labels: reply tokens only (the prompt is masked with -100)."""
        return [tok if m else -100 for tok, m in zip(self.input_ids, self.reply_mask)]


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer formats chats itself."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer: Any, prompt: Messages, fallback_template: str = "{role}: {content}\n") -> str:
    """The prompt as text, ending where the assistant's reply begins."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return "".join(fallback_template.format(role=m["role"], content=m["content"]) for m in prompt)


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The token that closes an assistant reply (EOS for chat models)."""
    return tokenizer.eos_token_id


def encode_prompt(
    tokenizer: Any, prompt: Messages, max_prompt_length: int = 256, fallback_template: str = "{role}: {content}\n"
) -> list[int]:
    """Token ids of the prompt alone, as the policy sees it before generating."""
    ids = tokenizer(render_prompt(tokenizer, prompt, fallback_template), add_special_tokens=False)["input_ids"]
    return ids[-max_prompt_length:]


def encode_prompt_reply(
    tokenizer: Any,
    prompt: Messages,
    reply: str,
    max_length: int = 512,
    max_prompt_length: int = 256,
    fallback_template: str = "{role}: {content}\n",
) -> Encoded:
    """Token ids of prompt + reply and the reply mask (see the module docstring)."""
    if has_chat_template(tokenizer):
        prompt_ids = encode_prompt(tokenizer, prompt, max_prompt_length, fallback_template)
        reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
        eot = end_of_turn_id(tokenizer)
        budget = max(max_length - len(prompt_ids) - (eot is not None), 0)
        reply_ids = reply_ids[:budget] + ([eot] if eot is not None else [])
        return Encoded(prompt_ids + reply_ids, [0] * len(prompt_ids) + [1] * len(reply_ids))

    prompt_text = render_prompt(tokenizer, prompt, fallback_template)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    if len(prompt_ids) > max_prompt_length:
        prompt_text = tokenizer.decode(prompt_ids[-max_prompt_length:])
    # A text pair gets the tokenizer's own special tokens; sequence_ids() marks the reply.
    enc = tokenizer(prompt_text, reply, truncation="only_second", max_length=max_length)
    reply_mask = [int(seq == 1) for seq in enc.sequence_ids()]
    return Encoded(list(enc["input_ids"]), reply_mask)


def pad_batch(
    sequences: list[list[int]], pad_id: int, side: str = "right", value_for_mask: int = 1
) -> tuple[list[list[int]], list[list[int]]]:
    """Pad id lists to one length; returns (padded ids, attention mask)."""
    width = max(len(s) for s in sequences)
    padded, mask = [], []
    for seq in sequences:
        fill = [pad_id] * (width - len(seq))
        ones, zeros = [value_for_mask] * len(seq), [0] * (width - len(seq))
        if side == "left":
            padded.append(fill + seq)
            mask.append(zeros + ones)
        else:
            padded.append(seq + fill)
            mask.append(ones + zeros)
    return padded, mask
