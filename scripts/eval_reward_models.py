"""Reward models on another data split: python scripts/eval_reward_models.py RUN [RUN ...] --split eval

Each run dir written by rm_train.py is scored on every ranking and absolute example of
``--source`` / ``--split`` (the demo data's ``eval`` and ``rl`` splits are prompts no RM
trained on): pairwise accuracy over all pairs and best-vs-worst, Pearson / Spearman with
the absolute scores, and, for two or more RMs, how often each pair of them picks the same
winner. Prints a table; ``--out FILE`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crs.config import DataConfig
from crs.io import write_json_atomic
from crs.rm.rm_evaluation import evaluate_runs


def main() -> None:
    """Parse arguments, evaluate, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="reward-model run dirs (rm_train.py outputs)")
    parser.add_argument("--source", default="embedded:crs-demo")
    parser.add_argument("--split", default="eval")
    parser.add_argument("--out", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    data = DataConfig(source=args.source, split=args.split, val_fraction=0.0)
    results = evaluate_runs(args.runs, data)
    print(f"{args.source} split {args.split!r}")
    for name, metrics in results.items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
        print(f"  {name}: {shown}")
    if args.out:
        write_json_atomic(Path(args.out), results)


if __name__ == "__main__":
    main()
