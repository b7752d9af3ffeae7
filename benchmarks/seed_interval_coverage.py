"""How often do the sweep's 95% intervals over seeds and prompts cover the truth? A simulation.

Each simulated study has groups of ``S`` seeds x ``P`` prompts drawn from
``y[s, p] = a_s + b_p + e_sp`` (true mean 0; seed effect sd ``sa``, prompt effect sd ``sb``,
cell noise sd ``se``), and counts how often an interval contains 0. Two methods:

- ``old``: the seed-resampling bootstrap (seeds resampled, then prompts) that the pivotal rounds
  replaced;
- ``new``: :func:`crs.eval.hierarchical.seed_prompt_intervals`' pivotal rounds (a Student-t seed
  level, a shrunk prompt bootstrap).

The ``diff`` column is the new method on a difference of two groups that share their prompt
effects (separate seeds, true difference 0): the paired comparison every sweep verdict reads.

    python benchmarks/seed_interval_coverage.py               # the table of docs/study.md
    python benchmarks/seed_interval_coverage.py --studies 300 --rounds 200   # a quick look
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from crs.eval.hierarchical import pivotal_rounds

# (seed effect sd, prompt effect sd, cell noise sd); the first three are the ones tests/eval/test_hierarchical.py
# holds to 93-97%.
SETTINGS = {
    "issue 30 (seed > prompt)": (0.1, 0.3, 0.3),
    "seed-dominated": (0.3, 0.1, 0.1),
    "prompt-dominated": (0.0, 0.5, 0.05),
    "between: seed sd 0.01, noise 0.1": (0.01, 0.3, 0.1),
    "between: seed sd 0.02": (0.02, 0.3, 0.3),
    "between: no seed effect": (0.0, 0.3, 0.3),
    "between: seed sd 0.05": (0.05, 0.3, 0.3),
}
SEED_COUNTS = (2, 3, 5)


def simulate(
    rng: np.random.Generator,
    n_studies: int,
    n_seeds: int,
    n_prompts: int,
    sds: tuple[float, float, float],
    prompt_effects: np.ndarray | None = None,
) -> np.ndarray:
    """(n_studies, n_seeds, n_prompts) matrices of the model, true mean 0 (``prompt_effects`` shared when given)."""
    seed_sd, prompt_sd, noise_sd = sds
    if prompt_effects is None:
        prompt_effects = rng.normal(0.0, prompt_sd, (n_studies, 1, n_prompts))
    return (
        rng.normal(0.0, seed_sd, (n_studies, n_seeds, 1))
        + prompt_effects
        + rng.normal(0.0, noise_sd, (n_studies, n_seeds, n_prompts))
    )


def covered(rounds: np.ndarray, truth: float = 0.0, alpha: float = 0.05) -> np.ndarray:
    """Per study (rows of ``rounds``): does its (1 - alpha) quantile interval contain ``truth``?"""
    low, high = np.quantile(rounds, [alpha / 2, 1 - alpha / 2], axis=1)
    return (low <= truth) & (truth <= high)


def seed_resampling_rounds(matrices: np.ndarray, prompt_draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(B, R) rounds of the old bootstrap: resample each matrix's seeds, then the (shared) prompts."""
    n_batch, n_seeds, n_prompts = matrices.shape
    counts = np.zeros((prompt_draws.shape[0], n_prompts))
    np.add.at(counts, (np.repeat(np.arange(prompt_draws.shape[0]), n_prompts), prompt_draws.ravel()), 1.0)
    per_seed = matrices @ counts.T / n_prompts  # (B, S, R): each seed's mean over the resampled prompts
    seeds = rng.integers(0, n_seeds, (n_batch, n_seeds, prompt_draws.shape[0]))
    return np.take_along_axis(per_seed, seeds, axis=1).mean(axis=1)


def coverage(
    sds: tuple[float, float, float],
    n_seeds: int,
    n_studies: int,
    n_rounds: int,
    n_prompts: int,
    rng: np.random.Generator,
    methods: tuple[str, ...] = ("old", "new", "diff"),
) -> dict[str, float]:
    """Share of ``n_studies`` simulated studies whose 95% interval covers the truth, per method."""
    draws = rng.integers(0, n_prompts, (n_rounds, n_prompts))
    out = {}
    matrices = simulate(rng, n_studies, n_seeds, n_prompts, sds)
    if "old" in methods:
        out["old"] = float(covered(seed_resampling_rounds(matrices, draws, rng)).mean())
    if "new" in methods:
        out["new"] = float(covered(pivotal_rounds([matrices], draws, rng)[0]).mean())
    if "diff" in methods:
        shared = rng.normal(0.0, sds[1], (n_studies, 1, n_prompts))
        a, b = (simulate(rng, n_studies, n_seeds, n_prompts, sds, shared) for _ in range(2))
        rounds_a, rounds_b = pivotal_rounds([a, b], draws, rng)
        out["diff"] = float(covered(rounds_a - rounds_b).mean())
    return out


def seed_to_prompt_ratio(sds: tuple[float, float, float], n_seeds: int, n_prompts: int) -> float:
    """Seed-level over prompt-level variance of a group's mean: (sa^2/S + se^2/(S P)) / (sb^2/P) (inf without prompt
    effects)."""
    seed_sd, prompt_sd, noise_sd = sds
    seed_level = seed_sd**2 / n_seeds + noise_sd**2 / (n_seeds * n_prompts)
    return float("inf") if prompt_sd == 0 else seed_level / (prompt_sd**2 / n_prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--studies",
        type=int,
        default=4000,
        help="simulated studies per cell (default 4000: coverage +-0.7 points, 95%%)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1000, help="rounds per interval (the sweep's n_boot default, 1000)"
    )
    parser.add_argument("--prompts", type=int, default=100, help="prompts per study (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    print(
        f"# 95% interval coverage (%), {args.studies} studies per cell, {args.rounds} rounds, "
        f"{args.prompts} prompts, seed {args.seed}"
    )
    print(
        "# old: seed-resampling bootstrap; new: pivotal rounds (crs.eval.hierarchical); "
        "diff: new, two groups sharing prompt effects"
    )
    print("# ratio: seed-level / prompt-level variance of a group's mean at each seed count")
    header = (
        "| setting | (sa, sb, se) | " + " | ".join(f"{s} seeds: ratio, old / new / diff" for s in SEED_COUNTS) + " |"
    )
    print(header + "\n|" + "---|" * (2 + len(SEED_COUNTS)))
    for name, sds in SETTINGS.items():
        cells = []
        for n_seeds in SEED_COUNTS:
            result = coverage(sds, n_seeds, args.studies, args.rounds, args.prompts, rng)
            ratio = seed_to_prompt_ratio(sds, n_seeds, args.prompts)
            cells.append(
                f"{ratio:.3g}: {100 * result['old']:.1f} / {100 * result['new']:.1f} / {100 * result['diff']:.1f}"
            )
        print(f"| {name} | {sds} | " + " | ".join(cells) + " |", flush=True)
    print(f"# {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
