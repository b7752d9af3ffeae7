"""The studies built from the stages: ``sweep`` (reward weights x seeds) and ``online`` (iterated online RLHF)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from crs.config.eval import EvalModelConfig, EvalRewardSourceConfig
from crs.config.fields import UNIT, Rule, above, at_least, distinct_and_not_empty


def _arm_names_ok(arms: list[SweepArmConfig], config: Any) -> bool:
    """Distinct arm names, each usable as a run directory's name."""
    names = [arm.name for arm in arms]
    return len(set(names)) == len(names) and all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", n) for n in names)


# The sweep names each run's directory and seed itself: an arm that set them would train where the sweep does not look.
_SWEEP_OWNED_KEYS = ("run.name", "run.output_dir", "run.seed")


@dataclass
class SweepArmConfig:
    """One arm of a strategy comparison (``sweep.arms``): an RL subset, optionally at a weight, with overrides."""

    name: str = field(default="", metadata={"help": "The arm's name in tables and run names (`<name>_s<seed>`)."})
    subset: str | None = field(default=None, metadata={"help": "Its RL subset; null: `sweep.base_subset`."})
    weight: float | None = field(
        default=None,
        metadata={
            "help": "The preference weight w (the absolute source gets 1 - w), as in `sweep.weights`; null: the "
            "subset's own weights.",
            "rule": Rule(lambda v, c: v is None or 0 <= v <= 1, "null or in [0, 1]"),
        },
    )
    set: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "`--set` overrides of its RL subset, dotted key to value, e.g. `{rl.combine: conservative}`.",
            "rule": Rule(
                lambda v, c: not set(v) & set(_SWEEP_OWNED_KEYS),
                f"overrides other than {', '.join(_SWEEP_OWNED_KEYS)} (the sweep sets those)",
            ),
        },
    )


