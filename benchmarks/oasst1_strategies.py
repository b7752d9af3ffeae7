"""How to combine a ranking and an absolute reward model, on real human data (oasst1).

OpenAssistant's oasst1 gives the same replies two human signals: a rank among their
siblings and labels such as ``quality``. This benchmark splits the conversation trees
(seeded, by tree: ``--val_fraction`` of them held out, one split for every run), trains on the training trees a
reward model per strategy (``STRATEGIES``: ranking loss, absolute loss, each continued with
the other (sequential), one encoder with both heads (joint), and the ranking loss with length
disentangled (ODIN: a quality head kept apart from a length head)), and judges every scorer on
the held-out trees against the humans:

* pairwise accuracy against the sibling ranks, top-1 (does the scorer pick the rank-0 reply),
  Spearman with the ``quality`` label, each with a bootstrap interval over trees;
* the paired difference of each scorer to a length-only scorer (prefers the longer reply),
  the baseline every reward model must beat on this data;
* combinations of the two single-loss RMs (:mod:`crs.rl.combine`): the weighted sum over a
  weight grid, the sum standardised within each sibling group, the conservative minimum;
* each trained RM with its length trend removed (the length calibration its run saved), and each
  single-loss RM plus length (z-scores, ``LENGTH_WEIGHTS``);
* the untrained model (the same base, a fresh head) as the floor;
* how much of each scorer's accuracy is length (:mod:`crs.eval.length_aware`): accuracy on the pairs where
  the humans preferred the shorter reply and on length-matched pairs, Spearman with length, and whether
  the scorer predicts the humans' choice beyond length (likelihood-ratio test, a coefficient with a
  tree-robust interval, log-loss cross-validated over trees).

    python benchmarks/oasst1_strategies.py ../shared/data/oasst1/en-validation.jsonl
    python benchmarks/oasst1_strategies.py FILE --recipe full --only ranking absolute

``--recipe`` picks the training settings (``RECIPES``); ``--set`` adds overrides to every run.
Runs go to ``--output_dir`` (replaced), with ``results.json`` and ``report.md`` beside them.
The project never needs the file: this is a measurement, not a stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crs.config import ConfigError, load_config
from crs.data import load_examples
from crs.data.loader import group_key
from crs.data.schema import DataError
from crs.eval.bon.instrument import zscore
from crs.eval.length_aware import LENGTH_SCORER, length_aware_notes, length_aware_table
from crs.eval.ranked_groups import RankedGroup, cluster_bootstrap, length_aware, summarize
from crs.io import JsonLinesError, iter_jsonl, write_json_atomic, write_text_atomic
from crs.models.model_error import ModelError
from crs.rl.combine import combine_normalized, zscore_stats
from crs.rm.length_calibration import CALIBRATION_FILE, read_length_calibration
from crs.rm.length_metrics import reply_lengths
from crs.rm.scorer import load_reward_scorers
from crs.rm.training import train_reward_model
from crs.runs import RunError, is_finished, prepare_run_dir

LOG = logging.getLogger("oasst1_strategies")

RECIPES: dict[str, list[str]] = {
    # What a new user gets from config.yaml's RM subsets (MiniLM + LoRA), with oasst1's longer texts.
    "default": ["data.max_length=256", "data.max_prompt_length=96"],
    # Full fine-tuning, longer inputs, more epochs at a lower learning rate.
    "full": [
        "model.lora.enabled=false",
        "train.learning_rate=5.0e-5",
        "data.max_length=384",
        "data.max_prompt_length=128",
    ],
    # A larger base that has read instructions and replies: SmolLM2-135M-Instruct (embedded) + LoRA, one epoch
    # (~6x MiniLM's compute per token on a CPU).
    "smollm2": [
        "model.name=embedded:smollm2-135m-instruct",
        "train.learning_rate=2.0e-4",
        "train.num_epochs=1",
        "data.max_length=256",
        "data.max_prompt_length=96",
    ],
}
# name -> (config subset, overrides); {name} = that strategy's run dir. Epochs: 2 over rankings, 4 over
# absolute rows (single replies: fewer tokens per pass), as the new-user measurement used.
ABSOLUTE = ["rm.threshold=0.4", "rm.loss_weight_strength=0", "train.num_epochs=4"]  # no demo-specific re-weighting
STRATEGIES: dict[str, tuple[str, list[str]]] = {
    "ranking": ("rm_preference", ["train.num_epochs=2"]),
    "absolute": ("rm_absolute", ABSOLUTE),
    "absolute_then_ranking": ("rm_preference", ["train.num_epochs=2", "rm.init_from={absolute}"]),
    "joint": ("rm_preference", ["train.num_epochs=2", "rm.loss=joint", "rm.joint_preference_weight=0.5"]),
    "ranking_then_absolute": ("rm_absolute", [*ABSOLUTE, "rm.init_from={ranking}"]),
    # ODIN: the ranking loss on a quality head plus a length head; the quality head is the reward.
    "disentangled": ("rm_disentangled", ["train.num_epochs=2"]),
}
# Validation once, at the end: the benchmark measures held-out trees itself.
COMMON = ["train.eval_steps=100000"]
WEIGHTS = [i / 8 for i in range(9)]
# RM + w x length, both z-scored: length as a second source beside each single-loss RM.
LENGTH_WEIGHTS = [0.5, 1.0, 2.0]
# The keys of oasst1's flat message table that the split and crs's oasst1 adapter need
# (../shared/data/oasst1/README.md).
MESSAGE_KEYS = ("message_id", "parent_id", "message_tree_id", "role", "text")
SCHEMA = (
    "oasst1's flat message table, one JSON message per line "
    "(message_id, parent_id, message_tree_id, role, text, rank, labels, ...)"
)


def read_messages(path: str) -> list[dict[str, Any]]:
    """Every message of the file (crs's JSON-lines reader); a file that is not oasst1's messages is a one-line
    DataError."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{path}: no such file; give {SCHEMA}")
    try:
        rows = list(iter_jsonl(file))
    except JsonLinesError as err:
        raise DataError(f"{err}; fix or remove that line") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); give {SCHEMA}") from None
    for number, row in rows:
        missing = [key for key in MESSAGE_KEYS if not isinstance(row, dict) or key not in row]
        if missing:
            raise DataError(f"{path}, line {number}: missing key(s) {missing}; expected {SCHEMA}")
    if not rows:
        raise DataError(f"{path}: no messages; expected {SCHEMA}")
    return [row for _, row in rows]


