"""Offline RL on preference data: TRL's DPOTrainer, from the SFT policy, on pairs derived from crs's data.

``rl_train.py --config_subset dpo`` (``rl.algorithm: dpo``) runs :func:`run_dpo_stage`. The
pairs come from the stage's ``data.*`` (the demo: the ``rm`` split, the reward models' data):

* ``rl.dpo_signal: ranking`` (data kind ``ranking``, replies best first): ``rl.dpo_pairs:
  best_vs_rest`` pairs the best reply with each other one (K-1 pairs a prompt),
  ``all_pairs`` takes every ordered pair (K(K-1)/2); replies with equal scores, or equal
  text, never make a pair;
* ``rl.dpo_signal: absolute`` (data kind ``absolute``, one score per reply): replies to one
  prompt are compared by score (a reply scored several times: its mean), the higher wins
  when the gap is at least ``rl.dpo_min_gap``; the same two pairing rules apply.

The reference is the SFT policy itself: with LoRA, the policy with its adapter off (TRL's
``ref_model=None`` with a peft config), no second copy; with full fine-tuning, a frozen copy.
Prompt and replies are tokenized by crs's one path (:func:`crs.models.formatting.encode_prompt_reply`),
so DPO trains on exactly the token ids SFT and the reward models saw. Outputs as every RL run:
``adapter/`` + ``crs_model.json``, ``metrics.jsonl`` (``dpo/*`` columns, ``learning_rate``,
``time/step``), sealed ``checkpoints/checkpoint-N``, ``run_state.json`` with held-out pair
accuracy and log-ratio margin when there is a validation split.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crs.config import ConfigError, CRSConfig
from crs.data import load_examples
from crs.data.schema import AbsoluteExample, Messages, RankingExample
from crs.models.formatting import encode_prompt_reply
from crs.models.hf_trainer import SealCheckpointCallback
from crs.models.loading import load_causal_lm, load_tokenizer
from crs.models.precision import resolve_dtype
from crs.rl.trl_common import (
    METRICS_FILE,
    StepMetricsCallback,
    continue_adapter,
    finish,
    load_policy,
    per_device_batch,
    plain_policy_base,
    quiet_progress_bar,
    require_trl,
    start_or_resume,
    trainer_arguments,
)
from crs.runs import set_seed

logger = logging.getLogger(__name__)

# TRL's DPO metric -> crs's column. TRL's "rewards/*" are DPO's implicit rewards
# beta x (log pi - log pi_ref), not crs's reward sources, hence the dpo/ names.
DPO_COLUMNS = {
    "learning_rate": "learning_rate",
    "loss": "dpo/loss",
    "grad_norm": "policy/grad_norm",
    "entropy": "policy/entropy",
    "rewards/chosen": "dpo/reward_chosen",
    "rewards/rejected": "dpo/reward_rejected",
    "rewards/accuracies": "dpo/accuracy",
    "rewards/margins": "dpo/reward_margin",
    "logps/chosen": "dpo/logps_chosen",
    "logps/rejected": "dpo/logps_rejected",
}


@dataclass(frozen=True)
class PreferencePair:
    """A prompt, the preferred reply and the other one."""

    prompt: Messages
    chosen: str
    rejected: str


def _index_pairs(n: int, mode: str) -> list[tuple[int, int]]:
    """(winner, loser) positions among ``n`` replies ordered best first."""
    if mode == "best_vs_rest":
        return [(0, j) for j in range(1, n)]
    if mode == "all_pairs":
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    raise ConfigError(f"rl.dpo_pairs: expected best_vs_rest or all_pairs, got {mode!r}")


def pairs_from_rankings(examples: Sequence[RankingExample], mode: str = "best_vs_rest") -> list[PreferencePair]:
    """Pairs from K-wise rankings (replies best first); ties (equal scores or equal text) are skipped."""
    pairs = []
    for ex in examples:
        for i, j in _index_pairs(len(ex.replies), mode):
            tied = ex.scores is not None and ex.scores[i] == ex.scores[j]
            if not tied and ex.replies[i] != ex.replies[j]:
                pairs.append(PreferencePair(ex.prompt, ex.replies[i], ex.replies[j]))
    return pairs


def _prompt_key(ex: AbsoluteExample) -> str:
    return str(ex.meta.get("group") or ex.meta.get("prompt_id") or json.dumps(ex.prompt, sort_keys=True))


def pairs_from_scores(
    examples: Sequence[AbsoluteExample], mode: str = "best_vs_rest", min_gap: float = 0.25
) -> list[PreferencePair]:
    """Pairs from absolute scores: replies to one prompt, the higher score wins by at least ``min_gap``.

    A reply scored more than once counts with its mean score. ``best_vs_rest``: the
    top-scored reply against each other one; ``all_pairs``: every pair.
    """
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    prompts: dict[str, Messages] = {}
    for ex in examples:
        key = _prompt_key(ex)
        prompts.setdefault(key, ex.prompt)
        groups[key][ex.reply].append(float(ex.score))
    pairs = []
    for key, replies in groups.items():
        ranked = sorted(
            ((sum(s) / len(s), reply) for reply, s in replies.items()), key=lambda x: -x[0]
        )  # stable: data order on ties
        for i, j in _index_pairs(len(ranked), mode):
            if ranked[i][0] - ranked[j][0] >= min_gap - 1e-9 and ranked[i][0] > ranked[j][0]:
                pairs.append(PreferencePair(prompts[key], ranked[i][1], ranked[j][1]))
    return pairs


def load_pairs(cfg: CRSConfig) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Training and held-out pairs from ``data.*`` by ``rl.dpo_signal`` / ``rl.dpo_pairs`` / ``rl.dpo_min_gap``."""
    rl = cfg.rl
    if rl.dpo_signal == "ranking":
        train, val = load_examples(cfg.data, kind="ranking", seed=cfg.run.seed)
        make = lambda exs: pairs_from_rankings(exs, rl.dpo_pairs)  # noqa: E731
    else:
        train, val = load_examples(cfg.data, kind="absolute", seed=cfg.run.seed)
        make = lambda exs: pairs_from_scores(exs, rl.dpo_pairs, rl.dpo_min_gap)  # noqa: E731
    train_pairs, val_pairs = make(train), make(val)
    if not train_pairs:
        raise ConfigError(
            f"DPO: no preference pairs from {cfg.data.source} (split {cfg.data.split}, rl.dpo_signal={rl.dpo_signal}"
            + (f", rl.dpo_min_gap={rl.dpo_min_gap}" if rl.dpo_signal == "absolute" else "")
            + ")"
        )
    return train_pairs, val_pairs


