"""The crs demo benchmark: template-generated prompts with a machine-readable spec.

Every prompt belongs to one *category* (an instruction type such as ``list`` or
``arithmetic``) and one *topic* (an everyday subject such as sleep or bicycles). Its
``spec`` records what a good reply has to do: how many list items were asked for, whether
one sentence was asked for, the right number for a sum, the two things to compare, and the
prompt's key terms. The simulated annotator (:mod:`crs.demo.annotator`) grades replies against
that spec.

Replies to evaluation prompts are graded from the prompt *text* alone, so
:func:`infer_spec` recovers the spec from the wording, and the generator is written so that
``infer_spec(p.text) == p.spec`` holds for every prompt it makes (the tests check this).

Everything here is deterministic given the seed; no model or network is needed.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crs.data.schema import PromptExample, user_prompt

CATEGORIES: tuple[str, ...] = (
    "explain",
    "list",
    "define",
    "compare",
    "summarize",
    "arithmetic",
    "rewrite_polite",
    "yes_no",
    "advice",
)
"""Instruction types, in the order prompts are generated."""

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
    model sees, and ``spec`` is what the annotator checks (see :func:`infer_spec`).
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
# Words and key terms
# --------------------------------------------------------------------------------------

_STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing done down during
    each either else even ever every few for from further get gets got had has have having
    he her here hers him his how however i if in into is it its itself just least less let
    like make makes many may me might more most much must my near need needs no nor not
    now of off often on once only or other our ours out over own per quite rather really
    same she should so some such than that the their theirs them then there these they
    this those through to too under until up upon us very was we well were what when where
    which while who whom whose why will with within without would yet you your yours
    better best good great new way ways thing things lot lots something anything everything
    someone anyone everyone people person day days time times using use used keep keeps
    keeping kept right
    """.split()
)
"""Common English function words; they say nothing about what a reply is about."""

_INSTRUCTION_WORDS = frozenset(
    """
    explain simple words list tips tip give name ideas define briefly brief sentence
    sentences short definition compare difference summarize summary following text rewrite
    politely polite answer yes reason idea piece advice share single wants want
    one two three four five six seven eight nine ten
    """.split()
)
"""Words that belong to the instruction templates rather than to the topic."""

_NUMBER_WORDS: dict[str, int] = {"two": 2, "three": 3, "four": 4, "five": 5}


def tokenize(text: str) -> list[str]:
    """Lower-cased alphabetic words of ``text`` (digits and punctuation dropped)."""
    return re.findall(r"[a-z]+", text.lower())


def stem(word: str) -> str:
    """A crude stem, so that "dogs"/"dog" and "sleeping"/"sleep" count as the same word.

    Plural ``s``, then ``ing``/``ed``, then a final ``e`` are removed; it is only used to
    compare words with each other, never shown to anyone.
    """
    w = word.lower()
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    if len(w) > 5 and w.endswith("ing"):
        w = w[:-3]
    elif len(w) > 4 and w.endswith("ed"):
        w = w[:-2]
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


def key_terms(text: str) -> list[str]:
    """Content words of a prompt: no stopwords, no instruction words, no words under 3 letters.

    Words are kept in order of first appearance, one per stem.
    """
    terms: list[str] = []
    seen: set[str] = set()
    for word in tokenize(text):
        if len(word) < 3 or word in _STOPWORDS or word in _INSTRUCTION_WORDS:
            continue
        s = stem(word)
        if s not in seen:
            seen.add(s)
            terms.append(word)
    return terms


# --------------------------------------------------------------------------------------
# Recovering the spec from prompt text
# --------------------------------------------------------------------------------------

_ARITHMETIC_OPS = {"+": "+", "plus": "+", "-": "-", "minus": "-", "times": "*", "x": "*", "*": "*"}


