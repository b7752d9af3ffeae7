"""The configuration: typed sections, YAML subsets, CLI overrides, validation.

``config.yaml`` holds a ``default`` block and named subsets (``sft``, ``rm_preference``,
``rl_crs``, ...). A subset is deep-merged over ``default``, then ``--set key.sub=value``
overrides are applied, then the result is checked against the dataclasses below, which
are the single list of every key, its type and its default (as Hugging Face splits a
*Config* from the *Trainer* that consumes it).

Errors in a config are :class:`ConfigError`; the stage scripts print them as one line
and exit with code 2.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config.yaml"


class ConfigError(ValueError):
    """A problem in the user's configuration; the message says what to change."""


# --------------------------------------------------------------------------- sections


@dataclass
class RunConfig:
    """Naming, output location, seeding and logging of one stage run."""

    name: str = "run"  # the run directory is <output_dir>/<name><name_suffix>
    output_dir: str = "outputs"
    seed: int = 42
    report_to: Literal["none", "tensorboard", "wandb"] = "none"
    logging_steps: int = 10


@dataclass
class LoraConfig:
    """LoRA adapter settings (peft)."""

    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # "all-linear" = every linear layer except the output head (peft's shorthand).
    target_modules: Any = "all-linear"
    merge: bool = False  # also save <run>/merged with the adapter folded into the base


@dataclass
class ModelConfig:
    """Which model to load and how: name, precision, quantization, LoRA."""

    # A hub id, a local directory (a model, or a crs run dir), or an embedded name:
    # embedded:smollm2-135m-instruct, embedded:minilm-l6.
    name: str = "embedded:smollm2-135m-instruct"
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    quantization: Literal["none", "8bit", "4bit"] = "none"
    cache_dir: str | None = None  # where embedded GGUF models are dequantized (default ~/.cache/crs)
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class DataConfig:
    """Where examples come from and how they are turned into token ids."""

    # embedded:crs-demo, a local file (.jsonl/.json/.csv/.parquet), or hub:<dataset id>.
    source: str = "embedded:crs-demo"
    # How rows become canonical examples: auto picks crs_demo for the embedded data and
    # canonical for files; or one of the built-in adapters.
    adapter: Literal[
        "auto", "canonical", "crs_demo", "instruction", "oasst1", "hh_rlhf", "shp", "ultrafeedback"
    ] = "auto"
    split: str = "train"  # hub split name; for embedded:crs-demo one of sft | rm | rl | eval
    hub_config: str | None = None  # a hub dataset's configuration name, if it has several
    columns: dict[str, str] = field(default_factory=dict)  # canonical name -> column in the source
    val_fraction: float = 0.05  # held out by prompt, seeded; ignored when val_source is set
    val_source: str | None = None
    val_split: str | None = None
    max_examples: int | None = None  # keep the first N (after a seeded shuffle); for quick runs
    skip_bad_rows: bool = False  # False: a bad row stops the run naming file and row
    languages: list[str] = field(default_factory=lambda: ["en"])  # oasst1 language filter
    # oasst1 absolute score = weighted mean of these per-message labels.
    label_weights: dict[str, float] = field(default_factory=lambda: {"quality": 1.0})
    system_prompt: str | None = None  # prepended as a system turn to every prompt
    # Used when a tokenizer has no chat template: {role} and {content} per message.
    fallback_template: str = "{role}: {content}\n"
    max_length: int = 512  # prompt + reply tokens
    max_prompt_length: int = 256  # prompts longer than this keep their last tokens


@dataclass
class TrainConfig:
    """Optimisation settings for the supervised stages (SFT and reward models)."""

    learning_rate: float = 2e-4
    num_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_epochs
    batch_size: int = 8
    eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lr_scheduler: str = "cosine"
    eval_steps: int = 50
    save_steps: int = 100
    save_total_limit: int = 2


