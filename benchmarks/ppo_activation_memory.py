"""Activation memory of one PPO update forward, with and without gradient checkpointing.

    python benchmarks/ppo_activation_memory.py [--batch 8] [--prompt 64] [--reply 48]

The setting of benchmarks/ppo_step.py: the embedded SmolLM2-135M-Instruct policy in bf16 with
a LoRA adapter (r 16, all linear layers) and a value head, a micro-batch of ``--batch``
sequences of ``--prompt`` prompt and ``--reply`` reply tokens, crs's PPO forward (log-probs
of the reply tokens and their values), then the backward pass.

The figure is what the forward keeps for the backward pass: the bytes of every tensor autograd
saves, each storage counted once, weights left out (they are there anyway). It does not depend
on the machine: with ``model.gradient_checkpointing`` only each decoder layer's input is kept,
and the layer is recomputed in the backward pass. On CUDA the peak allocated memory of the
forward and backward is printed too. Wall times are from this sitting only.
"""

from __future__ import annotations

import argparse
import time

import torch


def saved_bytes(run_forward, weights: set[int]) -> tuple[int, torch.Tensor]:
    """Bytes autograd keeps for the backward pass of ``run_forward()`` (weights excluded), and its loss."""
    seen: set[int] = set()
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in seen and key not in weights:
            seen.add(key)
            total += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = run_forward()
    return total, loss


def measure(checkpointing: bool, batch: int, prompt: int, reply: int) -> dict[str, float]:
    """One forward and backward of the PPO policy forward; memory kept and seconds."""
    from crs.config import LoraConfig
    from crs.models.decoding import gather_logprobs
    from crs.models.loading import load_causal_lm
    from crs.models.lora import add_lora
    from crs.rl.ppo.policy import PolicyValueModel, checkpoint_in_eval_mode, enable_gradient_checkpointing

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    policy = add_lora(
        load_causal_lm("embedded:smollm2-135m-instruct", dtype=torch.bfloat16),
        LoraConfig(r=16, alpha=32, dropout=0.0),
        "causal_lm",
    )
    model = PolicyValueModel(policy).to(device)
    if checkpointing:
        enable_gradient_checkpointing(model)
    model.eval()
    checkpoint_in_eval_mode(model)  # as PPOTrainer does
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40000, (batch, prompt + reply), generator=generator).to(device)
    mask = torch.ones_like(ids)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def forward() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits, values = model(ids, mask, reply)
        return -gather_logprobs(logits, ids[:, -reply:]).mean() + values.square().mean()

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    kept, loss = saved_bytes(forward, weights)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    out = {"kept_mib": kept / 2**20, "seconds": time.perf_counter() - started}
    if device.type == "cuda":
        out["peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--reply", type=int, default=48)
    args = parser.parse_args()
    rows = {flag: measure(flag, args.batch, args.prompt, args.reply) for flag in (False, True)}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(
        f"PPO forward + backward, SmolLM2-135M bf16 + LoRA r16, "
        f"batch {args.batch} x ({args.prompt} + {args.reply}) tokens, {device}"
    )
    for flag, row in rows.items():
        extra = f", peak allocated {row['peak_allocated_mib']:.0f} MiB" if "peak_allocated_mib" in row else ""
        print(
            f"  gradient_checkpointing {str(flag).lower():5}: "
            f"kept for backward {row['kept_mib']:7.1f} MiB, {row['seconds']:.2f} s{extra}"
        )
    print(f"  checkpointing keeps {rows[True]['kept_mib'] / rows[False]['kept_mib']:.0%} of the activations")


if __name__ == "__main__":
    main()
