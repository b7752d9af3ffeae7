"""Markdown for every report (scoring, sweep, online loop): one table helper, one way to print a percentage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

DASH = "–"  # en dash: no value (the diagonal of a win-rate matrix, a missing number)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align_first_left: bool = True) -> str:
    """A GitHub-flavoured Markdown table; numeric columns are right-aligned."""
    separator = [":---" if align_first_left and i == 0 else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(separator) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def pct(value: float) -> str:
    """A rate in [0, 1] as a percentage with one decimal: ``0.625`` -> ``62.5``."""
    return f"{100.0 * value:.1f}"


def pct_interval(entry: Mapping[str, float | None]) -> str:
    """A rate with its interval (``mean``, ``ci_low``, ``ci_high`` in [0, 1]) as ``62.5 (55.0–70.0)``;
    ``62.5 (no interval: 1 seed)`` where ``ci_low`` is None (crs gives none for one seed: seed variance unknown)."""
    if entry["ci_low"] is None:
        return f"{pct(entry['mean'])} (no interval: 1 seed)"
    return f"{pct(entry['mean'])} ({pct(entry['ci_low'])}–{pct(entry['ci_high'])})"


def number(value: float | None, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals, or a dash for None."""
    return DASH if value is None else f"{value:.{digits}f}"