@dataclass
class RewardModelConfig:
    """Reward-model loss settings (``rm_train.py``)."""

    loss: Literal["pairwise", "absolute"] = "pairwise"
    # pairwise: Bradley-Terry over all C(K,2) ordered pairs of a ranking, averaged per prompt.
    max_replies: int = 4  # caps K
    # Which replies a longer ranking keeps: "spread" = evenly spaced ranks, best and worst
    # included (keeps the quality range); "top" = the first max_replies.
    reply_selection: Literal["spread", "top"] = "spread"
    l2_coef: float = 0.0  # small L2 penalty on rewards keeps them centred
    margin_scale: float = 0.0  # margin = margin_scale * score gap, where the data has scores
    # absolute: regression of sigmoid(logit) onto a score in [0, 1].
    abs_loss: Literal["bce", "mse"] = "bce"
    # Start the head's bias at the mean training score (sigmoid(bias) = mean). From 0 it
    # takes ~1/lr steps to get there, and until then training fits the level, not the ranking.
    init_bias_to_mean: bool = True
    threshold: float = 0.4  # scores <= threshold are the under-represented bucket
    loss_weight_strength: float = 0.0  # > 0: those rows get weight strength * N / N_below
    undersample: bool = False  # stratified under-sampling of over-represented score bins
    undersample_bins: int = 5
    undersample_max_ratio: float = 2.0  # a bin keeps at most ratio x the smallest bin's rows


@dataclass
class RewardSourceConfig:
    """One term of the combined reward: weight * normalize(source(prompt, reply))."""

    name: str = "reward"
    # A reward-model run dir (rm_train.py output), a model path/hub id, or "gold" (the
    # simulated annotator's noise-free utility; the demo judge).
    path: str = ""
    weight: float = 1.0  # 0 skips loading this source
    normalize: Literal["none", "zscore"] = "zscore"


@dataclass
class RLConfig:
    """PPO and reward-combination settings (``rl_train.py``); every trick has a key."""

    policy: str | None = None  # the SFT run dir; None = model.name
    rewards: list[RewardSourceConfig] = field(default_factory=list)
    reward_clip: float | None = None  # clip the combined score to [-c, c] (study: 4)
    missing_eos_penalty: float | None = None  # added when a reply ends without EOS (common: -1)
    steps: int = 100  # PPO iterations (one rollout batch each)
    batch_size: int = 8  # prompts per rollout
    mini_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    ppo_epochs: int = 4
    learning_rate: float = 1e-4
    max_grad_norm: float = 1.0
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_p: float = 1.0
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    kl_coef: float = 0.05
    adaptive_kl: bool = False
    target_kl: float = 6.0
    kl_horizon: int = 10000
    whiten_advantages: bool = True
    early_stop_kl: float | None = None  # stop the PPO epochs of a step when approx KL exceeds it
    value_model: str = "head"  # "head" (value head on the policy) or a reward-model run dir
    max_nonfinite_in_row: int = 3
    save_steps: int = 25
    sample_every: int = 25  # generate on held-out prompts every N steps (0 = never)
    num_sample_prompts: int = 4
    # Reuse sampling's log-probs/values as the rollout's (saves a forward; exact in fp32, ~0.04 nats/token off in bf16).
    logprobs_from_sampling: bool = False
    # When a rollout batch is one mini-batch of one micro-batch, take the old log-probs and
    # values from the first update forward (same weights, so exact) instead of a forward of their own.
    old_logprobs_from_update: bool = True
    adam_eps: float = 1e-5  # the reference PPO code's Adam epsilon (PyTorch's default is 1e-8)
    anneal_lr: bool = False  # decay the learning rate linearly to 0 over rl.steps
    save_total_limit: int = 2  # keep the last N checkpoints (0 = all)
    merged_sampling: bool = True  # sample from a copy with the LoRA adapter folded in (faster; one more copy of the weights)
    packed_sampling: bool = True  # CPU: that copy's weights pre-packed for MKL/oneDNN (faster small-batch matmuls; one more copy)


@dataclass
class EvalModelConfig:
    """A model to generate eval predictions with: a name for the tables and a path."""

    name: str = ""
    path: str = ""


