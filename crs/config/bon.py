"""The ``bon:`` section: a best-of-n study (``crs pool``, ``crs bon``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from crs.config.eval import EvalRewardSourceConfig
from crs.config.fields import Rule, at_least, distinct_and_not_empty, finite


def _names_a_bon_source(name: str, config: Any) -> bool:
    """A ``bon.rewards`` name, once there are two sources to weigh (one source alone has no weight grid)."""
    sources = [source.name for source in config.bon.rewards]
    return len(sources) < 2 or name in sources


def _bon_sources(config: Any) -> str:
    names = ", ".join(source.name for source in config.bon.rewards)
    return f"one of the bon.rewards names ({names}); the weight grid needs both"


@dataclass
class BestOfNConfig:
    """A best-of-n study: ``crs pool`` answers every prompt ``samples`` times with one policy; ``crs bon``
    scores that pool once with every reward source and judges the best-of-n pick of every scorer."""

    policy: str = field(
        default="outputs/sft", metadata={"help": "The policy that answers (`crs pool`): a model name or a crs run."}
    )
    samples: int = field(
        default=16,
        metadata={
            "help": "Replies per prompt (m), sampled with `eval_pred`'s decoding settings.",
            "rule": Rule(at_least(2), "an integer >= 2"),
        },
    )
    splits: list[str] = field(
        default_factory=lambda: ["eval", "rl"],
        metadata={
            "help": "The prompt splits of `data.source` the pool answers, one after the other (the demo's eval and rl "
            "splits: no reward model trained on them; best-of-n trains nothing); []: `data.split` alone."
        },
    )
    batch_size: int = field(
        default=64,
        metadata={
            "help": "Prompts decoded at once (`crs pool`): large batches amortise the weight reads.",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
    pool: str = field(
        default="outputs/bon_pool",
        metadata={
            "help": "The pool `crs bon` judges: a `crs pool` run, a folder of AlpacaEval outputs files (one per "
            "sample), or one JSON / JSONL file of `{instruction, outputs: [...]}` rows."
        },
    )
    rewards: list[EvalRewardSourceConfig] = field(
        default_factory=list,
        metadata={"help": "The reward sources that score every reply of the pool (each a scorer of its own)."},
    )
    preference_source: str = field(
        default="preference",
        metadata={
            "help": "The `bon.rewards` name that gets weight w.",
            "rule": Rule(_names_a_bon_source, _bon_sources),
        },
    )
    absolute_source: str = field(
        default="absolute",
        metadata={
            "help": "The `bon.rewards` name that gets weight 1 - w.",
            "rule": Rule(_names_a_bon_source, _bon_sources),
        },
    )
    weights: list[float] = field(
        default_factory=lambda: [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0],
        metadata={
            "help": "Preference weights w of the combined scorers `w * z(preference) + (1 - w) * z(absolute)`. A w "
            "above 1 subtracts the second source: with `absolute_source: length`, w = 1.25 scores 1.25 x z(RM) - 0.25 "
            "x z(length) (RM minus length).",
            "rule": (
                Rule(
                    finite,
                    "a finite number (the preference source's weight; the absolute source gets 1 - w)",
                    each=True,
                ),
                Rule(distinct_and_not_empty, "a non-empty list of distinct weights"),
            ),
        },
    )
    strategies: list[Literal["sum", "sum_per_prompt", "conservative"]] = field(
        default_factory=lambda: ["sum", "sum_per_prompt", "conservative"],
        metadata={
            "help": "How the sources are combined into scorers (`rl.combine`'s strategies): `sum`: the `w=<w>` scorers "
            "above; `sum_per_prompt`: one scorer per weight, `per_prompt w=<w>`, each source standardised within each "
            "prompt's m replies; `conservative`: `min` and `mean-<k>std` (k: `rl.conservative_k`) of every "
            "`bon.rewards` source's z-score, weights not used. The report's strategies table compares each with "
            "`sum`'s best weight.",
            "rule": Rule(
                lambda v, c: len(set(v)) == len(v) and "sum" in v,
                "a list of distinct strategies that includes sum (the reference)",
            ),
        },
    )
    judge: str = field(
        default="auto",
        metadata={
            "help": "The judge of every pick: a reward source path (`gold`, `python:module:function`, an RM run); "
            "AlpacaEval annotation files (a `.json` or a glob) with a verdict on every pool reply against a reference "
            "reply; or `auto`: `gold` when every prompt is the demo dataset's, else an error (a best-of-n study needs "
            "a judge)."
        },
    )
    n_boot: int = field(
        default=1000,
        metadata={
            "help": "Paired bootstrap rounds over prompts (the same prompts for every scorer).",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
