"""Prompt specs of the crs demo benchmark: what a good reply to a demo prompt has to do.

Every demo prompt belongs to one *category* (an instruction type such as ``list`` or
``arithmetic``). Its ``spec`` records what a good reply has to do: how many list items were
asked for, whether one sentence was asked for, the right number for a sum, the two things to
compare, and the prompt's key terms. The simulated annotator (:mod:`crs.demo.annotator`) grades
replies against that spec.

Replies to evaluation prompts are graded from the prompt *text* alone, so :func:`infer_spec`
recovers the spec from the wording; the generator (:mod:`crs.demo.prompt_set`) is written so
that ``infer_spec(p.text) == p.spec`` holds for every prompt it makes (the tests check this).
"""

from __future__ import annotations

import re
from typing import Any

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

NUMBER_WORDS: dict[str, int] = {"two": 2, "three": 3, "four": 4, "five": 5}
"""The number words a list prompt may give its item count in."""


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
# the templates in crs.demo.prompt_set._arithmetic_candidates; group names say which number is which.
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
    return {"n_items": int(n) if n.isdigit() else NUMBER_WORDS[n]}


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