def encode_pair(tokenizer: Any, pair: Any, cfg: CRSConfig) -> dict[str, list[int]]:
    """TRL's tokenized preference row (``prompt_ids``, ``chosen_ids``, ``rejected_ids``) by crs's one tokenization.

    ``pair``: a :class:`PreferencePair`, or a dataset row with its three fields.
    """
    get = (lambda k: getattr(pair, k)) if isinstance(pair, PreferencePair) else pair.__getitem__
    d = cfg.data
    chosen = encode_prompt_reply(
        tokenizer, get("prompt"), get("chosen"), d.max_length, d.max_prompt_length, d.fallback_template
    )
    rejected = encode_prompt_reply(
        tokenizer, get("prompt"), get("rejected"), d.max_length, d.max_prompt_length, d.fallback_template
    )
    n = chosen.reply_mask.index(1) if 1 in chosen.reply_mask else len(chosen.input_ids)
    m = rejected.reply_mask.index(1) if 1 in rejected.reply_mask else len(rejected.input_ids)
    if chosen.input_ids[:n] != rejected.input_ids[:m]:  # only a text pair truncated differently could do this
        raise ConfigError("DPO: a pair's prompt tokenizes differently with its two replies; raise data.max_length")
    return {
        "prompt_ids": chosen.input_ids[:n],
        "chosen_ids": chosen.input_ids[n:],
        "rejected_ids": rejected.input_ids[m:],
    }


def _dpo_trainer_class() -> type:
    from trl import DPOTrainer

    class CRSDPOTrainer(DPOTrainer):
        """DPOTrainer whose datasets are tokenized by crs's one path (:func:`encode_pair`)."""

        crs_config: CRSConfig | None = None

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            if "prompt_ids" in dataset.column_names:
                return dataset
            cfg = self.crs_config
            return dataset.map(lambda row: encode_pair(processing_class, row, cfg), remove_columns=dataset.column_names)

    return CRSDPOTrainer


