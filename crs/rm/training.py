"""Reward-model training with a pairwise (K-wise) or an absolute loss, and its validation.

Training (``rm_train.py``, :func:`train_reward_model`):

1. load ``ranking`` examples (pairwise loss) or ``absolute`` ones (absolute loss);
2. a one-output sequence classifier on ``model.name``, with LoRA or fully fine-tuned;
3. transformers' ``Trainer`` with our losses (:mod:`crs.rm.losses`): a ranking batch is the
   replies of several prompts, flattened, with the number of replies per prompt;
4. validation metrics (:mod:`crs.rm.metrics`) before, during and after training;
5. the model, ``metrics.json``, ``reward_stats.json`` (the RL stage z-scores with them)
   and ``rm_format.json`` (how the RM tokenizes) in the run directory.

Scoring a trained RM (:class:`crs.rm.scorer.RewardScorer`) goes through the very same
:meth:`RMFormat.encode` as the training collators here.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from crs.config import ConfigError, CRSConfig, DataConfig, ModelConfig, RewardModelConfig
from crs.data import load_examples
from crs.data.loader import group_key
from crs.data.schema import AbsoluteExample, DataError, RankingExample
from crs.io import write_json_atomic
from crs.models.loading import (
    add_lora,
    autocast,
    load_sequence_classifier,
    load_tokenizer,
    resolve_dtype,
    save_run_model,
    upcast_trainable,
)
from crs.models.trainer import (
    TRAIN_LOG_FILE,
    CRSTrainer,
    JsonlLogCallback,
    SealCheckpointCallback,
    StartMetricsCallback,
    logged_before_training,
    resume_checkpoint,
    training_arguments,
)
from crs.rm.losses import absolute_loss, absolute_loss_weights, ranking_loss, undersample_by_bins
from crs.rm.metrics import absolute_metrics, pair_agreement, pearson, ranking_metrics, ranking_pairs, reward_stats, spearman
from crs.rm.scorer import REWARD_STATS_FILE, RM_FORMAT_FILE, RewardScorer, RMFormat, load_reward_scorers
from crs.runs import mark_finished, set_seed

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


# --------------------------------------------------------------------------- tokenization


@dataclass
class RankingCollator:
    """Ranking examples -> one flat batch of all their replies, plus ``group_sizes`` and ``scores``."""

    tokenizer: Any
    fmt: RMFormat

    def __call__(self, examples: list[RankingExample]) -> dict[str, Tensor]:
        prompts = [ex.prompt for ex in examples for _ in ex.replies]
        replies = [reply for ex in examples for reply in ex.replies]
        batch = self.fmt.encode(self.tokenizer, prompts, replies)
        batch["group_sizes"] = torch.tensor([len(ex.replies) for ex in examples])
        # NaN marks replies without a score: no margin, no tie for them.
        batch["scores"] = torch.tensor(
            [s for ex in examples for s in (ex.scores if ex.scores is not None else [float("nan")] * len(ex.replies))],
            dtype=torch.float32,
        )
        return batch


@dataclass
class AbsoluteCollator:
    """(absolute example, loss weight) rows -> a batch with ``targets`` and ``weights``."""

    tokenizer: Any
    fmt: RMFormat

    def __call__(self, rows: list[tuple[AbsoluteExample, float]]) -> dict[str, Tensor]:
        batch = self.fmt.encode(self.tokenizer, [ex.prompt for ex, _ in rows], [ex.reply for ex, _ in rows])
        batch["targets"] = torch.tensor([ex.score for ex, _ in rows], dtype=torch.float32)
        batch["weights"] = torch.tensor([w for _, w in rows], dtype=torch.float32)
        return batch


def padded_cost(row: RankingExample | tuple[AbsoluteExample, float]) -> int:
    """Characters of a training row's longest sequence, which its batch is padded to (``train.group_by_length``)."""
    example = row if isinstance(row, RankingExample) else row[0]
    prompt = sum(len(message["content"]) for message in example.prompt)
    replies = example.replies if isinstance(example, RankingExample) else [example.reply]
    return prompt + max(len(reply) for reply in replies)


