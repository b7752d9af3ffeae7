"""The crs demo benchmark's prompt set, built offline: template-generated prompts with their spec.

Every prompt belongs to one *category* (:data:`~crs.demo.prompt_specs.CATEGORIES`) and one
*topic* (an everyday subject such as sleep or bicycles); its ``spec`` is what the annotator
checks (:mod:`crs.demo.prompt_specs`). ``scripts/make_demo_dataset.py`` builds the embedded demo
dataset from :func:`build_prompts` and :func:`assign_splits`.

Everything here is deterministic given the seed; no model or network is needed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crs.data.schema import PromptExample, user_prompt
from crs.demo.prompt_specs import CATEGORIES, NUMBER_WORDS, key_terms

PROMPTS_PER_CATEGORY = 120
"""How many prompts :func:`build_prompts` keeps per category (9 x 120 = 1080 in all)."""

DEFAULT_SPLIT_SIZES: dict[str, int] = {"eval": 100, "sft": 250, "rm": 550, "rl": 180}
"""Default split sizes; they add up to the 1080 prompts of :func:`build_prompts`.

The reward-model split gets the most prompts because each of its prompts is later turned
into several labelled replies.
"""


@dataclass
class DemoPrompt:
    """One benchmark prompt.

    ``id`` is ``"<category>-<4 digits>"`` (e.g. ``"list-0042"``), ``text`` is what the
    model sees, and ``spec`` is what the annotator checks (see :func:`~crs.demo.prompt_specs.infer_spec`).
    """

    id: str
    category: str
    topic: str
    text: str
    spec: dict[str, Any] = field(default_factory=dict)

    def to_example(self) -> PromptExample:
        """This prompt as a single-turn :class:`~crs.data.schema.PromptExample`.

        ``meta`` carries the category, topic and spec for per-category reports.
        """
        meta = {"category": self.category, "topic": self.topic, "spec": self.spec}
        return PromptExample(prompt=user_prompt(self.text), id=self.id, meta=meta)


# --------------------------------------------------------------------------------------
# Topic material (written for this project; the table itself is crs/demo/data/topics.json)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Topic:
    """Everything the templates need to say about one everyday subject.

    ``term`` is defined, ``gerund`` gets tips ("tips for ..."), ``goal`` completes "how
    to ..." and "wants to ...", ``thing`` is a singular object for the rude sentences,
    ``whys`` complete "Explain why ...", ``pairs`` are compared (no " and " inside),
    ``actions`` complete "Should I ...?", and ``facts`` are sentences for summaries.
    """

    name: str
    term: str
    gerund: str
    goal: str
    thing: str
    whys: tuple[str, str]
    pairs: tuple[tuple[str, str], tuple[str, str]]
    actions: tuple[str, str]
    facts: tuple[str, str, str, str]


TOPICS_FILE = Path(__file__).resolve().parent / "data" / "topics.json"


@functools.cache
def _material() -> dict[str, Any]:
    """The topic table and word lists (``crs/demo/data/topics.json``), read once."""
    data = json.loads(TOPICS_FILE.read_text(encoding="utf-8"))
    topics = tuple(
        _Topic(
            **{
                k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                for k, v in t.items()
            }
        )
        for t in data["topics"]
    )
    return {
        "topics": topics,
        "rude_templates": tuple(data["rude_templates"]),
        "names": tuple(data["names"]),
        "items": tuple(data["items"]),
    }


# --------------------------------------------------------------------------------------
# Candidate generation, one function per category
# --------------------------------------------------------------------------------------

# A candidate is (topic name, prompt text, spec without key_terms); key terms are added
# afterwards from the final text so every category gets them the same way.
_Candidate = tuple[str, str, dict[str, Any]]


def _explain_candidates() -> list[_Candidate]:
    out: list[_Candidate] = []
    for t in _material()["topics"]:
        out += [(t.name, f"Explain why {why}.", {}) for why in t.whys]
        out.append((t.name, f"Explain how to {t.goal}.", {}))
        out.append((t.name, f"Explain in simple words how to {t.goal}.", {}))
    return out


def _list_candidates() -> list[_Candidate]:
    words = {n: w for w, n in NUMBER_WORDS.items()}
    out: list[_Candidate] = []
    for t in _material()["topics"]:
        for n in range(2, 6):
            spec = {"n_items": n}
            out.append((t.name, f"List {n} tips for {t.gerund}.", spec))
            out.append((t.name, f"List {n} ways to {t.goal}.", spec))
            out.append((t.name, f"Give {words[n]} tips for {t.gerund}.", spec))
    return out


def _define_candidates() -> list[_Candidate]:
    out: list[_Candidate] = []
    for t in _material()["topics"]:
        out.append((t.name, f"Define {t.term} briefly.", {}))
        out.append((t.name, f"Define {t.term} in one sentence.", {"one_sentence": True}))
        out.append((t.name, f"Give a short definition of {t.term}.", {}))
    return out


def _compare_candidates() -> list[_Candidate]:
    out: list[_Candidate] = []
    for t in _material()["topics"]:
        for a, b in t.pairs:
            out.append((t.name, f"Compare {a} and {b}.", {"compare": [a, b]}))
            out.append((t.name, f"What is the difference between {a} and {b}?", {"compare": [a, b]}))
    return out


def _summarize_candidates() -> list[_Candidate]:
    out: list[_Candidate] = []
    for t in _material()["topics"]:
        for left_out in range(4):  # every passage is three of the four facts, in order
            passage = " ".join(f for i, f in enumerate(t.facts) if i != left_out)
            for intro in ("Summarize this in one sentence:", "Summarize the following text in one sentence:"):
                out.append((t.name, f"{intro} {passage}", {"one_sentence": True}))
    return out


def _rewrite_candidates() -> list[_Candidate]:
    out: list[_Candidate] = []
    for t in _material()["topics"]:
        for template in _material()["rude_templates"]:
            rude = template.format(thing=t.thing)
            # Alternate the two wordings so both are well represented.
            intro = "Rewrite this more politely" if len(out) % 2 == 0 else "Make this sentence more polite"
            out.append((t.name, f"{intro}: '{rude}'", {}))
    return out


def _yes_no_candidates() -> list[_Candidate]:
    out: list[_Candidate] = []
    for t in _material()["topics"]:
        for action in t.actions:
            for question in (f"Is it a good idea to {action}?", f"Should I {action}?"):
                out.append((t.name, f"{question} Answer yes or no and give one reason.", {"yes_no": True}))
    return out


def _advice_candidates() -> list[_Candidate]:
    out: list[_Candidate] = []
    for t in _material()["topics"]:
        out.append((t.name, f"Give one piece of advice for someone who wants to {t.goal}.", {}))
        out.append((t.name, f"Share one short piece of advice about {t.gerund}.", {}))
        out.append((t.name, f"What is the best single piece of advice for people who want to {t.goal}?", {}))
    return out


def _arithmetic_candidates(rng: np.random.Generator, n: int) -> list[_Candidate]:
    """``n`` distinct random sums and word problems with small numbers."""
    seen: set[str] = set()
    out: list[_Candidate] = []
    while len(out) < n:
        kind = int(rng.integers(0, 9))
        name = str(rng.choice(_material()["names"]))
        item = str(rng.choice(_material()["items"]))
        if kind <= 1:  # addition, symbol or word
            a, b = (int(x) for x in rng.integers(2, 60, size=2))
            op_word = "+" if kind == 0 else "plus"
            text, answer = f"What is {a} {op_word} {b}?", a + b
        elif kind <= 3:  # subtraction with a non-negative result
            a = int(rng.integers(10, 100))
            b = int(rng.integers(1, a))
            op_word = "-" if kind == 2 else "minus"
            text, answer = f"What is {a} {op_word} {b}?", a - b
        elif kind == 4:  # times tables
            a, b = (int(x) for x in rng.integers(2, 13, size=2))
            text, answer = f"What is {a} times {b}?", a * b
        elif kind == 5:
            a, b = (int(x) for x in rng.integers(2, 30, size=2))
            text = f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?"
            answer = a + b
        elif kind == 6:
            a = int(rng.integers(5, 40))
            b = int(rng.integers(1, a))
            text = f"{name} had {a} {item} and gave away {b}. How many {item} are left?"
            answer = a - b
        elif kind == 7:
            a, b = (int(x) for x in rng.integers(2, 13, size=2))
            text, answer = f"A box holds {a} {item}. How many {item} are in {b} boxes?", a * b
        else:
            a, b = (int(x) for x in rng.integers(2, 13, size=2))
            text = f"There are {a} {item} in each of {b} bags. How many {item} are there in total?"
            answer = a * b
        if text not in seen:
            seen.add(text)
            out.append(("arithmetic", text, {"answer": answer}))
    return out


_FIXED_GENERATORS = {
    "explain": _explain_candidates,
    "list": _list_candidates,
    "define": _define_candidates,
    "compare": _compare_candidates,
    "summarize": _summarize_candidates,
    "rewrite_polite": _rewrite_candidates,
    "yes_no": _yes_no_candidates,
    "advice": _advice_candidates,
}


def build_prompts(seed: int = 0, per_category: int = PROMPTS_PER_CATEGORY) -> list[DemoPrompt]:
    """All demo prompts: ``per_category`` of each of :data:`CATEGORIES`, texts all distinct.

    For each category the templates x topics give a pool of candidates, from which
    ``per_category`` are drawn with a generator seeded by ``seed``; arithmetic draws its
    numbers from the same generator. Ids number prompts within a category in draw order
    ("list-0000", "list-0001", ...). Same seed, same list.
    """
    rng = np.random.default_rng(seed)
    prompts: list[DemoPrompt] = []
    for category in CATEGORIES:
        if category == "arithmetic":
            pool = _arithmetic_candidates(rng, per_category)
        else:
            unique = {text: (topic, text, spec) for topic, text, spec in _FIXED_GENERATORS[category]()}
            pool = list(unique.values())
            if len(pool) < per_category:
                raise ValueError(f"only {len(pool)} distinct {category!r} prompts, {per_category} asked for")
            pool = [pool[int(i)] for i in rng.choice(len(pool), size=per_category, replace=False)]
        for i, (topic, text, spec) in enumerate(pool):
            full_spec = {"category": category, "key_terms": key_terms(text), **spec}
            prompts.append(DemoPrompt(f"{category}-{i:04d}", category, topic, text, full_spec))
    return prompts


def assign_splits(
    prompts: Sequence[DemoPrompt],
    sizes: Mapping[str, int] | None = None,
    seed: int = 0,
) -> dict[str, list[DemoPrompt]]:
    """Split prompts into disjoint, category-stratified sets of the given sizes.

    ``sizes`` defaults to :data:`DEFAULT_SPLIT_SIZES` (eval = 100). Prompts are shuffled
    within each category and interleaved so that categories are spread evenly along the
    sequence; consecutive slices then give every split about the category mix of the whole
    (within one or two prompts per category). ``"eval"`` is cut first, so the evaluation
    prompts do not change when the other sizes do. Sizes may add up to less than
    ``len(prompts)``; the rest is left out.
    """
    sizes = dict(DEFAULT_SPLIT_SIZES if sizes is None else sizes)
    if any(int(n) != n or n < 0 for n in sizes.values()):
        raise ValueError(f"split sizes must be non-negative integers, got {sizes}")
    if sum(sizes.values()) > len(prompts):
        raise ValueError(f"split sizes add up to {sum(sizes.values())} but there are only {len(prompts)} prompts")
    if len({p.id for p in prompts}) != len(prompts):
        raise ValueError("prompt ids are not unique")

    rng = np.random.default_rng(seed)
    by_category: dict[str, list[DemoPrompt]] = {}
    for p in sorted(prompts, key=lambda p: p.id):  # sorted so input order does not matter
        by_category.setdefault(p.category, []).append(p)

    # Prompt i of a category with n prompts sits at (i + offset) / n along [0, 1); sorting by
    # that position interleaves categories in proportion to their sizes.
    placed: list[tuple[float, int, DemoPrompt]] = []
    for rank, category in enumerate(sorted(by_category)):
        group = by_category[category]
        order = rng.permutation(len(group))
        offset = float(rng.uniform())
        placed += [((i + offset) / len(group), rank, group[int(j)]) for i, j in enumerate(order)]
    sequence = [p for _, _, p in sorted(placed, key=lambda x: (x[0], x[1]))]

    names = (["eval"] if "eval" in sizes else []) + [name for name in sizes if name != "eval"]
    splits: dict[str, list[DemoPrompt]] = {}
    start = 0
    for name in names:
        splits[name] = sequence[start : start + sizes[name]]
        start += sizes[name]
    return {name: splits[name] for name in sizes}  # caller's key order
