"""Planted facets: demo labels whose two feedback channels see different parts of the gold utility.

The standard demo labels (``scripts/make_demo_dataset.py``) rank and rate the same thing,
the annotator's full utility, so a study that mixes the preference and the absolute reward
model has no reason to prefer a mixture: the ranking is simply the better signal. This
variant plants a known trade-off instead. Prompts, replies and ``gold_utility`` are those of
the shipped file; only each reply's ``rank``, ``likert`` and ``score`` are drawn again.

The two channels
----------------
* **Rankers** (the preference channel) judge form and topic only: the points-weighted mean
  of the criteria in :data:`RANKED_FACETS` (relevance 2, instructions 3, repetition 2,
  no_refusal 2) that apply to the prompt, as graded by
  :func:`crs.demo.annotator.utility_breakdown`. They are blind to :data:`HIDDEN_FACETS`
  (correctness 4, completeness 2, length 1): a reply cut off mid-sentence, or one with the
  wrong number, looks as good to them as the finished or right one. Their order is drawn
  Plackett-Luce with the standard labels' noise (:data:`RANKING_NOISE` = 0.05), so they are
  consistent about what they do see; where the visible criteria tie (most arithmetic
  replies), the Gumbel noise alone orders the replies.
* **Raters** (the absolute channel) see every criterion: each reply gets a 1-5 Likert score
  of the gold utility (:func:`crs.demo.annotator.likert`) from the rater the standard file
  names for it (``annotator``), with that rater's bias, noise and use of the scale (the
  standard panel; :data:`RATING_EXTRA_NOISE` = 0: a first version added 0.05, which shrank
  the planted gap below what the best-of-n study resolves), from a fresh draw. A row whose
  rater is not in the panel gets a panel member drawn at random. ``score`` is
  ``(likert - 1) / 4`` as before.

Why the best mixture is interior
--------------------------------
The channels err in different ways. The ranking's errors are systematic (completeness
alone, 2 points on every prompt, varies more than any other criterion among the demo
replies) but it never ties and is precise on the visible criteria. The ratings' errors are
random per reply (noise, lenient against harsh raters, five rounded levels that often tie
siblings) but they weigh every criterion as the gold does. A small weight on the ranking
breaks the rating ties; a middling one lets it overrule rating differences of one Likert
step, which are mostly noise; only a weight near 1 lets it overrule the large rating gaps
that hidden criteria cause. So neither channel alone recovers the gold order, and a weight
strictly inside (0, 1) does best: on the shipped 900 prompts :func:`implied_best_weight`
finds 0.125-0.375 (pairwise accuracy 0.746, against 0.692 for the ranking alone and 0.681 for
the ratings alone; the standard labels give 0.855 for the ranking alone, no better mix).
``python -m crs.demo.facets`` prints both curves (docs/demo_dataset.md, "Planted facets").

Determinism
-----------
:func:`relabel_rows` seeds each row's generator from (:data:`SEED`, the row's
``prompt_id``), not from the row's position, so any subset of rows gets the labels it gets
in the whole file. The data loader always uses :data:`SEED` (not ``run.seed``), so every
stage of a study sees the same planted labels.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from crs.demo.annotator import ANNOTATORS, WEIGHTS, Annotator, likert, likert_to_unit, sample_ranking, utility_breakdown

RANKED_FACETS: tuple[str, ...] = ("relevance", "instructions", "repetition", "no_refusal")
"""The criteria rankers attend to: form and topic."""

HIDDEN_FACETS: tuple[str, ...] = ("correctness", "completeness", "length")
"""The criteria rankers ignore; raters still see them through the full utility."""

RANKING_NOISE = 0.05
"""Plackett-Luce (Gumbel) noise of the rankers, the same as the standard labels'."""

RATING_EXTRA_NOISE = 0.0
"""Noise every rater has on top of its standard noise (0: the standard panel)."""

SEED = 20261203
"""The one seed the data loader relabels with (``data.demo_labels: facets``)."""

DEFAULT_WEIGHTS: tuple[float, ...] = tuple(i / 8 for i in range(9))
"""Preference weights :func:`implied_best_weight` tries by default: 0, 0.125, ..., 1."""

FACET_PANEL: dict[str, Annotator] = {a.id: replace(a, noise=a.noise + RATING_EXTRA_NOISE) for a in ANNOTATORS}
"""The standard panel, each rater noisier by :data:`RATING_EXTRA_NOISE`; keyed by rater id."""

_TIE = 1e-9  # combined signals closer than this count as tied (float rounding, not preference)


def ranker_utility(prompt: str, reply: str) -> float:
    """The rankers' view of ``reply``: the points-weighted mean of the :data:`RANKED_FACETS` that apply.

    An empty reply (no letters or digits) gets 0, as in the gold utility.
    """
    breakdown = utility_breakdown(prompt, reply)
    seen = [(WEIGHTS[name], value) for name, value in breakdown.items() if name in RANKED_FACETS]
    if not seen:
        return 0.0
    return sum(w * v for w, v in seen) / sum(w for w, _ in seen)