@dataclass
class SweepConfig:
    """A study over reward weights and seeds (``crs sweep``): RL, predictions and scoring per run."""

    base_subset: str = field(default="rl_crs", metadata={"help": "The RL subset every run of the sweep starts from."})
    preference_source: str = field(
        default="preference", metadata={"help": "The base subset's `rl.rewards` name that gets weight w."}
    )
    absolute_source: str = field(
        default="absolute", metadata={"help": "The base subset's `rl.rewards` name that gets weight 1 - w."}
    )
    weights: list[float] = field(
        default_factory=lambda: [0.0, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0],
        metadata={
            "help": "Preference weights w the RL runs train at (the reference study's grid and both ends); [] with "
            "`sweep.bon_subset`: the best-of-n optimum and both ends of its grid.",
            "rule": (
                Rule(UNIT, "in [0, 1] (the preference source's weight; the absolute source gets 1 - w)", each=True),
                # one run directory per weight and seed: a weight given twice would train one run twice
                Rule(
                    lambda v, c: len(set(v)) == len(v) and (bool(v) or bool(c.sweep.bon_subset) or bool(c.sweep.arms)),
                    "a list of distinct weights (each names one run), not empty unless sweep.bon_subset picks them or "
                    "sweep.arms replaces them",
                ),
            ),
        },
    )
    arms: list[SweepArmConfig] = field(
        default_factory=list,
        metadata={
            "help": "A strategy comparison instead of a weight curve: each arm an RL subset (its `rl.combine`, "
            "sources, reward models), optionally at a weight and with overrides, trained at every seed and judged like "
            "the weights are; `sweep.weights` is then not used. []: the weight sweep.",
            "rule": Rule(
                _arm_names_ok, "arms with distinct names of letters, digits, '.', '_' or '-' (each names its runs)"
            ),
        },
    )
    pool_subset: str | None = field(
        default=None,
        metadata={
            "help": "A `crs pool` subset the sweep makes first (skipped when finished): the best-of-n study's pool."
        },
    )
    bon_subset: str | None = field(
        default=None,
        metadata={
            "help": "A `crs bon` subset the sweep runs first, over its whole weight grid, into `<sweep>/bon`; the "
            "report then shows best-of-n beside RL at every RL weight. null: RL only."
        },
    )
    seeds: list[int] = field(
        default_factory=lambda: [1, 2, 3],
        metadata={
            "help": "Training seeds (`run.seed`) per weight.",
            "rule": Rule(distinct_and_not_empty, "a non-empty list of distinct seeds (each names one run)"),
        },
    )
    jobs: int = field(
        default=1,
        metadata={
            "help": "RL runs side by side, each with its share of the CPU cores and, with several GPUs, a GPU of "
            "its own.",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
    eval_subset: str = field(
        default="eval_pred", metadata={"help": "The subset whose data and `eval_pred` settings make the predictions."}
    )
    reference: EvalModelConfig = field(
        default_factory=lambda: EvalModelConfig(name="sft", path="outputs/sft"),
        metadata={"help": "The model every run is compared with (win rates against it)."},
    )
    judge: str = field(
        default="auto",
        metadata={
            "help": "The judge: a reward source path (`gold`, `python:module:function`, an RM run), or `auto`: `gold` "
            "when every eval prompt is the demo dataset's, else the first of `sweep.rewards`."
        },
    )
    rewards: list[EvalRewardSourceConfig] = field(
        default_factory=list, metadata={"help": "Reward models that judge the runs too (the same curve under each)."}
    )
    n_boot: int = field(
        default=1000,
        metadata={
            "help": "Rounds for the 95% intervals over seeds and prompts (a Student-t seed level, a paired prompt "
            "bootstrap; docs/study.md).",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )


@dataclass
class OnlineConfig:
    """Iterated online RLHF (``crs online``): sample, label, refresh both reward models, continue RL; round by round."""

    base_subset: str = field(
        default="rl_crs", metadata={"help": "The RL subset of every round (algorithm, rewards, sampling)."}
    )
    preference_rm_subset: str = field(
        default="rm_preference", metadata={"help": "The subset that trained the preference reward model."}
    )
    absolute_rm_subset: str = field(
        default="rm_absolute", metadata={"help": "The subset that trained the absolute-score reward model."}
    )
    preference_source: str = field(
        default="preference", metadata={"help": "The base subset's `rl.rewards` name of the preference RM."}
    )
    absolute_source: str = field(
        default="absolute", metadata={"help": "The base subset's `rl.rewards` name of the absolute RM."}
    )
    rounds: int = field(
        default=3,
        metadata={
            "help": "Rounds in all; round 0 is an ordinary RL run on the original reward models.",
            "rule": Rule(at_least(1), "an integer >= 1 (round 0 is the first)"),
        },
    )
    rl_steps: int = field(
        default=12,
        metadata={"help": "RL steps (`rl.steps`) per round.", "rule": Rule(at_least(1), "an integer >= 1")},
    )
    prompts_per_round: int = field(
        default=32,
        metadata={
            "help": "M: fresh prompts (never labelled before) whose replies are labelled each round.",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
    replies_per_prompt: int = field(
        default=4,
        metadata={
            "help": "K: replies sampled per prompt from the current policy, ranked and scored.",
            "rule": Rule(at_least(2), "an integer >= 2 (a ranking needs two replies)"),
        },
    )
    probe_prompts: int = field(
        default=16,
        metadata={
            "help": "Further fresh prompts per round, answered K times and judged only: the reward models' accuracy on "
            "the policy's replies.",
            "rule": Rule(at_least(0), "an integer >= 0"),
        },
    )
    labeller: Literal["simulated", "file"] = field(
        default="simulated",
        metadata={
            "help": "`simulated`: crs's annotator (rankings with its noise, 1-5 scores from its rater panel); `file`: "
            "crs writes `round_N/to_label.jsonl` and reads `round_N/labels/rankings.jsonl` and `scores.jsonl` that you "
            "provide."
        },
    )
    ranking_noise: float = field(
        default=0.05,
        metadata={
            "help": "The simulated annotator's ranking noise (the demo data's).",
            "rule": Rule(at_least(0), ">= 0"),
        },
    )
    label_wait_minutes: float = field(
        default=0.0,
        metadata={
            "help": "`file` labeller: wait this long for the label files (polling); 0: stop and say what to write.",
            "rule": Rule(at_least(0), ">= 0"),
        },
    )
    rm_epochs: float = field(
        default=2.0,
        metadata={
            "help": "Epochs of each reward model's continued training per round, over new + replayed labels.",
            "rule": Rule(above(0), "> 0"),
        },
    )
    replay_ratio: float = field(
        default=1.0,
        metadata={
            "help": "Earlier labelled examples replayed per new one (seeded draw from the original training data and "
            "earlier rounds); 0: none.",
            "rule": Rule(at_least(0), ">= 0"),
        },
    )
    baseline: bool = field(
        default=True,
        metadata={
            "help": "Also run the fair baseline: the same number of labels, from the original distribution, given to "
            "the round-0 reward models up front, then one RL run from the start for the loop's total steps."
        },
    )
    baseline_split: str = field(
        default="sft",
        metadata={"help": "The data split whose labelled replies the baseline spends (never seen by the RMs)."},
    )
    eval_subset: str = field(
        default="eval_pred", metadata={"help": "The subset whose data and `eval_pred` settings make the predictions."}
    )
    reference: EvalModelConfig = field(
        default_factory=lambda: EvalModelConfig(name="sft", path="outputs/sft"),
        metadata={"help": "The model every round is compared with (win rates against it)."},
    )
    judge: str = field(
        default="auto",
        metadata={
            "help": "The judge of win rates and RM accuracy: a reward source path (`gold`, `python:module:function`, "
            "an RM run), or `auto`: `gold` when every prompt is the demo dataset's (else name one)."
        },
    )
    n_boot: int = field(
        default=1000,
        metadata={"help": "Bootstrap rounds for the 95% intervals.", "rule": Rule(at_least(1), "an integer >= 1")},
    )
