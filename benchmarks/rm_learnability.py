"""Can the two reward models learn the demo data? Held-out accuracy, error and agreement.

Trains the ``rm_preference`` (pairwise loss) and ``rm_absolute`` (absolute loss) subsets
as configured, on the demo data's ``rm`` split, then prints for each RM on the held-out
prompts: pairwise accuracy (best vs worst, and all pairs), mean reward margin, and
the absolute RM's MSE / MAE / correlations with the annotators' scores; finally how
often the two RMs order a held-out pair alike.

    python benchmarks/rm_learnability.py
    python benchmarks/rm_learnability.py --set train.max_steps=20 --set data.source=tests/fixtures/rm_demo.jsonl \
        --set data.adapter=crs_demo

``--set`` overrides apply to both subsets. Runs go to ``--output_dir`` (replaced on every
call), with ``results.json`` beside them.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from crs.config import load_config
from crs.io import write_json_atomic
from crs.rm.metrics import pair_agreement, ranking_pairs
from crs.rm.scorer import load_reward_scorers
from crs.rm.training import train_reward_model
from crs.runs import prepare_run_dir

SUBSETS = ("rm_preference", "rm_absolute")
COLUMNS = [  # (metrics key, header)
    ("best_vs_worst_accuracy", "best-vs-worst acc"),
    ("pairwise_accuracy", "all-pairs acc"),
    ("mean_margin", "mean margin"),
    ("mse", "MSE"),
    ("mae", "MAE"),
    ("low_mae", "MAE (low)"),
    ("pearson", "Pearson"),
    ("spearman", "Spearman"),
]


def run_benchmark(config: str | None, overrides: list[str], output_dir: Path) -> dict:
    """Train both RMs and measure them; returns what ``results.json`` holds."""
    results: dict = {"runs": {}}
    configs = {}
    for subset in SUBSETS:
        cfg = load_config(subset, config, [*overrides, f"run.output_dir={output_dir}"])
        run_dir = prepare_run_dir(cfg, overwrite=True)
        start = time.perf_counter()
        train_reward_model(cfg, run_dir)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        results["runs"][subset] = {
            "run_dir": str(run_dir),
            "seconds": round(time.perf_counter() - start, 1),
            "steps": metrics["global_step"],
            "val": metrics["val"],
            "val_before_training": metrics["val_before_training"],
        }
        configs[subset] = cfg

    # Agreement of the two RMs on every held-out pair (both hold out the same prompts).
    from crs.data import load_examples

    cfg = configs["rm_preference"]
    _, val = load_examples(cfg.data, "ranking", cfg.run.seed)
    pairs = ranking_pairs(val)
    scorers = load_reward_scorers([results["runs"][s]["run_dir"] for s in SUBSETS], cfg.model)
    results["agreement"] = pair_agreement(scorers[0], scorers[1], pairs) if pairs else None
    results["n_val_pairs"] = len(pairs)
    return results


def format_table(results: dict) -> str:
    """A Markdown table: one row per RM (after training; before training in brackets)."""

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    header = "| RM | " + " | ".join(h for _, h in COLUMNS) + " | steps | train s |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3)]
    for subset, run in results["runs"].items():
        cells = [f"{cell(run['val'].get(k))} ({cell(run['val_before_training'].get(k))})" for k, _ in COLUMNS]
        lines.append(f"| {subset} | " + " | ".join(cells) + f" | {run['steps']} | {run['seconds']} |")
    lines.append("")
    lines.append("Held-out prompts; in brackets: the same model before training.")
    if results["agreement"] is not None:
        lines.append(f"The two RMs order {results['agreement']:.1%} of {results['n_val_pairs']} held-out pairs alike.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="config file (default: config.yaml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override for both subsets"
    )
    parser.add_argument(
        "--output_dir", default="outputs/benchmarks/rm_learnability", help="where the runs go (replaced)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    output_dir = Path(args.output_dir)
    results = run_benchmark(args.config, args.overrides, output_dir)
    write_json_atomic(output_dir / "results.json", results)
    print(format_table(results))


if __name__ == "__main__":
    main()
