"""The whole configuration of one stage run: every section under its key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crs.config.bon import BestOfNConfig
from crs.config.data import DataConfig
from crs.config.eval import EvalPredConfig, EvalRewardingConfig
from crs.config.model import ModelConfig
from crs.config.reward_model import RewardModelConfig
from crs.config.rl import RLConfig
from crs.config.run import RunConfig
from crs.config.serve import ServeConfig
from crs.config.study import OnlineConfig, SweepConfig
from crs.config.train import TrainConfig


@dataclass
class CRSConfig:
    """The whole resolved configuration of one stage run."""

    run: RunConfig = field(
        default_factory=RunConfig, metadata={"help": "Naming, output location, seeding and logging."}
    )
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The model a stage trains or loads."})
    data: DataConfig = field(
        default_factory=DataConfig, metadata={"help": "The stage's data source and token budgets."}
    )
    train: TrainConfig = field(
        default_factory=TrainConfig, metadata={"help": "Optimiser and schedule of SFT and reward-model training."}
    )
    rm: RewardModelConfig = field(default_factory=RewardModelConfig, metadata={"help": "Reward-model losses."})
    rl: RLConfig = field(
        default_factory=RLConfig, metadata={"help": "The RL stage (PPO, GRPO, RLOO, DPO) and the combined reward."}
    )
    eval_pred: EvalPredConfig = field(default_factory=EvalPredConfig, metadata={"help": "Prediction generation."})
    eval_rewarding: EvalRewardingConfig = field(
        default_factory=EvalRewardingConfig, metadata={"help": "Scoring and comparison."}
    )
    sweep: SweepConfig = field(default_factory=SweepConfig, metadata={"help": "Sweeps over reward weights and seeds."})
    online: OnlineConfig = field(
        default_factory=OnlineConfig, metadata={"help": "Iterated online RLHF: rounds of labelling and training."}
    )
    bon: BestOfNConfig = field(
        default_factory=BestOfNConfig, metadata={"help": "Best-of-n studies on one pool of replies."}
    )
    serve: ServeConfig = field(
        default_factory=ServeConfig,
        metadata={"help": "The combined reward served over HTTP (`crs serve-reward`)."},
    )
    subset: str = field(
        default="", metadata={"help": "Filled in by `load_config` from `--config_subset`; not set in YAML."}
    )
    name_suffix: str = field(
        default="", metadata={"help": "Filled in by `load_config` from `--name_suffix`; not set in YAML."}
    )
    config_path: str = field(
        default="", metadata={"help": "Filled in by `load_config`: the YAML file read; not set in YAML."}
    )

    @property
    def run_name(self) -> str:
        """The run's name: ``run.name`` plus the CLI's ``--name_suffix``."""
        return f"{self.run.name}{self.name_suffix}"

    @property
    def run_dir(self) -> Path:
        """Where this run writes everything."""
        return Path(self.run.output_dir) / self.run_name

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what ``config.resolved.yaml`` holds)."""
        return dataclasses.asdict(self)