def _apply(op: str, a: int, b: int) -> int:
    """``a op b`` for the three operators the templates use."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b


# Word problems: (regex, function from the regex groups to the answer). The regexes mirror
# the templates in _arithmetic_candidates; group names say which number is which.
_WORD_PROBLEMS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"^(?P<name>\w+) has (?P<a>\d+) (?P<item>\w+) and buys (?P<b>\d+) more\. "
            r"How many (?P=item) does (?P=name) have now\?$"
        ),
        "+",
    ),
    (
        re.compile(
            r"^(?P<name>\w+) had (?P<a>\d+) (?P<item>\w+) and gave away (?P<b>\d+)\. "
            r"How many (?P=item) are left\?$"
        ),
        "-",
    ),
    (
        re.compile(r"^A box holds (?P<a>\d+) (?P<item>\w+)\. How many (?P=item) are in (?P<b>\d+) boxes\?$"),
        "*",
    ),
    (
        re.compile(
            r"^There are (?P<a>\d+) (?P<item>\w+) in each of (?P<b>\d+) bags\. "
            r"How many (?P=item) are there in total\?$"
        ),
        "*",
    ),
)

_SYMBOLIC_SUM = re.compile(r"^What is (\d+) (\+|plus|-|minus|times|x|\*) (\d+)\?$", re.IGNORECASE)


def _parse_arithmetic(text: str) -> dict[str, Any] | None:
    """``{"answer": n}`` for the arithmetic templates, else None."""
    m = _SYMBOLIC_SUM.match(text)
    if m:
        op = _ARITHMETIC_OPS[m.group(2).lower()]
        return {"answer": _apply(op, int(m.group(1)), int(m.group(3)))}
    for pattern, op in _WORD_PROBLEMS:
        m = pattern.match(text)
        if m:
            return {"answer": _apply(op, int(m.group("a")), int(m.group("b")))}
    return None


def _parse_list(text: str) -> dict[str, Any] | None:
    m = re.match(r"^(?:List|Give|Name) (\d+|two|three|four|five) (?:tips|ways|ideas)\b", text, re.IGNORECASE)
    if not m:
        return None
    n = m.group(1).lower()
    return {"n_items": int(n) if n.isdigit() else _NUMBER_WORDS[n]}


def _parse_define(text: str) -> dict[str, Any] | None:
    m = re.match(r"^Define .+? (briefly|in one sentence)\.$", text)
    if m:
        return {"one_sentence": True} if m.group(1) == "in one sentence" else {}
    if re.match(r"^Give a short definition of .+\.$", text):
        return {}
    return None


def _parse_compare(text: str) -> dict[str, Any] | None:
    m = re.match(r"^Compare (.+?) and (.+)\.$", text) or re.match(
        r"^What is the difference between (.+?) and (.+)\?$", text
    )
    return {"compare": [m.group(1), m.group(2)]} if m else None


def _parse_summarize(text: str) -> dict[str, Any] | None:
    if re.match(r"^Summarize (?:this|the following text) in one sentence: \S", text):
        return {"one_sentence": True}
    return None


def _parse_explain(text: str) -> dict[str, Any] | None:
    return {} if re.match(r"^Explain (?:in simple words )?(?:why|how) \S", text) else None


def _parse_rewrite(text: str) -> dict[str, Any] | None:
    if re.match(r"^(?:Rewrite this more politely|Make this sentence more polite): '.+'$", text):
        return {}
    return None


def _parse_yes_no(text: str) -> dict[str, Any] | None:
    # Searched anywhere (not anchored) so hand-written yes/no questions are recognised too.
    return {"yes_no": True} if re.search(r"\banswer yes or no\b", text, re.IGNORECASE) else None


def _parse_advice(text: str) -> dict[str, Any] | None:
    if re.match(
        r"^(?:Give one piece of advice for someone who wants to|Share one short piece of advice about"
        r"|What is the best single piece of advice for people who want to) \S",
        text,
    ):
        return {}
    return None


# Tried in this order; the first parser that returns a dict names the category. Every
# template starts with its own fixed words, so at most one of them matches a demo prompt.
_PARSERS = (
    ("arithmetic", _parse_arithmetic),
    ("list", _parse_list),
    ("define", _parse_define),
    ("compare", _parse_compare),
    ("summarize", _parse_summarize),
    ("explain", _parse_explain),
    ("rewrite_polite", _parse_rewrite),
    ("yes_no", _parse_yes_no),
    ("advice", _parse_advice),
)


def infer_spec(prompt_text: str) -> dict[str, Any]:
    """Recover a prompt's spec from its wording.

    Always present: ``category`` (one of :data:`CATEGORIES`, or ``"open"`` for text that
    matches no template) and ``key_terms`` (see :func:`key_terms`). Depending on the
    category: ``n_items`` (int, list), ``one_sentence`` (True, define/summarize),
    ``answer`` (int, arithmetic), ``compare`` ([a, b], compare), ``yes_no`` (True).
    For ``"open"`` prompts, "in one sentence" anywhere still sets ``one_sentence``.
    """
    text = " ".join(prompt_text.split())  # tolerate extra spaces and line breaks
    spec: dict[str, Any] = {"category": "open", "key_terms": key_terms(text)}
    for category, parse in _PARSERS:
        extra = parse(text)
        if extra is not None:
            spec["category"] = category
            spec.update(extra)
            return spec
    if re.search(r"\bin one sentence\b", text, re.IGNORECASE):
        spec["one_sentence"] = True
    return spec


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
    words = {n: w for w, n in _NUMBER_WORDS.items()}
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
