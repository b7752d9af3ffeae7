"""A simulated annotator with a known, noise-free utility that also serves as gold judge.

How a reply is graded
---------------------
The annotator reads the prompt (its spec is recovered from the wording by
:func:`crs.demo.prompt_specs.infer_spec`) and scores the reply on up to seven criteria, each
between 0 (bad) and 1 (good):

* **relevance** (2 points): the reply uses the prompt's key terms (content words, so
  "sleeping" in the prompt is matched by "sleep" in the reply). One key term is enough for
  a short prompt, two for a longer one (4+ key terms); an off-topic reply gets 0. Not used
  for arithmetic, where only the number matters.
* **instructions** (3 points): the reply has the form the prompt asked for: exactly N
  numbered or bulleted lines for "List N ..." (each item too many or too few costs 0.3),
  one sentence for "in one sentence", a reply that starts with yes or no and gives a
  reason for yes/no questions, both things named for "Compare A and B", polite wording
  ("please", "could you", ...) for "Rewrite this more politely". Only used when the prompt
  asks for such a form.
* **correctness** (4 points, arithmetic only): the right number appears; every other
  number that is neither the answer nor in the question costs 0.15 (down to 0.5); no right
  number gives 0.
* **completeness** (2 points): the reply is not cut off: it ends with ``.``, ``!`` or
  ``?``. A last list item or a number without a full stop still counts as mostly
  complete; ending on a word like "the" or "and" counts as cut off.
* **length** (1 point): long enough to do the job and not longer than the category needs
  (e.g. at most 35 words for a definition, 15 per list item plus 15). Twice too long
  gives half marks.
* **repetition** (2 points): no loops; repeated word triples or repeated lines pull it
  down, and a reply that is half repeats gets 0.
* **no_refusal** (2 points): no refusal boilerplate ("As an AI language model", "I
  cannot", ...); each such phrase costs half, so two give 0.

The utility is the points-weighted mean over the criteria that apply, so it lies in
[0, 1]. A reply with no letters or digits gets 0. The utility is deterministic; it is the
noise-free **gold judge** of evaluation (:func:`gold_score`, :func:`gold_judge`).

Human-like feedback
-------------------
Rankings (:func:`rank_replies`) are sampled from a Plackett–Luce model: each reply's
utility plus Gumbel noise of scale ``noise``, sorted. Noise 0 gives the utility order.
Absolute 1–5 scores (:func:`likert`) come from a panel of :class:`Annotator` s who differ in
bias (lenient or harsh), noise and how much of the scale they use, so absolute labels are
miscalibrated across annotators the way human ratings are.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from crs.demo.prompt_specs import infer_spec, key_terms, stem, tokenize

WEIGHTS: dict[str, float] = {
    "relevance": 2.0,
    "instructions": 3.0,
    "correctness": 4.0,
    "completeness": 2.0,
    "length": 1.0,
    "repetition": 2.0,
    "no_refusal": 2.0,
}
"""Points per criterion; criteria that do not apply to a prompt are left out of the mean."""

LENGTH_LIMITS: dict[str, tuple[int, int]] = {
    "explain": (12, 90),
    "define": (5, 35),
    "compare": (12, 90),
    "summarize": (6, 35),
    "arithmetic": (1, 30),
    "rewrite_polite": (4, 30),
    "yes_no": (5, 45),
    "advice": (5, 40),
    "open": (3, 120),
}
"""Per category: (fewest words that can do the job, most words before the reply is too long).

