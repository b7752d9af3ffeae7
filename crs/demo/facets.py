"""Planted facets: demo labels whose two feedback channels see different parts of the gold utility.

The standard demo labels (``scripts/make_demo_dataset.py``) rank and rate the same thing,
the annotator's full utility, so a study that mixes the preference and the absolute reward
model has no reason to prefer a mixture: the ranking is simply the better signal. This
variant plants a known trade-off instead. Prompts, replies and ``gold_utility`` are those of
the shipped file; only each reply's ``rank``, ``likert`` and ``score`` are drawn again.

The two channels
----------------
Each channel judges a reply by the points-weighted mean of the criteria it sees (of those
that apply to the prompt, as graded by :func:`crs.demo.annotator.utility_breakdown`):

* **Rankers** (the preference channel) see form and topic, :data:`RANKED_FACETS`
  (relevance 2, instructions 3, repetition 2, no_refusal 2), and are blind to correctness,
  completeness and length: a reply cut off mid-sentence, or one with the wrong number, looks
  as good to them as the finished or right one. Their order is drawn Plackett-Luce with the
  standard labels' noise (:data:`RANKING_NOISE` = 0.05); where what they see ties (most
  arithmetic replies), the Gumbel noise alone orders the replies.
* **Raters** (the absolute channel) see content, :data:`RATED_FACETS` (correctness 4,
  completeness 2, length 1, repetition 2, no_refusal 2), and are blind to relevance and
  instructions: an on-topic answer in the wrong form, or a fluent finished reply to another
  question, scores as well as the right one. Each reply gets a 1-5 Likert score of that view
  (:func:`crs.demo.annotator.likert_of_utility`) from the rater the standard file names for it
  (``annotator``), with that rater's bias, noise and use of the scale (the standard panel),
  from a fresh draw. A row whose rater is not in the panel gets a panel member drawn at
  random. ``score`` is ``(likert - 1) / 4`` as before.

Why the best mixture is interior
--------------------------------
Each channel's blind spot is systematic, so no amount of data removes it: a reward model
trained on either channel alone learns that channel's view, not the gold. Noise-free,
:func:`construction_curve` scores how well each mix of the two views orders the demo's
within-prompt pairs like the gold; :func:`implied_best_weight` does the same with the drawn
labels (noise, five rounded Likert levels). ``python -m crs.demo.facets`` prints both curves;
their values on the shipped data are in docs/demo_dataset.md ("Planted facets"), and the
earlier versions of the plant with what trained models made of them in docs/results.md.

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
from typing import Any

import numpy as np

from crs.data import EMBEDDED_DEMO, read_rows
from crs.demo.annotator import (
    ANNOTATORS,
    WEIGHTS,
    Annotator,
    likert_of_utility,
    likert_to_unit,
    sample_ranking,
    utility_breakdown,
)

RANKED_FACETS: tuple[str, ...] = ("relevance", "instructions", "repetition", "no_refusal")
"""The criteria rankers attend to: form and topic."""

RATED_FACETS: tuple[str, ...] = ("correctness", "completeness", "length", "repetition", "no_refusal")
"""The criteria raters attend to: content."""

RANKING_NOISE = 0.05
"""Plackett-Luce (Gumbel) noise of the rankers, the same as the standard labels'."""

SEED = 20261203
"""The one seed the data loader relabels with (``data.demo_labels: facets``)."""

DEFAULT_WEIGHTS: tuple[float, ...] = tuple(i / 8 for i in range(9))
"""Preference weights :func:`implied_best_weight` tries by default: 0, 0.125, ..., 1."""

FACET_PANEL: dict[str, Annotator] = {a.id: a for a in ANNOTATORS}
"""The standard panel of raters, keyed by rater id."""

_TIE = 1e-9  # combined signals closer than this count as tied (float rounding, not preference)


def facet_utility(prompt: str, reply: str, facets: Sequence[str]) -> float:
    """``reply`` as judged on ``facets`` alone: the points-weighted mean of those that apply to ``prompt``.

    An empty reply (no letters or digits), or one to which none of ``facets`` applies, gets 0.
    """
    seen = [(WEIGHTS[name], value) for name, value in utility_breakdown(prompt, reply).items() if name in facets]
    if not seen:
        return 0.0
    return sum(w * v for w, v in seen) / sum(w for w, _ in seen)


def ranker_utility(prompt: str, reply: str) -> float:
    """The rankers' view of ``reply``: :func:`facet_utility` on :data:`RANKED_FACETS`."""
    return facet_utility(prompt, reply, RANKED_FACETS)


def rater_utility(prompt: str, reply: str) -> float:
    """The raters' view of ``reply``: :func:`facet_utility` on :data:`RATED_FACETS`."""
    return facet_utility(prompt, reply, RATED_FACETS)


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
        score = likert_of_utility(rater_utility(prompt, reply["text"]), rater, rng)
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


