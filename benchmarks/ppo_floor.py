"""The least time a PPO step of benchmarks/ppo_step.py can take on this CPU: python benchmarks/ppo_floor.py

A lower bound, not an estimate. Each phase's matmul arithmetic is counted from the model's
config and the benchmark's setting, then timed at the fastest matmul rate this machine
reaches (measured here: the best of several shapes, the step's own among them), and
decoding's weight reads at the fastest read bandwidth measured here. Everything else is
taken to cost nothing: attention's softmax, norms, activations, the log-softmax over the
vocabulary, sampling, the optimiser, Python. Counted generously low: only the real tokens
(no padding), the causal half of attention, no weight gradients for frozen weights.

Printed per dtype: the measured peaks, each phase's floor, the total, and what a 3x
speed-up over TRL 1.12's step time would allow (``--trl``, seconds per step measured in the
same sitting; default the figures in ppo_step.py). A floor close to that budget means 3x
at this setting needs the whole step at the CPU's peak.
"""

from __future__ import annotations

import argparse
import runpy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MODEL = "embedded:smollm2-135m-instruct"


@dataclass
class Shape:
    """What the arithmetic depends on, from a Llama-style config."""

    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @property
    def linear_weights(self) -> int:
        """Weights of every layer's q, k, v, o, gate, up and down projections."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return self.layers * (self.hidden * (q + 2 * kv) + q * self.hidden + 3 * self.hidden * self.ffn)

    @property
    def head_weights(self) -> int:
        """The output embedding (tied or not, it is one matmul)."""
        return self.vocab * self.hidden

    def lora_weights(self, rank: int) -> int:
        """A LoRA adapter of ``rank`` on all seven linears of every layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        in_plus_out = (self.hidden + q) * 2 + (self.hidden + kv) * 2 + (self.hidden + self.ffn) * 3
        return self.layers * rank * in_plus_out

    def attention_flops(self, lengths: list[int]) -> float:
        """QK^T and AV over the causal half, for sequences of ``lengths``."""
        pairs = sum(n * (n + 1) / 2 for n in lengths)
        return self.layers * 2 * 2 * self.heads * self.head_dim * pairs


def shape_of(config: Any) -> Shape:
    """The :class:`Shape` of a transformers Llama-style config."""
    c = config.get_text_config()
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return Shape(
        c.hidden_size,
        c.intermediate_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        head_dim,
        c.vocab_size,
    )


def load_shape(name: str) -> Shape:
    """The :class:`Shape` of a model crs can load by ``name``."""
    from transformers import AutoConfig

    from crs.models.resolution import resolve_model_path

    return shape_of(AutoConfig.from_pretrained(resolve_model_path(name)))