Lists are not in the table: they get 3 to 15 words per asked item, plus 15.
"""

_REFUSAL_PHRASES = (
    "as an ai",
    "language model",
    "i cannot",
    "i can't",
    "i can not",
    "i am unable",
    "i'm unable",
    "i am not able to",
    "i'm not able to",
    "i won't be able",
    "i do not have personal",
    "i don't have personal",
    "i'm sorry, but",
    "i am sorry, but",
    "i apologize, but",
)

_POLITE_MARKERS = re.compile(
    r"\b(please|could you|would you|can you|kindly|thank|thanks|would it be possible|may i|"
    r"if you don't mind|when you have a moment|i would appreciate|would you mind)\b"
)

# Words a finished sentence does not end on; a reply that stops on one was cut off.
_DANGLING_WORDS = frozenset(
    "the a an and or but to of for with in on at by from that which because so your my "
    "their our its is are was were be as if than then this these those very".split()
)

_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}

_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+\S")


# --------------------------------------------------------------------------------------
# Small text helpers
# --------------------------------------------------------------------------------------


def _numbers(text: str) -> set[float]:
    """Numbers written in digits ("1,200" reads as 1200, "4.5" as 4.5) or as words up to twenty."""
    found = {float(m.replace(",", "")) for m in re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?", text)}
    found |= {float(_NUMBER_WORDS[w]) for w in tokenize(text) if w in _NUMBER_WORDS}
    return found


def _list_items(reply: str) -> int:
    """Number of lines that start like a list item ("1.", "2)", "-", "*", "•")."""
    return sum(1 for line in reply.splitlines() if _LIST_ITEM.match(line))


def _sentences(reply: str) -> list[str]:
    """Sentences of the reply; list markers are removed first so "1." does not end a sentence."""
    text = "\n".join(_LIST_ITEM.sub(lambda m: m.group(0)[-1], line) for line in reply.splitlines())
    parts = re.split(r"(?<=[.!?])\s+|\n+", text.strip())
    return [p for p in parts if re.search(r"[A-Za-z0-9]", p)]


def _stems(words: list[str]) -> set[str]:
    return {stem(w) for w in words}


# --------------------------------------------------------------------------------------
# The criteria: each returns a value in [0, 1], or None when it does not apply
# --------------------------------------------------------------------------------------


def _relevance(spec: dict[str, Any], reply_stems: set[str]) -> float | None:
    terms = spec["key_terms"]
    if spec["category"] == "arithmetic" or not terms:
        return None
    needed = min(2, math.ceil(len(terms) / 3))  # one term of a short prompt, two of a long one
    found = sum(1 for t in terms if stem(t) in reply_stems)
    return min(1.0, found / needed)


def _instructions(prompt: str, spec: dict[str, Any], reply: str, reply_stems: set[str]) -> float | None:
    """Average over the form requirements the prompt makes; None if it makes none."""
    checks: list[float] = []
    if "n_items" in spec:
        items = _list_items(reply)
        # No list at all is nearly as bad as it gets; each item too many or too few costs 0.3.
        checks.append(0.1 if items == 0 else max(0.1, 1.0 - 0.3 * abs(items - spec["n_items"])))
    if spec.get("one_sentence"):
        checks.append(1.0 / max(1, len(_sentences(reply))))
    if spec.get("yes_no"):
        words = tokenize(reply)
        if words and words[0] in ("yes", "no"):
            answered = 1.0
        elif "yes" in words or "no" in words:
            answered = 0.5  # an answer is there, but buried
        else:
            answered = 0.0
        gives_reason = 1.0 if len(words) >= 5 else 0.0
        checks.append(0.7 * answered + 0.3 * gives_reason)
    if "compare" in spec:
        a_terms, b_terms = (_stems(key_terms(item)) for item in spec["compare"])
        # Words the two sides share ("exercising in the morning/evening") do not tell them apart.
        a_only, b_only = a_terms - b_terms or a_terms, b_terms - a_terms or b_terms
        checks.append(sum(1.0 for side in (a_only, b_only) if side & reply_stems) / 2)
    if spec["category"] == "rewrite_polite":
        quoted = re.search(r"'(.+)'\s*$", " ".join(prompt.split()))
        same = quoted is not None and tokenize(quoted.group(1)) == tokenize(reply)
        if same:
            checks.append(0.0)  # copying the rude sentence is no rewrite at all
        else:
            checks.append(1.0 if _POLITE_MARKERS.search(reply.lower()) else 0.3)
    return sum(checks) / len(checks) if checks else None


def _correctness(prompt: str, spec: dict[str, Any], reply: str) -> float | None:
    if "answer" not in spec:
        return None
    said = _numbers(reply)
    if spec["answer"] not in said:
        return 0.0
    # Numbers from the question may be restated; anything else is a wrong number.
    wrong = said - {spec["answer"]} - _numbers(prompt)
    return max(0.5, 1.0 - 0.15 * len(wrong))


def _completeness(reply: str) -> float:
    text = reply.rstrip().rstrip("\"')]*»”’ ")
    if not text:
        return 0.0
    if text[-1] in ".!?":
        return 1.0
    last_line = text.splitlines()[-1]
    tokens = re.findall(r"[a-z0-9]+", last_line.lower())
    if tokens and tokens[-1] in _DANGLING_WORDS:
        return 0.0
    if _LIST_ITEM.match(last_line):
        return 0.8  # list items often go without a full stop
    if text[-1].isdigit():
        return 0.6  # "17 + 25 = 42" reads as finished, but may have been cut
    return 0.3


def _length(spec: dict[str, Any], reply: str) -> float:
    n_words = len(reply.split())
    if "n_items" in spec:
        low, high = 3 * spec["n_items"], 15 * spec["n_items"] + 15
    else:
        low, high = LENGTH_LIMITS.get(spec["category"], LENGTH_LIMITS["open"])
    return min(1.0, n_words / low) * min(1.0, high / max(n_words, 1))


def _repetition(reply: str) -> float:
    words = re.findall(r"[a-z0-9]+", reply.lower())
    trigrams = list(zip(words, words[1:], words[2:]))
    repeated_trigrams = 1.0 - len(set(trigrams)) / len(trigrams) if len(trigrams) >= 3 else 0.0
    lines = [line.strip().lower() for line in reply.splitlines() if line.strip()]
    repeated_lines = 1.0 - len(set(lines)) / len(lines) if len(lines) >= 2 else 0.0
    # Ordinary text repeats almost no word triples; half of them repeated is already a loop.
    return max(0.0, 1.0 - 2.0 * max(repeated_trigrams, repeated_lines))


def _no_refusal(reply: str) -> float:
    text = " ".join(reply.lower().replace("’", "'").split())
    hits = sum(1 for phrase in _REFUSAL_PHRASES if phrase in text)
    return max(0.0, 1.0 - 0.5 * hits)


# --------------------------------------------------------------------------------------
# Utility
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _spec(prompt: str) -> dict[str, Any]:
    # Cached because data generation grades many replies per prompt; callers must not mutate.
    return infer_spec(prompt)


@lru_cache(maxsize=16384)
def _breakdown(prompt: str, reply: str) -> tuple[tuple[str, float], ...]:
    if not re.search(r"[A-Za-z0-9]", reply):
        return (("non_empty", 0.0), ("total", 0.0))
    spec = _spec(prompt)
    reply_stems = _stems(tokenize(reply))
    values: dict[str, float | None] = {
        "relevance": _relevance(spec, reply_stems),
        "instructions": _instructions(prompt, spec, reply, reply_stems),
        "correctness": _correctness(prompt, spec, reply),
        "completeness": _completeness(reply),
        "length": _length(spec, reply),
        "repetition": _repetition(reply),
        "no_refusal": _no_refusal(reply),
    }
    applicable = {name: v for name, v in values.items() if v is not None}
    total = sum(WEIGHTS[n] * v for n, v in applicable.items()) / sum(WEIGHTS[n] for n in applicable)
    return tuple(applicable.items()) + (("total", total),)


def utility_breakdown(prompt: str, reply: str) -> dict[str, float]:
    """Each applicable criterion's value in [0, 1] and the weighted ``"total"`` (= utility).

    Criteria that do not apply to the prompt (e.g. correctness outside arithmetic) are
    absent. An empty reply gives ``{"non_empty": 0.0, "total": 0.0}``.
    """
    return dict(_breakdown(prompt, reply))


def utility(prompt: str, reply: str) -> float:
    """The annotator's noise-free judgement of ``reply`` to ``prompt``, in [0, 1]."""
    return _breakdown(prompt, reply)[-1][1]


