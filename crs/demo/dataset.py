"""The embedded demo dataset: where its file lives, and its ``crs_demo`` adapter with the planted-facets labels.

Both are registered with the data layer by name (:mod:`crs.data.registry`): ``data.source:
embedded:crs-demo`` reads :func:`embedded_demo_file`, and ``data.adapter: crs_demo`` (or ``auto``
on the embedded data) converts its rows with :data:`CRS_DEMO`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crs.config import ConfigError
from crs.data.adapters import Adapter, BadRow, Context, Example, list_value, text_value, unit_score
from crs.data.schema import AbsoluteExample, DataError, PromptExample, RankingExample, SFTExample, user_prompt
from crs.demo.facets import SEED, relabel_rows


def demo_dataset_path() -> Path:
    """Where the embedded demo dataset (``embedded:crs-demo``) lives inside the package."""
    return Path(__file__).resolve().parent / "data" / "crs_demo.jsonl.gz"


def embedded_demo_file() -> Path:
    """The file ``data.source: embedded:crs-demo`` reads; a DataError when the install lacks it."""
    path = demo_dataset_path()
    if not path.is_file():
        raise DataError(
            f"the embedded demo dataset is missing: {path}; the crs package install is "
            "incomplete (reinstall it, or point data.source at another file)"
        )
    return path


def _demo_replies(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's replies, checked, as copies with stripped text."""
    replies = []
    for i, reply in enumerate(list_value(row.get("replies"), "replies")):
        if not isinstance(reply, dict):
            raise BadRow(f"replies[{i}] must be an object")
        rank = reply.get("rank")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise BadRow(f"replies[{i}] rank must be an integer >= 0, got {rank!r}")
        replies.append({**reply, "text": text_value(reply.get("text"), f"replies[{i}] text")})
    return replies


def _planted_facets(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with the planted-facets labels (``data.demo_labels: facets``), always from the same seed.

    Relabelled one row at a time, after the row passed its checks: the labels depend on the
    seed and the prompt id alone, so they equal those of the whole file relabelled at once.
    """
    return relabel_rows([row], SEED)[0]


def _demo_row(ctx: Context, index: int, row: dict[str, Any]) -> list[Example]:
    if row.get("split") != ctx.split:
        return []  # another split's row: not dropped, just not asked for
    pid = text_value(row.get("prompt_id"), "prompt_id")
    raw_prompt = user_prompt(text_value(row.get("prompt"), "prompt"))
    prompt = ctx.prompt(raw_prompt)
    # The gold utility stays out of every view: the models must learn from the
    # annotator's noisy signals, and only the judge may look at the truth.
    meta = {
        "prompt_id": pid,
        "group": pid,
        "category": row.get("category"),
        "topic": row.get("topic"),
        "source": ctx.where(index),
    }
    if ctx.kind == "prompts":
        return [PromptExample(prompt, pid, {**meta, "spec": row.get("spec") or {}})]
    replies = _demo_replies(row)
    if ctx.cfg.demo_labels == "facets":
        replies = _demo_replies(_planted_facets(row))
    if ctx.kind == "sft":
        best = [r for r in replies if r["rank"] == 0]
        if not best:
            raise BadRow("no reply with rank 0")
        return [SFTExample(prompt, best[0]["text"], meta)]
    if ctx.kind == "ranking":
        if len(replies) < 2:
            ctx.drops.add("prompt with fewer than 2 replies")
            return []
        ordered = sorted(replies, key=lambda r: r["rank"])  # stable: ties keep file order
        return [RankingExample(prompt, [r["text"] for r in ordered], None, meta)]
    out: list[Example] = []
    for i, reply in enumerate(replies):
        score = unit_score(reply.get("score"), f"replies[{i}] score")
        reply_meta = {
            **meta,
            "rank": reply["rank"],
            "likert": reply.get("likert"),
            "annotator": reply.get("annotator"),
        }
        out.append(AbsoluteExample(prompt, reply["text"], score, reply_meta))
    return out


def convert_crs_demo(ctx: Context) -> list[Example]:
    """The embedded demo data: one row per prompt with ranked, Likert-scored replies.

    ``data.split`` (``data.val_split`` for validation) picks the rows whose ``split``
    field matches: sft, rm, rl or eval. ``data.demo_labels: facets`` swaps each reply's
    rank, Likert score and score for the planted-facets labels of :mod:`crs.demo.facets`.
    """
    found = sorted({str(row.get("split")) for row in ctx.table.rows})
    if ctx.split not in found:
        raise ConfigError(
            f"data split {ctx.split!r}: {ctx.table.name} has no such rows; its splits are {', '.join(found)}"
        )
    return ctx.convert_each(_demo_row)


_DEMO_PROMPT = [("prompt_id",), ("prompt",), ("split",)]
CRS_DEMO = Adapter(
    "crs_demo",
    convert_crs_demo,
    {
        "sft": [*_DEMO_PROMPT, ("replies",)],
        "ranking": [*_DEMO_PROMPT, ("replies",)],
        "absolute": [*_DEMO_PROMPT, ("replies",)],
        "prompts": _DEMO_PROMPT,
    },
)
