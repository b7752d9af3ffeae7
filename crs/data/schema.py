"""Canonical example types that every data source is converted into.

A prompt is always a list of chat messages (``{"role": ..., "content": ...}``) that ends
on a user turn, so single-turn instructions and multi-turn dialogues take one path
through the chat template. ``Messages`` is that list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Messages = list[dict[str, str]]


def user_prompt(text: str, system: str | None = None) -> Messages:
    """A single-turn prompt as chat messages."""
    messages: Messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": text})
    return messages


def last_user_text(prompt: Messages) -> str:
    """The content of the last user turn (AlpacaEval's ``instruction``; what the annotator grades)."""
    for message in reversed(prompt):
        if message["role"] == "user":
            return message["content"]
    return prompt[-1]["content"] if prompt else ""


@dataclass
class SFTExample:
    """A prompt and the reply to learn."""

    prompt: Messages
    reply: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RankingExample:
    """A prompt with K >= 2 replies ordered best first.

    ``scores`` (same order, optional) carries a numeric quality per reply where the
    source has one; the pairwise loss can turn score gaps into margins.
    """

    prompt: Messages
    replies: list[str]
    scores: list[float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class AbsoluteExample:
    """One reply with its own quality score in [0, 1]."""

    prompt: Messages
    reply: str
    score: float
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class PromptExample:
    """A prompt for RL rollouts or evaluation; ``id`` is stable across runs."""

    prompt: Messages
    id: str
    meta: dict[str, Any] = field(default_factory=dict)


class DataError(ValueError):
    """Bad input data; the message names the file, the row and what to do."""