def _gold_pairs(rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Every reply's gold utility, and the (i, j) index pairs of replies to one prompt whose gold differs."""
    gold, pairs = [], []
    for row in rows:
        start, n = len(gold), len(row["replies"])
        gold += [float(reply["gold_utility"]) for reply in row["replies"]]
        pairs += [
            (start + i, start + j) for i in range(n) for j in range(i + 1, n) if gold[start + i] != gold[start + j]
        ]
    return np.array(gold), np.array(pairs, dtype=int).reshape(-1, 2)


def _mix_curve(
    preference: np.ndarray, absolute: np.ndarray, rows: Sequence[dict[str, Any]], weights: Sequence[float]
) -> dict[str, Any]:
    """Pairwise accuracy against the gold of ``w * z(preference) + (1 - w) * z(absolute)`` for each ``w``."""
    gold, pairs = _gold_pairs(rows)
    if not len(pairs):
        raise ValueError("no within-prompt pair of replies with different gold utilities")
    z_pref, z_abs = _zscore(preference), _zscore(absolute)
    gold_sign = np.sign(gold[pairs[:, 0]] - gold[pairs[:, 1]])
    curve: dict[float, float] = {}
    for w in weights:
        combined = w * z_pref + (1 - w) * z_abs
        diff = combined[pairs[:, 0]] - combined[pairs[:, 1]]
        credit = np.where(np.abs(diff) <= _TIE, 0.5, (np.sign(diff) == gold_sign).astype(float))
        curve[float(w)] = float(credit.mean())
    best = max(curve, key=lambda w: curve[w])  # max keeps the first of equal values
    return {"curve": curve, "best_weight": best, "pairs": int(len(pairs))}


def implied_best_weight(rows: Iterable[dict[str, Any]], weights: Sequence[float] = DEFAULT_WEIGHTS) -> dict[str, Any]:
    """The preference weight the labels themselves favour, before any model is trained.

    For each ``w`` in ``weights`` every reply gets ``w * z(ranking) + (1 - w) * z(rating)``,
    where the ranking signal is the reply's normalized position within its prompt and the
    rating signal its ``score``, each z-scored over all ``rows``. The accuracy of ``w`` is the
    share of within-prompt reply pairs with different ``gold_utility`` that the combination
    orders like the gold (a tie counts half). Returns ``{"curve": {w: accuracy},
    "best_weight": w, "pairs": n}``; of equally good weights the first in ``weights`` wins.
    """
    rows = list(rows)
    # Normalized Borda position: 1 for the best reply, 0 for the worst, whatever n is.
    position = [
        1.0 - r["rank"] / (len(row["replies"]) - 1) if len(row["replies"]) > 1 else 0.5
        for row in rows
        for r in row["replies"]
    ]
    rating = [float(r["score"]) for row in rows for r in row["replies"]]
    return _mix_curve(np.array(position), np.array(rating), rows, weights)


def construction_curve(rows: Iterable[dict[str, Any]], weights: Sequence[float] = DEFAULT_WEIGHTS) -> dict[str, Any]:
    """:func:`implied_best_weight` on the channels' noise-free views (:func:`ranker_utility`, :func:`rater_utility`).

    What a reward model trained on each channel approaches with unlimited labels: the labels'
    noise averages out, the blind spots stay. Same return value as :func:`implied_best_weight`.
    """
    rows = list(rows)
    ranker = [ranker_utility(row["prompt"], r["text"]) for row in rows for r in row["replies"]]
    rater = [rater_utility(row["prompt"], r["text"]) for row in rows for r in row["replies"]]
    return _mix_curve(np.array(ranker), np.array(rater), rows, weights)


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
    """Print the implied curves of the standard and planted-facets labels of the shipped demo data, and the
    construction's."""
    parser = argparse.ArgumentParser(description="Implied optimum preference weight of the demo labels.")
    parser.add_argument(
        "--other_seeds", type=int, default=10, help="also relabel with seeds 1..N and summarize the best weights"
    )
    args = parser.parse_args(argv)
    rows = read_rows(EMBEDDED_DEMO).rows
    _print_curves(
        {
            "standard": implied_best_weight(rows),
            "facets": implied_best_weight(relabel_rows(rows, SEED)),
            "facets noise-free": construction_curve(rows),
        }
    )
    if args.other_seeds:
        results = [implied_best_weight(relabel_rows(rows, seed)) for seed in range(1, args.other_seeds + 1)]
        margins = [r["curve"][r["best_weight"]] - max(r["curve"][0.0], r["curve"][1.0]) for r in results]
        print(
            f"facets with seeds 1..{args.other_seeds}: best weights {sorted(r['best_weight'] for r in results)}; "
            f"margin of the best over the better end: min {min(margins):.3f}, mean {np.mean(margins):.3f}, "
            f"max {max(margins):.3f}"
        )


if __name__ == "__main__":
    main()
