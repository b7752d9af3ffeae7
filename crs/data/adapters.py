"""Adapters turn source rows into canonical examples; the shared machinery lives here.

An adapter is a function ``convert(ctx) -> list[example]`` plus, per example kind it
supports, the columns it needs. Row-wise adapters hand a per-row parser to
:meth:`Context.convert_each`, which adds *where* to every problem: a parser raises
:class:`BadRow` with what is wrong, and the context either stops the run with a
:class:`DataError` naming file and row, or (``data.skip_bad_rows``) counts and logs it.

This module holds the adapters for our own formats (``canonical``, ``instruction``);
:mod:`crs.data.public` holds those for public datasets, :mod:`crs.demo.dataset` the demo data's
(``crs_demo``), registered by name in :mod:`crs.data.registry`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crs.config import ConfigError, DataConfig
from crs.data.markup import MarkupError, detect_markup, parse_chat_markup
from crs.data.registry import EMBEDDED_DEMO
from crs.data.schema import (
    AbsoluteExample,
    DataError,
    Messages,
    PromptExample,
    RankingExample,
    SFTExample,
    user_prompt,
)
from crs.data.sources import Table

LOGGER = logging.getLogger(__name__)

KINDS = ("sft", "ranking", "absolute", "prompts")
ROLES = ("system", "user", "assistant")
MAX_LOGGED_BAD_ROWS = 20  # each skipped bad row is logged up to this many; the rest are counted

Example = SFTExample | RankingExample | AbsoluteExample | PromptExample


class BadRow(Exception):
    """A row that cannot be converted; the message says what is wrong, not where."""


class Drops:
    """Counts of rows (or would-be examples) left out, by reason; nothing goes uncounted."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, n: int = 1) -> None:
        """Count ``n`` rows dropped for ``reason``."""
        if n:
            self.counts[reason] += n

    @property
    def total(self) -> int:
        """All drops together."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """``"3 deleted message, 1 bad row (skipped)"``, most frequent first."""
        return ", ".join(f"{n} {reason}" for reason, n in self.counts.most_common())


def demo_adapter_configured(cfg: DataConfig) -> bool:
    """Whether ``data.adapter`` is ``crs_demo``, named or picked by ``auto`` for the embedded data."""
    return cfg.adapter == "crs_demo" or (cfg.adapter == "auto" and cfg.source == EMBEDDED_DEMO)


@dataclass
class Context:
    """What an adapter needs: the table, the data config, the kind asked for, the drop counts."""

    table: Table
    cfg: DataConfig
    kind: str
    adapter: str
    split: str  # the split being read: cfg.split, or cfg.val_split for validation
    drops: Drops = field(default_factory=Drops)
    bad_rows: int = 0

    def __post_init__(self) -> None:
        # Planted labels redraw the demo rows' own label fields; other formats have none to redraw.
        if self.cfg.demo_labels != "standard" and not demo_adapter_configured(self.cfg):
            raise ConfigError(
                f"data.demo_labels: {self.cfg.demo_labels!r} relabels the crs demo data only, but data.adapter is "
                f"{self.cfg.adapter!r} (source {self.cfg.source!r}); set data.demo_labels: standard"
            )

    def bad_row(self, index: int, problem: str) -> None:
        """Stop on a bad row naming where it is, or count and log it when skipping is on."""
        where = self.table.where(index)
        if not self.cfg.skip_bad_rows:
            raise DataError(
                f"{where}: {problem} (adapter {self.adapter}); fix the row, or set "
                "data.skip_bad_rows: true to skip bad rows"
            )
        self.bad_rows += 1
        self.drops.add("bad row (skipped)")
        if self.bad_rows <= MAX_LOGGED_BAD_ROWS:
            LOGGER.warning("skipping bad row: %s: %s", where, problem)
        elif self.bad_rows == MAX_LOGGED_BAD_ROWS + 1:
            LOGGER.warning("more bad rows are skipped; only their count is logged from here")

    def convert_each(self, parse: Callable[[Context, int, dict[str, Any]], list[Any]]) -> list[Any]:
        """Run ``parse(ctx, index, row)`` on every row, handling :class:`BadRow` as above."""
        out: list[Any] = []
        for index, row in enumerate(self.table.rows):
            try:
                out.extend(parse(self, index, row))
            except BadRow as err:
                self.bad_row(index, str(err))
        return out

    def prompt(self, messages: Messages) -> Messages:
        """``messages`` with ``data.system_prompt`` prepended as a system turn, when set.

        A prompt that already opens with its own system turn keeps it, after the
        configured text in the same turn (chat templates accept one system turn).
        """
        system = self.cfg.system_prompt
        if not system:
            return messages
        if messages and messages[0]["role"] == "system":
            merged = f"{system}\n\n{messages[0]['content']}"
            return [{"role": "system", "content": merged}, *messages[1:]]
        return [{"role": "system", "content": system}, *messages]

    def where(self, index: int) -> str:
        """Shorthand for ``self.table.where(index)``."""
        return self.table.where(index)


@dataclass(frozen=True)
class Adapter:
    """A named converter and, per kind it supports, the columns it needs.

    ``required[kind]`` is a list of column groups; each group lists alternatives, one
    of which the table must have (``("prompt", "messages")``).
    """

    name: str
    convert: Callable[[Context], list[Any]]
    required: dict[str, list[tuple[str, ...]]]

    @property
    def kinds(self) -> list[str]:
        """The example kinds this adapter can produce."""
        return list(self.required)


def check_kind(adapter: Adapter, kind: str) -> None:
    """Raise a ConfigError when ``adapter`` cannot produce ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown example kind {kind!r}; expected one of {KINDS}")
    if kind not in adapter.required:
        raise ConfigError(
            f"data.adapter {adapter.name!r} has no {kind!r} examples; it supports {', '.join(adapter.kinds)}"
        )


