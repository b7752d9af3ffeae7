"""Adapters for public preference datasets: oasst1, hh-rlhf, SHP and UltraFeedback.

Each reads the dataset's own columns, unchanged, as published on the Hugging Face hub
(``hub:OpenAssistant/oasst1``, ``hub:Anthropic/hh-rlhf``, ``hub:stanfordnlp/SHP``,
``hub:openbmb/UltraFeedback``) or exported to a local file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from crs.data.adapters import (
    Adapter,
    BadRow,
    Context,
    Example,
    number_value,
    prompt_id,
    text_value,
    unit_score,
)
from crs.data.schema import (
    AbsoluteExample,
    Messages,
    PromptExample,
    RankingExample,
    SFTExample,
    user_prompt,
)


def _flag(value: Any) -> bool:
    """A boolean column that may arrive as a bool, None or (from CSV) text."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


# --------------------------------------------------------------------------- oasst1

OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


@dataclass
class _Message:
    """One kept oasst1 message (deleted, synthetic and failed-review ones never get here)."""

    id: str
    parent: str | None
    tree: str
    role: str  # "user" or "assistant"
    text: str
    lang: str
    rank: int | None
    labels: dict[str, float]
    where: str


def _oasst_rank(value: Any) -> int | None:
    # Hub exports store rank as a float column (0.0, 1.0, null/NaN).
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    rank = number_value(value, "rank")
    if rank < 0 or rank != int(rank):
        raise BadRow(f"rank must be a whole number >= 0 or null, got {value!r}")
    return int(rank)


