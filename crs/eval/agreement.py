"""Agreement between a scorer and the judge on which of two replies is better."""

from __future__ import annotations

from collections.abc import Sequence


def _check_outcome_pairs(scorer_outcomes: Sequence[float], judge_outcomes: Sequence[float]) -> None:
    if len(scorer_outcomes) != len(judge_outcomes):
        raise ValueError(f"scorer and judge outcomes differ in length: {len(scorer_outcomes)} vs {len(judge_outcomes)}")
    for value in (*scorer_outcomes, *judge_outcomes):
        if value not in (0.0, 0.5, 1.0):
            raise ValueError(f"outcomes must be 0, 0.5 or 1; found {value!r}")


def agreement(scorer_outcomes: Sequence[float], judge_outcomes: Sequence[float]) -> float:
    """Fraction of comparisons where the scorer picks the same winner as the judge.

    Outcomes are 1 / 0 / 0.5 per compared pair. They agree only when equal: a tie
    matches only a tie, so "tie vs a winner" counts as disagreement (the scorer failed
    to separate replies the judge separated, or vice versa) and "tie vs tie" counts as
    agreement.
    """
    _check_outcome_pairs(scorer_outcomes, judge_outcomes)
    if not scorer_outcomes:
        raise ValueError("agreement needs at least one comparison")
    matches = sum(1 for s, j in zip(scorer_outcomes, judge_outcomes) if s == j)
    return matches / len(scorer_outcomes)


def agreement_by_group(
    scorer_outcomes: Sequence[float], judge_outcomes: Sequence[float], groups: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """:func:`agreement` per group (e.g. prompt category).

    Returns ``{group: {"agreement": float, "n": int}}`` with groups sorted by name.
    """
    _check_outcome_pairs(scorer_outcomes, judge_outcomes)
    if len(groups) != len(scorer_outcomes):
        raise ValueError(f"{len(groups)} group labels for {len(scorer_outcomes)} comparisons")
    buckets: dict[str, tuple[list[float], list[float]]] = {}
    for s, j, group in zip(scorer_outcomes, judge_outcomes, groups):
        bucket = buckets.setdefault(group, ([], []))
        bucket[0].append(s)
        bucket[1].append(j)
    return {group: {"agreement": agreement(*buckets[group]), "n": len(buckets[group][0])} for group in sorted(buckets)}