def split_trees(path: str, val_fraction: float, seed: int, output_dir: Path) -> tuple[Path, Path, int, int]:
    """Write the file's messages as two files, whole trees each: training trees and held-out trees (seeded).

    One split for every strategy and both kinds of labels. (crs's own ``data.val_fraction`` holds
    out groups per kind of example, and oasst1's ranked and labelled replies cover different
    sets of trees, so a ranking and an absolute run would hold out different trees.)
    """
    messages = read_messages(path)
    rows, tree_of = [json.dumps(m, ensure_ascii=False) for m in messages], [m["message_tree_id"] for m in messages]
    trees = sorted({t for t in tree_of if t is not None})
    held = set(random.Random(seed).sample(trees, round(val_fraction * len(trees))))
    output_dir.mkdir(parents=True, exist_ok=True)
    train, heldout = output_dir / "train_trees.jsonl", output_dir / "heldout_trees.jsonl"
    write_text_atomic(train, "".join(r + "\n" for r, t in zip(rows, tree_of) if t not in held))
    write_text_atomic(heldout, "".join(r + "\n" for r, t in zip(rows, tree_of) if t in held))
    return train, heldout, len(trees) - len(held), len(held)


def data_overrides(train: Path, heldout: Path, seed: int) -> list[str]:
    """The oasst1 files through crs's adapter, English only, quality as the absolute label."""
    return [
        f"data.source={train}",
        f"data.val_source={heldout}",
        "data.adapter=oasst1",
        "data.split=train",
        "data.languages=[en]",
        f"run.seed={seed}",
        "data.label_weights={quality: 1.0}",
    ]


