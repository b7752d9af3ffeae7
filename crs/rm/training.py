"""The reward-model stage (``rm_train.py``, :func:`train_reward_model`): a pairwise (K-wise), an absolute,
a joint or a disentangled loss.

1. load ``ranking`` examples (pairwise and disentangled losses), ``absolute`` ones (absolute loss), or both
   (joint loss: one encoder, a preference head and an absolute head) (:mod:`crs.rm.training_data`);
2. a sequence classifier on ``model.name`` (one output; two for joint, and for disentangled: a quality and
   a length head, :mod:`crs.rm.disentangled_heads`), with LoRA or fully fine-tuned, fresh or continuing a
   finished RM run (``rm.init_from``);
3. transformers' ``Trainer`` with our losses (:mod:`crs.rm.reward_trainer`, :mod:`crs.rm.reward_losses`):
   a ranking batch is the replies of several prompts, flattened, with the number of replies
   per prompt (a joint batch: those, then absolute rows; :mod:`crs.rm.collators`);
4. validation metrics (:mod:`crs.rm.rm_evaluation`, :mod:`crs.rm.metrics`) before, during and after training;
5. the model (a disentangled RM: its quality head alone), ``metrics.json``, ``reward_stats.json`` (the RL
   stage z-scores with them), ``length_calibration.json`` (the reward's trend in reply length on the same
   replies: :mod:`crs.rm.length_calibration`) and ``rm_format.json`` (how the RM tokenizes) in the run
   directory (:mod:`crs.rm.rm_saving`).

Scoring a trained RM (:class:`crs.rm.scorer.RewardScorer`) goes through the very same
:meth:`RMFormat.encode` as the training collators.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crs.config import ConfigError, CRSConfig, ModelConfig, RewardModelConfig
from crs.data.schema import AbsoluteExample, RankingExample
from crs.models.hf_trainer import (
    TRAIN_LOG_FILE,
    JsonlLogCallback,
    SealCheckpointCallback,
    StartMetricsCallback,
    logged_before_training,
    resume_checkpoint,
    training_arguments,
)
from crs.models.loading import load_sequence_classifier, load_tokenizer
from crs.models.lora import add_lora, load_adapter_weights
from crs.models.manifest import RUN_MANIFEST, read_run_manifest
from crs.models.precision import resolve_dtype, upcast_trainable
from crs.models.resolution import base_location, same_model
from crs.models.saving import plain_base_before_training
from crs.models.sharding import gathered_state_dict
from crs.processes import rank_and_world
from crs.rm.collators import COLLATORS, ListDataset, padded_cost
from crs.rm.disentangled_heads import HEAD_LABELS, keep_quality_head
from crs.rm.length_calibration import LengthCalibration
from crs.rm.reward_trainer import TWO_HEADS, RewardTrainer
from crs.rm.rm_evaluation import (
    evaluate_reward_model,
    own_length_calibration,
    reward_stats_record,
    view_replies,
    view_rewards,
)
from crs.rm.rm_format import RM_FORMAT_FILE, RMFormat, read_rm_files
from crs.rm.rm_saving import save_rm_run
from crs.rm.scorer import RewardScorer
from crs.rm.training_data import TrainingData, training_data
from crs.runs import is_finished, set_seed

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the model: fresh, or continuing a run


def trainable_head(model: Any) -> torch.nn.Linear | None:
    """The classifier's trainable output layer (under LoRA: peft's trained copy), or None."""
    outputs = getattr(getattr(model, "config", None), "num_labels", 1)
    found = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and m.out_features == outputs and m.weight.requires_grad
    ]
    # A LoRA A matrix of rank == outputs has the same shape: a layer named like a head comes first.
    named = [m for name, m in found if {"score", "classifier", "out_proj"} & set(name.split("."))]
    return (named or [m for _, m in found] or [None])[0]


def init_head_bias_to_mean(model: Any, rows: list[tuple[AbsoluteExample, float]], output: int = 0) -> float | None:
    """Set the trainable head's bias (of ``output``: 1 is a joint RM's absolute head) so the
    untrained model predicts the mean score.

    ``sigmoid(bias) = weighted mean target``. Returns the bias, or None when the head has
    no bias (e.g. Llama-style ``score`` layers), which is left as it is.
    """
    head = trainable_head(model)
    if head is None or head.bias is None:
        logger.info("rm.init_bias_to_mean: the head has no trainable bias; left as is")
        return None
    scores = torch.tensor([ex.score for ex, _ in rows], dtype=torch.float64)
    weights = torch.tensor([w for _, w in rows], dtype=torch.float64)
    mean = float((scores * weights).sum() / weights.sum())
    bias = float(torch.logit(torch.tensor(mean).clamp(1e-3, 1 - 1e-3)))
    with torch.no_grad():
        head.bias[output].fill_(bias)
    return bias


@dataclass(frozen=True)
class InitRun:
    """The finished RM run ``rm.init_from`` names: where it is, its loss, whether it saved a full model."""

    path: Path
    loss_kind: str
    full_model: bool


def check_init_from(cfg: CRSConfig) -> InitRun:
    """The run ``rm.init_from`` names, or a one-line ConfigError saying why this run cannot start from it.

    It must be a finished reward-model run trained on ``model.name``; a joint RM continues
    only as joint and a one-head RM only as one (the head's shape), and a disentangled RM
    starts fresh (a saved RM has one head, it trains two); a full model needs
    ``model.lora.enabled: false`` (a fresh adapter on it would make it this run's base).
    """
    given, name = cfg.rm.init_from, cfg.model.name
    if cfg.rm.loss == "disentangled":
        raise ConfigError(
            f'rm.init_from={given}: rm.loss=disentangled starts its two heads fresh; set rm.init_from="" '
            "(or continue this run's saved one-head RM with rm.loss=pairwise)"
        )
    path = Path(given).expanduser().resolve()
    manifest = read_run_manifest(path) if path.is_dir() else None
    if manifest is None or manifest.get("kind") != "reward_model" or not (path / RM_FORMAT_FILE).is_file():
        raise ConfigError(
            f"rm.init_from={given}: not a reward-model run "
            f"(no {RUN_MANIFEST} of kind reward_model beside {RM_FORMAT_FILE}); "
            'give the directory of a finished rm_train.py run, or "" to start fresh'
        )
    if not is_finished(path):
        raise ConfigError(
            f"rm.init_from={given}: that run has not finished; finish it (rm_train.py --resume) or give a finished run"
        )
    base = base_location(path, manifest["base"])
    if not same_model(base, name):
        raise ConfigError(
            f"rm.init_from={given} was trained on {base}, not on model.name={name}: set model.name to {base}, "
            f"or give a run trained on {name}"
        )
    loss_kind = read_rm_files(path)[2] or "pairwise"
    if (loss_kind == "joint") != (cfg.rm.loss == "joint"):
        raise ConfigError(
            f"rm.init_from={given} is a {loss_kind} RM and rm.loss is {cfg.rm.loss}: "
            "a joint RM (two heads) continues only "
            "with rm.loss=joint, a pairwise or absolute one only with pairwise or absolute; "
            "change rm.loss or give another run"
        )
    if manifest.get("full_model") and cfg.model.lora.enabled:
        raise ConfigError(
            f"rm.init_from={given} saved a full model: continue it with model.lora.enabled=false "
            f'(or set model.name={given} and rm.init_from="" to train a fresh adapter on top of it)'
        )
    return InitRun(path, loss_kind, bool(manifest.get("full_model")))


def disentangled_head(model: Any) -> torch.nn.Linear:
    """A disentangled RM's trainable two-output layer (its quality and length rows), or a ConfigError."""
    head = trainable_head(model)
    if head is None:
        raise ConfigError(
            f"rm.loss=disentangled: no trainable two-output head found on {type(model).__name__}; "
            "use a sequence-classification model whose head is a linear layer (e.g. score or classifier)"
        )
    return head


def build_reward_model(
    model_cfg: ModelConfig,
    tokenizer: Any,
    num_labels: int = 1,
    init: InitRun | None = None,
    head_labels: dict[int, str] | None = None,
    plain_base: str | None = None,
) -> Any:
    """A trainable classifier with ``num_labels`` outputs (2: a joint or a disentangled RM): LoRA (head
    trained in full) or full fine-tuning.

    With ``init`` (``rm.init_from``) it starts from that run's weights, head included: under
    LoRA its adapter is loaded into this run's fresh one (same settings); fully fine-tuned,
    the run's model (its adapter merged in, if any) is the starting model itself. Trainable
    weights are kept in fp32 either way; forwards run under autocast. ``head_labels`` names the
    outputs in ``config.json`` (default, for two: a joint RM's preference and absolute heads).
    ``plain_base``: where a LoRA model's base loads from (:func:`crs.models.saving.plain_base_before_training`).
    """
    full_init = init is not None and not model_cfg.lora.enabled
    location = str(init.path) if full_init else plain_base or model_cfg.name
    model = load_sequence_classifier(location, model_cfg, num_labels=num_labels, to_train=True)
    model.config.pad_token_id = tokenizer.pad_token_id  # the collator pads with it; the head looks for it
    if num_labels == 2:  # named in config.json, for whoever loads a two-head RM outside crs
        labels = head_labels or {0: "preference", 1: "absolute"}
        model.config.id2label, model.config.label2id = labels, {name: i for i, name in labels.items()}
    if not model_cfg.lora.enabled:
        upcast_trainable(model)
        return model
    model = add_lora(model, model_cfg.lora, "reward_model", model_cfg.gradient_checkpointing)
    if init is not None:
        load_adapter_weights(
            model, init.path, model_cfg.name, key="rm.init_from", give="a finished LoRA reward-model run on model.name"
        )
    return model


def train_reward_model(cfg: CRSConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train a reward model as ``cfg`` says and write it and its results into ``run_dir``.

    Returns the final validation metrics. Runs unchanged under torchrun / accelerate
    launch (Trainer shards the batches); only the main process writes files.
    """

    set_seed(cfg.run.seed)
    rm = cfg.rm
    init = check_init_from(cfg) if rm.init_from else None  # refused before anything loads
    data = training_data(cfg)
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.cache_dir, padding_side="right")
    checkpoint = resume_checkpoint(run_dir, resume, is_main=rank_and_world()[0] == 0)
    # Read now: the first checkpoint this session saves may rotate the resumed one away.
    first_before = (
        logged_before_training(checkpoint, "val_before_training") if checkpoint is not None and data.val else None
    )
    dtype = resolve_dtype(cfg.model.dtype)
    plain_base = plain_base_before_training(cfg.model, "reward_model")
    # Before the model loads: under ZeRO-3 the arguments' DeepSpeed config makes it load partitioned.
    # fp16 goes to the Trainer for its loss scaling; bf16 and fp32 need none (the loss autocasts itself).
    args = training_arguments(
        cfg, run_dir, has_eval=bool(data.val), mixed_precision=dtype if dtype == torch.float16 else None
    )
    # A checkpoint holds this run's own trained weights: it wins over rm.init_from.
    model = build_reward_model(
        cfg.model,
        tokenizer,
        2 if rm.loss in TWO_HEADS else 1,
        init if checkpoint is None else None,
        HEAD_LABELS if rm.loss == "disentangled" else None,
        plain_base,
    )
    head = disentangled_head(model) if rm.loss == "disentangled" else None
    if (
        rm.loss in ("absolute", "joint") and rm.init_bias_to_mean and checkpoint is None and init is None
    ):  # else the head is trained already
        init_head_bias_to_mean(
            model, [row for row in data.train if not isinstance(row, RankingExample)], output=int(rm.loss == "joint")
        )
    fmt = RMFormat.from_data_config(cfg.data)
    scorer = RewardScorer(
        model, tokenizer, fmt, name=cfg.run_name, loss_kind=rm.loss, batch_size=cfg.train.eval_batch_size, dtype=dtype
    )

    def evaluate() -> dict[str, float | None]:
        return evaluate_reward_model(scorer, data.views, rm, head.weight if head is not None else None)[0]

    start = StartMetricsCallback(evaluate, "val_before_training")
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=ListDataset(data.train),
        eval_dataset=ListDataset(data.val) if data.val else None,
        data_collator=COLLATORS[rm.loss](tokenizer, fmt),
        processing_class=tokenizer,
        callbacks=[
            SealCheckpointCallback(),
            JsonlLogCallback(run_dir / TRAIN_LOG_FILE),
            *([start] if data.val else []),
        ],
        train_lengths=[padded_cost(row) for row in data.train],
        rm_cfg=rm,
        autocast_dtype=dtype,
        evaluate_fn=evaluate,
        head=head,
    )
    train_output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    # What training changed: the untrained model's numbers (a resumed run kept them in its
    # checkpoint) and, for a resumed or extended run, those of the state it continued from.
    before = start.metrics or {}
    resumed_from = None
    if checkpoint is not None and data.val:
        before = first_before or {}
        resumed_from = {"step": start.step, **(start.metrics or {})}

    after, stats, calibration = final_metrics_and_stats(scorer, data, rm, head)
    record = {
        **data_counts(data, rm),
        **(
            {"init_from": {"run": str(init.path), "loss_kind": init.loss_kind, "full_model": init.full_model}}
            if init
            else {}
        ),
        "val": after,
        "val_before_training": before,
        **({"val_at_resume": resumed_from} if resumed_from else {}),
        "train": dict(train_output.metrics),
        "global_step": trainer.state.global_step,
        "history": trainer.state.log_history,
    }
    whole = gathered_state_dict(trainer.accelerator, trainer.model_wrapped)  # every process: a collective
    model = trainer.accelerator.unwrap_model(trainer.model)
    if head is not None:  # what the run saves and scores with from here on: the quality head alone
        keep_quality_head(model, head, whole)
    if trainer.is_world_process_zero():
        save_rm_run(model, tokenizer, run_dir, cfg, fmt, stats, record, calibration, whole, plain_base)
    trainer.accelerator.wait_for_everyone()
    return after


def final_metrics_and_stats(
    scorer: RewardScorer, data: TrainingData, rm: RewardModelConfig, head: torch.nn.Linear | None = None
) -> tuple[dict[str, Any], dict[str, Any], LengthCalibration | None]:
    """The trained RM's validation metrics, its ``reward_stats.json`` and its length calibration, all on the
    same replies (:func:`crs.rm.rm_evaluation.own_length_calibration`).

    From here on ``scorer`` gives the reward those stats describe (a joint RM's combined heads,
    a disentangled RM's quality head). ``head``: a disentangled RM's output layer.
    """
    if data.val:
        after, rewards = evaluate_reward_model(scorer, data.views, rm, head.weight if head is not None else None)
        views, split = data.views, "val"
    else:  # no validation split: one more pass, over the training replies, for the stats
        logger.warning("no validation examples: reward_stats.json is computed on training replies")
        views, split = data.train_views, "train"
        after, rewards = {}, view_rewards(scorer, views, rm)
    stats, scorer.joint = reward_stats_record(rewards, rm, split)
    return after, stats, own_length_calibration(scorer, rewards, view_replies(views, rm), split)


def data_counts(data: TrainingData, rm: RewardModelConfig) -> dict[str, Any]:
    """The example counts ``metrics.json`` opens with."""
    return {
        "loss_kind": rm.loss,
        "n_train": len(data.train),
        **(
            {"n_train_rankings": sum(isinstance(row, RankingExample) for row in data.train)}
            if rm.loss == "joint"
            else {}
        ),
        "n_val": len(data.val),
        "n_val_rankings": len(data.views.rankings),
        "n_val_absolute": len(data.views.absolutes),
    }