class ListDataset(torch.utils.data.Dataset):
    """A list as a map-style dataset (the collators do the tokenizing)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


# --------------------------------------------------------------------------- training data


def cap_replies(example: RankingExample, max_replies: int, selection: str = "spread") -> RankingExample:
    """The example with at most ``max_replies`` replies, still best first.

    ``spread`` keeps evenly spaced ranks including the best and the worst reply (so the
    quality range survives the cap); ``top`` keeps the first ``max_replies``.
    """
    k = len(example.replies)
    if k <= max_replies:
        return example
    if max_replies < 2:
        raise ConfigError(f"rm.max_replies must be >= 2, got {max_replies}")
    if selection == "top":
        keep = list(range(max_replies))
    elif selection == "spread":
        keep = sorted({int(i) for i in np.linspace(0, k - 1, max_replies).round()})
    else:
        raise ConfigError(f"rm.reply_selection: unknown {selection!r}; use spread or top")
    scores = [example.scores[i] for i in keep] if example.scores is not None else None
    return RankingExample(example.prompt, [example.replies[i] for i in keep], scores, example.meta)


def absolute_train_rows(examples: list[AbsoluteExample], rm: RewardModelConfig, seed: int) -> list[tuple[AbsoluteExample, float]]:
    """Training rows of the absolute loss: under-sampled (``rm.undersample``) and weighted.

    Weights follow :func:`crs.rm.losses.absolute_loss_weights` over the rows that remain.
    """
    if rm.undersample:
        keep = undersample_by_bins([ex.score for ex in examples], rm.undersample_bins, rm.undersample_max_ratio, np.random.default_rng(seed))
        logger.info("rm.undersample: keeping %d of %d absolute examples", len(keep), len(examples))
        examples = [examples[i] for i in keep]
    weights = absolute_loss_weights(torch.tensor([ex.score for ex in examples]), rm.threshold, rm.loss_weight_strength)
    return list(zip(examples, weights.tolist()))


def init_head_bias_to_mean(model: Any, rows: list[tuple[AbsoluteExample, float]]) -> float | None:
    """Set the trainable head's bias so the untrained model predicts the mean score.

    ``sigmoid(bias) = weighted mean target``. Returns the bias, or None when the head has
    no bias (e.g. Llama-style ``score`` layers), which is left as it is.
    """
    # The scalar head is the trainable one-output linear (under LoRA: peft's trained copy).
    head = next((m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1 and m.weight.requires_grad), None)
    if head is None or head.bias is None:
        logger.info("rm.init_bias_to_mean: the head has no trainable bias; left as is")
        return None
    scores = torch.tensor([ex.score for ex, _ in rows], dtype=torch.float64)
    weights = torch.tensor([w for _, w in rows], dtype=torch.float64)
    mean = float((scores * weights).sum() / weights.sum())
    bias = float(torch.logit(torch.tensor(mean).clamp(1e-3, 1 - 1e-3)))
    with torch.no_grad():
        head.bias.fill_(bias)
    return bias


# --------------------------------------------------------------------------- validation


@dataclass
class ValidationViews:
    """What an RM is validated on: rankings and absolute scores of the validation prompts.

    The RM's own loss fixes one view; the other is filled in where the data source also
    has it for the same prompts (the demo data has both), else it stays empty.
    """

    rankings: list[RankingExample]
    absolutes: list[AbsoluteExample]


def load_validation_views(cfg: CRSConfig, val: list[Any]) -> ValidationViews:
    """The RM's validation examples plus the other view of the same prompts, if any."""

    own_is_ranking = cfg.rm.loss == "pairwise"
    other_kind = "absolute" if own_is_ranking else "ranking"
    other: list[Any] = []
    if val:
        try:
            train_other, val_other = load_examples(cfg.data, other_kind, cfg.run.seed)
        except (ConfigError, DataError) as err:
            logger.info("no %s view of the validation prompts (%s)", other_kind, err)
        else:
            wanted = {group_key(ex) for ex in val}
            other = [ex for ex in train_other + val_other if group_key(ex) in wanted]
    return ValidationViews(val, other) if own_is_ranking else ValidationViews(other, val)