def gold_score(prompt: str, reply: str) -> float:
    """The gold judge's score for one reply: the noise-free utility."""
    return utility(prompt, reply)


def gold_judge(prompt: str, reply_a: str, reply_b: str, tie_eps: float = 1e-6) -> float:
    """1.0 if ``reply_a`` is better, 0.0 if ``reply_b`` is, 0.5 if their utilities are within ``tie_eps``."""
    diff = utility(prompt, reply_a) - utility(prompt, reply_b)
    if abs(diff) <= tie_eps:
        return 0.5
    return 1.0 if diff > 0 else 0.0


# --------------------------------------------------------------------------------------
# Noisy human-like feedback
# --------------------------------------------------------------------------------------


def sample_ranking(utilities: list[float] | np.ndarray, noise: float, rng: np.random.Generator) -> list[int]:
    """Indices ordered best first, sampled Plackett–Luce with temperature ``noise``.

    Adding Gumbel(0, noise) to each utility and sorting is the same as drawing from a
    Plackett–Luce model with scores ``utility / noise``. ``noise == 0`` gives the exact
    utility order (ties keep input order) and draws nothing from ``rng``.
    """
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    u = np.asarray(utilities, dtype=float)
    if noise > 0:
        u = u + noise * rng.gumbel(size=u.shape)
    return [int(i) for i in np.argsort(-u, kind="stable")]


