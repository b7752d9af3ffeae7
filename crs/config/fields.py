"""Value rules: which values a config key accepts, stated in the metadata of its field.

A field declares its help text and, where type checks alone let nonsense through, its
rule::

    logging_steps: int = field(
        default=10,
        metadata={"help": "Log every N optimiser steps.", "rule": Rule(at_least(1), "an integer >= 1")},
    )

:mod:`crs.config.validation` walks the config tree and checks every rule it finds. A
predicate is called as ``predicate(value, config)`` with the whole resolved
:class:`~crs.config.root.CRSConfig` as its second argument, so that a rule may depend on
other keys (``data.max_length`` must exceed ``data.max_prompt_length``). Type checks have
already passed when a predicate runs: a numeric key holds a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

# (value, the whole CRSConfig) -> whether the value is valid. The config is typed Any here:
# importing CRSConfig would make this module depend on every section that uses it.
Predicate = Callable[[Any, Any], bool]


class Rule(NamedTuple):
    """A field's valid values: ``check(value, config)`` is true for them; ``valid`` names them in errors.

    The error reads ``key=value: must be <valid>``. With ``each``, the field is a list and
    the rule holds for every item (the error names ``key[i]``). ``valid`` may be a function of
    the config, for values that other keys list (``bon.preference_source``: one of ``bon.rewards``).
    """

    check: Predicate
    valid: str | Callable[[Any], str]
    each: bool = False

    def valid_for(self, config: Any) -> str:
        """``valid`` as the error shows it for ``config``."""
        return self.valid(config) if callable(self.valid) else self.valid


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


def distinct_and_not_empty(v: Any, c: Any) -> bool:
    """A list with at least one item and no item twice."""
    return len(v) > 0 and len(set(v)) == len(v)


def finite(v: Any, c: Any) -> bool:
    """Any finite number (no NaN, no infinity)."""
    return math.isfinite(v)


UNIT = within(0, 1)  # [0, 1]
FRACTION = within(0, 1, open_high=True)  # [0, 1)
PROBABILITY = within(0, 1, open_low=True)  # (0, 1]