def require_columns(table: Table, adapter: Adapter, kind: str) -> None:
    """Raise a DataError naming the file and the columns found when a needed column is absent."""
    for group in adapter.required[kind]:
        if not any(column in table.columns for column in group):
            needed = " or ".join(repr(c) for c in group)
            raise DataError(
                f"{table.name}: missing column {needed} (adapter {adapter.name}, {kind} "
                f"examples); columns found: {table.columns}; map a column with "
                'data.columns, e.g. {"reply": "output"}'
            )


# --------------------------------------------------------------------------- value checks


def text_value(value: Any, what: str) -> str:
    """A non-empty string (stripped), or BadRow naming ``what``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRow(f"empty {what}")
    if not isinstance(value, str):
        raise BadRow(f"{what} must be text, got {type(value).__name__}")
    return value.strip()


def number_value(value: Any, what: str) -> float:
    """A finite number; numeric strings (CSV cells) are accepted."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise BadRow(f"{what} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRow(f"{what} must be a finite number, got {value!r}")
    return float(value)


def unit_score(value: Any, what: str = "score") -> float:
    """A number in [0, 1], or BadRow."""
    score = number_value(value, what)
    if not 0.0 <= score <= 1.0:
        raise BadRow(f"{what} {score} is outside [0, 1]")
    return score


def list_value(value: Any, what: str) -> list[Any]:
    """A list; a JSON-encoded list in a string (a CSV cell) is decoded."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BadRow(f"{what} must be a list (a JSON list in a text column)") from None
    if not isinstance(value, list):
        raise BadRow(f"{what} must be a list, got {type(value).__name__}")
    return value


def messages_value(value: Any) -> Messages:
    """A validated chat: role/content dicts, system only first, ending on a user turn."""
    items = list_value(value, "messages")
    if not items:
        raise BadRow("empty messages")
    messages: Messages = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("role") not in ROLES:
            raise BadRow(f"messages[{i}] must be {{'role': one of {ROLES}, 'content': text}}")
        if item["role"] == "system" and i > 0:
            raise BadRow(f"messages[{i}]: a system turn may only come first")
        messages.append(
            {
                "role": item["role"],
                "content": text_value(item.get("content"), f"messages[{i}] content"),
            }
        )
    if messages[-1]["role"] != "user":
        raise BadRow("messages must end on a user turn (the reply is a separate column)")
    return messages


def prompt_id(messages: Messages) -> str:
    """A stable id for a prompt without one: a short hash of its messages."""
    digest = hashlib.sha1(json.dumps(messages, sort_keys=True).encode("utf-8")).hexdigest()
    return f"p-{digest[:12]}"


# --------------------------------------------------------------------------- canonical


def prompt_text_value(text: str, what: str = "prompt") -> Messages:
    """A prompt given as text: parsed into its turns when it is already in a chat markup
    (ChatML, Llama-2 ``[INST]``, ``Human:``/``Assistant:``; :mod:`crs.data.markup`), so it is
    not wrapped in the chat template a second time; else one user turn."""
    try:
        parsed = parse_chat_markup(text)
    except MarkupError as err:
        raise BadRow(f"{what}: {err}") from None
    return parsed if parsed is not None else user_prompt(text)


def row_labels(row: dict[str, Any]) -> dict[str, str]:
    """The row's own ``dataset`` and ``category`` columns (where present and not empty),
    carried into the examples' meta and from there into eval predictions and their tables."""
    return {
        key: str(row[key]).strip()
        for key in ("dataset", "category")
        if row.get(key) not in (None, "") and str(row[key]).strip()
    }


