"""Length-control test cases, written once: issue 30's brevity case, and a vowels-on-length calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crs.rm.length_calibration import LengthCalibration, fit_length_calibration, write_length_calibration


def shorter_on_most(reference: np.ndarray, rng: np.random.Generator, mirror: bool = False) -> np.ndarray:
    """The model's reply lengths in issue 30's case: shorter than ``reference`` by 100-200
    characters on 88% of the prompts and longer by 5-20 on the rest (``mirror``: longer on
    most, shorter on the rest). Draws from ``rng`` in a fixed order, so a test that goes on
    drawing from it sees the same numbers every time."""
    n = len(reference)
    big = np.zeros(n, dtype=bool)
    big[rng.permutation(n)[: round(0.88 * n)]] = True
    magnitude = np.where(big, rng.integers(100, 201, n), rng.integers(5, 21, n))
    sign = np.where(big, -1, 1) * (-1 if mirror else 1)
    return reference + sign * magnitude


def vowel_calibration(
    replies: list[str], path: Path, calibration_set: str
) -> tuple[np.ndarray, np.ndarray, LengthCalibration]:
    """Fit the vowel count's trend in reply length over ``replies`` (no robustness passes) and write it to ``path``:
    ``(lengths, vowels, calibration)``, lengths and vowel counts in the order of ``replies``."""
    lengths = np.array([len(r) for r in replies], dtype=float)
    vowels = np.array([sum(ch in "aeiou" for ch in r) for r in replies], dtype=float)
    calibration = fit_length_calibration(lengths, vowels, calibration_set, "vowels", iterations=0)
    write_length_calibration(path, calibration)
    return lengths, vowels, calibration