def evaluate_reward_model(scorer: RewardScorer, views: ValidationViews, rm: RewardModelConfig) -> tuple[dict[str, float | None], Tensor]:
    """Validation metrics of one RM, and its rewards on its own validation replies.

    Both RM kinds get the ranking metrics (``pairwise_accuracy``, ``best_vs_worst_accuracy``,
    ``mean_margin``) on the rankings and ``pearson`` / ``spearman`` of reward vs score
    on the absolute view; an absolute RM also gets the regression errors of
    ``sigmoid(reward)`` (``mse``, ``mae``, per bucket around ``rm.threshold``). ``loss``
    is the RM's own (unweighted) loss on its own view.
    """
    metrics: dict[str, float | None] = {}
    own_rewards = torch.zeros(0)
    if views.rankings:
        prompts = [ex.prompt for ex in views.rankings for _ in ex.replies]
        rewards = scorer(prompts, [r for ex in views.rankings for r in ex.replies])
        sizes = [len(ex.replies) for ex in views.rankings]
        scores = [ex.scores for ex in views.rankings]
        metrics.update(ranking_metrics([g.tolist() for g in rewards.split(sizes)], scores))
        if rm.loss == "pairwise":
            flat_scores = torch.tensor([s for ex in views.rankings for s in (ex.scores or [float("nan")] * len(ex.replies))])
            metrics["loss"] = float(ranking_loss(rewards, sizes, rm.l2_coef, flat_scores, rm.margin_scale))
            own_rewards = rewards
    if views.absolutes:
        rewards = scorer([ex.prompt for ex in views.absolutes], [ex.reply for ex in views.absolutes])
        targets = torch.tensor([ex.score for ex in views.absolutes])
        metrics["pearson"] = pearson(rewards.tolist(), targets.tolist())
        metrics["spearman"] = spearman(rewards.tolist(), targets.tolist())
        if rm.loss == "absolute":
            metrics.update(absolute_metrics(torch.sigmoid(rewards).tolist(), targets.tolist(), rm.threshold))
            metrics["loss"] = float(absolute_loss(rewards, targets, rm.abs_loss))
            own_rewards = rewards
    return metrics, own_rewards


def evaluate_runs(run_dirs: list[str], data: DataConfig) -> dict[str, dict[str, float | None]]:
    """Ranking metrics and score correlations of each RM run on all of ``data``, and the
    pairwise agreement of every two runs (``scripts/eval_reward_models.py``).

    Every RM is scored as a ranker (its own loss is left out), so preference and
    absolute RMs compare on the same pairs; keys are the run dirs' names.
    """

    rankings, _ = load_examples(data, "ranking", seed=0)
    try:
        absolutes, _ = load_examples(data, "absolute", seed=0)
    except (ConfigError, DataError):  # a source with rankings only
        absolutes = []
    views = ValidationViews(rankings, absolutes)
    scorers = dict(zip((Path(run).name for run in run_dirs), load_reward_scorers(run_dirs)))  # one copy per shared base
    results: dict[str, dict[str, float | None]] = {}
    for name, scorer in scorers.items():
        # Scored as a ranker either way; an absolute RM's own loss is left out (threshold-free).
        metrics, _ = evaluate_reward_model(scorer, views, RewardModelConfig(loss="pairwise"))
        metrics.pop("loss", None)
        results[name] = {**metrics, "n_prompts": float(len(rankings))}
    pairs = ranking_pairs(rankings)
    for (name_a, a), (name_b, b) in itertools.combinations(scorers.items(), 2):
        results[f"{name_a} ~ {name_b}"] = {"agreement": pair_agreement(a, b, pairs)}
    return results


# --------------------------------------------------------------------------- trainer