def row_rng(seed: int, prompt_id: str) -> np.random.Generator:
    """A generator that depends on ``seed`` and ``prompt_id`` only (a stable hash, unlike ``hash()``)."""
    digest = hashlib.sha256(str(prompt_id).encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def relabel_row(row: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A copy of one demo row with every reply's ``rank``, ``likert`` and ``score`` drawn as planted facets.

    Draws the ranking first (one Gumbel per reply), then one Likert score per reply in
    order. The replies keep their order and every other field; ``row`` is not changed.
    """
    prompt = row["prompt"]
    replies = [dict(reply) for reply in row["replies"]]
    order = sample_ranking([ranker_utility(prompt, r["text"]) for r in replies], RANKING_NOISE, rng)
    for rank, index in enumerate(order):
        replies[index]["rank"] = rank
    panel = list(FACET_PANEL.values())
    for reply in replies:
        rater = FACET_PANEL.get(reply.get("annotator")) or panel[int(rng.integers(len(panel)))]
        score = likert(prompt, reply["text"], rater, rng)
        reply["likert"] = int(score)
        reply["score"] = float(likert_to_unit(score))
    return {**row, "replies": replies}


def relabel_rows(rows: Iterable[dict[str, Any]], seed: int = SEED) -> list[dict[str, Any]]:
    """:func:`relabel_row` for every row, each with its own generator from (``seed``, ``prompt_id``).

    Deterministic and per row: a subset of rows gets the labels it gets in the full set.
    """
    return [relabel_row(row, row_rng(seed, row["prompt_id"])) for row in rows]


def _zscore(values: np.ndarray) -> np.ndarray:
    std = values.std()
    # A constant signal tells no replies apart; zeros keep it from deciding any pair.
    return (values - values.mean()) / std if std > 0 else np.zeros_like(values)


def _signals(rows: Iterable[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per reply: ranking signal, rating signal, gold; and the (i, j) index pairs to judge."""
    position, rating, gold, pairs = [], [], [], []
    for row in rows:
        replies = row["replies"]
        start, n = len(gold), len(replies)
        for reply in replies:
            # Normalized Borda position: 1 for the best reply, 0 for the worst, whatever n is.
            position.append(1.0 - reply["rank"] / (n - 1) if n > 1 else 0.5)
            rating.append(float(reply["score"]))
            gold.append(float(reply["gold_utility"]))
        pairs += [(start + i, start + j) for i in range(n) for j in range(i + 1, n) if gold[start + i] != gold[start + j]]
    return np.array(position), np.array(rating), np.array(gold), np.array(pairs, dtype=int).reshape(-1, 2)


def implied_best_weight(rows: Iterable[dict[str, Any]], weights: Sequence[float] = DEFAULT_WEIGHTS) -> dict[str, Any]:
    """The preference weight the labels themselves favour, before any model is trained.

    For each ``w`` in ``weights`` every reply gets ``w * z(ranking) + (1 - w) * z(rating)``,
    where the ranking signal is the reply's normalized position within its prompt and the
    rating signal its ``score``, each z-scored over all ``rows``. The accuracy of ``w`` is the
    share of within-prompt reply pairs with different ``gold_utility`` that the combination
    orders like the gold (a tie counts half). Returns ``{"curve": {w: accuracy},
    "best_weight": w, "pairs": n}``; of equally good weights the first in ``weights`` wins.
    """
    position, rating, gold, pairs = _signals(rows)
    if not len(pairs):
        raise ValueError("no within-prompt pair of replies with different gold utilities")
    z_rank, z_rate = _zscore(position), _zscore(rating)
    gold_sign = np.sign(gold[pairs[:, 0]] - gold[pairs[:, 1]])
    curve: dict[float, float] = {}
    for w in weights:
        combined = w * z_rank + (1 - w) * z_rate
        diff = combined[pairs[:, 0]] - combined[pairs[:, 1]]
        credit = np.where(np.abs(diff) <= _TIE, 0.5, (np.sign(diff) == gold_sign).astype(float))
        curve[float(w)] = float(credit.mean())
    best = max(curve, key=lambda w: curve[w])  # max keeps the first of equal values
    return {"curve": curve, "best_weight": best, "pairs": int(len(pairs))}


def _print_curves(curves: dict[str, dict[str, Any]]) -> None:
    """One Markdown table: a row per weight, a column per label set."""
    names = list(curves)
    print("| preference weight | " + " | ".join(f"{n} accuracy" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for w in next(iter(curves.values()))["curve"]:
        print(f"| {w:.3f} | " + " | ".join(f"{curves[n]['curve'][w]:.3f}" for n in names) + " |")
    for name, result in curves.items():
        print(f"{name}: best weight {result['best_weight']:.3f} over {result['pairs']} pairs")


def main(argv: Sequence[str] | None = None) -> None:
    """Print the implied curves of the standard and planted-facets labels of the shipped demo data."""
    from crs.data.sources import demo_dataset_path  # here: crs.data imports crs.demo
    from crs.io import iter_jsonl

    parser = argparse.ArgumentParser(description="Implied optimum preference weight of the demo labels.")
    parser.add_argument("--other_seeds", type=int, default=10, help="also relabel with seeds 1..N and summarize the best weights")
    args = parser.parse_args(argv)
    rows = [row for _, row in iter_jsonl(demo_dataset_path())]
    _print_curves({"standard": implied_best_weight(rows), "facets": implied_best_weight(relabel_rows(rows, SEED))})
    if args.other_seeds:
        results = [implied_best_weight(relabel_rows(rows, seed)) for seed in range(1, args.other_seeds + 1)]
        margins = [r["curve"][r["best_weight"]] - max(r["curve"][0.0], r["curve"][1.0]) for r in results]
        print(f"facets with seeds 1..{args.other_seeds}: best weights {sorted(r['best_weight'] for r in results)}; "
              f"margin of the best over the better end: min {min(margins):.3f}, mean {np.mean(margins):.3f}, max {max(margins):.3f}")


if __name__ == "__main__":
    main()