def _oasst_labels(value: Any) -> dict[str, float]:
    """``{"name": [...], "value": [...], "count": [...]}`` -> ``{name: value}``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRow(f"labels must be an object with 'name' and 'value' lists, got {type(value).__name__}")
    names, values = value.get("name") or [], value.get("value") or []
    if len(names) != len(values):
        raise BadRow(f"labels has {len(names)} names but {len(values)} values")
    return {str(n): unit_score(v, f"label {n!r}") for n, v in zip(names, values, strict=True)}


def _oasst_row(ctx: Context, index: int, row: dict[str, Any]) -> list[_Message]:
    # Deleted and synthetic messages are not human data; failed review means moderators
    # rejected the message. All three are left out (and so are their descendants).
    if _flag(row.get("deleted")):
        ctx.drops.add("deleted message")
        return []
    if _flag(row.get("synthetic")):
        ctx.drops.add("synthetic message")
        return []
    if row.get("review_result") is False or row.get("review_result") == "False":
        ctx.drops.add("message that failed review")
        return []
    role = row.get("role")
    if role not in OASST_ROLES:
        raise BadRow(f"role must be 'prompter' or 'assistant', got {role!r}")
    message_id = text_value(row.get("message_id"), "message_id")
    return [
        _Message(
            id=message_id,
            parent=row.get("parent_id") or None,
            tree=str(row.get("message_tree_id") or message_id),
            role=OASST_ROLES[role],
            text=text_value(row.get("text"), "text"),
            lang=str(row.get("lang") or ""),
            rank=_oasst_rank(row.get("rank")),
            labels=_oasst_labels(row.get("labels")),
            where=ctx.where(index),
        )
    ]


def label_score(labels: dict[str, float], weights: dict[str, float]) -> float | None:
    """Weighted mean of the labels named in ``weights``, in [0, 1]; None if none is present.

    oasst1 labels are in [0, 1]. A positive weight ``w`` adds ``w * value``; a negative
    weight marks a label where high is bad (toxicity, spam) and adds
    ``|w| * (1 - value)``. The sum is divided by the sum of ``|w|`` over the labels
    present, so a message missing some labels is scored on the ones it has.
    """
    total = norm = 0.0
    for name, weight in weights.items():
        if name not in labels or weight == 0:
            continue
        value = labels[name]
        total += weight * value if weight > 0 else -weight * (1.0 - value)
        norm += abs(weight)
    return total / norm if norm else None


class _Forest:
    """The kept oasst1 messages as trees: look-up by id, children in file order."""

    def __init__(self, messages: list[_Message]) -> None:
        self.by_id = {m.id: m for m in messages}
        self.children: dict[str, list[_Message]] = {}
        for message in messages:
            if message.parent:
                self.children.setdefault(message.parent, []).append(message)

    def conversation(self, message: _Message) -> Messages | None:
        """The chat from the root down to ``message``; None if an ancestor is missing
        (left out, or in another split's file) or roles do not alternate."""
        chain = [message]
        while chain[-1].parent:
            parent = self.by_id.get(chain[-1].parent)
            if parent is None or len(chain) > len(self.by_id):  # missing, or a cycle
                return None
            chain.append(parent)
        chain.reverse()
        if any(m.role != ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(chain)):
            return None
        return [{"role": m.role, "content": m.text} for m in chain]

    def replies(self, message: _Message) -> list[_Message]:
        """The assistant replies to a prompter message."""
        return [c for c in self.children.get(message.id, []) if c.role == "assistant"]


def convert_oasst1(ctx: Context) -> list[Example]:
    """The flat oasst1 message table, rebuilt into conversation trees.

    * sft: each prompter message with its rank-0 assistant reply (unranked single
      replies are not used: rank 0 is the crowd's pick);
    * ranking: each prompter message with >= 2 ranked replies, best (rank 0) first;
    * absolute: each assistant reply with labels, scored by :func:`label_score`;
    * prompts: each prompter message (id = message_id).

    The prompt is the whole conversation down to the prompter message. The language
    filter (``data.languages``; empty keeps all) applies to that prompter message.
    Examples of one tree share a split group, so no tree straddles train and val.
    """
    forest = _Forest(ctx.convert_each(_oasst_row))
    languages = set(ctx.cfg.languages)
    out: list[Example] = []

    def usable_prompt(message: _Message) -> Messages | None:
        """The prompter message's conversation, or None (counted) when it is left out."""
        if languages and message.lang not in languages:
            ctx.drops.add(f"language not in {sorted(languages)}")
            return None
        chat = forest.conversation(message)
        if chat is None:
            ctx.drops.add("missing ancestor (left out or in another file) or non-alternating roles")
        return chat

    prompters = [m for m in forest.by_id.values() if m.role == "user"]
    if ctx.kind == "absolute":
        for reply in (m for m in forest.by_id.values() if m.role == "assistant"):
            parent = forest.by_id.get(reply.parent or "")
            if parent is None or parent.role != "user":
                ctx.drops.add("reply without its prompter message")
                continue
            chat = usable_prompt(parent)
            if chat is None:
                continue
            score = label_score(reply.labels, ctx.cfg.label_weights)
            if score is None:
                ctx.drops.add("reply without any label in data.label_weights")
                continue
            meta = {
                "message_id": reply.id,
                "group": reply.tree,
                "lang": parent.lang,
                "source": reply.where,
            }
            out.append(AbsoluteExample(ctx.prompt(chat), reply.text, score, meta))
        return out

    for message in prompters:
        chat = usable_prompt(message)
        if chat is None:
            continue
        meta = {
            "prompt_id": message.id,
            "group": message.tree,
            "lang": message.lang,
            "source": message.where,
        }
        if ctx.kind == "prompts":
            out.append(PromptExample(ctx.prompt(chat), message.id, meta))
            continue
        ranked = sorted((r for r in forest.replies(message) if r.rank is not None), key=lambda r: r.rank)
        if ctx.kind == "sft":
            if not ranked or ranked[0].rank != 0:
                ctx.drops.add("prompt without a rank-0 reply")
                continue
            out.append(SFTExample(ctx.prompt(chat), ranked[0].text, meta))
        else:  # ranking
            if len(ranked) < 2:
                ctx.drops.add("prompt with fewer than 2 ranked replies")
                continue
            out.append(RankingExample(ctx.prompt(chat), [r.text for r in ranked], None, meta))
    return out


_OASST_COLUMNS = [("message_id",), ("parent_id",), ("message_tree_id",), ("role",), ("text",)]
OASST1 = Adapter(
    "oasst1",
    convert_oasst1,
    {
        "sft": [*_OASST_COLUMNS, ("rank",)],
        "ranking": [*_OASST_COLUMNS, ("rank",)],
        "absolute": [*_OASST_COLUMNS, ("labels",)],
        "prompts": _OASST_COLUMNS,
    },
)


# --------------------------------------------------------------------------- hh-rlhf

# "\n\nHuman: " / "\n\nAssistant: " open every turn; a few rows lack the space.
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


def parse_hh_transcript(text: str, what: str) -> Messages:
    """An hh-rlhf transcript as chat messages (empty turns kept as "" for the caller)."""
    if not isinstance(text, str):
        raise BadRow(f"{what} must be text")
    parts = _HH_TURN.split("\n\n" + text.lstrip("\n"))
    if parts[0].strip() or len(parts) < 3:
        raise BadRow(f"{what} must start with a '\\n\\nHuman: ' turn")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2], strict=True)]


