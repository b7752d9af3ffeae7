"""Prompts that arrive already rendered in a chat markup, parsed back into messages.

Prompt files made for other tools often hold prompts already in one model family's chat
markup. Wrapped in the tokenizer's chat template a second time, the model would see the
markup as text inside a user turn. :func:`parse_chat_markup` recognises three markups at
the start of a prompt and turns the prompt into chat messages ending on a user turn:

* ChatML: ``<|im_start|>user\\nHello<|im_end|>\\n<|im_start|>assistant\\n``
* Llama-2: ``<s>[INST] <<SYS>>\\nBe brief.\\n<</SYS>>\\n\\nHello [/INST]`` (several
  ``[INST] ... [/INST] reply </s><s>`` rounds for a dialogue)
* Anthropic's ``\\n\\nHuman: Hello\\n\\nAssistant:``

A trailing open assistant turn (``<|im_start|>assistant``, ``[/INST]``, ``Assistant:``)
is where the reply would start and is dropped. A prompt whose markup is broken (a turn
never closed, text outside the turns, a reply already begun, no user turn at the end)
is refused with :class:`MarkupError` saying what is wrong; text that does not *start* with
one of the markups is left alone (None).
"""

from __future__ import annotations

import re

from crs.data.schema import Messages

ROLES = ("system", "user", "assistant")


class MarkupError(ValueError):
    """A prompt in a known chat markup that cannot be read as a chat ending on a user turn."""


def _finish(messages: Messages, markup: str) -> Messages:
    """Check what every markup must give: non-empty turns, a system turn only first, a user turn last."""
    if not messages:
        raise MarkupError(f"{markup} prompt without any turn")
    for index, message in enumerate(messages):
        if not message["content"]:
            raise MarkupError(f"{markup} prompt with an empty {message['role']} turn (turn {index + 1})")
        if message["role"] == "system" and index > 0:
            raise MarkupError(f"{markup} prompt with a system turn after the first turn")
    if messages[-1]["role"] != "user":
        role = messages[-1]["role"]
        raise MarkupError(
            f"{markup} prompt ends on {'an' if role == 'assistant' else 'a'} {role} turn; "
            "a prompt must end on a user turn "
            "(optionally followed by the opening of the assistant's reply)"
        )
    return messages


