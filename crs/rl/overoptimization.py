"""PPO's over-optimisation log (``<run>/overoptimization.jsonl``): where it lives, where the judge peaked.

Each row, at step 0 and every ``rl.sample_every`` steps: every reward source, the combined
reward (the proxy), the judge and the KL to the reference, on held-out prompts. The figure
is drawn by :func:`crs.eval.overoptimization_figures.plot_overoptimization`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

OVEROPT_FILE = "overoptimization.jsonl"


def judge_peak(rows: Sequence[Mapping[str, Any]], judge_key: str) -> dict[str, float] | None:
    """The logged step where the judge's score was highest, with its KL (None without a judge)."""
    scored = [r for r in rows if r.get(judge_key) is not None]
    if not scored:
        return None
    best = max(scored, key=lambda r: r[judge_key])
    return {"step": best["step"], "kl": best["kl/sequence"], "judge": best[judge_key]}
