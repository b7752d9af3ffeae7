"""Seconds per PPO step on CPU, in fp32 and bf16: python benchmarks/ppo_step.py

Fixed setting: SmolLM2-135M-Instruct policy with a LoRA adapter (r 16, all linear layers),
8 prompts, up to 48 new tokens, 1 PPO epoch on one mini-batch; the reward is a SmolLM2
sequence classifier with a randomly initialised head (as in the TRL reference run, with
SmolLM2 value and reward models). Each dtype runs in its own process so peak memory is its
own; the figures are medians over ``--steps`` steps after ``--warmup`` steps.

Printed per dtype: generation / forward (reference log-probs; with one mini-batch the old
log-probs and values come from the update's first forward) / scoring (reward model) /
update seconds, total seconds per step, generated tokens per second, and peak RSS. The
"vs TRL" column divides ``TRL_REFERENCE`` (TRL's seconds per step, docs/results.md); the
machine's speed drifts over minutes, so compare with TRL 1.12 (its own venv) timed in the
same sitting.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

TRL_REFERENCE = {"fp32": 16.0, "bf16": 10.5}  # s/step, TRL 1.12 PPOTrainer on this machine
PROMPTS = [
    "Explain why the sky is blue in two sentences.",
    "List three tips for sleeping better.",
    "What is 17 + 25?",
    "Define photosynthesis.",
    "Compare bicycles and cars for commuting.",
    "Summarize the benefits of drinking water.",
    "Rewrite politely: give me the report now.",
    "Is it safe to swim right after eating?",
]
PHASES = ("time/generation", "time/forward", "time/scoring", "time/update")


def run_one(dtype_name: str, steps: int, warmup: int, threads: int | None) -> dict[str, float]:
    """Build the policy, reward model and trainer in ``dtype_name``; time ``steps`` PPO steps."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from crs.models.cpu_memory import keep_freed_memory

    keep_freed_memory()  # as every crs stage does on CPU
    from crs.config import LoraConfig, ModelConfig, RLConfig
    from crs.data.schema import user_prompt
    from crs.models.loading import load_causal_lm, load_tokenizer
    from crs.models.lora import add_lora
    from crs.models.precision import resolve_dtype
    from crs.rl.combined_reward import CombinedReward
    from crs.rl.ppo.policy import PolicyValueModel
    from crs.rl.ppo.trainer import PPOTrainer
    from crs.rl.reward_sources import RewardSource
    from crs.rm.scorer import load_reward_scorers

    name = "embedded:smollm2-135m-instruct"
    model_cfg = ModelConfig(name=name, dtype=dtype_name)
    torch.manual_seed(0)
    policy = add_lora(
        load_causal_lm(name, model_cfg),
        LoraConfig(r=16, alpha=32, dropout=0.0, target_modules="all-linear"),
        "causal_lm",
    )
    tokenizer = load_tokenizer(name, padding_side="left")
    scorer = load_reward_scorers([name], model_cfg)[0]  # SmolLM2 + a random scalar head
    reward = CombinedReward([RewardSource("rm", scorer.score, normalize="none")])
    cfg = RLConfig(batch_size=8, mini_batch_size=8, ppo_epochs=1, max_new_tokens=48, temperature=0.8)
    trainer = PPOTrainer(cfg, PolicyValueModel(policy), tokenizer, reward, dtype=resolve_dtype(dtype_name))
    prompts = [user_prompt(p) for p in PROMPTS]
    rows = []
    for i in range(warmup + steps):
        metrics = trainer.step(prompts)
        if i >= warmup:
            rows.append(metrics)
        print(
            f"  [{dtype_name}] step {i + 1}: {metrics['time/step']:.2f} s, reply length {metrics['reply/length']:.1f}",
            file=sys.stderr,
        )
    out = {
        key: statistics.median(r[key] for r in rows)
        for key in (*PHASES, "time/step", "tokens_per_second", "reply/length")
    }
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    """Run each dtype in a subprocess and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.steps, args.warmup, args.threads)))
        return

    results = {}
    for dtype_name in args.dtypes.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            dtype_name,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        start = time.perf_counter()
        done = subprocess.run(
            cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        )
        if done.returncode != 0:
            sys.exit(f"{dtype_name} run failed (exit {done.returncode})")
        results[dtype_name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{dtype_name}: finished in {time.perf_counter() - start:.0f} s", file=sys.stderr)

    print(
        f"\nPPO step, SmolLM2-135M LoRA r16 all-linear, 8 prompts x <=48 new tokens, 1 epoch, 1 mini-batch "
        f"(median of {args.steps} after {args.warmup} warm-up)"
    )
    header = (
        f"{'dtype':6} {'gen s':>7} {'fwd s':>7} {'score s':>8} {'update s':>9} {'total s':>8} "
        f"{'tok/s':>7} {'len':>5} {'peak MB':>8} {'vs TRL':>7}"
    )
    print(header)
    print("-" * len(header))
    for dtype_name, r in results.items():
        speedup = TRL_REFERENCE.get(dtype_name, float("nan")) / r["time/step"]
        print(
            f"{dtype_name:6} {r['time/generation']:7.2f} {r['time/forward']:7.2f} {r['time/scoring']:8.2f} "
            f"{r['time/update']:9.2f} {r['time/step']:8.2f} {r['tokens_per_second']:7.1f} {r['reply/length']:5.1f} "
            f"{r['peak_rss_mb']:8.0f} {speedup:6.1f}x"
        )
    print(
        f"TRL 1.12 PPOTrainer reference: {TRL_REFERENCE['fp32']:.0f} s/step fp32, "
        f"{TRL_REFERENCE['bf16']:.1f} s/step bf16"
    )


if __name__ == "__main__":
    main()
