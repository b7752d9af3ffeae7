"""Tests for crs.eval.leaderboard: the AlpacaEval leaderboard rows against hand-computed values."""

from __future__ import annotations

import math

import pytest

from crs.eval.leaderboard import leaderboard_rows


def test_leaderboard_rows_hand_example():
    scores = {"ref": [1, 1, 1, 1], "m1": [2, 0, 1, 3], "m2": [0, 0, 1, 0]}
    outputs = {
        "ref": ["x"] * 4,
        "m1": ["ab", "abcd", "", "abcdef"],  # 12 chars / 4
        "m2": ["abcdefghij"] * 4,
    }
    rows = leaderboard_rows(scores, outputs, reference="ref", n_boot=100)
    assert [row["model"] for row in rows] == ["m1", "ref", "m2"]
    m1, ref, m2 = rows
    # m1 vs ref: win, loss, tie, win -> 62.5 %
    assert m1["win_rate"] == pytest.approx(62.5)
    # outcomes 1, 0, .5, 1: squared deviations .140625 + .390625 + .015625 + .140625 = .6875
    assert m1["standard_error"] == pytest.approx(100 * math.sqrt(0.6875 / 3) / 2)  # 23.936
    assert (m1["n_wins"], m1["n_wins_base"], m1["n_draws"], m1["n_total"]) == (2, 1, 1, 4)
    assert m1["avg_length"] == 3 and isinstance(m1["avg_length"], int)
    # the reference against itself: all draws, 50 %, no spread
    assert ref["win_rate"] == pytest.approx(50.0)
    assert ref["standard_error"] == pytest.approx(0.0)
    assert (ref["n_wins"], ref["n_wins_base"], ref["n_draws"]) == (0, 0, 4)
    # m2 vs ref: loss, loss, tie, loss -> 12.5 %
    assert m2["win_rate"] == pytest.approx(12.5)
    assert (m2["n_wins"], m2["n_wins_base"], m2["n_draws"]) == (0, 3, 1)
    assert m2["avg_length"] == 10

    without_ref = leaderboard_rows(scores, outputs, reference="ref", n_boot=10, include_reference=False)
    assert [row["model"] for row in without_ref] == ["m1", "m2"]


def test_leaderboard_rows_carry_the_length_controlled_rate() -> None:
    scores = {"ref": [0.0] * 6, "short": [1.0, 1.0, 1.0, 1.0, -1.0, -1.0]}
    outputs = {"ref": ["x" * 50] * 6, "short": ["y" * 20] * 4 + ["y" * 90] * 2}
    rows = {r["model"]: r for r in leaderboard_rows(scores, outputs, "ref", n_boot=50)}
    assert rows["short"]["win_rate"] == pytest.approx(100 * 4 / 6)
    assert rows["short"]["lc_win_rate"] < rows["short"]["win_rate"]  # its wins were all the short replies
