"""A published win rate over seeds, re-read with the corrected seed level when only its summary is left.

Intervals from the old seed-resampling bootstrap (2-5 seeds resampled) cover the truth too
rarely at few seeds (docs/study.md; the published figures it affects: docs/results.md). Where a
study's per-prompt outcomes were not kept, but its per-seed rates and its interval were, this
script gives the interval the corrected method (:mod:`crs.eval.hierarchical`) would print,
approximately:

- seed level: the per-seed rates' standard error times a Student-t draw with S - 1 degrees of
  freedom (as the corrected rounds do);
- prompt level: a normal whose variance is the published interval's (half-width / 1.96)^2
  less the share the old bootstrap gave the seeds (the population variance of the per-seed
  rates over S), floored at 0.

Approximate, because the published interval is itself a bootstrap figure and the prompt level
is taken as normal; with the runs at hand, `crs sweep --resume` gives the exact interval.

    python benchmarks/reread_seed_interval.py --rate 75.8 --interval 68.5 82.0 --per_seed 74.0 77.5
"""

from __future__ import annotations

import argparse

import numpy as np

Z_975 = 1.959964


def reread(
    rate: float, interval: tuple[float, float], per_seed: list[float], draws: int = 400_000, seed: int = 0
) -> tuple[float, float]:
    """The approximate corrected 95% interval of a win rate in percent (clipped to 0-100)."""
    seeds = np.asarray(per_seed, dtype=float)
    if seeds.size < 2:
        raise SystemExit("error: --per_seed needs the rates of at least 2 seeds (1 seed has no interval)")
    rng = np.random.default_rng(seed)
    n = seeds.size
    t = rng.standard_normal(draws) / np.sqrt(rng.chisquare(n - 1, draws) / (n - 1))
    seed_se = seeds.std(ddof=1) / np.sqrt(n)
    prompt_var = max(((interval[1] - interval[0]) / 2 / Z_975) ** 2 - seeds.var() / n, 0.0)
    rounds = rate - seed_se * t - np.sqrt(prompt_var) * rng.standard_normal(draws)
    low, high = np.quantile(rounds, [0.025, 0.975])
    return max(float(low), 0.0), min(float(high), 100.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True, help="the published win rate, percent")
    parser.add_argument(
        "--interval", type=float, nargs=2, required=True, metavar=("LOW", "HIGH"), help="its published 95%% interval"
    )
    parser.add_argument("--per_seed", type=float, nargs="+", required=True, help="each seed's win rate, percent")
    args = parser.parse_args(argv)
    low, high = reread(args.rate, tuple(args.interval), args.per_seed)
    print(
        f"{args.rate:.1f} ({low:.1f}-{high:.1f}) corrected, approximately; "
        f"published ({args.interval[0]:.1f}-{args.interval[1]:.1f})"
    )


if __name__ == "__main__":
    main()
