"""Programmatic reward functions for tests (used as `python:tests.reward_fns:NAME`)."""

from __future__ import annotations


def reply_length(prompts: list, replies: list[str]) -> list[float]:
    """Longer is better: a reward any model can be compared on."""
    return [float(len(r)) for r in replies]


def count_vowels(prompts: list, replies: list[str]) -> list[float]:
    """A second, different reward."""
    return [float(sum(ch in "aeiou" for ch in r.lower())) for r in replies]


def not_a_number(prompts: list, replies: list[str]) -> list[float]:
    """A broken reward model: every score is NaN."""
    return [float("nan")] * len(replies)


def one_score_short(prompts: list, replies: list[str]) -> list[float]:
    """Broken: one score fewer than replies."""
    return [1.0] * (len(replies) - 1)


def raises(prompts: list, replies: list[str]) -> list[float]:
    """Broken: raises on every batch."""
    return [1.0 / (len(r) - len(r)) for r in replies]


def strings(prompts: list, replies: list[str]) -> list[str]:
    """Broken: labels, not numbers."""
    return ["good"] * len(replies)


def vowel_share(prompts: list, replies: list[str]) -> list[float]:
    """A judge for best-of-n tests: the share of vowels among a reply's letters."""
    return [sum(ch in "aeiou" for ch in r.lower()) / max(sum(ch.isalpha() for ch in r), 1) for r in replies]


def nearly_constant(prompts: list, replies: list[str]) -> list[float]:
    """A constant source with float32 rounding noise: 1000 plus or minus one float32 step (2**-14) by reply length."""
    return [1000.0 + 2.0**-14 * (len(r) % 3 - 1) for r in replies]


def inf_for_kiwi(prompts: list, replies: list[str]) -> list[float]:
    """Broken on one reply: infinity for "kiwi", the length of every other."""
    return [float("inf") if r == "kiwi" else float(len(r)) for r in replies]


def nan_for_kiwi(prompts: list, replies: list[str]) -> list[float]:
    """Broken on one reply: NaN for "kiwi", the length of every other."""
    return [float("nan") if r == "kiwi" else float(len(r)) for r in replies]


def distinct_characters(prompts, replies):
    """A cheap text reward for stage tests."""
    return [len(set(r)) / 10.0 for r in replies]


def fails_on_boom(prompts: list, replies: list[str]) -> list[float]:
    """Broken on one reply: raises for "boom", the number of words of every other."""
    if "boom" in replies:
        raise ValueError("this reward cannot score 'boom'")
    return [float(len(r.split())) for r in replies]


def prompt_words(prompts: list, replies: list[str]) -> list[float]:
    """A reward that reads the prompt: the words of all its turns (x 10, roles counted too) plus the reply's."""
    return [
        10.0 * sum(len(f"{m['role']} {m['content']}".split()) for m in p) + len(r.split())
        for p, r in zip(prompts, replies)
    ]
