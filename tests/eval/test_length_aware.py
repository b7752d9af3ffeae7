"""Length-aware agreement of several scorers (crs/eval/length_aware.py): the length-only row, intervals from the
bootstrap over clusters against a brute-force resample, paired differences from length, and the table."""

from __future__ import annotations

import numpy as np
import pytest

from crs.eval.length_aware import LENGTH_SCORER, length_aware_notes, length_aware_results, length_aware_table
from crs.rm.length_metrics import information_beyond_length, preferences

# Four prompts of three replies; the judge prefers the first reply of each pair except where OUTCOMES says.
LENGTHS = [100, 50, 95, 200, 200, 120, 30, 60, 90, 10, 11, 40]
FIRST = [0, 0, 1, 3, 3, 4, 6, 6, 7, 9, 9, 10]
SECOND = [1, 2, 2, 4, 5, 5, 7, 8, 8, 10, 11, 11]
OUTCOMES = [1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
GOOD = np.array([2.0, 1.0, 3.0, 5.0, 4.0, 6.0, 9.0, 7.0, 8.0, 1.0, 2.0, 0.0])


def case():
    return preferences(LENGTHS, np.repeat(np.arange(4), 3), FIRST, SECOND, OUTCOMES)


def brute_accuracy(values: np.ndarray, clusters: list[int]) -> float:
    """Pooled accuracy over the decided pairs of the drawn clusters (with repeats), straight from the definition."""
    credits = []
    for c in clusters:
        for a, b, outcome in zip(FIRST, SECOND, OUTCOMES):
            if a // 3 != c or outcome == 0.5:
                continue
            preferred, other = (a, b) if outcome == 1.0 else (b, a)
            gap = values[preferred] - values[other]
            credits.append(1.0 if gap > 0 else 0.5 if gap == 0 else 0.0)
    return float(np.mean(credits))


def test_every_scorer_gets_the_length_row_beside_it_and_brute_force_intervals() -> None:
    results = length_aware_results(case(), {"good": GOOD, "copy": np.array(LENGTHS, float)}, n_boot=60, seed=4)
    assert list(results["scorers"]) == ["good", "copy", LENGTH_SCORER]
    assert (results["n_pairs"], results["n_judge_ties"], results["n_clusters"], results["n_replies"]) == (11, 1, 4, 12)
    good = results["scorers"]["good"]
    assert good["accuracy"]["mean"] == pytest.approx(brute_accuracy(GOOD, [0, 1, 2, 3]))
    draws = np.random.default_rng(4).integers(0, 4, size=(60, 4))  # the paired bootstrap's draws, same seed
    rounds = [brute_accuracy(GOOD, list(d)) for d in draws]
    assert (good["accuracy"]["ci_low"], good["accuracy"]["ci_high"]) == pytest.approx(
        tuple(np.quantile(rounds, [0.025, 0.975]))
    )
    # A copy of the length scorer never differs from it in any round; the length row has no difference of its own.
    assert results["scorers"]["copy"]["length_matched_accuracy"]["vs_length"] == {
        "mean": 0.0,
        "ci_low": 0.0,
        "ci_high": 0.0,
    }
    assert "vs_length" not in results["scorers"][LENGTH_SCORER]["accuracy"]
    assert results["scorers"][LENGTH_SCORER]["shorter_preferred_accuracy"]["mean"] == 0.0
    assert good["beyond_length"] == information_beyond_length(case(), GOOD, seed=4).as_dict()


def test_the_table_names_its_counts_puts_length_last_and_explains_each_column() -> None:
    results = length_aware_results(case(), {"good": GOOD}, n_boot=50, seed=0, cluster_kind="trees")
    table = length_aware_table(results)
    lines = table.splitlines()
    n = results
    assert f"accuracy % (n={n['n_pairs']})" in lines[0] and f"(n={n['n_shorter_preferred']})" in lines[0]
    assert lines[2].startswith("| good |") and lines[-1].startswith(f"| {LENGTH_SCORER} |")
    notes = length_aware_notes(results)
    assert "50 bootstrap rounds over 4 trees" in notes and "within 10%" in notes and len(notes.splitlines()) == 7


def test_nothing_decided_is_said_rather_than_tabled() -> None:
    ties = preferences(LENGTHS, np.repeat(np.arange(4), 3), [0, 3], [1, 4], [0.5, 0.5])
    results = length_aware_results(ties, {"good": GOOD}, n_boot=10, seed=0)
    assert results["scorers"] == {} and results["n_judge_ties"] == 2
    assert "No pair the judge decided" in length_aware_table(results)
