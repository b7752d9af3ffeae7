"""The ``data`` section: where examples come from and how they become token ids."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from crs.config.fields import FRACTION, Rule, at_least, or_null


@dataclass
class DataConfig:
    """Where examples come from and how they are turned into token ids."""

    source: str = field(
        default="embedded:crs-demo",
        metadata={
            "help": "`embedded:crs-demo` (the demo dataset), a local file (.jsonl / .json / .csv / .parquet), or "
            "`hub:<dataset id>`."
        },
    )
    adapter: Literal["auto", "canonical", "crs_demo", "instruction", "oasst1", "hh_rlhf", "shp", "ultrafeedback"] = (
        field(
            default="auto",
            metadata={
                "help": "How rows become canonical examples: `auto` picks `crs_demo` for the embedded data and "
                "`canonical` for files; or one of the built-in adapters for public datasets."
            },
        )
    )
    demo_labels: Literal["standard", "facets"] = field(
        default="standard",
        metadata={
            "help": "Labels of the demo data (adapter `crs_demo` only): `standard`, the shipped ranks and scores; "
            "`facets`, planted-facets labels in which rankers see only form and topic and raters (noisy, "
            "miscalibrated) only content, so that a mix of the preference and absolute reward models has a known best "
            "weight inside (0, 1) (`crs/demo/facets.py`, docs/demo_dataset.md). Same prompts, replies and gold "
            "utility; a fixed seed, so every stage sees the same labels. `facets` with another adapter is an error."
        },
    )
    split: str = field(
        default="train", metadata={"help": "Hub split name; for `embedded:crs-demo` one of `sft`, `rm`, `rl`, `eval`."}
    )
    hub_config: str | None = field(
        default=None, metadata={"help": "A hub dataset's configuration name, if it has several."}
    )
    columns: dict[str, str] = field(
        default_factory=dict, metadata={"help": "Column renames: `{canonical name: column in your file}`."}
    )
    val_fraction: float = field(
        default=0.05,
        metadata={
            "help": "Validation share, split by prompt (all replies of a prompt on one side), seeded; ignored when "
            "`val_source` is set.",
            "rule": Rule(FRACTION, "in [0, 1)"),
        },
    )
    val_source: str | None = field(
        default=None, metadata={"help": "A separate validation source (same forms as `source`)."}
    )
    train_source: str | None = field(
        default=None,
        metadata={
            "help": "Train on this file (canonical rows) instead of `source`, whose held-out `val_fraction` of prompts "
            "stays the validation side (the online loop's refreshed training data); null: train on `source`."
        },
    )
    val_split: str | None = field(default=None, metadata={"help": "Validation from another split of the same source."})
    max_examples: int | None = field(
        default=None,
        metadata={
            "help": "Keep the first N examples after a seeded shuffle, for quick runs; null: all.",
            "rule": Rule(or_null(at_least(1)), "an integer >= 1, or null (all)"),
        },
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata={
            "help": "false: a bad row stops the run naming file and row; true: bad rows are skipped and counted by "
            "reason."
        },
    )
    languages: list[str] = field(default_factory=lambda: ["en"], metadata={"help": "oasst1 language filter."})
    label_weights: dict[str, float] = field(
        default_factory=lambda: {"quality": 1.0},
        metadata={
            "help": "oasst1 absolute score = weighted mean of these per-message labels (a negative weight w adds "
            "abs(w) x (1 - value)).",
            "rule": Rule(lambda v, c: all(math.isfinite(w) for w in v.values()), "finite numbers"),
        },
    )
    system_prompt: str | None = field(default=None, metadata={"help": "A system turn prepended to every prompt."})
    fallback_template: str = field(
        default="{role}: {content}\n",
        metadata={
            "help": "Prompt rendering for tokenizers without a chat template: `{role}` and `{content}` per message."
        },
    )
    max_length: int = field(
        default=512,
        metadata={
            "help": "Token budget of prompt + reply (replies keep their start).",
            "rule": Rule(lambda v, c: v > c.data.max_prompt_length, "above data.max_prompt_length (room for a reply)"),
        },
    )
    max_prompt_length: int = field(
        default=256,
        metadata={
            "help": "Prompts longer than this keep their last tokens.",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
