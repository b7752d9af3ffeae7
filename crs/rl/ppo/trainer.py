"""The PPO algorithm (:class:`PPOTrainer`), as in "The N Implementation Details of RLHF with PPO" (Huang et al.).

One PPO step:

1. **Rollout.** Sample replies to a batch of prompts (temperature, top-p, stop at EOS,
   everything after EOS masked), keeping each token's log-prob and each state's value.
2. **Reward.** Score the replies with the combined reward (:mod:`crs.rl.combined_reward`). Per token,
   the reward is ``-beta * (log pi(y_t) - log pi_ref(y_t))`` (the KL penalty, k1 estimator),
   and the reply's score is added on its last token. ``beta`` is fixed or adapted toward
   ``target_kl`` (Ziegler et al. 2019).
3. **Advantages.** GAE(gamma, lambda) over the reply tokens; returns = advantages + values;
   advantages whitened over the batch.
4. **Update.** ``ppo_epochs`` passes over shuffled mini-batches (split into gradient
   accumulation micro-batches): clipped policy loss + ``vf_coef`` * clipped value loss,
   gradient-norm clipping, optional early stop when the approximate KL gets too large.

Where each implementation detail lives (every one is a function or a marked line here or
in :mod:`crs.rl.ppo.losses`, :mod:`crs.rl.ppo.policy`, :mod:`crs.rl.ppo.stage` or :mod:`crs.models.decoding`, and a
key in ``RLConfig`` where it is a choice):

==================================  =============================================
detail                              where (config key)
==================================  =============================================
left padding + mask-derived pos ids ``decoding.position_ids_from_mask``
temperature-scaled log-probs        ``policy.PolicyValueModel.forward`` (temperature)
EOS stop, post-EOS masking          ``decoding.decode_loop`` (via ``policy.sample_replies``)
missing-EOS penalty, reward clip    ``CombinedReward.shape`` (missing_eos_penalty, reward_clip)
reward normalisation                ``CombinedReward.normalize`` (rewards[].normalize)
KL penalty per token, k1 estimator  ``losses.per_token_rewards`` (kl_coef)
adaptive KL coefficient             ``losses.AdaptiveKLController`` (adaptive_kl, target_kl, kl_horizon)
score on the last reply token       ``losses.per_token_rewards``
GAE                                 ``losses.compute_gae`` (gamma, lam)
advantage whitening                 ``losses.masked_whiten`` (whiten_advantages)
clipped surrogate objective         ``losses.ppo_losses`` (cliprange)
value clipping                      ``losses.ppo_losses`` (cliprange_value, vf_coef)
dropout disabled                    :meth:`PPOTrainer.__init__` (model.eval())
gradient checkpointing, dropout off ``policy.checkpoint_in_eval_mode`` (model.gradient_checkpointing)
Adam epsilon 1e-5                   :meth:`PPOTrainer.__init__` (adam_eps)
learning-rate annealing             :meth:`PPOTrainer.__init__` (anneal_lr)
grad-norm clipping                  :meth:`PPOTrainer.optimizer_step` (max_grad_norm)
fp16 loss scaling, unscaled to clip :meth:`PPOTrainer.optimizer_step` (model.dtype fp16)
approx-KL early stopping            :meth:`PPOTrainer.update` (early_stop_kl)
reference = adapter switched off    :meth:`PPOTrainer.reference_logprobs`
old log-probs + values, one forward :meth:`PPOTrainer.rollout` (logprobs_from_sampling: none)
old log-probs from 1st update pass  :meth:`PPOTrainer.loss` (old_logprobs_from_update)
math attention kernel on CPU        ``policy.cpu_math_attention``
sampling from a merged LoRA copy    ``policy.MergedSampler`` (merged_sampling)
pre-packed sampling weights (CPU)   :mod:`crs.models.packed_linear` (packed_sampling)
lean decode-only forward (CPU)      :mod:`crs.models.fused_decoder` (fused_sampling)
bf16 base, fp32 LoRA + value head   ``stage.build_models`` (model.dtype)
==================================  =============================================

Cost per step = sampling + (policy forward: old log-probs and values together) +
(reference forward) + reward models + ``ppo_epochs`` x (forward + backward). Everything
outside the update runs under ``no_grad``; forwards project only the reply columns
through the LM head. When the rollout batch is a single mini-batch (and micro-batch),
the first update forward runs the very weights that sampled it, so its detached outputs
are the old log-probs and values and the rollout's own policy forward is skipped
(``old_logprobs_from_update``; exact, as TRL's GRPO does with one iteration).

The stage around the algorithm (models, data, checkpoints, logging) is
:func:`crs.rl.ppo.stage.run_ppo_stage`; this module never imports it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import time
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from crs.config import ConfigError, RLConfig
from crs.data.schema import Messages
from crs.models.decoding import SamplingSettings, gather_logprobs, position_ids_from_mask
from crs.models.formatting import encode_prompt, pad_batch
from crs.models.precision import autocast, loss_scaler
from crs.rl.combined_reward import CombinedReward
from crs.rl.ppo.losses import (
    ReduceFn,
    compute_gae,
    make_kl_controller,
    masked_mean,
    masked_whiten,
    per_token_rewards,
    ppo_losses,
)
from crs.rl.ppo.policy import (
    MergedSampler,
    PolicyValueModel,
    causal_lm_parts,
    checkpoint_in_eval_mode,
    cpu_math_attention,
    logprobs_and_entropy,
    reply_states,
    sample_replies,
)
from crs.rl.ppo.rollout import Rollout, RolloutResult
from crs.runs import NonFiniteError

logger = logging.getLogger(__name__)


def _nonfinite_any(flag: bool, reduce: ReduceFn, device: torch.device) -> bool:
    # Every process must take the same branch (a skipped backward on one would hang DDP).
    return bool(reduce(torch.tensor(float(flag), device=device)).item() > 0)


# --------------------------------------------------------------------------- the trainer


def unsupported_distribution(accelerator: Any) -> str | None:
    """``"DeepSpeed"`` or ``"FSDP"`` when the launch config asks for one, which crs's PPO does not run on, else None.

    PPO prepares its model alone (``prepare_model``): under DeepSpeed that wraps nothing, so the
    processes would train apart without sharing gradients; under FSDP (or ZeRO-3) no process
    holds whole weights, which sampling, the reference (adapter off) and the merged sampling
    copy read. Data-parallel (DDP) launches are what it runs on.
    """
    from accelerate.utils import DistributedType

    kind = getattr(accelerator, "distributed_type", None)
    if kind == DistributedType.DEEPSPEED:
        return "DeepSpeed"
    if kind == DistributedType.FSDP:
        return "FSDP"
    return None


def ppo_accelerator(**kwargs: Any) -> Any:
    """accelerate's ``Accelerator`` for crs's PPO, whose precision is crs's own: ``model.dtype`` (autocast, and fp16
    loss scaling in :meth:`PPOTrainer.optimizer_step`).

    So ``mixed_precision`` is "no" whatever the launch config says (``ACCELERATE_MIXED_PRECISION``): with fp16
    there, accelerate would scale the loss whose gradients crs clips, and autocast every forward to fp16 over
    ``model.dtype``. ``kwargs`` go to ``Accelerator``.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launched != "no":
        logger.info("PPO: precision comes from model.dtype, not the launch config's mixed_precision=%s", launched)
    if AcceleratorState._shared_state.get("_mixed_precision", "no") != "no":
        AcceleratorState._reset_state()  # an earlier Trainer's in this process; the process group stays
    return Accelerator(mixed_precision="no", **kwargs)