def _hh_row(ctx: Context, index: int, row: dict[str, Any]) -> list[Example]:
    chosen = parse_hh_transcript(row.get("chosen"), "chosen")
    rejected = parse_hh_transcript(row.get("rejected"), "rejected")
    # Both transcripts are the same conversation up to the final assistant turn.
    if chosen[:-1] != rejected[:-1] or len(chosen) < 2:
        raise BadRow("chosen and rejected do not share the conversation before the last reply")
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise BadRow("chosen and rejected must end on an Assistant turn")
    raw_prompt = chosen[:-1]
    if raw_prompt[-1]["role"] != "user" or any(not m["content"] for m in raw_prompt):
        raise BadRow("the shared conversation must end on a non-empty Human turn")
    prompt = ctx.prompt(raw_prompt)
    meta = {"source": ctx.where(index)}
    if ctx.kind == "prompts":
        return [PromptExample(prompt, prompt_id(raw_prompt), meta)]
    best = text_value(chosen[-1]["content"], "chosen reply")
    if ctx.kind == "sft":
        return [SFTExample(prompt, best, meta)]
    worse = text_value(rejected[-1]["content"], "rejected reply")
    # A pair with best == worse is skipped (with a warning) by convert_table, for every adapter.
    return [RankingExample(prompt, [best, worse], None, meta)]


def convert_hh_rlhf(ctx: Context) -> list[Example]:
    """Anthropic hh-rlhf ``{chosen, rejected}`` transcripts: sft = chosen, ranking = pair."""
    return ctx.convert_each(_hh_row)


_HH = [("chosen",), ("rejected",)]
HH_RLHF = Adapter("hh_rlhf", convert_hh_rlhf, {"sft": _HH, "ranking": _HH, "prompts": _HH})


# --------------------------------------------------------------------------- SHP


@dataclass
class _ShpPair:
    post_id: str
    domain: str
    history: str
    comments: list[tuple[str, str, float]]  # (comment id, text, score), preferred first
    where: str


def _shp_row(ctx: Context, index: int, row: dict[str, Any]) -> list[_ShpPair]:
    post_id = text_value(str(row.get("post_id") or ""), "post_id")
    history = text_value(row.get("history"), "history")
    domain = str(row.get("domain") or "")
    if ctx.kind == "prompts":  # the comments are not needed (nor required) for prompts
        return [_ShpPair(post_id, domain, history, [], ctx.where(index))]
    text_a = text_value(row.get("human_ref_A"), "human_ref_A")
    text_b = text_value(row.get("human_ref_B"), "human_ref_B")
    score_a = number_value(row.get("score_A"), "score_A")
    score_b = number_value(row.get("score_B"), "score_B")
    label = row.get("labels")
    if str(label) not in ("0", "1", "True", "False"):
        raise BadRow(f"labels must be 1 (A preferred) or 0, got {label!r}")
    a_preferred = str(label) in ("1", "True")
    # SHP prefers the comment with more upvotes; a row saying otherwise is corrupt.
    if a_preferred != (score_a > score_b):
        raise BadRow(f"labels={label} disagrees with score_A={score_a} and score_B={score_b}")
    a = (str(row.get("c_root_id_A") or text_a), text_a, score_a)
    b = (str(row.get("c_root_id_B") or text_b), text_b, score_b)
    comments = [a, b] if a_preferred else [b, a]
    return [_ShpPair(post_id, domain, history, comments, ctx.where(index))]


def convert_shp(ctx: Context) -> list[Example]:
    """Stanford SHP: Reddit posts with pairs of comments, preferred by upvotes.

    ranking: one example per post. A post with a single pair gives
    ``[preferred, other]``; a post with several pairs gives one K-wise ranking of all
    its distinct comments sorted by score (ties keep first-seen order). Grouping keeps
    busy posts from dominating (the pairwise loss averages per prompt) and uses every
    comparison the scores imply. Scores are the raw upvote counts (unbounded: mind
    ``rm.margin_scale``). prompts: one per post (id = post_id).
    """
    posts: dict[str, list[_ShpPair]] = {}
    for pair in ctx.convert_each(_shp_row):
        posts.setdefault(pair.post_id, []).append(pair)
    out: list[Example] = []
    for post_id, pairs in posts.items():
        first = pairs[0]
        meta = {
            "prompt_id": post_id,
            "group": post_id,
            "domain": first.domain,
            "source": first.where,
        }
        prompt = ctx.prompt(user_prompt(first.history))
        if ctx.kind == "prompts":
            ctx.drops.add("repeated post (one prompt per post)", len(pairs) - 1)
            out.append(PromptExample(prompt, post_id, meta))
            continue
        if len(pairs) == 1:
            comments = first.comments
        else:
            by_id = {cid: (cid, text, score) for pair in pairs for cid, text, score in pair.comments}
            comments = sorted(by_id.values(), key=lambda c: -c[2])
        replies = [text for _, text, _ in comments]
        scores = [score for _, _, score in comments]
        out.append(RankingExample(prompt, replies, scores, {**meta, "pairs": len(pairs)}))
    return out