@dataclass
class EvalPredConfig:
    """Prediction generation (``rl_eval_pred.py``)."""

    models: list[EvalModelConfig] = field(default_factory=list)
    do_sample: bool = False
    num_runs: int = 1  # sampling runs per prompt (the study used 3 with top_p 0.9, T 0.8)
    temperature: float = 0.8
    top_p: float = 0.9
    max_new_tokens: int = 128
    batch_size: int = 16


@dataclass
class EvalRewardingConfig:
    """Scoring and comparison of predictions (``rl_eval_rewarding.py``)."""

    predictions_dir: str = ""  # an rl_eval_pred.py run dir
    rewards: list[RewardSourceConfig] = field(default_factory=list)
    # Combined scorers at these preference weights w: w * preference + (1 - w) * absolute.
    combined_weights: list[float] = field(default_factory=lambda: [0.25, 0.625])
    judge: Literal["gold", "none"] = "gold"
    reference_model: str | None = None  # the leaderboard's baseline (AlpacaEval's reference)
    human_rankings: str | None = None  # optional JSON file of per-prompt rankings from people
    n_boot: int = 1000
    batch_size: int = 32


@dataclass
class CRSConfig:
    """The whole resolved configuration of one stage run."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rm: RewardModelConfig = field(default_factory=RewardModelConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval_pred: EvalPredConfig = field(default_factory=EvalPredConfig)
    eval_rewarding: EvalRewardingConfig = field(default_factory=EvalRewardingConfig)
    # Filled in by load_config, not by users.
    subset: str = ""
    name_suffix: str = ""

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


# --------------------------------------------------------------------------- loading


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with a clear error when that fails."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("default", {}), dict):
        raise ConfigError(f"{path}: expected a mapping with a 'default' block and named subsets")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``override`` merged into ``base`` key by key; lists are replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"rl.kl_coef=0.1"`` -> (["rl", "kl_coef"], 0.1); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_override(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``data[p0][p1]... = value`` in place, creating intermediate dicts."""
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def load_config(
    subset: str,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    name_suffix: str = "",
) -> CRSConfig:
    """Resolve ``default`` + ``subset`` + ``--set`` overrides into a validated CRSConfig."""
    path = Path(config_path) if config_path else DEFAULT_CONFIG_PATH
    raw = read_yaml(path)
    subsets = sorted(k for k in raw if k != "default")
    if subset == "default" or subset not in raw:
        raise ConfigError(
            f"unknown config subset {subset!r} in {path}; valid subsets: {', '.join(subsets)}"
        )
    subset_block = raw[subset] or {}
    if not isinstance(subset_block, dict):
        raise ConfigError(f"{path}: subset {subset!r} must be a mapping")
    merged = deep_merge(raw.get("default") or {}, subset_block)
    for text in overrides or []:
        parts, value = parse_override(text)
        apply_override(merged, parts, value)
    config = build_dataclass(CRSConfig, merged, "")
    config.subset = subset
    config.name_suffix = name_suffix
    return config


def save_resolved_config(config: CRSConfig, path: str | Path) -> None:
    """Write the fully resolved config (reload it with ``--config PATH --config_subset <subset>``)."""
    from crs.io import write_text_atomic

    data = config.to_dict()
    subset = data.pop("subset")
    data.pop("name_suffix")
    text = yaml.safe_dump({"default": {}, subset: data}, sort_keys=False)
    write_text_atomic(path, text)


# --------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it (lightly coerced)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return build_dataclass(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected bool (true/false), got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected int, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 reads 5e-5 as a string; accept numeric strings for float keys.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected str, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported type {_type_name(tp)}")  # a bug in this module


def build_dataclass(cls: type, data: dict[str, Any], path: str) -> Any:
    """Build ``cls`` from ``data``, naming unknown keys (with the closest valid one) and bad types."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.5)
            hint = f"; did you mean '{(path + '.') if path else ''}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{key_path}'{hint}")
        kwargs[key] = _coerce(value, hints[key], key_path)
    return cls(**kwargs)
