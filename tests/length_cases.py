"""Reply lengths for length-control tests: issue 30's brevity case, written once."""

from __future__ import annotations

import numpy as np


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