def pair_dataset(pairs: Sequence[PreferencePair]) -> Any:
    """The pairs as a ``datasets.Dataset`` (``prompt`` messages, ``chosen``, ``rejected``)."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])


def run_dpo_stage(cfg: CRSConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Train the SFT policy with TRL's DPO on preference pairs from ``data.*``; returns the summary."""
    require_trl(cfg, "DPOTrainer")
    from trl import DPOConfig

    rl = cfg.rl
    run_dir = Path(run_dir)
    set_seed(cfg.run.seed)
    train_pairs, val_pairs = load_pairs(cfg)
    plain_base = plain_policy_base(cfg)
    kwargs = trainer_arguments(
        cfg, run_dir, resolve_dtype(cfg.model.dtype), per_device_batch(cfg, "(preference pairs per step)")
    )
    # Made before the policy loads: under ZeRO-3 its DeepSpeed config makes the policy load partitioned.
    args = DPOConfig(
        beta=rl.dpo_beta,
        max_length=cfg.data.max_length,
        per_device_eval_batch_size=max(kwargs["per_device_train_batch_size"], 1),
        eval_strategy="no",
        **kwargs,
    )
    policy = load_policy(cfg, plain_base)
    model, peft_config, policy_name = policy.model, policy.peft_config, policy.name
    tokenizer = load_tokenizer(policy_name, cfg.model.cache_dir)
    reference = None
    if peft_config is None:  # full fine-tuning: a frozen copy of the SFT policy (TRL would reload the base by name)
        # whole on every process (load_causal_lm's default), which TRL then prepares as DeepSpeed or FSDP wants
        reference = load_causal_lm(policy_name, cfg.model).requires_grad_(False).eval()
    metrics_cb = StepMetricsCallback(
        run_dir / METRICS_FILE,
        {**DPO_COLUMNS},
        {"dpo/beta": rl.dpo_beta},
        ("dpo/loss", "dpo/accuracy", "dpo/logratio_margin", "time/step"),
        cfg.run.logging_steps,
        derive=lambda row: {"dpo/logratio_margin": _over_beta(row.get("dpo/reward_margin"), rl.dpo_beta)},
    )
    trainer_class = _dpo_trainer_class()
    trainer_class.crs_config = cfg
    trainer = trainer_class(
        model=model,
        ref_model=reference,
        args=args,
        train_dataset=pair_dataset(train_pairs),
        eval_dataset=pair_dataset(val_pairs) if val_pairs else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[metrics_cb, SealCheckpointCallback()],
    )
    quiet_progress_bar(trainer)
    continue_adapter(trainer, cfg)
    is_main = trainer.is_world_process_zero()
    checkpoint = start_or_resume(run_dir, resume, is_main)
    if is_main:
        logger.info(
            "DPO: %d training pairs (%s, %s), %d held out; %d steps x %d pairs, beta %s, on %d process(es)",
            len(train_pairs),
            rl.dpo_signal,
            rl.dpo_pairs,
            len(val_pairs),
            rl.steps,
            rl.batch_size,
            rl.dpo_beta,
            trainer.accelerator.num_processes,
        )
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    last = metrics_cb.last_row
    summary: dict[str, Any] = {
        "algorithm": "dpo",
        "steps": trainer.state.global_step,
        "pairs": {
            "train": len(train_pairs),
            "held_out": len(val_pairs),
            "signal": rl.dpo_signal,
            "pairing": rl.dpo_pairs,
        },
        "final": {k: last[k] for k in ("dpo/loss", "dpo/accuracy", "dpo/logratio_margin") if k in last},
        "train_runtime": metrics_cb.train_summary.get("train_runtime"),
    }
    if val_pairs:
        held_out = trainer.evaluate()
        summary["held_out"] = {
            "loss": held_out.get("eval_loss"),
            "accuracy": held_out.get("eval_rewards/accuracies"),
            "logratio_margin": _over_beta(held_out.get("eval_rewards/margins"), rl.dpo_beta),
        }
    return finish(trainer, tokenizer, cfg, run_dir, policy, summary)


def _over_beta(value: float | None, beta: float) -> float | None:
    """DPO's implicit-reward margin over beta: the chosen-minus-rejected log-ratio."""
    return None if value is None else value / beta


@torch.no_grad()
def logratio_margins(model: Any, tokenizer: Any, pairs: Sequence[PreferencePair], cfg: CRSConfig) -> list[float]:
    """Per pair, ``[log pi(chosen) - log pi_ref(chosen)] - [log pi(rejected) - log pi_ref(rejected)]``.

    ``model`` is a peft model; the reference is the same model with its adapter off. What DPO
    raises; 0 for every pair before training (a fresh adapter is the identity).
    """

    def logp(ids: list[int], n_prompt: int) -> float:
        x = torch.tensor([ids])
        logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, :-1].float()
        token_logps = torch.log_softmax(logits, -1).gather(-1, x[0, 1:, None])[:, 0]
        return float(token_logps[n_prompt - 1 :].sum())

    out = []
    for pair in pairs:
        row = encode_pair(tokenizer, pair, cfg)
        n = len(row["prompt_ids"])
        chosen, rejected = row["prompt_ids"] + row["chosen_ids"], row["prompt_ids"] + row["rejected_ids"]
        policy = logp(chosen, n) - logp(rejected, n)
        with model.disable_adapter():
            reference = logp(chosen, n) - logp(rejected, n)
        out.append(policy - reference)
    return out