class RewardTrainer(CRSTrainer):
    """``Trainer`` with the reward-model losses and crs's validation metrics.

    ``evaluate_fn`` returns the validation metrics of the model being trained; it runs
    whenever Trainer would evaluate (every ``eval_steps`` and at the end).
    """

    def __init__(self, *args: Any, rm_cfg: RewardModelConfig, autocast_dtype: torch.dtype, evaluate_fn: Callable[[], dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rm_cfg, self.autocast_dtype, self.evaluate_fn = rm_cfg, autocast_dtype, evaluate_fn
        self.loss_is_scaled_for_ga = False  # our losses are per-batch means; Trainer divides by GA steps

    def compute_loss(self, model: Any, inputs: dict[str, Tensor], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        """Rewards of the batch's replies -> the ranking or absolute loss (``rm.loss``)."""
        with autocast(self.autocast_dtype, self.args.device):
            rewards = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[:, 0].float()
        rm = self.rm_cfg
        if rm.loss == "pairwise":
            loss = ranking_loss(rewards, inputs["group_sizes"], rm.l2_coef, inputs["scores"], rm.margin_scale)
        else:
            loss = absolute_loss(rewards, inputs["targets"], rm.abs_loss, inputs["weights"])
        return (loss, rewards) if return_outputs else loss

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Our validation metrics, logged like Trainer's own ``eval_*`` numbers."""
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in self.evaluate_fn().items() if v is not None}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def build_reward_model(model_cfg: ModelConfig, tokenizer: Any) -> Any:
    """A trainable one-output classifier: LoRA (head trained in full) or full fine-tuning.

    Trainable weights are kept in fp32 either way; forwards run under autocast.
    """
    model = load_sequence_classifier(model_cfg.name, model_cfg)
    model.config.pad_token_id = tokenizer.pad_token_id  # the collator pads with it; the head looks for it
    if model_cfg.lora.enabled:
        return add_lora(model, model_cfg.lora, "reward_model")
    upcast_trainable(model)
    return model


def train_reward_model(cfg: CRSConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train a reward model as ``cfg`` says and write it and its results into ``run_dir``.

    Returns the final validation metrics. Runs unchanged under torchrun / accelerate
    launch (Trainer shards the batches); only the main process writes files.
    """

    set_seed(cfg.run.seed)
    rm = cfg.rm
    pairwise = rm.loss == "pairwise"
    train_examples, val_examples = load_examples(cfg.data, "ranking" if pairwise else "absolute", cfg.run.seed)
    if pairwise:
        train_set: list[Any] = [cap_replies(ex, rm.max_replies, rm.reply_selection) for ex in train_examples]
    else:
        train_set = absolute_train_rows(train_examples, rm, cfg.run.seed)
    views = load_validation_views(cfg, val_examples)

    tokenizer = load_tokenizer(cfg.model.name, cfg.model.cache_dir, padding_side="right")
    model = build_reward_model(cfg.model, tokenizer)
    checkpoint = resume_checkpoint(run_dir, resume, is_main=int(os.environ.get("RANK", "0")) == 0)
    if not pairwise and rm.init_bias_to_mean and checkpoint is None:
        init_head_bias_to_mean(model, train_set)  # a checkpoint holds the trained head instead
    dtype = resolve_dtype(cfg.model.dtype)
    fmt = RMFormat.from_data_config(cfg.data)
    scorer = RewardScorer(model, tokenizer, fmt, name=cfg.run_name, loss_kind=rm.loss, batch_size=cfg.train.eval_batch_size, dtype=dtype)

    def evaluate() -> dict[str, float | None]:
        return evaluate_reward_model(scorer, views, rm)[0]

    start = StartMetricsCallback(evaluate, "val_before_training")
    trainer = RewardTrainer(
        model=model,
        args=training_arguments(cfg, run_dir, has_eval=bool(val_examples)),
        train_dataset=ListDataset(train_set),
        eval_dataset=ListDataset(val_examples) if val_examples else None,
        data_collator=(RankingCollator if pairwise else AbsoluteCollator)(tokenizer, fmt),
        processing_class=tokenizer,
        callbacks=[SealCheckpointCallback(), JsonlLogCallback(run_dir / TRAIN_LOG_FILE), *([start] if val_examples else [])],
        train_lengths=[padded_cost(row) for row in train_set],
        rm_cfg=rm,
        autocast_dtype=dtype,
        evaluate_fn=evaluate,
    )
    train_output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    # What training changed: the untrained model's numbers (a resumed run kept them in its
    # checkpoint) and, for a resumed or extended run, those of the state it continued from.
    before = start.metrics or {}
    resumed_from = None
    if checkpoint is not None and val_examples:
        before = logged_before_training(checkpoint, "val_before_training") or {}
        resumed_from = {"step": start.step, **(start.metrics or {})}

    if val_examples:
        after, rewards = evaluate_reward_model(scorer, views, rm)
        stats_split = "val"
    else:  # no validation split: one more pass, over the training replies, for the stats
        logger.warning("no validation examples: reward_stats.json is computed on training replies")
        after = {}
        if pairwise:
            rewards = scorer([ex.prompt for ex in train_examples for _ in ex.replies], [r for ex in train_examples for r in ex.replies])
        else:
            rewards = scorer([ex.prompt for ex in train_examples], [ex.reply for ex in train_examples])
        stats_split = "train"
    if trainer.is_world_process_zero():
        save_run_model(trainer.model, tokenizer, run_dir, cfg.model.name, kind="reward_model", merge=cfg.model.lora.merge)
        write_json_atomic(run_dir / RM_FORMAT_FILE, {**asdict(fmt), "loss": rm.loss})
        write_json_atomic(run_dir / REWARD_STATS_FILE, {**reward_stats(rewards.tolist()), "split": stats_split})
        write_json_atomic(
            run_dir / METRICS_FILE,
            {
                "loss_kind": rm.loss,
                "n_train": len(train_set),
                "n_val": len(val_examples),
                "n_val_rankings": len(views.rankings),
                "n_val_absolute": len(views.absolutes),
                "val": after,
                "val_before_training": before,
                **({"val_at_resume": resumed_from} if resumed_from else {}),
                "train": dict(train_output.metrics),
                "global_step": trainer.state.global_step,
                "history": trainer.state.log_history,
            },
        )
        mark_finished(run_dir, {"val": after, "global_step": trainer.state.global_step})
    trainer.accelerator.wait_for_everyone()
    return after