def parse_chatml(text: str) -> Messages:
    """``<|im_start|>role\\ncontent<|im_end|>`` turns; a final bare ``<|im_start|>assistant`` is dropped."""
    body = text.strip()
    chunks = body.split("<|im_start|>")
    if chunks[0].strip():
        raise MarkupError(f"ChatML prompt with text before the first <|im_start|>: {chunks[0].strip()[:40]!r}")
    messages: Messages = []
    for number, chunk in enumerate(chunks[1:], start=1):
        last = number == len(chunks) - 1
        closed = "<|im_end|>" in chunk
        inner, _, after = chunk.partition("<|im_end|>")
        if after.strip():
            raise MarkupError(f"ChatML prompt with text outside the turns after turn {number}: {after.strip()[:40]!r}")
        match = re.match(r"\s*(\w+)(.*)", inner, re.DOTALL)
        role, content = (match.group(1), match.group(2).strip()) if match else ("", "")
        if role not in ROLES:
            raise MarkupError(f"ChatML turn {number} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not closed:
            if last and role == "assistant" and not content:
                break  # the generation prompt: the reply starts here
            if last and role == "assistant":
                raise MarkupError(
                    "ChatML prompt ends inside an assistant reply that has begun; it must end before the reply"
                )
            raise MarkupError(f"ChatML turn {number} ({role}) is not closed by <|im_end|>")
        messages.append({"role": role, "content": content})
    return _finish(messages, "ChatML")


_LLAMA_SYSTEM = re.compile(r"^\s*<<SYS>>(.*?)<</SYS>>(.*)$", re.DOTALL)


def parse_llama2(text: str) -> Messages:
    """``[INST] user [/INST] reply </s><s>[INST] user [/INST]`` rounds, with an optional
    ``<<SYS>> ... <</SYS>>`` block opening the first instruction."""
    body = text.replace("<s>", "").replace("</s>", "").strip()
    tokens = re.split(r"(\[INST\]|\[/INST\])", body)
    if tokens[0].strip():
        raise MarkupError(f"Llama-2 prompt with text before the first [INST]: {tokens[0].strip()[:40]!r}")
    messages: Messages = []
    expected = "[INST]"
    for index in range(1, len(tokens), 2):
        marker, content = tokens[index], tokens[index + 1].strip()
        if marker != expected:
            raise MarkupError(
                f"Llama-2 prompt with {marker} where {expected} was expected: [INST] and [/INST] must alternate"
            )
        if marker == "[INST]":
            if index + 2 >= len(tokens):
                raise MarkupError("Llama-2 prompt whose last [INST] is not closed by [/INST]")
            system = _LLAMA_SYSTEM.match(content)
            if system:
                if messages:
                    raise MarkupError("Llama-2 prompt with a <<SYS>> block after the first [INST]")
                messages.append({"role": "system", "content": system.group(1).strip()})
                content = system.group(2).strip()
            messages.append({"role": "user", "content": content})
            expected = "[/INST]"
        else:
            last = index + 2 >= len(tokens)
            if last and content:
                raise MarkupError("Llama-2 prompt with a reply after the last [/INST]; it must end with [/INST]")
            if not last:
                messages.append({"role": "assistant", "content": content})
            expected = "[INST]"
    return _finish(messages, "Llama-2")


_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


def parse_human_assistant(text: str) -> Messages:
    """``\\n\\nHuman: ...\\n\\nAssistant: ...`` turns; a final empty ``Assistant:`` is dropped."""
    parts = _HH_TURN.split(text.lstrip())
    if parts[0].strip():
        raise MarkupError(f"Human/Assistant prompt with text before the first 'Human:': {parts[0].strip()[:40]!r}")
    roles = {"Human": "user", "Assistant": "assistant"}
    messages: Messages = [
        {"role": roles[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if messages and messages[-1]["role"] == "assistant":
        if messages[-1]["content"]:
            raise MarkupError(
                "Human/Assistant prompt ends with an Assistant turn that has text; it must end with "
                "'\\n\\nAssistant:' (or on the Human turn)"
            )
        messages.pop()
    return _finish(messages, "Human/Assistant")


def render_chatml(messages: Messages) -> str:
    """``messages`` as a ChatML prompt that ends with the opening of the assistant's reply: the text
    :func:`parse_chatml` reads back into the same turns (their contents stripped). A content that holds ChatML's
    own markers would not read back: :class:`MarkupError`."""
    for index, message in enumerate(messages):
        if "<|im_start|>" in message["content"] or "<|im_end|>" in message["content"]:
            raise MarkupError(
                f"turn {index + 1} ({message['role']}) holds a ChatML marker: it cannot be sent as ChatML"
            )
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def detect_markup(text: str) -> str | None:
    """``chatml``, ``llama2``, ``human_assistant`` or None, from how the text starts."""
    start = text.lstrip()
    if start.startswith("<|im_start|>"):
        return "chatml"
    if re.match(r"(<s>\s*)?\[INST\]", start):
        return "llama2"
    if start.startswith("Human:"):
        return "human_assistant"
    return None


PARSERS = {"chatml": parse_chatml, "llama2": parse_llama2, "human_assistant": parse_human_assistant}


def parse_chat_markup(text: str) -> Messages | None:
    """The prompt as messages when it starts with a known chat markup, else None (plain text).

    Raises :class:`MarkupError` when the markup is there but broken."""
    kind = detect_markup(text)
    return None if kind is None else PARSERS[kind](text)