class PPOTrainer:
    """PPO on one policy (+ value function) with a combined reward; runs under accelerate.

    ``batch_size`` and ``mini_batch_size`` in :class:`RLConfig` count rollouts over all
    processes; each process handles its share, and DDP averages gradients.
    """

    def __init__(
        self,
        cfg: RLConfig,
        model: PolicyValueModel,
        tokenizer: Any,
        reward: CombinedReward,
        accelerator: Any | None = None,
        dtype: torch.dtype = torch.float32,
        reference: nn.Module | None = None,
        max_prompt_length: int = 256,
    ) -> None:
        self.cfg = cfg
        self.accelerator = accelerator or ppo_accelerator()
        refused = unsupported_distribution(self.accelerator)
        if refused:
            raise ConfigError(
                f"rl.algorithm ppo does not run under {refused} (crs's PPO is data-parallel: "
                f"under {refused} its processes would not "
                "share gradients, or would sample from weight shards): launch it without that accelerate config (e.g. "
                "`accelerate launch --multi_gpu`), or use rl.algorithm grpo / rloo (TRL's Trainer), which run under it"
            )
        if self.accelerator.mixed_precision != "no":
            raise ValueError(
                f"PPOTrainer: an Accelerator with mixed_precision={self.accelerator.mixed_precision!r}; PPO's "
                "precision is its dtype (make the Accelerator with ppo_accelerator())"
            )
        self.device = self.accelerator.device
        self.tokenizer = tokenizer
        self.reward = reward
        self.dtype = dtype
        self.max_prompt_length = max_prompt_length
        self.world_size = self.accelerator.num_processes
        self.local_batch, self.local_mini_batch, self.micro_batch = local_batch_sizes(cfg, self.world_size)
        # One mini-batch of one micro-batch: the first update forward sees the sampling
        # weights, so it can stand in for the rollout's policy forward.
        self.old_logprobs_from_update = (
            cfg.old_logprobs_from_update and not cfg.logprobs_from_sampling and self.micro_batch == self.local_batch
        )
        if reference is None and not model.is_peft:
            # A fully fine-tuned policy needs its own frozen reference copy.
            reference = copy.deepcopy(model.policy).to(dtype)
        if reference is not None:
            reference.requires_grad_(False).eval()
            reference.to(self.device)
        self.reference = reference

        # Dropout off, always: with it, log-probs of the same tokens would differ between
        # rollout and update, and the ratio would not start at 1 (N details: "disable dropout").
        model.eval()
        checkpoint_in_eval_mode(model)  # model.gradient_checkpointing, with dropout still off
        self.unwrapped = model
        self.model = self.accelerator.prepare_model(model)  # DDP when several processes
        self.params = [p for p in model.parameters() if p.requires_grad]
        # PyTorch's default Adam eps (1e-8) is smaller than the reference code's 1e-5.
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, eps=cfg.adam_eps, weight_decay=0.0)
        anneal = (lambda step: max(0.0, 1.0 - step / max(cfg.steps, 1))) if cfg.anneal_lr else (lambda step: 1.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, anneal)
        self.scaler = loss_scaler(dtype, self.device)  # fp16 only; bf16 and fp32 pass through it
        self.kl_ctl = make_kl_controller(cfg)
        self.step_count = 0
        self.nonfinite_in_row = 0
        self.nonfinite_total = 0
        # Sampling from a merged copy of the LoRA policy (rl.merged_sampling) skips the
        # adapter's per-token overhead; the log-probs PPO uses always come from the policy.
        pack_for = self.local_batch if cfg.packed_sampling else None  # pack_linears leaves non-CPU weights alone
        self.merged = (
            MergedSampler(model, pack_for, cfg.fused_sampling)
            if cfg.merged_sampling and MergedSampler.supported(model)
            else None
        )
        self.sampling = SamplingSettings(
            cfg.max_new_tokens, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k
        )
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # ------------------------------------------------------------------ helpers

    def sum_all(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over processes (identity on one)."""
        if self.world_size == 1:
            return tensor
        return self.accelerator.reduce(tensor.to(self.device), reduction="sum")

    def encode_prompts(self, prompts: list[Messages]) -> tuple[torch.Tensor, torch.Tensor]:
        """Chat-template prompts, left-padded so every reply starts in the same column."""
        encoded = [encode_prompt(self.tokenizer, p, self.max_prompt_length) for p in prompts]
        ids, mask = pad_batch(encoded, self.pad_id, side="left")
        return torch.tensor(ids, device=self.device), torch.tensor(mask, device=self.device)

    def sampler(self) -> PolicyValueModel | MergedSampler:
        """What replies are sampled from: the policy, or its merged copy brought up to date."""
        return self.merged.refresh() if self.merged is not None else self.unwrapped

    @torch.no_grad()
    def reference_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, reply_ids: torch.Tensor
    ) -> torch.Tensor:
        """log pi_ref of the reply tokens: the policy with its adapter off (no second copy),
        or the frozen copy of a fully fine-tuned policy."""
        n_reply = reply_ids.shape[1]
        if self.reference is None:
            with self.unwrapped.reference():
                logits, _ = self.unwrapped(input_ids, attention_mask, n_reply, self.cfg.temperature, with_values=False)
        else:
            body, head = causal_lm_parts(self.reference)
            hidden = body(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
            ).last_hidden_state
            logits = head(reply_states(hidden, n_reply)).float() / self.cfg.temperature
        return gather_logprobs(logits, reply_ids)

    @torch.no_grad()
    def old_policy_outputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, reply_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi_old of the reply tokens and V_old of their states, from one forward."""
        with autocast(self.dtype, self.device), cpu_math_attention(self.device):
            logits, values = self.unwrapped(input_ids, attention_mask, reply_ids.shape[1], self.cfg.temperature)
        return gather_logprobs(logits, reply_ids), values

    def decode(self, reply_ids: torch.Tensor, reply_mask: torch.Tensor) -> list[str]:
        """Reply texts (up to EOS, special tokens dropped)."""
        return [
            self.tokenizer.decode(ids[mask.bool()].tolist(), skip_special_tokens=True).strip()
            for ids, mask in zip(reply_ids.cpu(), reply_mask.cpu())
        ]

    # ------------------------------------------------------------------ 1-3: rollout

    @torch.no_grad()
    def rollout(self, prompts: list[Messages]) -> RolloutResult:
        """Sample, score and compute rewards, advantages and returns for ``prompts``."""
        cfg, timings = self.cfg, {}
        model = self.unwrapped
        prompt_ids, prompt_mask = self.encode_prompts(prompts)

        start = time.perf_counter()
        with autocast(self.dtype, self.device):
            samples = sample_replies(self.sampler(), prompt_ids, prompt_mask, self.sampling, self.eos_id, self.pad_id)
        timings["time/generation"] = time.perf_counter() - start

        start = time.perf_counter()
        reply_ids, reply_mask = samples.reply_ids, samples.reply_mask
        input_ids = torch.cat([prompt_ids, reply_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, reply_mask], dim=1)
        n_reply = reply_ids.shape[1]
        logprobs = values = None
        with autocast(self.dtype, self.device), cpu_math_attention(self.device):
            if cfg.logprobs_from_sampling:
                # Sampling already computed log pi_old (and V_old, with a value head).
                logprobs, values = samples.logprobs, samples.values
                if values is None:
                    values = model.value_model(input_ids, attention_mask, n_reply)
            elif not self.old_logprobs_from_update:
                logprobs, values = self.old_policy_outputs(input_ids, attention_mask, reply_ids)
            ref_logprobs = self.reference_logprobs(input_ids, attention_mask, reply_ids)
        timings["time/forward"] = time.perf_counter() - start

        start = time.perf_counter()
        replies = self.decode(reply_ids, reply_mask)
        scores = self.reward(prompts, replies, samples.ended_with_eos.cpu())
        timings["time/scoring"] = time.perf_counter() - start

        mask = reply_mask.float()
        batch = Rollout(
            input_ids, attention_mask, mask, ref_logprobs.float() * mask, scores.combined.to(self.device, torch.float32)
        )
        if logprobs is not None:
            self.complete_rollout(batch, logprobs, values)
        return RolloutResult(batch, prompts, replies, scores, timings)

    @torch.no_grad()
    def complete_rollout(self, batch: Rollout, logprobs: torch.Tensor, values: torch.Tensor) -> None:
        """Fill in the old log-probs and values, then rewards, KL, advantages and returns."""
        cfg, mask = self.cfg, batch.reply_mask
        batch.logprobs, batch.values = logprobs.detach().float() * mask, values.detach().float() * mask
        batch.rewards, batch.kl = per_token_rewards(
            batch.score, batch.logprobs, batch.ref_logprobs, mask, self.kl_ctl.value
        )
        advantages, batch.returns = compute_gae(batch.rewards, batch.values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, mask, reduce=self.sum_all)
        batch.advantages = advantages

    # ------------------------------------------------------------------ 4: update

    def loss(self, mb: Rollout) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """PPO loss on a micro-batch, with its statistics.

        On an incomplete rollout (old_logprobs_from_update) this forward, run with the
        weights that sampled the batch, first completes it with its own detached outputs.
        """
        with autocast(self.dtype, self.device), cpu_math_attention(self.device):
            logits, values = self.model(mb.input_ids, mb.attention_mask, mb.n_reply, self.cfg.temperature)
        logprobs, entropy = logprobs_and_entropy(logits, mb.input_ids[:, -mb.n_reply :])
        if not mb.complete:
            self.complete_rollout(mb, logprobs, values)
        pg_loss, vf_loss, stats = ppo_losses(
            logprobs,
            mb.logprobs,
            mb.advantages,
            values,
            mb.values,
            mb.returns,
            mb.reply_mask,
            self.cfg.cliprange,
            self.cfg.cliprange_value,
        )
        loss = pg_loss + self.cfg.vf_coef * vf_loss
        with torch.no_grad():
            stats["policy/entropy"] = masked_mean(entropy, mb.reply_mask)
        stats.update({"loss/policy": pg_loss.detach(), "loss/value": vf_loss.detach(), "loss/total": loss.detach()})
        return loss, stats

    def update(self, batch: Rollout) -> dict[str, float]:
        """``ppo_epochs`` passes over shuffled mini-batches of the rollout, one optimizer step each."""
        cfg = self.cfg
        log: dict[str, list[float]] = defaultdict(list)
        optimizer_steps, early_stopped, skipped = 0, False, False
        for _epoch in range(cfg.ppo_epochs):
            for mini in torch.randperm(batch.input_ids.shape[0], device=self.device).split(self.local_mini_batch):
                outcome = self.optimizer_step(batch, mini, log)
                if outcome is None:
                    skipped = True
                    break
                approx_kl, applied = outcome
                optimizer_steps += int(applied)
                if cfg.early_stop_kl is not None and approx_kl > cfg.early_stop_kl:
                    early_stopped = True  # the policy has moved far enough from the one that sampled
                    break
            if early_stopped or skipped:
                break
        self.scheduler.step()
        out = {key: sum(values) / len(values) for key, values in log.items()}
        out.update(
            {
                "ppo/optimizer_steps": float(optimizer_steps),
                "ppo/early_stopped": float(early_stopped),
                "ppo/skipped": float(skipped),
            }
        )
        return out

    def optimizer_step(
        self, batch: Rollout, mini: torch.Tensor, log: dict[str, list[float]]
    ) -> tuple[float, bool] | None:
        """One optimizer step on the mini-batch ``mini`` (row indices), accumulated over micro-batches.

        Returns the mini-batch's approximate KL (mean over processes) and whether the step was
        applied, or None when a loss or the gradient was not finite: then nothing is applied.
        In fp16 the loss is scaled (:func:`crs.models.precision.loss_scaler`) and the gradients
        unscaled before clipping; an overflow of the scaled gradients lowers the scale and skips
        this step alone (not applied), as loss scaling does.
        """
        micro_batches = mini.split(self.micro_batch)
        approx_kl = 0.0
        for k, micro in enumerate(micro_batches):
            # An incomplete rollout is one micro-batch: pass it whole, so loss() completes it in place.
            loss, stats = self.loss(batch.rows(micro) if batch.complete else batch)
            if _nonfinite_any(not torch.isfinite(loss).item(), self.sum_all, self.device):
                return self._skip("loss")
            # DDP all-reduces gradients only on the mini-batch's last micro-batch.
            last = k == len(micro_batches) - 1
            # Under gradient checkpointing the backward recomputes the forward: with the forward's attention kernel.
            with (
                contextlib.nullcontext() if last else self.accelerator.no_sync(self.model),
                cpu_math_attention(self.device),
            ):
                self.accelerator.backward(self.scaler.scale(loss / len(micro_batches)))
            for key, value in stats.items():
                log[key].append(value.item())
            approx_kl += stats["policy/approx_kl"].item() / len(micro_batches)
        self.scaler.unscale_(self.optimizer)  # clipping reads the true gradients
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        finite = bool(torch.isfinite(grad_norm))  # the same on every process: gradients are all-reduced
        if not finite and not self.scaler.is_enabled():
            return self._skip("gradient")
        self.scaler.step(self.optimizer)  # fp16: not applied after an overflow
        self.scaler.update()  # fp16: the scale halves after an overflow, grows after a run without
        self.optimizer.zero_grad(set_to_none=True)
        if finite:
            log["policy/grad_norm"].append(grad_norm.item())
        if self.scaler.is_enabled():
            log["ppo/loss_scale"].append(self.scaler.get_scale())
        return self.mean_over_processes({"kl": approx_kl})["kl"], finite

    def _skip(self, what: str) -> None:
        logger.warning("step %d: non-finite %s; this update is skipped", self.step_count + 1, what)
        self.optimizer.zero_grad(set_to_none=True)
        return None

    # ------------------------------------------------------------------ one step

    def step(self, prompts: list[Messages]) -> dict[str, float]:
        """One PPO iteration on this process's ``prompts``; returns metrics averaged over processes."""
        start = time.perf_counter()
        result = self.rollout(prompts)
        batch = result.batch
        kl_coef = self.kl_ctl.value
        finite = result.scores.is_finite() and (not batch.complete or bool(torch.isfinite(batch.advantages).all()))
        rewards_finite = not _nonfinite_any(not finite, self.sum_all, self.device)
        update_start = time.perf_counter()
        if rewards_finite:
            update_stats = self.update(batch)
        else:
            logger.warning("step %d: non-finite reward; the update is skipped", self.step_count + 1)
            update_stats = {"ppo/skipped": 1.0}
        update_time = time.perf_counter() - update_start
        if not batch.complete:  # the update was skipped before its first forward
            self.complete_rollout(
                batch,
                *self.old_policy_outputs(batch.input_ids, batch.attention_mask, batch.input_ids[:, -batch.n_reply :]),
            )

        skipped = update_stats.get("ppo/skipped", 0.0) > 0
        self.nonfinite_in_row = self.nonfinite_in_row + 1 if skipped else 0
        self.nonfinite_total += int(skipped)

        mask = batch.reply_mask
        seq_kl = batch.kl.sum(-1)
        local = {
            **result.scores.metrics(),
            "reward/non_score": (-kl_coef * seq_kl).mean().item(),
            "kl/sequence": seq_kl.mean().item(),
            "kl/coef": kl_coef,
            "reply/length": mask.sum(-1).mean().item(),
            "value/mean": masked_mean(batch.values, mask).item(),
            "value/explained_variance": explained_variance(batch.values, batch.returns, mask),
            "returns/mean": masked_mean(batch.returns, mask).item(),
            **update_stats,
            **result.timings,
            "time/update": update_time,
        }
        metrics = self.mean_over_processes(local)
        # Every process sees the same global KL, so the controllers stay in step.
        self.kl_ctl.update(metrics["kl/sequence"], self.cfg.batch_size)
        self.step_count += 1
        elapsed = time.perf_counter() - start
        metrics["time/step"] = elapsed
        metrics["tokens_per_second"] = self.sum_all(mask.sum()).item() / elapsed
        metrics["ppo/nonfinite_total"] = float(self.nonfinite_total)
        metrics["learning_rate"] = self.optimizer.param_groups[0]["lr"]
        if self.nonfinite_in_row >= self.cfg.max_nonfinite_in_row:
            raise NonFiniteError(
                f"{self.nonfinite_in_row} PPO steps in a row had a non-finite reward, loss or gradient "
                f"(rl.max_nonfinite_in_row={self.cfg.max_nonfinite_in_row}); "
                "lower rl.learning_rate or check the reward models"
            )
        return metrics

    def mean_over_processes(self, local: dict[str, float], weight: float = 1.0) -> dict[str, float]:
        """Average a dict of floats over processes (same keys everywhere), each process's values
        counting ``weight`` times (its number of items; 0: it only joins the collective)."""
        if self.world_size == 1:
            return dict(local)
        keys = sorted(local)
        # A weight-0 process adds zeros: its values (a stand-in's, maybe NaN) must not reach the sum.
        weighted = [float(local[k]) * weight if weight else 0.0 for k in keys]
        values = self.sum_all(torch.tensor([*weighted, float(weight)], device=self.device, dtype=torch.float64))
        return dict(zip(keys, (values[:-1] / values[-1]).tolist()))

    @torch.no_grad()
    def generate_samples(self, prompts: list[Messages], greedy: bool = True) -> list[dict[str, Any]]:
        """Replies to ``prompts`` with each reward source's score (for ``samples/step_N.json``)."""
        prompt_ids, prompt_mask = self.encode_prompts(prompts)
        settings = dataclasses.replace(self.sampling, do_sample=not greedy)
        with autocast(self.dtype, self.device):
            samples = sample_replies(self.sampler(), prompt_ids, prompt_mask, settings, self.eos_id, self.pad_id)
        replies = self.decode(samples.reply_ids, samples.reply_mask)
        scores = self.reward(prompts, replies, samples.ended_with_eos.cpu())
        return [
            {"prompt": prompt, "reply": reply, "ended_with_eos": bool(eos), **scores.row(i)}
            for i, (prompt, reply, eos) in enumerate(zip(prompts, replies, samples.ended_with_eos.tolist()))
        ]

    @torch.no_grad()
    def held_out_eval(self, prompts: list[Messages], judge: Any | None = None, seed: int = 0) -> dict[str, float]:
        """Proxy rewards, judge score and KL to the reference on held-out prompts (over-optimisation).

        Every process calls it with all the ``prompts`` and evaluates its share; one whose share is
        empty (fewer prompts than processes) evaluates the first prompt as a stand-in that counts
        for nothing, so that every process joins the averaging. Replies are sampled as in training,
        under a private RNG seeded by ``seed`` (the training stream is untouched); ``kl/sequence``
        is the k1 estimate of KL(policy || reference) per reply, unbiased under those samples.
        ``judge`` is a :class:`crs.rl.reward_sources.RewardSource` that is only ever read, never
        optimised. Averaged over the prompts of every process.
        """
        share = prompts[self.accelerator.process_index :: self.world_size]
        prompts = share or prompts[:1]
        prompt_ids, prompt_mask = self.encode_prompts(prompts)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            with autocast(self.dtype, self.device):
                samples = sample_replies(
                    self.sampler(), prompt_ids, prompt_mask, self.sampling, self.eos_id, self.pad_id
                )
        input_ids = torch.cat([prompt_ids, samples.reply_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, samples.reply_mask], dim=1)
        with autocast(self.dtype, self.device), cpu_math_attention(self.device):
            ref_logprobs = self.reference_logprobs(input_ids, attention_mask, samples.reply_ids)
        kl = ((samples.logprobs - ref_logprobs.float()) * samples.reply_mask).sum(-1)
        replies = self.decode(samples.reply_ids, samples.reply_mask)
        scores = self.reward(prompts, replies, samples.ended_with_eos.cpu(), fit_stats=False)
        local = {
            "kl/sequence": kl.mean().item(),
            "reply/length": samples.reply_mask.sum(-1).float().mean().item(),
            **scores.metrics(),
        }
        if judge is not None:
            local[f"judge/{judge.name}"] = judge.score(prompts, replies).mean().item()
        metrics = self.mean_over_processes(local, weight=len(share))
        metrics["kl/sqrt"] = max(metrics["kl/sequence"], 0.0) ** 0.5
        return metrics

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the weights that a resumed run needs to continue identically."""
        return {
            "step": self.step_count,
            "kl_controller": self.kl_ctl.state_dict(),
            "nonfinite_in_row": self.nonfinite_in_row,
            "nonfinite_total": self.nonfinite_total,
            "reward": self.reward.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.step_count = int(state["step"])
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.nonfinite_in_row = int(state["nonfinite_in_row"])
        self.nonfinite_total = int(state["nonfinite_total"])
        self.reward.load_state_dict(state["reward"])


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over reply tokens: how well the critic predicts."""
    var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    residual = returns - values
    var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    return float(1.0 - var_residual / var_returns) if var_returns > 0 else float("nan")


def local_batch_sizes(cfg: RLConfig, world_size: int) -> tuple[int, int, int]:
    """(rollouts, mini-batch, micro-batch) per process; fails early when they do not divide."""

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(
        cfg.batch_size % world_size == 0,
        f"rl.batch_size={cfg.batch_size} must be a multiple of the {world_size} processes",
    )
    need(
        cfg.batch_size % cfg.mini_batch_size == 0,
        f"rl.batch_size={cfg.batch_size} must be a multiple of rl.mini_batch_size={cfg.mini_batch_size}",
    )
    per_mini = cfg.mini_batch_size * 1.0 / (world_size * cfg.gradient_accumulation_steps)
    need(
        per_mini.is_integer() and per_mini >= 1,
        f"rl.mini_batch_size={cfg.mini_batch_size} must be a multiple of processes ({world_size}) x "
        f"rl.gradient_accumulation_steps ({cfg.gradient_accumulation_steps})",
    )
    return cfg.batch_size // world_size, cfg.mini_batch_size // world_size, int(per_mini)