def train_strategy(
    name: str, overrides: list[str], runs: dict[str, str], output_dir: Path, reuse: bool
) -> dict[str, Any]:
    """Train one strategy's reward model (``reuse``: keep a finished run of the same config); returns its run dir, time
    and metrics."""
    subset, extra = STRATEGIES[name]
    extra = [x.format(**runs) for x in extra]
    # The strategy's own keys first, so --set overrides them.
    cfg = load_config(
        subset, None, [*COMMON, *extra, *overrides, f"run.output_dir={output_dir}", f"run.name=oasst1_{name}"]
    )
    run_dir = output_dir / cfg.run_name
    if not (reuse and is_finished(run_dir)):
        run_dir = prepare_run_dir(cfg, overwrite=True)
        start = time.perf_counter()
        train_reward_model(cfg, run_dir)
        write_json_atomic(run_dir / "benchmark_seconds.json", {"seconds": round(time.perf_counter() - start, 1)})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    seconds = json.loads((run_dir / "benchmark_seconds.json").read_text())["seconds"]
    return {"run_dir": str(run_dir), "seconds": seconds, "steps": metrics["global_step"], "val": metrics["val"]}


def heldout_groups(overrides: list[str]) -> tuple[list[RankedGroup], list[Any]]:
    """The held-out trees' sibling groups in the humans' order (each reply with its quality label), and their
    prompts."""
    cfg = load_config("rm_preference", None, overrides)
    _, val = load_examples(cfg.data, "ranking", cfg.run.seed)
    _, held_absolutes = load_examples(cfg.data, "absolute", cfg.run.seed)
    quality = {(group_key(ex), ex.reply): ex.score for ex in held_absolutes}
    groups = [
        RankedGroup(
            str(group_key(ex)), list(ex.replies), [quality.get((group_key(ex), r), float("nan")) for r in ex.replies]
        )
        for ex in val
    ]
    return groups, [ex.prompt for ex in val]


def model_scores(
    groups: list[RankedGroup], prompts: list[Any], run_dirs: dict[str, str]
) -> tuple[dict[str, list[np.ndarray]], dict[str, dict]]:
    """Every trained RM's scores of every held-out group, and the z-statistics it saved on its validation replies."""
    flat_prompts = [p for g, p in zip(groups, prompts) for _ in g.replies]
    flat_replies = [r for g in groups for r in g.replies]
    sizes = np.cumsum([len(g.replies) for g in groups])[:-1]
    out, stats = {}, {}
    for name, scorer in zip(run_dirs, load_reward_scorers(list(run_dirs.values()))):
        flat = scorer(flat_prompts, flat_replies).float().numpy()
        out[name] = np.split(flat, sizes)
        stats[name] = getattr(scorer, "stats", None) or {"mean": float(flat.mean()), "std": float(flat.std())}
    return out, stats


def untrained_scores(groups: list[RankedGroup], prompts: list[Any], overrides: list[str]) -> list[np.ndarray]:
    """The floor: the base model with a fresh (seeded) head, as the ranking subset would start it."""
    from crs.models.loading import load_tokenizer
    from crs.models.precision import resolve_dtype
    from crs.rm.rm_format import RMFormat
    from crs.rm.scorer import RewardScorer
    from crs.rm.training import build_reward_model
    from crs.runs import set_seed

    cfg = load_config("rm_preference", None, overrides)
    set_seed(cfg.run.seed)
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.cache_dir, padding_side="right")
    scorer = RewardScorer(
        build_reward_model(cfg.model, tokenizer),
        tokenizer,
        RMFormat.from_data_config(cfg.data),
        name="untrained",
        loss_kind="pairwise",
        batch_size=32,
        dtype=resolve_dtype(cfg.model.dtype),
    )
    flat = (
        scorer([p for g, p in zip(groups, prompts) for _ in g.replies], [r for g in groups for r in g.replies])
        .float()
        .numpy()
    )
    return np.split(flat, np.cumsum([len(g.replies) for g in groups])[:-1])


