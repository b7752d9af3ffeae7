"""The RL stage around the PPO algorithm: models, prompts, the loop, checkpoints, logs.

``rl_train.py --config_subset rl_crs`` runs :func:`run_ppo_stage`, which builds the models
(:func:`build_models`) and drives :class:`crs.rl.ppo.trainer.PPOTrainer` step by step (:func:`run_ppo_loop`),
then saves the policy (:func:`finish_ppo_run`). It writes into the run directory:

* ``metrics.jsonl``: one row per PPO step (rewards per source raw and normalised,
  combined, KL, beta, losses, clip fractions, approx KL, entropy, reply length, timings);
* ``samples/step_N.json``: greedy replies to held-out prompts with every source's score;
* ``overoptimization.jsonl``: at step 0 and every ``sample_every``
  steps, sampled replies to up to ``eval_prompts`` held-out prompts, scored by every source,
  the combined reward and the judge, with the KL to the reference (:meth:`PPOTrainer.held_out_eval`;
  ``overoptimization.png`` is drawn from it by the rl command, :func:`crs.cli.train_rl`);
* ``checkpoints/step_N/``: trainable weights (adapter + value head), optimizer, KL
  controller, reward statistics, prompt position and every process's RNG states, written
  to a temporary folder, sealed with a manifest and renamed into place; ``--resume``
  continues from the newest complete one (and truncates ``metrics.jsonl`` to its step);
* ``adapter/`` + ``crs_model.json``: the final policy (``load_causal_lm(run_dir)`` loads it).

Several processes (``torchrun --nproc_per_node 2 rl_train.py ...``, or ``accelerate
launch``) each take their share of every prompt batch; only the main process writes.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crs.config import ConfigError, CRSConfig, RewardSourceConfig
from crs.data import load_examples
from crs.data.schema import Messages, last_user_text
from crs.demo.gold import resolve_judge
from crs.io import (
    append_jsonl,
    folder_written_atomically,
    read_jsonl,
    truncate_jsonl,
    write_bytes_atomic,
    write_json_atomic,
)
from crs.models.hf_trainer import LOGS_DIR, check_report_to
from crs.models.loading import classifier_outputs, load_causal_lm, load_sequence_classifier, load_tokenizer
from crs.models.lora import add_lora, load_adapter_weights
from crs.models.manifest import check_run_kind, read_run_manifest
from crs.models.precision import resolve_dtype, upcast_trainable
from crs.models.saving import save_run_model
from crs.processes import rank_and_world
from crs.rl.combined_reward import CombinedReward
from crs.rl.overoptimization import OVEROPT_FILE, judge_peak
from crs.rl.ppo.policy import PolicyValueModel, ValueModel, enable_gradient_checkpointing
from crs.rl.ppo.trainer import PPOTrainer, ppo_accelerator
from crs.rl.reward_sources import RewardSource, build_sources, check_gold_sources, reward_model_config
from crs.runs import (
    RL_LENGTH_KEYS,
    NonFiniteError,
    checkpoint_step,
    latest_checkpoint,
    mark_finished,
    seal_checkpoint,
    set_seed,
)

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
METRICS_FILE = "metrics.jsonl"
VALUE_HEAD_FILE = "value_head.pt"  # the critic's head at the end of a run (rl.init_adapter continues it)


class PromptStream:
    """An endless, seeded, reshuffled-every-epoch order over the training prompts.

    Its whole state is one integer, so a resumed run continues with exactly the
    prompts it would have seen; every process walks the same stream and keeps its shard.
    """

    def __init__(self, n_prompts: int, seed: int, position: int = 0) -> None:
        if n_prompts == 0:
            raise ConfigError("no training prompts for PPO (check data.source / data.split)")
        self.n = n_prompts
        self.seed = seed
        self.position = position
        self._epoch, self._order = -1, np.arange(0)

    def next(self, count: int) -> list[int]:
        """The next ``count`` prompt indices."""
        out = []
        for _ in range(count):
            epoch, offset = divmod(self.position, self.n)
            if epoch != self._epoch:
                self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
            out.append(int(self._order[offset]))
            self.position += 1
        return out


# --------------------------------------------------------------------------- checkpoints


def rng_state() -> dict[str, Any]:
    """This process's python, numpy and torch RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(trainer: PPOTrainer, stream: PromptStream, run_dir: Path, keep: int) -> Path:
    """Write ``checkpoints/step_N`` atomically (temp folder, then rename); every process calls this."""
    from accelerate.utils import gather_object

    rng_states = gather_object([rng_state()])  # one per process, in rank order
    target = run_dir / CHECKPOINTS / f"step_{trainer.step_count}"
    if trainer.accelerator.is_main_process:
        with folder_written_atomically(target) as tmp:
            torch.save(trainer.unwrapped.trainable_state_dict(), tmp / "trainable.pt")
            torch.save(
                {
                    "optimizer": trainer.optimizer.state_dict(),
                    "scheduler": trainer.scheduler.state_dict(),
                    "scaler": trainer.scaler.state_dict(),  # fp16's loss scale; empty otherwise
                },
                tmp / "optimizer.pt",
            )
            torch.save(rng_states, tmp / "rng_states.pt")
            write_json_atomic(tmp / "trainer_state.json", {**trainer.state_dict(), "prompt_position": stream.position})
            seal_checkpoint(tmp)
        _prune_checkpoints(run_dir / CHECKPOINTS, keep)
        logger.info("checkpoint saved: %s", target)
    trainer.accelerator.wait_for_everyone()
    return target