_SHP = [("post_id",), ("history",)]
SHP = Adapter(
    "shp",
    convert_shp,
    {
        "ranking": [
            *_SHP,
            ("human_ref_A",),
            ("human_ref_B",),
            ("labels",),
            ("score_A",),
            ("score_B",),
        ],
        "prompts": _SHP,
    },
)


# --------------------------------------------------------------------------- UltraFeedback

ULTRAFEEDBACK_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")


def ultrafeedback_score(completion: dict[str, Any], what: str) -> float | None:
    """A completion's quality in [0, 1]: (mean of its 1-5 aspect ratings - 1) / 4.

    Ratings of "N/A" are skipped. A completion without any numeric aspect rating falls
    back to its ``fine-grained_score`` (the dataset's own mean of the same ratings);
    None when it has neither.
    """
    annotations = completion.get("annotations") or {}
    ratings = []
    for aspect in ULTRAFEEDBACK_ASPECTS:
        rating = (annotations.get(aspect) or {}).get("Rating")
        if rating in (None, "", "N/A"):
            continue
        value = number_value(rating, f"{what} {aspect} rating")
        if not 1.0 <= value <= 5.0:
            raise BadRow(f"{what} {aspect} rating {value} is outside 1-5")
        ratings.append(value)
    if ratings:
        return (sum(ratings) / len(ratings) - 1.0) / 4.0
    fallback = completion.get("fine-grained_score")
    if fallback in (None, "", "N/A"):
        return None
    return unit_score(
        (number_value(fallback, f"{what} fine-grained_score") - 1.0) / 4.0,
        f"{what} fine-grained_score",
    )


def _ultrafeedback_row(ctx: Context, index: int, row: dict[str, Any]) -> list[Example]:
    raw_prompt = user_prompt(text_value(row.get("instruction"), "instruction"))
    prompt = ctx.prompt(raw_prompt)
    meta = {"source": ctx.where(index), "dataset_source": row.get("source")}
    if ctx.kind == "prompts":
        return [PromptExample(prompt, prompt_id(raw_prompt), meta)]
    completions = row.get("completions")
    if not isinstance(completions, list):
        raise BadRow("completions must be a list")
    # (response, score, model) per rated completion, in the row's order
    rated: list[tuple[str, float, str]] = []
    for i, completion in enumerate(completions):
        what = f"completions[{i}]"
        if not isinstance(completion, dict):
            raise BadRow(f"{what} must be an object")
        response = text_value(completion.get("response"), f"{what} response")
        score = ultrafeedback_score(completion, what)
        if score is None:
            ctx.drops.add("completion without ratings")
            continue
        rated.append((response, score, str(completion.get("model") or "")))
    if ctx.kind == "absolute":
        return [AbsoluteExample(prompt, r, s, {**meta, "model": m}) for r, s, m in rated]
    ordered = sorted(rated, key=lambda c: -c[1])  # stable: ties keep the row's order
    if ctx.kind == "sft":
        if not ordered:
            ctx.drops.add("prompt without a rated completion")
            return []
        return [SFTExample(prompt, ordered[0][0], {**meta, "model": ordered[0][2]})]
    if len(ordered) < 2:
        ctx.drops.add("prompt with fewer than 2 rated completions")
        return []
    if ordered[0][1] == ordered[-1][1]:
        ctx.drops.add("prompt whose completions are all rated equal")  # no preference in it
        return []
    return [
        RankingExample(
            prompt,
            [c[0] for c in ordered],
            [c[1] for c in ordered],
            {**meta, "models": [c[2] for c in ordered]},
        )
    ]


def convert_ultrafeedback(ctx: Context) -> list[Example]:
    """openbmb/UltraFeedback: an instruction with several rated completions.

    absolute = each rated completion (:func:`ultrafeedback_score`); ranking = the
    completions sorted by that score, with the scores (a prompt whose completions all
    tie is left out, counted); sft = the best completion; prompts = the instruction.
    """
    return ctx.convert_each(_ultrafeedback_row)


_UF = [("instruction",), ("completions",)]
ULTRAFEEDBACK = Adapter(
    "ultrafeedback",
    convert_ultrafeedback,
    {"sft": _UF, "ranking": _UF, "absolute": _UF, "prompts": [("instruction",)]},
)