def combined_scores(scores: dict[str, list[np.ndarray]], stats: dict[str, dict]) -> dict[str, list[np.ndarray]]:
    """The two single-loss RMs combined as ``rl.combine`` would: weighted sums of their z-scores (saved
    statistics), the same standardised within each sibling group, and the conservative minimum."""
    sizes = [len(g) for g in scores["ranking"]]
    z = {name: torch.tensor(zscore(np.concatenate(scores[name]), stats[name])) for name in ("ranking", "absolute")}
    groups = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    out: dict[str, torch.Tensor] = {}
    for w in WEIGHTS:
        weights = {"ranking": w, "absolute": 1 - w}
        if w in (0.0, 1.0):  # one source alone: sum_per_prompt orders its replies as the source does
            continue
        out[f"sum w={w:g}"] = combine_normalized(z, weights, "sum")[0]
        out[f"sum_per_prompt w={w:g}"] = combine_normalized(z, weights, "sum_per_prompt", groups)[0]
    out["conservative min"] = combine_normalized(z, {"ranking": 1.0, "absolute": 1.0}, "conservative", method="min")[0]
    splits = np.cumsum(sizes)[:-1]
    return {name: np.split(values.numpy(), splits) for name, values in out.items()}


def calibrated_scores(
    groups: list[RankedGroup], scores: dict[str, list[np.ndarray]], run_dirs: dict[str, str]
) -> dict[str, list[np.ndarray]]:
    """Every trained RM's scores with its length trend removed: the LOWESS the rm stage fitted on the run's own
    validation replies (its ``length_calibration.json``; rewards and lengths only, no human label), subtracted."""
    out = {}
    for name, run_dir in run_dirs.items():
        calibration = read_length_calibration(Path(run_dir) / CALIBRATION_FILE)
        out[f"{name}, length-calibrated"] = [
            calibration.apply(s, reply_lengths(g.replies)) for g, s in zip(groups, scores[name])
        ]
    return out


def length_sums(
    groups: list[RankedGroup], scores: dict[str, list[np.ndarray]], stats: dict[str, dict]
) -> dict[str, list[np.ndarray]]:
    """Each single-loss RM plus length (``rl.rewards`` with a ``path: length`` source): the RM's z-score (saved
    statistics) plus ``w`` times the length's z-score over the held-out replies, for each of ``LENGTH_WEIGHTS``."""
    lengths = [reply_lengths(g.replies) for g in groups]
    length_stats = zscore_stats(np.concatenate(lengths))
    out = {}
    for name in ("ranking", "absolute", "disentangled"):
        if name not in scores:
            continue
        for w in LENGTH_WEIGHTS:
            out[f"{name} + {w:g} x length"] = [
                zscore(s, stats[name]) + w * zscore(n, length_stats) for s, n in zip(scores[name], lengths)
            ]
    return out