def _prune_checkpoints(folder: Path, keep: int) -> None:
    if keep <= 0:
        return
    steps = sorted((checkpoint_step(p), p) for p in folder.glob("step_*") if checkpoint_step(p) >= 0)
    for _, path in steps[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(trainer: PPOTrainer, stream: PromptStream, checkpoint: Path) -> None:
    """Restore weights, optimizer, trainer state, prompt position and this process's RNG."""
    weights = torch.load(checkpoint / "trainable.pt", map_location=trainer.device)
    missing = set(trainer.unwrapped.trainable_state_dict()) - set(weights)
    if missing:
        raise ConfigError(
            f"{checkpoint} lacks {len(missing)} trained tensors (e.g. {sorted(missing)[0]}); "
            "was the model config changed?"
        )
    trainer.unwrapped.load_state_dict(weights, strict=False)
    opt = torch.load(checkpoint / "optimizer.pt", map_location=trainer.device, weights_only=False)
    trainer.optimizer.load_state_dict(opt["optimizer"])
    trainer.scheduler.load_state_dict(opt["scheduler"])
    if trainer.scaler.is_enabled() and opt.get("scaler"):
        trainer.scaler.load_state_dict(opt["scaler"])
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    trainer.load_state_dict(state)
    stream.position = int(state["prompt_position"])
    rng_states = torch.load(checkpoint / "rng_states.pt", weights_only=False)
    rank = trainer.accelerator.process_index
    if rank < len(rng_states):
        set_rng_state(rng_states[rank])
    else:
        logger.warning("%s has no RNG state for process %d (more processes than when saved)", checkpoint, rank)


# --------------------------------------------------------------------------- the stage


def build_models(cfg: CRSConfig) -> tuple[PolicyValueModel, nn.Module | None, torch.dtype, str]:
    """The policy (+ LoRA) with its critic, the reference (None: adapter off), the dtype, the policy name.

    LoRA: half-precision frozen base, fp32 adapter and value head, forwards under autocast.
    Full fine-tuning: fp32 policy, and a frozen half-precision copy as the reference.
    """
    if cfg.rl.value_model != "head":  # before any loading: a policy run's score head would be random
        check_run_kind(cfg.rl.value_model, "reward_model")
        # The critic reads one scalar per state: a joint RM's two heads would broadcast into nonsense.
        manifest = read_run_manifest(cfg.rl.value_model) if Path(cfg.rl.value_model).is_dir() else None
        classifier_outputs(f"rl.value_model={cfg.rl.value_model}", manifest, 1)
    dtype = resolve_dtype(cfg.model.dtype)
    policy_name = cfg.rl.policy or cfg.model.name
    policy = load_causal_lm(policy_name, cfg.model)
    reference = None
    if cfg.model.lora.enabled:
        policy = add_lora(policy, cfg.model.lora, "causal_lm", cfg.model.gradient_checkpointing)
        if cfg.rl.init_adapter:  # an earlier run's adapter continues (the online loop's next round)
            load_adapter_weights(policy, cfg.rl.init_adapter, policy_name)
    else:
        reference = policy.requires_grad_(False)
        policy = copy.deepcopy(reference).float().requires_grad_(True)
    value_model = None
    if cfg.rl.value_model != "head":
        critic = load_sequence_classifier(cfg.rl.value_model, cfg.model, num_labels=1)
        if cfg.model.lora.enabled:
            critic = add_lora(critic, cfg.model.lora, "reward_model", cfg.model.gradient_checkpointing)
        else:
            critic = critic.float()
            upcast_trainable(critic)
        value_model = ValueModel(critic)
    model = PolicyValueModel(policy, value_model)
    if cfg.model.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.rl.init_adapter and model.value_head is not None:
        continue_value_head(model.value_head, Path(cfg.rl.init_adapter))
    return model, reference, dtype, policy_name


def continue_value_head(value_head: nn.Linear, earlier_run: Path) -> None:
    """Start the value head where an earlier PPO run's ended (its ``value_head.pt``), so a
    continued policy is not judged by a critic that knows nothing; without one it starts at 0."""
    path = earlier_run / VALUE_HEAD_FILE
    if not path.is_file():
        logger.info(
            "%s has no %s (not a PPO run with a value head): the value head starts at zero",
            earlier_run,
            VALUE_HEAD_FILE,
        )
        return
    value_head.load_state_dict(torch.load(path, map_location="cpu"))


def save_value_head(value_head: nn.Linear, run_dir: Path) -> None:
    """Write the value head beside the adapter, atomically (what :func:`continue_value_head` reads)."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in value_head.state_dict().items()}, buffer)
    write_bytes_atomic(run_dir / VALUE_HEAD_FILE, buffer.getvalue())


def _make_accelerator(cfg: CRSConfig, run_dir: Path) -> Any:
    from accelerate.state import AcceleratorState, PartialState

    # On CPU, accelerate honours torchrun's environment only with cpu=True (gloo backend).
    cpu = not torch.cuda.is_available()
    earlier = PartialState._shared_state
    if cpu and rank_and_world()[1] > 1 and earlier and earlier.get("num_processes") == 1:
        # A PartialState made earlier without cpu=True saw one process: start the state again.
        AcceleratorState._reset_state(reset_partial_state=True)
    if cfg.run.report_to == "none":
        return ppo_accelerator(cpu=cpu)
    check_report_to(cfg.run.report_to)
    return ppo_accelerator(cpu=cpu, log_with=cfg.run.report_to, project_dir=str(run_dir))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def build_judge(cfg: CRSConfig, prompts: list[Messages]) -> RewardSource | None:
    """The over-optimisation judge of ``rl.judge`` on ``prompts`` (read, never optimised), or None."""
    texts = [last_user_text(p) for p in prompts]
    spec = resolve_judge(
        cfg.rl.judge,
        texts,
        "rl.judge",
        cfg.run.allow_gold_outside_demo,
        "the over-optimisation log has no judge column",
    )
    if spec == "none":
        return None
    name = "gold" if spec == "gold" else "judge"
    return build_sources(
        [RewardSourceConfig(name=name, path=spec, weight=1.0, normalize="none")], reward_model_config(cfg)
    )[0]


def _finite_or_none(metrics: dict[str, float]) -> dict[str, float | None]:
    # NaN is not JSON; a combined reward that could not be normalised yet is logged as null.
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}


def run_ppo_stage(cfg: CRSConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Train the policy with PPO on the combined reward; returns the final summary."""
    rl = cfg.rl
    run_dir = Path(run_dir)
    accelerator = _make_accelerator(cfg, run_dir)
    rank, world, is_main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    set_seed(cfg.run.seed)  # identical model init on every process

    train_examples, val_examples = load_examples(cfg.data, kind="prompts", seed=cfg.run.seed)
    check_gold_sources(
        rl.rewards, [last_user_text(ex.prompt) for ex in train_examples], "rl.rewards", cfg.run.allow_gold_outside_demo
    )
    sample_prompts = [ex.prompt for ex in (val_examples or train_examples)[: rl.num_sample_prompts]]
    model, reference, dtype, policy_name = build_models(cfg)
    tokenizer = load_tokenizer(policy_name, cfg.model.cache_dir, padding_side="left")
    reward = CombinedReward.for_rl(cfg, gather=accelerator.gather if world > 1 else None)
    trainer = PPOTrainer(rl, model, tokenizer, reward, accelerator, dtype, reference, cfg.data.max_prompt_length)
    # Every process holds them all and evaluates its share (PPOTrainer.held_out_eval), so all decide alike.
    eval_prompts = [ex.prompt for ex in val_examples[: rl.eval_prompts]]
    if rl.eval_prompts and not val_examples:
        logger.warning("rl.eval_prompts: no held-out prompts (data.val_fraction is 0); no over-optimisation log")
    judge = build_judge(cfg, eval_prompts) if eval_prompts else None

    def log_held_out_eval(step: int) -> None:
        if eval_prompts and rl.sample_every:
            row = {
                "step": step,
                **_finite_or_none(trainer.held_out_eval(eval_prompts, judge, seed=cfg.run.seed + step)),
            }
            if is_main:
                append_jsonl(run_dir / OVEROPT_FILE, row)

    stream = PromptStream(len(train_examples), cfg.run.seed)

    checkpoint = latest_checkpoint(run_dir / CHECKPOINTS, "step_*", remove_torn=is_main) if resume else None
    if checkpoint is not None:
        load_checkpoint(trainer, stream, checkpoint)
        logger.info("resumed from %s (step %d, kl_coef %.4f)", checkpoint, trainer.step_count, trainer.kl_ctl.value)
    else:
        if resume:
            logger.info("resuming from step 0 (no complete checkpoint saved yet)")
        set_seed(cfg.run.seed + rank)  # different samples on every process
    if resume and is_main:
        # The steps after the checkpoint run again: their old rows (and a torn last line) go.
        truncate_jsonl(run_dir / METRICS_FILE, trainer.step_count)
        truncate_jsonl(run_dir / OVEROPT_FILE, trainer.step_count)
    accelerator.wait_for_everyone()
    if trainer.step_count == 0:
        log_held_out_eval(0)  # the start of the over-optimisation curve: KL 0

    if is_main:
        logger.info(
            "PPO: %d prompts, %d steps x %d rollouts on %d process(es), rewards %s",
            len(train_examples),
            rl.steps,
            rl.batch_size,
            world,
            reward.describe(),
        )
    if cfg.run.report_to != "none":
        # TensorBoard writes to <project_dir>/<name>: <run>/logs, as the Trainer-based stages do.
        accelerator.init_trackers(
            LOGS_DIR if cfg.run.report_to == "tensorboard" else cfg.run_name, config=_flat(cfg.to_dict())
        )

    train_prompts = [ex.prompt for ex in train_examples]
    metrics = run_ppo_loop(cfg, run_dir, trainer, stream, train_prompts, sample_prompts, log_held_out_eval)
    return finish_ppo_run(cfg, run_dir, trainer, tokenizer, policy_name, judge, metrics)


def run_ppo_loop(
    cfg: CRSConfig,
    run_dir: Path,
    trainer: PPOTrainer,
    stream: PromptStream,
    train_prompts: list[Messages],
    sample_prompts: list[Messages],
    log_held_out_eval: Callable[[int], None],
) -> dict[str, float]:
    """PPO steps from ``trainer.step_count`` to ``rl.steps``: each logged to ``metrics.jsonl``, with samples, the
    over-optimisation log and checkpoints at their intervals; returns the last step's metrics.

    A run whose every step was skipped (non-finite rewards, losses or gradients) is a :class:`NonFiniteError`.
    """
    from tqdm.auto import tqdm

    rl = cfg.rl
    accelerator = trainer.accelerator
    rank, world, is_main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    bar = tqdm(total=rl.steps, initial=trainer.step_count, disable=not is_main, desc="ppo", dynamic_ncols=True)
    metrics: dict[str, float] = {}
    while trainer.step_count < rl.steps:
        indices = stream.next(rl.batch_size)[rank::world]  # every process walks the stream, keeps its shard
        metrics = trainer.step([train_prompts[i] for i in indices])
        step = trainer.step_count
        if is_main:
            append_jsonl(run_dir / METRICS_FILE, {"step": step, **metrics})
            bar.set_postfix(
                reward=f"{metrics['reward/combined']:.3f}",
                kl=f"{metrics['kl/sequence']:.2f}",
                s_step=f"{metrics['time/step']:.1f}",
            )
            bar.update(1)
            if step % max(cfg.run.logging_steps, 1) == 0:
                logger.info(
                    "step %d: reward %.4f kl %.3f beta %.4f pg %.4f vf %.4f len %.1f",
                    step,
                    metrics["reward/combined"],
                    metrics["kl/sequence"],
                    metrics["kl/coef"],
                    metrics.get("loss/policy", float("nan")),
                    metrics.get("loss/value", float("nan")),
                    metrics["reply/length"],
                )
            if rl.sample_every and sample_prompts and (step % rl.sample_every == 0 or step == rl.steps):
                write_json_atomic(run_dir / "samples" / f"step_{step}.json", trainer.generate_samples(sample_prompts))
        if rl.sample_every and (step % rl.sample_every == 0 or step == rl.steps):
            log_held_out_eval(step)
        if cfg.run.report_to != "none":
            accelerator.log(metrics, step=step)
        if rl.save_steps and (step % rl.save_steps == 0 or step == rl.steps):
            # The last one keeps the value head and optimizer, which the adapter dir does not hold.
            save_checkpoint(trainer, stream, run_dir, rl.save_total_limit)
    bar.close()
    if trainer.step_count and trainer.nonfinite_total >= trainer.step_count:
        raise NonFiniteError(
            f"every one of the {trainer.step_count} PPO steps was skipped (non-finite rewards, losses or gradients): "
            "the policy did not change; check the reward sources (metrics.jsonl has reward/<name>/nonfinite) "
            "and rl.learning_rate"
        )
    return metrics


def finish_ppo_run(
    cfg: CRSConfig,
    run_dir: Path,
    trainer: PPOTrainer,
    tokenizer: Any,
    policy_name: str,
    judge: RewardSource | None,
    metrics: dict[str, float],
) -> dict[str, Any]:
    """The run's summary (the last step's ``metrics``, the judge's peak); the main process saves the policy
    (``adapter/`` + ``crs_model.json``) and the value head and marks the run finished."""
    accelerator = trainer.accelerator
    is_main = accelerator.is_main_process
    summary = {
        "steps": trainer.step_count,
        "final": {k: metrics[k] for k in ("reward/combined", "kl/sequence", "kl/coef", "reply/length") if k in metrics},
        "rewards": trainer.reward.describe(),
        "nonfinite_steps": trainer.nonfinite_total,
    }
    if is_main and (run_dir / OVEROPT_FILE).is_file():
        rows = read_jsonl(run_dir / OVEROPT_FILE)  # its figure: crs.eval.overoptimization_figures (rl command)
        if judge is not None:
            summary["judge_peak"] = judge_peak(rows, f"judge/{judge.name}")
    if is_main:
        save_run_model(
            trainer.unwrapped.policy,
            tokenizer,
            run_dir,
            base_name=policy_name,
            kind="causal_lm",
            merge=cfg.model.lora.merge,
        )
        if trainer.unwrapped.value_head is not None:
            save_value_head(trainer.unwrapped.value_head, run_dir)
        mark_finished(run_dir, summary, trainer.step_count, RL_LENGTH_KEYS)
        logger.info("PPO done: %s -> %s", summary["final"], run_dir)
    accelerator.wait_for_everyone()
    if cfg.run.report_to != "none":
        accelerator.end_training()
    return summary
