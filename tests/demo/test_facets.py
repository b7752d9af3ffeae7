"""Tests of the planted-facets demo labels (crs/demo/facets.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from crs.demo.annotator import utility
from crs.demo.dataset import demo_dataset_path
from crs.demo.facets import (
    SEED,
    construction_curve,
    implied_best_weight,
    ranker_utility,
    rater_utility,
    relabel_row,
    relabel_rows,
    row_rng,
)
from crs.io import iter_jsonl

LABELS = ("rank", "likert", "score")
needs_demo = pytest.mark.skipif(not demo_dataset_path().is_file(), reason="demo dataset not generated yet")

SUM = "What is 17 + 25?"
WHY = "Explain why sleep is important for your health."
FINISHED = "Sleep lets your body repair itself and keeps your mind sharp during the day."
CUT_OFF = "Sleep lets your body repair itself and keeps your mind sharp during the"
OFF_TOPIC = "Bicycles are a cheap and healthy way to get around a busy city every day."


@pytest.fixture(scope="module")
def demo_rows() -> list[dict[str, Any]]:
    return [row for _, row in iter_jsonl(demo_dataset_path())]


def reply(text: str, rank: int, score: float, gold: float, annotator: str = "careful") -> dict[str, Any]:
    return {
        "text": text,
        "rank": rank,
        "likert": 1 + round(4 * score),
        "score": score,
        "annotator": annotator,
        "gold_utility": gold,
    }


# --------------------------------------------------------------------------- the ranker's view


def test_ranker_utility_ignores_the_hidden_facets() -> None:
    # Only correctness differs: the gold tells the sums apart, the rankers cannot.
    assert utility(SUM, "17 + 25 = 42.") > utility(SUM, "17 + 25 = 43.")
    assert ranker_utility(SUM, "17 + 25 = 42.") == ranker_utility(SUM, "17 + 25 = 43.")
    # Only completeness differs: same for the cut-off reply.
    assert utility(WHY, FINISHED) > utility(WHY, CUT_OFF)
    assert ranker_utility(WHY, FINISHED) == ranker_utility(WHY, CUT_OFF) == 1.0
    # Only relevance differs: the rankers see it. The gold rates the cut-off and the off-topic
    # reply alike; the rankers put the off-topic one far below.
    assert utility(WHY, CUT_OFF) == pytest.approx(utility(WHY, OFF_TOPIC))
    assert ranker_utility(WHY, OFF_TOPIC) < ranker_utility(WHY, CUT_OFF) - 0.2
    assert ranker_utility(WHY, "") == 0.0


def test_rater_utility_sees_content_but_not_topic() -> None:
    # Correctness and completeness: the raters see what the rankers miss.
    assert rater_utility(SUM, "17 + 25 = 42.") > rater_utility(SUM, "17 + 25 = 43.")
    assert rater_utility(WHY, FINISHED) > rater_utility(WHY, CUT_OFF)
    # Relevance: a finished reply about something else looks as good to them as the right one,
    # while the gold and the rankers put it far below.
    assert rater_utility(WHY, OFF_TOPIC) == pytest.approx(rater_utility(WHY, FINISHED))
    assert utility(WHY, OFF_TOPIC) < utility(WHY, FINISHED) - 0.1
    assert rater_utility(WHY, "") == 0.0


def test_rankings_follow_visible_facets_and_guess_hidden_ones() -> None:
    row = {
        "prompt_id": "why-1",
        "prompt": WHY,
        "replies": [reply(OFF_TOPIC, 0, 0.5, 0.78), reply(CUT_OFF, 1, 0.5, 0.78)],
    }
    sums = {
        "prompt_id": "sum-1",
        "prompt": SUM,
        "replies": [reply("17 + 25 = 43.", 0, 0.5, 0.64), reply("17 + 25 = 42.", 1, 1.0, 1.0)],
    }
    rng = np.random.default_rng(0)
    on_topic_first = [relabel_row(row, rng)["replies"][1]["rank"] == 0 for _ in range(100)]
    right_first = [relabel_row(sums, rng)["replies"][1]["rank"] == 0 for _ in range(100)]
    assert all(on_topic_first)
    assert 25 <= sum(right_first) <= 75  # a coin flip: the wrong number looks as good to rankers


# --------------------------------------------------------------------------- relabelling


def test_relabel_row_changes_only_the_labels() -> None:
    row = {
        "prompt_id": "why-1",
        "prompt": WHY,
        "extra": [1],
        "replies": [reply(FINISHED, 0, 1.0, 1.0), reply(CUT_OFF, 1, 0.5, 0.78, "nobody")],
    }
    before = repr(row)
    out = relabel_row(row, np.random.default_rng(1))
    assert repr(row) == before  # the input is left alone
    assert out["extra"] == [1] and out["prompt_id"] == "why-1"
    for old, new in zip(row["replies"], out["replies"]):
        assert {k: v for k, v in old.items() if k not in LABELS} == {k: v for k, v in new.items() if k not in LABELS}
        assert 1 <= new["likert"] <= 5 and new["score"] == (new["likert"] - 1) / 4
    assert sorted(r["rank"] for r in out["replies"]) == [0, 1]


@needs_demo
def test_relabel_rows_is_deterministic_and_per_row(demo_rows: list[dict[str, Any]]) -> None:
    full = relabel_rows(demo_rows, SEED)
    assert full == relabel_rows(demo_rows, SEED)
    subset = demo_rows[::7][::-1]  # another selection and order: the labels must not depend on position
    assert relabel_rows(subset, SEED) == full[::7][::-1]
    assert relabel_row(demo_rows[3], row_rng(SEED, demo_rows[3]["prompt_id"])) == full[3]
    assert relabel_rows(demo_rows[:50], SEED + 1) != full[:50]
    changed = 0
    for old, new in zip(demo_rows, full):
        assert sorted(r["rank"] for r in new["replies"]) == list(range(len(old["replies"])))
        for a, b in zip(old["replies"], new["replies"]):
            assert 0.0 <= b["score"] <= 1.0 and b["score"] == (b["likert"] - 1) / 4
            assert {k: v for k, v in a.items() if k not in LABELS} == {k: v for k, v in b.items() if k not in LABELS}
            changed += a["rank"] != b["rank"] or a["score"] != b["score"]
    assert changed > len(full)  # on average more than one reply per prompt gets new labels


# --------------------------------------------------------------------------- the implied optimum


def test_implied_best_weight_on_a_hand_made_trade_off() -> None:
    # Three prompts of two replies, "a" always the better one by the gold utility.
    rows = [
        # A hidden facet decides: rankers put b first, raters see a big gap for a.
        {"prompt_id": "p1", "replies": [reply("a", 1, 1.0, 0.9), reply("b", 0, 0.0, 0.3)]},
        # A small gold gap: rankers get it right, rater noise flips it by one step.
        {"prompt_id": "p2", "replies": [reply("a", 0, 0.25, 0.6), reply("b", 1, 0.5, 0.55)]},
        # Raters tie: rankers break the tie right.
        {"prompt_id": "p3", "replies": [reply("a", 0, 0.5, 0.7), reply("b", 1, 0.5, 0.4)]},
    ]
    # z(position) is +-1, so a rank step is 2; scores 1, 0, .25, .5, .5, .5 have std 0.3033,
    # so p1's rating gap is 3.297 and p2's 0.824. p1 comes out right while (1 - w) 3.297 > 2 w,
    # i.e. w < 0.622; p2 while 2 w > (1 - w) 0.824, i.e. w > 0.292; p3 for any w > 0.
    result = implied_best_weight(rows, (0.0, 0.5, 1.0))
    assert result["curve"] == pytest.approx({0.0: 0.5, 0.5: 1.0, 1.0: 2 / 3})
    assert result["best_weight"] == 0.5 and result["pairs"] == 3
    curve = implied_best_weight(rows)["curve"]
    assert [w for w, acc in curve.items() if acc == 1.0] == [0.375, 0.5]
    assert curve[0.25] == curve[0.625] == pytest.approx(2 / 3)


def test_implied_best_weight_skips_gold_ties_and_counts_combined_ties_half() -> None:
    rows = [
        {"prompt_id": "p1", "replies": [reply("a", 0, 0.5, 0.9), reply("b", 1, 0.5, 0.1), reply("c", 2, 0.0, 0.1)]},
        {"prompt_id": "p2", "replies": [reply("a", 0, 1.0, 0.2), reply("b", 1, 0.5, 0.2)]},
    ]
    result = implied_best_weight(rows, (0.0, 1.0))
    assert result["pairs"] == 2  # p1's a-b and a-c; b-c and p2's pair have equal gold
    assert result["curve"] == {0.0: 0.75, 1.0: 1.0}  # rating alone ties a with b
    with pytest.raises(ValueError, match="no within-prompt pair"):
        implied_best_weight(rows[1:])


@needs_demo
def test_planted_facets_put_the_optimum_inside(demo_rows: list[dict[str, Any]]) -> None:
    result = implied_best_weight(relabel_rows(demo_rows, SEED))
    curve, best = result["curve"], result["best_weight"]
    assert 0.0 < best < 1.0
    assert curve[best] > max(curve[0.0], curve[1.0]) + 0.025


@needs_demo
def test_the_construction_needs_both_channels(demo_rows: list[dict[str, Any]]) -> None:
    # Noise-free, each channel alone keeps its blind spot: a mix beats both by a wide margin.
    result = construction_curve(demo_rows)
    curve, best = result["curve"], result["best_weight"]
    assert 0.25 <= best <= 0.75
    assert curve[best] > max(curve[0.0], curve[1.0]) + 0.1
