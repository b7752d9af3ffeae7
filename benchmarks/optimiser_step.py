"""Seconds per step of each on-policy optimiser at PPO's benchmark setting: python benchmarks/optimiser_step.py

The setting of benchmarks/ppo_step.py: SmolLM2-135M-Instruct policy with a LoRA adapter
(r 16, all linear layers), 8 sampled replies per step of up to 48 new tokens at temperature
0.8, the reward a SmolLM2 sequence classifier with a randomly initialised head, KL
coefficient 0.05. PPO: 8 prompts, one reply each, 1 epoch on one mini-batch (crs's
PPOTrainer); GRPO and RLOO (TRL's, through crs's stage code): 2 prompts x 4 replies, one
update. So each step costs 8 sampled and scored replies: the price of one "rollout batch".

Each algorithm runs in its own process; the figure is the median ``time/step`` (sampling,
scoring, update) over ``--steps`` steps after ``--warmup``, with the mean reply length (the
algorithms stop at EOS, so equal budgets of replies can differ in tokens). This machine's
speed drifts over minutes: compare rows from one sitting.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPTS = runpy.run_path(str(Path(__file__).with_name("ppo_step.py")))["PROMPTS"]  # the PPO benchmark's setting


def run_one(
    algorithm: str, model: str, dtype_name: str, steps: int, warmup: int, threads: int | None
) -> dict[str, float]:
    """Time ``warmup + steps`` steps of ``algorithm``; the medians after the warm-up."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from crs.models.cpu_memory import keep_freed_memory

    keep_freed_memory()  # as every crs stage does on CPU
    from crs.config import CRSConfig, LoraConfig, ModelConfig, RLConfig
    from crs.data.schema import user_prompt
    from crs.models.loading import load_causal_lm, load_tokenizer
    from crs.models.lora import add_lora
    from crs.models.precision import resolve_dtype
    from crs.rl.combined_reward import CombinedReward
    from crs.rl.reward_sources import RewardSource
    from crs.rm.scorer import load_reward_scorers

    model_cfg = ModelConfig(
        name=model, dtype=dtype_name, lora=LoraConfig(r=16, alpha=32, dropout=0.0, target_modules="all-linear")
    )
    torch.manual_seed(0)
    tokenizer = load_tokenizer(model, padding_side="left")
    scorer = load_reward_scorers([model], model_cfg)[0]  # the policy's base + a random scalar head
    reward = CombinedReward([RewardSource("rm", scorer.score, normalize="none")])
    prompts = [user_prompt(p) for p in PROMPTS]
    rows: list[dict[str, float]] = []
    if algorithm == "ppo":
        from crs.rl.ppo.policy import PolicyValueModel
        from crs.rl.ppo.trainer import PPOTrainer

        policy = add_lora(load_causal_lm(model, model_cfg), model_cfg.lora, "causal_lm")
        cfg = RLConfig(batch_size=8, mini_batch_size=8, ppo_epochs=1, max_new_tokens=48, temperature=0.8, kl_coef=0.05)
        trainer = PPOTrainer(cfg, PolicyValueModel(policy), tokenizer, reward, dtype=resolve_dtype(dtype_name))
        for _ in range(warmup + steps):
            rows.append(trainer.step(prompts))
    else:
        from crs.rl.grpo_rloo import build_grpo_rloo_trainer
        from crs.rl.trl_common import peft_lora_config

        cfg = CRSConfig()
        cfg.model = model_cfg
        cfg.run.logging_steps = 1000
        cfg.rl = RLConfig(
            algorithm=algorithm,
            steps=warmup + steps,
            batch_size=8,
            group_size=4,
            max_new_tokens=48,
            temperature=0.8,
            kl_coef=0.05,
            save_steps=0,
        )
        with tempfile.TemporaryDirectory() as folder:
            run_dir = Path(folder)
            trainer, _ = build_grpo_rloo_trainer(
                cfg, run_dir, load_causal_lm(model, model_cfg), peft_lora_config(cfg), tokenizer, reward, prompts
            )
            trainer.train()
            rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        print(
            f"  [{algorithm} {dtype_name}] step {i + 1}: {row['time/step']:.2f} s, "
            f"reply length {row['reply/length']:.1f}",
            file=sys.stderr,
        )
    timed = rows[warmup:]
    return {key: statistics.median(r[key] for r in timed) for key in ("time/step", "reply/length")}


def main() -> None:
    """Run each algorithm in a subprocess and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", default="ppo,grpo,rloo")
    parser.add_argument("--dtype", default="bf16", help="fp32 or bf16 (the policy's frozen base)")
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct", help="the policy and reward models' base")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        print(json.dumps(run_one(args._worker, args.model, args.dtype, args.steps, args.warmup, args.threads)))
        return
    rows = {}
    for algorithm in args.algorithms.split(","):
        command = [
            sys.executable,
            __file__,
            "--_worker",
            algorithm,
            "--model",
            args.model,
            "--dtype",
            args.dtype,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ] + (["--threads", str(args.threads)] if args.threads else [])
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        )
        sys.stderr.write(done.stderr[-4000:] if done.returncode else "")
        if done.returncode:
            raise SystemExit(f"{algorithm}: exit code {done.returncode}")
        rows[algorithm] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"| algorithm | s / step (8 replies) | reply length | ({args.dtype}, median of {args.steps}) |")
    print("|---|---|---|---|")
    for algorithm, row in rows.items():
        print(f"| {algorithm} | {row['time/step']:.2f} | {row['reply/length']:.1f} | |")


if __name__ == "__main__":
    main()