def run_benchmark(
    path: str,
    recipe: str,
    only: list[str],
    extra: list[str],
    val_fraction: float,
    seed: int,
    output_dir: Path,
    n_boot: int,
    reuse: bool = False,
) -> dict[str, Any]:
    """Train every strategy, score the held-out trees with every scorer, bootstrap; returns results.json's content."""
    train_file, heldout_file, n_train, n_held = split_trees(path, val_fraction, seed, output_dir)
    LOG.info("%d training trees, %d held out (seed %d)", n_train, n_held, seed)
    overrides = [*data_overrides(train_file, heldout_file, seed), *RECIPES[recipe], *extra]
    runs: dict[str, str] = {}
    trained: dict[str, Any] = {}
    for name in STRATEGIES:
        if only and name not in only:
            continue
        LOG.info("training %s", name)
        trained[name] = train_strategy(name, overrides, runs, output_dir, reuse)
        runs[name] = trained[name]["run_dir"]
    groups, prompts = heldout_groups(overrides)
    scores, stats = model_scores(groups, prompts, runs)
    if {"ranking", "absolute"} <= set(scores):
        scores.update(combined_scores(scores, stats))
    scores.update(calibrated_scores(groups, scores, runs))
    scores.update(length_sums(groups, scores, stats))
    scores[LENGTH_SCORER] = [reply_lengths(g.replies) for g in groups]
    scores["untrained"] = untrained_scores(groups, prompts, overrides)
    result = cluster_bootstrap(groups, scores, n_boot=n_boot, seed=seed)
    return {
        "recipe": recipe,
        "overrides": overrides,
        "seed": seed,
        "n_boot": n_boot,
        "trees": {"train": n_train, "heldout": n_held},
        "heldout": {
            "trees": len({g.cluster for g in groups}),
            "groups": len(groups),
            "pairs": int(sum(len(g.replies) * (len(g.replies) - 1) // 2 for g in groups)),
            "labelled_replies": int(sum(np.isfinite(g.labels).sum() for g in groups)),
        },
        "runs": trained,
        "table": summarize(result, baseline=LENGTH_SCORER),
        "length_aware": length_aware(groups, scores, n_boot=n_boot, seed=seed, cluster_kind="trees"),
    }


def format_report(results: dict[str, Any]) -> str:
    """A Markdown table: one row per scorer, each metric with its interval and the difference to length."""

    def cell(row: dict[str, float], points: bool = False) -> str:
        k = 100 if points else 1
        fmt = "{:+.1f}" if points else "{:.3f}"
        return f"{fmt.format(k * row['mean'])} ({fmt.format(k * row['ci_low'])}, {fmt.format(k * row['ci_high'])})"

    table, base = results["table"], LENGTH_SCORER
    held = results["heldout"]
    lines = [
        f"Held out: {held['trees']} trees, {held['groups']} sibling groups, {held['pairs']} pairs, "
        f"{held['labelled_replies']} replies with a quality label; "
        f"95% intervals over trees ({results['n_boot']} rounds).",
        "",
        "| scorer | pairwise accuracy | vs length, points | top-1 | Spearman with quality |",
        "|---|---|---|---|---|",
    ]
    for name, row in table["pairwise_accuracy"].items():
        versus = cell(row[f"vs_{base}"], points=True) if f"vs_{base}" in row else "-"
        lines.append(
            f"| {name} | {cell(row)} | {versus} | {cell(table['top1'][name])} | {cell(table['spearman'][name])} |"
        )
    if results.get("length_aware"):
        lines += [
            "",
            "How much of each scorer's agreement is length (the same trees and bootstrap rounds):",
            "",
            length_aware_table(results["length_aware"]),
            "",
            length_aware_notes(results["length_aware"]),
        ]
    lines += ["", "| run | steps | train s |", "|---|---|---|"]
    lines += [f"| {name} | {run['steps']} | {run['seconds']} |" for name, run in results["runs"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="oasst1 messages in the flat table schema (.jsonl)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="default")
    parser.add_argument("--only", nargs="*", default=[], choices=sorted(STRATEGIES), help="train only these strategies")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override for every run"
    )
    parser.add_argument("--val_fraction", type=float, default=0.31, help="share of trees held out (0.31: 60 of 191)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n_boot", type=int, default=2000)
    parser.add_argument(
        "--output_dir", default="outputs/benchmarks/oasst1_strategies", help="where the runs go (replaced)"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep runs that finished in --output_dir (same settings: your responsibility)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    output_dir = Path(args.output_dir)
    try:
        results = run_benchmark(
            args.path,
            args.recipe,
            args.only,
            args.overrides,
            args.val_fraction,
            args.seed,
            output_dir,
            args.n_boot,
            args.reuse,
        )
    except (ConfigError, DataError, ModelError, RunError) as err:  # bad input: one line, as crs's stages end
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    report = format_report(results)
    write_json_atomic(output_dir / "results.json", results)
    write_text_atomic(output_dir / "report.md", report + "\n")
    print(report)


if __name__ == "__main__":
    main()
