"""Tests for crs.eval.agreement: how a scorer's preferences agree with the judge's."""

from __future__ import annotations

import pytest

from crs.eval.agreement import agreement, agreement_by_group


def test_agreement_counts_tie_only_against_tie():
    scorer = [1, 0, 0.5, 0.5, 1]
    judge = [1, 1, 0.5, 0, 1]
    # agree at 0 (win/win), 2 (tie/tie), 4; disagree at 1 (loss/win), 3 (tie/loss)
    assert agreement(scorer, judge) == pytest.approx(3 / 5)
    assert agreement_by_group(scorer, judge, ["x", "x", "y", "y", "z"]) == {
        "x": {"agreement": 0.5, "n": 2},
        "y": {"agreement": 0.5, "n": 2},
        "z": {"agreement": 1.0, "n": 1},
    }
    with pytest.raises(ValueError):
        agreement([1, 0], [1])
    with pytest.raises(ValueError):
        agreement([0.3], [1])
