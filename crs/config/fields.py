"""Building blocks of a value rule: the predicates that say which values a key accepts.

A predicate is called as ``predicate(value, config)`` with the whole resolved
:class:`~crs.config.root.CRSConfig` as its second argument, so that a rule may depend on
other keys (``data.max_length`` must exceed ``data.max_prompt_length``). Type checks have
already passed when a predicate runs: a numeric key holds a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

# (value, the whole CRSConfig) -> whether the value is valid. The config is typed Any here:
# importing CRSConfig would make this module depend on every section that uses it.
Predicate = Callable[[Any, Any], bool]


def at_least(low: float) -> Predicate:
    """A finite number >= ``low``."""
    return lambda v, c: math.isfinite(v) and v >= low


def above(low: float) -> Predicate:
    """A finite number > ``low``."""
    return lambda v, c: math.isfinite(v) and v > low


def within(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Predicate:
    """A finite number between ``low`` and ``high``, each end included unless said open."""

    def ok(v: Any, c: Any) -> bool:
        return math.isfinite(v) and (v > low if open_low else v >= low) and (v < high if open_high else v <= high)

    return ok


def or_null(pred: Predicate) -> Predicate:
    """``None``, or a value ``pred`` accepts."""
    return lambda v, c: v is None or pred(v, c)


def finite(v: Any, c: Any) -> bool:
    """Any finite number (no NaN, no infinity)."""
    return math.isfinite(v)


UNIT = within(0, 1)  # [0, 1]
FRACTION = within(0, 1, open_high=True)  # [0, 1)
PROBABILITY = within(0, 1, open_low=True)  # (0, 1]