def _canonical_prompt(row: dict[str, Any]) -> Messages:
    """``messages`` when the row has them, else ``prompt`` as text (see :func:`prompt_text_value`)."""
    if row.get("messages") not in (None, ""):
        return messages_value(row["messages"])
    return prompt_text_value(text_value(row.get("prompt"), "prompt"))


def _canonical_row(ctx: Context, index: int, row: dict[str, Any]) -> list[Example]:
    raw_prompt = _canonical_prompt(row)
    prompt = ctx.prompt(raw_prompt)
    meta = {"source": ctx.where(index), **row_labels(row)}
    if ctx.kind == "sft":
        return [SFTExample(prompt, text_value(row.get("reply"), "reply"), meta)]
    if ctx.kind == "absolute":
        reply = text_value(row.get("reply"), "reply")
        return [AbsoluteExample(prompt, reply, unit_score(row.get("score")), meta)]
    if ctx.kind == "prompts":
        given = row.get("id")
        pid = str(given) if given not in (None, "") else prompt_id(raw_prompt)
        return [PromptExample(prompt, pid, meta)]
    # ranking: either an ordered list of replies or a chosen/rejected pair
    if row.get("replies") not in (None, ""):
        replies = [text_value(r, f"replies[{i}]") for i, r in enumerate(list_value(row["replies"], "replies"))]
        if len(replies) < 2:
            raise BadRow("replies needs at least 2 entries (best first)")
        scores = None
        if row.get("scores") not in (None, ""):
            scores = [number_value(s, f"scores[{i}]") for i, s in enumerate(list_value(row["scores"], "scores"))]
            if len(scores) != len(replies):
                raise BadRow(f"{len(scores)} scores for {len(replies)} replies")
            if any(a < b for a, b in itertools.pairwise(scores)):
                raise BadRow("scores must not increase: replies are listed best first")
        return [RankingExample(prompt, replies, scores, meta)]
    chosen = text_value(row.get("chosen"), "chosen")
    rejected = text_value(row.get("rejected"), "rejected")
    return [RankingExample(prompt, [chosen, rejected], None, meta)]


def convert_canonical(ctx: Context) -> list[Example]:
    """Rows already in the canonical shape (see the module docs of :mod:`crs.data`)."""
    return ctx.convert_each(_canonical_row)


PROMPT = ("prompt", "messages")
CANONICAL = Adapter(
    "canonical",
    convert_canonical,
    {
        "sft": [PROMPT, ("reply",)],
        "ranking": [PROMPT, ("replies", "chosen")],
        "absolute": [PROMPT, ("reply",), ("score",)],
        "prompts": [PROMPT],
    },
)


# --------------------------------------------------------------------------- instruction


def _instruction_row(ctx: Context, index: int, row: dict[str, Any]) -> list[Example]:
    text = text_value(row.get("instruction"), "instruction")
    extra = row.get("input")
    if isinstance(extra, str) and extra.strip():
        if detect_markup(text):
            raise BadRow(
                "instruction is in a chat markup and the row has an input too: put the input inside the markup"
            )
        text = f"{text}\n\n{extra.strip()}"
    raw_prompt = prompt_text_value(text, "instruction")
    meta = {"source": ctx.where(index), **row_labels(row)}
    if ctx.kind == "sft":
        return [SFTExample(ctx.prompt(raw_prompt), text_value(row.get("output"), "output"), meta)]
    return [PromptExample(ctx.prompt(raw_prompt), prompt_id(raw_prompt), meta)]


def convert_instruction(ctx: Context) -> list[Example]:
    """Alpaca-style rows: ``instruction``, optional ``input``, ``output``."""
    return ctx.convert_each(_instruction_row)


INSTRUCTION = Adapter(
    "instruction",
    convert_instruction,
    {"sft": [("instruction",), ("output",)], "prompts": [("instruction",)]},
)
