"""Rank aggregation: pairwise verdicts, Tideman's ranked pairs per prompt, Borda points across prompts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from crs.eval.win_rates import as_finite_array, check_aligned


@dataclass(frozen=True)
class PairwiseVerdicts:
    """What a pairwise judge said (an AlpacaEval annotator, a CSV of verdicts).

    ``by_pair[(a, b)][item]`` is the outcome of ``a`` against ``b`` on one prompt (item id):
    1 ``a`` wins, 0 ``b`` wins, 0.5 a tie, a fraction from a weighted judge; None where the
    judge failed (AlpacaEval's null preference). Each unordered pair is stored once, in
    either orientation; a pair or a prompt that is absent was not judged.
    """

    by_pair: Mapping[tuple[str, str], Mapping[str, float | None]]

    def between(self, a: str, b: str) -> dict[str, float | None] | None:
        """Outcomes of ``a`` against ``b`` per item id; None when the pair was never judged."""
        if (a, b) in self.by_pair:
            return dict(self.by_pair[(a, b)])
        if (b, a) in self.by_pair:
            return {item: None if v is None else 1.0 - v for item, v in self.by_pair[(b, a)].items()}
        return None

    def models(self) -> set[str]:
        """Every model the judge compared."""
        return {name for pair in self.by_pair for name in pair}


def ranking_from_pairwise(
    outcomes: Mapping[tuple[str, str], float],
    candidates: Sequence[str],
    tie_break: str = "support",
    candidate_order: Sequence[str] | None = None,
) -> list[str]:
    """One prompt's ordering from a pairwise judge's verdicts on every pair of ``candidates``.

    ``outcomes[(a, b)]`` in [0, 1] is how strongly ``a`` beats ``b`` (either orientation of
    each pair suffices); it counts as ``a``'s support over ``b`` and ``1 - outcome`` as
    ``b``'s over ``a``, and :func:`ranked_pairs` orders the candidates.
    """
    support = {x: {y: 0.0 for y in candidates} for x in candidates}
    for x, y in combinations(candidates, 2):
        if (x, y) in outcomes:
            value = float(outcomes[(x, y)])
        elif (y, x) in outcomes:
            value = 1.0 - float(outcomes[(y, x)])
        else:
            raise ValueError(f"no verdict on {x} vs {y}")
        support[x][y], support[y][x] = value, 1.0 - value
    return ranked_pairs(candidates, support, tie_break, candidate_order)


#: How :func:`ranked_pairs` settles what the margins leave open (docs/evaluation.md has a worked example).
TIE_BREAKS = ("support", "candidate_order")

#: A best-first ballot: each entry is a model, or a list of models ranked equal (a tie).
Ballot = Sequence[str | Sequence[str]]


def ballot_tiers(ballot: Ballot) -> list[list[str]]:
    """A ballot as best-first tiers: ``["a", ["b", "c"]]`` -> ``[["a"], ["b", "c"]]``."""
    tiers = []
    for item in ballot:
        if isinstance(item, str):
            tiers.append([item])
        elif isinstance(item, (list, tuple)) and item and all(isinstance(name, str) for name in item):
            tiers.append(list(item))
        else:
            raise ValueError(f"a ballot lists model names, or lists of models ranked equal; found {item!r}")
    return tiers


def _check_ballots(ballots: Sequence[Ballot]) -> list[str]:
    """Sorted candidate list; every ballot must rank the same candidates exactly once."""
    if not ballots:
        raise ValueError("need at least one ballot")
    candidates: list[str] | None = None
    for index, ballot in enumerate(ballots):
        names = [name for tier in ballot_tiers(ballot) for name in tier]
        if len(set(names)) != len(names):
            raise ValueError(f"ballot {index} ranks a candidate twice: {names}")
        if candidates is None:
            candidates = sorted(names)
        elif sorted(names) != candidates:
            raise ValueError(
                f"ballot {index} ranks {sorted(names)} but ballot 0 ranks {candidates}; "
                "all ballots must rank the same candidates"
            )
    return candidates or []


def _reaches(graph: Mapping[str, set[str]], start: str, target: str) -> bool:
    """Whether ``target`` is reachable from ``start`` along locked edges."""
    stack, seen = [start], set()
    while stack:
        node = stack.pop()
        if node == target:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(graph[node])
    return False


def candidate_positions(candidates: Sequence[str], candidate_order: Sequence[str] | None = None) -> dict[str, int]:
    """Each candidate's place in ``candidate_order`` (models it does not list follow, alphabetically)."""
    listed = [name for name in dict.fromkeys(candidate_order or []) if name in set(candidates)]
    rest = sorted(name for name in candidates if name not in set(listed))
    return {name: index for index, name in enumerate(listed + rest)}


def ranked_pairs(
    candidates: Sequence[str],
    support: Mapping[str, Mapping[str, float]],
    tie_break: str = "support",
    candidate_order: Sequence[str] | None = None,
) -> list[str]:
    """Order ``candidates`` by Tideman's ranked pairs from pairwise ``support``.

    ``support[x][y]`` is how much the voters prefer x to y (ballots ranking x above y; a
    judge's verdict). Each pair becomes an edge winner -> loser weighted by the margin
    ``support[w][l] - support[l][w]``; edges are taken largest margin first and locked
    unless they would close a cycle; the ordering is read off the locked graph by repeatedly
    taking a candidate no locked edge points at. What the margins leave open is settled by
    ``tie_break``:

    * ``support`` (the default): a pair with margin 0 is not locked (no preference to
      lock); equal margins are taken in alphabetical (winner, loser) order; when several
      candidates are unbeaten, the one with more total pairwise support goes first, then
      alphabetical order.
    * ``candidate_order``: a pair with margin 0 is locked too, the candidate listed first in
      ``candidate_order`` winning it; equal margins are taken in that order; unbeaten
      candidates go in that order. (Tools that keep zero-margin pairs, as the reference
      study's did, work this way.)

    The result depends only on the support, never on the order of the ballots behind it.
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    position = candidate_positions(candidates, candidate_order)
    ordered = sorted(candidates, key=position.__getitem__)
    edges = []
    for x, y in combinations(ordered, 2):  # x comes first in candidate order
        margin = support[x][y] - support[y][x]
        if margin > 0 or (margin == 0 and tie_break == "candidate_order"):
            edges.append((margin, x, y))
        elif margin < 0:
            edges.append((-margin, y, x))
    if tie_break == "support":
        edges.sort(key=lambda edge: (-edge[0], edge[1], edge[2]))
    else:
        edges.sort(key=lambda edge: (-edge[0], position[edge[1]], position[edge[2]]))

    locked: dict[str, set[str]] = {name: set() for name in candidates}
    for _, winner, loser in edges:
        # Locking winner -> loser closes a cycle iff loser already reaches winner.
        if not _reaches(locked, loser, winner):
            locked[winner].add(loser)

    total_support = {x: sum(support[x][y] for y in candidates if y != x) for x in candidates}
    first = (lambda name: (-total_support[name], name)) if tie_break == "support" else position.__getitem__
    remaining = set(candidates)
    ordering = []
    while remaining:
        beaten = {loser for w in remaining for loser in locked[w]}
        best = min((name for name in remaining if name not in beaten), key=first)
        ordering.append(best)
        remaining.remove(best)
    return ordering


def tideman_ranked_pairs(
    ballots: Sequence[Ballot], tie_break: str = "support", candidate_order: Sequence[str] | None = None
) -> list[str]:
    """Aggregate best-first ballots into one ordering with Tideman's ranked pairs.

    The support of x over y is the number of ballots ranking x strictly above y; a ballot
    that ranks them equal supports neither. :func:`ranked_pairs` does the rest, settling
    what the margins leave open by ``tie_break`` (``support`` or ``candidate_order``).
    """
    candidates = _check_ballots(ballots)
    support = {x: {y: 0 for y in candidates} for x in candidates}
    for ballot in ballots:
        place = {name: rank for rank, tier in enumerate(ballot_tiers(ballot)) for name in tier}
        for x, y in combinations(candidates, 2):
            if place[x] < place[y]:
                support[x][y] += 1
            elif place[y] < place[x]:
                support[y][x] += 1
    return ranked_pairs(candidates, support, tie_break, candidate_order)


def borda_points(ranking: Ballot) -> dict[str, float]:
    """Linear Borda points for a best-first ranking of n models: 1st gets 1, the
    k-th (1-based) gets (n - k + 1) / n, so last gets 1/n. For 3 models: 1, 2/3, 1/3.

    Models ranked equal (a list inside the ranking) share the points of the places they
    take: ``["a", ["b", "c"]]`` gives a 1 and b and c (2/3 + 1/3) / 2 = 1/2 each.
    """
    tiers = ballot_tiers(ranking)
    names = [name for tier in tiers for name in tier]
    if len(set(names)) != len(names):
        raise ValueError(f"ranking names a model twice: {names}")
    n, place, points = len(names), 0, {}
    for tier in tiers:
        share = sum((n - (place + k)) / n for k in range(len(tier))) / len(tier)
        points.update({name: share for name in tier})
        place += len(tier)
    return points


def scores_to_ballot(scores: Mapping[str, float]) -> list[str]:
    """Best-first ballot from one scorer's scores on one prompt.

    Equal scores are ordered alphabetically so that the ballot is deterministic.
    """
    for name, value in scores.items():
        if not math.isfinite(value):
            raise ValueError(f"score of {name!r} is not finite: {value}")
    return sorted(scores, key=lambda name: (-scores[name], name))


def ballots_from_scores(
    scores: Mapping[str, Mapping[str, Sequence[float]]], prompt_ids: Sequence[str]
) -> dict[str, list[list[str]]]:
    """One ballot per scorer per prompt: ``scores[scorer][model][i]`` is the score of
    ``model`` on ``prompt_ids[i]``. Returns ``{prompt_id: [ballot per scorer]}``."""
    per_prompt: dict[str, list[list[str]]] = {pid: [] for pid in prompt_ids}
    if len(per_prompt) != len(prompt_ids):
        raise ValueError("prompt ids must be unique")
    for scorer, per_model in scores.items():
        n = check_aligned(per_model, f"scores of scorer {scorer!r}")
        if n != len(prompt_ids):
            raise ValueError(f"scorer {scorer!r} has {n} scores per model for {len(prompt_ids)} prompts")
        for index, pid in enumerate(prompt_ids):
            per_prompt[pid].append(scores_to_ballot({m: per_model[m][index] for m in per_model}))
    return per_prompt


def summarize_points(points: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """``{model: {prompt_id: Borda points}}`` -> ``{model: {"mean", "std" (population), "per_prompt"}}``."""
    result = {}
    for model in sorted(points):
        values = np.array(list(points[model].values()))
        result[model] = {
            "mean": float(values.mean()),
            "std": float(values.std()),  # ddof=0: population std over prompts
            "per_prompt": dict(points[model]),
        }
    return result


def aggregate_rankings(
    per_prompt_ballots: Mapping[str, Sequence[Ballot]],
    tie_break: str = "support",
    candidate_order: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Borda points per model averaged over prompts.

    For each prompt, a single ballot is used as the ranking directly (models it ranks equal
    share their places' points); several ballots (one per scorer, one per annotator) are
    first merged with :func:`tideman_ranked_pairs` under ``tie_break``. Returns ``{model:
    {"mean": float, "std": float (population), "per_prompt": {prompt_id: points}}}``.
    Every prompt's ballots must rank the same models; an error names the prompt.
    """
    if not per_prompt_ballots:
        raise ValueError("need ballots for at least one prompt")
    points: dict[str, dict[str, float]] = {}
    expected: list[str] | None = None
    for pid, ballots in per_prompt_ballots.items():
        try:
            candidates = _check_ballots(ballots)
        except ValueError as err:
            raise ValueError(f"prompt {pid!r}: {err}") from None
        if expected is None:
            expected = candidates
        elif candidates != expected:
            raise ValueError(f"prompt {pid!r} ranks {candidates} but earlier prompts rank {expected}")
        ranking = ballots[0] if len(ballots) == 1 else tideman_ranked_pairs(ballots, tie_break, candidate_order)
        for model, value in borda_points(ranking).items():
            points.setdefault(model, {})[pid] = value
    return summarize_points(points)


def group_rankings(
    ballots_by_group: Mapping[str, Mapping[str, Sequence[Ballot]]],
    tie_break: str = "support",
    candidate_order: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Borda points of a human study with groups of annotators.

    ``ballots_by_group[group][prompt_id]`` holds that group's ballots on the prompt. Each
    group is aggregated on its own (:func:`aggregate_rankings`: Tideman per prompt, then
    Borda points averaged over the group's prompts); ``overall`` pools every annotator's
    ballots per prompt; ``across_groups`` gives, per model, the mean of the groups' mean
    points and their spread (population std, min, max over groups). Returns ``{"overall":
    {model: {"mean", "std"}}, "groups": {group: {model: {"mean", "std"}}}, "across_groups":
    {model: {"mean", "std", "min", "max", "n_groups"}}, "group_prompts": {group: int}}``.
    """
    if not ballots_by_group:
        raise ValueError("need ballots of at least one group")
    pooled: dict[str, list[Ballot]] = {}
    groups = {}
    for group, per_prompt in ballots_by_group.items():
        for pid, ballots in per_prompt.items():
            pooled.setdefault(pid, []).extend(ballots)
        groups[group] = aggregate_rankings(per_prompt, tie_break, candidate_order)
    overall = aggregate_rankings(pooled, tie_break, candidate_order)
    models = sorted(overall)
    for group, result in groups.items():
        if sorted(result) != models:
            raise ValueError(f"group {group!r} ranks {sorted(result)} but the other groups rank {models}")
    across = {}
    for model in models:
        means = np.array([groups[g][model]["mean"] for g in groups])
        across[model] = {
            "mean": float(means.mean()),
            "std": float(means.std()),
            "min": float(means.min()),
            "max": float(means.max()),
            "n_groups": int(means.size),
        }
    return {
        "overall": {m: {"mean": overall[m]["mean"], "std": overall[m]["std"]} for m in models},
        "groups": {g: {m: {"mean": r[m]["mean"], "std": r[m]["std"]} for m in models} for g, r in groups.items()},
        "across_groups": across,
        "group_prompts": {g: len(per_prompt) for g, per_prompt in ballots_by_group.items()},
    }


def summary_stats(values: Sequence[float]) -> dict[str, float | int]:
    """Mean, population std, min, max and count of ``values``."""
    array = as_finite_array(values, "values")
    if array.size == 0:
        raise ValueError("summary_stats needs at least one value")
    return {
        "mean": float(array.mean()),
        "std": float(array.std()),
        "min": float(array.min()),
        "max": float(array.max()),
        "n": int(array.size),
    }