def best_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` (after one untimed)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def peak_matmul_flops(dtype: torch.dtype, shape: Shape, tokens: int, head_rows: int) -> float:
    """The fastest FLOP/s any of these matmuls reached: the step's own shapes and a large square."""
    q = shape.heads * shape.head_dim
    cases = [
        (tokens, shape.hidden, q),
        (tokens, shape.hidden, shape.ffn),
        (tokens, shape.ffn, shape.hidden),
        (head_rows, shape.hidden, shape.vocab),
        (2048, 2048, 2048),
    ]
    best = 0.0
    for m, k, n in cases:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        best = max(best, 2 * m * k * n / best_seconds(lambda a=a, b=b: a @ b))
    return best


def peak_read_bandwidth(dtype: torch.dtype, megabytes: int = 512) -> float:
    """The fastest bytes/s of reading a buffer far larger than the caches (a sum, or a copy's read+write)."""
    x = torch.ones(megabytes * 2**20 // torch.finfo(dtype).bits * 8, dtype=dtype)
    y = torch.empty_like(x)
    by_sum = x.nbytes / best_seconds(lambda: x.sum())
    by_copy = 2 * x.nbytes / best_seconds(lambda: y.copy_(x))
    return max(by_sum, by_copy)


def phase_floors(
    shape: Shape,
    prompt_lengths: list[int],
    reply: int,
    rank: int,
    flops: float,
    bandwidth: float,
    bytes_per_weight: int,
) -> dict[str, float]:
    """Seconds per phase at ``flops`` FLOP/s and ``bandwidth`` bytes/s, nothing else counted."""
    batch = len(prompt_lengths)
    weights, head, lora = shape.linear_weights, shape.head_weights, shape.lora_weights(rank)
    sequences = [p + reply for p in prompt_lengths]
    tokens = sum(sequences)
    full_forward = 2 * weights * tokens + shape.attention_flops(sequences)
    reply_logits = 2 * head * batch * reply
    # Prefill the prompts (and the first token's logits), then one token at a time: each
    # decode step needs every weight once, from memory (merged LoRA: base-sized weights).
    prefill = 2 * weights * sum(prompt_lengths) + shape.attention_flops(prompt_lengths) + 2 * head * batch
    per_token = max(2 * (weights + head) * batch / flops, (weights + head) * bytes_per_weight / bandwidth)
    forward_with_lora = full_forward + reply_logits + 2 * lora * tokens
    # Backward: input gradients through every frozen matmul (as many FLOPs as the forward),
    # attention's backward (twice its forward), LoRA's input and weight gradients.
    backward = 2 * weights * tokens + reply_logits + 2 * shape.attention_flops(sequences) + 4 * lora * tokens
    return {
        "generation": prefill / flops + (reply - 1) * per_token,
        "reference forward": (full_forward + reply_logits) / flops,
        "scoring": full_forward / flops,  # the benchmark's reward model: the same body and a scalar head
        "update": (forward_with_lora + backward) / flops,
    }


def parse_times(text: str) -> dict[str, float]:
    """``fp32=16.6,bf16=11.1`` as a dict."""
    return {k: float(v) for k, v in (item.split("=") for item in text.split(","))}


def main() -> None:
    """Measure the peaks and print each dtype's floors."""
    setting = runpy.run_path(str(Path(__file__).with_name("ppo_step.py")))  # the setting being bounded
    prompts, trl_reference = setting["PROMPTS"], setting["TRL_REFERENCE"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument(
        "--reply", type=int, default=48, help="reply tokens per prompt (the benchmark's max_new_tokens)"
    )
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (all linear layers)")
    parser.add_argument(
        "--trl",
        type=parse_times,
        default=trl_reference,
        help="TRL s/step of the same sitting, e.g. fp32=16.6,bf16=11.1",
    )
    args = parser.parse_args()

    from crs.data.schema import user_prompt
    from crs.models.formatting import encode_prompt
    from crs.models.loading import load_tokenizer

    shape = load_shape(MODEL)
    tokenizer = load_tokenizer(MODEL, padding_side="left")
    prompt_lengths = [len(encode_prompt(tokenizer, user_prompt(p), 256)) for p in prompts]
    tokens = sum(prompt_lengths) + len(prompts) * args.reply
    print(
        f"Setting: {len(prompts)} prompts of {min(prompt_lengths)}-{max(prompt_lengths)} tokens, "
        f"{args.reply} reply tokens each "
        f"({tokens} tokens a forward), LoRA r{args.rank}; {shape.linear_weights / 1e6:.1f}M linear + "
        f"{shape.head_weights / 1e6:.1f}M head weights; {torch.get_num_threads()} threads"
    )
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for name in args.dtypes.split(","):
        dtype = dtypes[name]
        flops = peak_matmul_flops(dtype, shape, tokens, len(prompts) * args.reply)
        bandwidth = peak_read_bandwidth(dtype)
        floors = phase_floors(
            shape, prompt_lengths, args.reply, args.rank, flops, bandwidth, torch.finfo(dtype).bits // 8
        )
        total = sum(floors.values())
        budget = args.trl.get(name, float("nan")) / 3
        print(f"\n{name}: peak matmul {flops / 1e9:.0f} GFLOP/s, read bandwidth {bandwidth / 1e9:.1f} GB/s")
        for phase, seconds in floors.items():
            print(f"  {phase:18} >= {seconds:5.2f} s")
        print(
            f"  {'step':18} >= {total:5.2f} s; "
            f"3x TRL ({args.trl.get(name, float('nan')):.1f} s) allows {budget:.2f} s: "
            f"the floor is {total / budget:.0%} of it"
        )


if __name__ == "__main__":
    main()