def rank_replies(prompt: str, replies: list[str], noise: float, rng: np.random.Generator) -> list[int]:
    """A noisy ranking of ``replies`` to ``prompt``: indices, best first (see :func:`sample_ranking`)."""
    return sample_ranking([utility(prompt, r) for r in replies], noise, rng)


@dataclass(frozen=True)
class Annotator:
    """One simulated rater of absolute 1–5 scores.

    The rater sees ``0.5 + scale * (utility - 0.5) + bias + Normal(0, noise)`` on the unit
    scale and rounds it to the nearest of the five Likert points. ``bias`` > 0 is lenient,
    < 0 harsh; ``scale`` < 1 shies away from the extremes; ``noise`` is inconsistency.
    """

    id: str
    bias: float = 0.0
    noise: float = 0.05
    scale: float = 1.0
    description: str = ""


ANNOTATORS: tuple[Annotator, ...] = (
    Annotator("careful", bias=0.0, noise=0.05, scale=1.0, description="calibrated and consistent"),
    Annotator("lenient", bias=0.15, noise=0.08, scale=0.9, description="scores everything a bit high"),
    Annotator("harsh", bias=-0.15, noise=0.08, scale=1.1, description="scores everything a bit low"),
    Annotator("noisy", bias=0.0, noise=0.20, scale=1.0, description="unbiased but inconsistent"),
    Annotator("middling", bias=0.0, noise=0.06, scale=0.5, description="avoids the ends of the scale"),
)
"""The default panel of five raters with different habits."""


def likert(prompt: str, reply: str, annotator: Annotator, rng: np.random.Generator) -> int:
    """One absolute score from 1 (bad) to 5 (good) given by ``annotator``."""
    return likert_of_utility(utility(prompt, reply), annotator, rng)


def likert_of_utility(value: float, annotator: Annotator, rng: np.random.Generator) -> int:
    """The 1-5 score ``annotator`` gives a reply it judges to be worth ``value`` in [0, 1] (one noise draw)."""
    x = 0.5 + annotator.scale * (value - 0.5) + annotator.bias
    x += annotator.noise * float(rng.standard_normal())
    x = min(1.0, max(0.0, x))
    return 1 + int(math.floor(4 * x + 0.5))


def likert_to_unit(score: int) -> float:
    """Map a 1–5 Likert score to [0, 1]: ``(score - 1) / 4``."""
    if not 1 <= score <= 5:
        raise ValueError(f"Likert score must be in 1..5, got {score}")
    return (score - 1) / 4
