"""Does crs work on this NVIDIA GPU, and how fast? ``python benchmarks/gpu_check.py --out gpu_check.json``

Every stage runs a few steps on ``cuda`` through crs's own command line (``crs.cli.main`` on a config written
here), on a small Llama built from a config with a tokenizer trained here: no network, no model files. Each
check records pass / fail / skipped with its reason, its seconds per step, its peak GPU memory and what it
measured, in a JSON report; a table is printed at the end. The checks are isolated (one that fails or raises
leaves the others to run) and none starts once the time budget is spent.

``--dry-run`` runs the same checks on the CPU at the tiniest size (4-bit weights and DeepSpeed skipped), so the
script does not rot: tests/test_benchmarks.py runs it. What each check means, the wheels a GPU machine without
network needs (benchmarks/gpu_check_wheels.py) and the exact command: docs/gpu_check.md. Run it from the
repository root with the repository on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

# The GPU machine has no network: nothing here may try a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIGS = ROOT / "examples" / "accelerate"
REPORT_FORMAT = 1
STATUSES = ("pass", "fail", "skipped")
DEFAULT_BUDGET_S = 330.0  # the device command has 8 minutes: installing the wheels and the last check take the rest
CHILD_FLAG = "--child-report"  # internal: this script re-entered under `accelerate launch` (the sharded checks)
PACKAGES = (
    "torch",
    "transformers",
    "accelerate",
    "peft",
    "trl",
    "datasets",
    "bitsandbytes",
    "deepspeed",
    "tokenizers",
    "huggingface_hub",
)
LORA_RANK = 8
PREDICTOR = "tiny"  # the model's name in the predict check's eval_pred.models


@dataclass(frozen=True)
class Scale:
    """Model and run sizes: ``tiny`` for the CPU dry run, ``small`` on a GPU (large enough to time)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    examples: int  # rows in each data file
    steps: int  # optimiser steps of every training check
    batch: int
    max_new_tokens: int
    max_length: int


SCALES = {
    "tiny": Scale(32, 2, 4, 2, 64, examples=16, steps=2, batch=4, max_new_tokens=6, max_length=48),
    "small": Scale(512, 8, 8, 4, 1536, examples=64, steps=4, batch=8, max_new_tokens=32, max_length=128),
}


@dataclass
class Workspace:
    """One check run's folder (model, data, config, run directories), its size, device and deadline."""

    root: Path
    scale: Scale
    cuda: bool
    deadline: float  # time.monotonic() after which no check starts

    @property
    def config(self) -> Path:
        """The generated crs config: every check's subset."""
        return self.root / "gpu_check.yaml"

    @property
    def model_dir(self) -> Path:
        """The randomly initialised Llama and its tokenizer: every stage's ``model.name``."""
        return self.root / "model"

    def data(self, kind: str) -> Path:
        """A data file: ``sft``, ``rankings``, ``absolute`` or ``prompts``."""
        return self.root / "data" / f"{kind}.jsonl"

    def run_dir(self, name: str) -> Path:
        """Where crs writes the run ``name`` (``run.output_dir`` is ``<root>/runs``)."""
        return self.root / "runs" / name


class CheckFailed(Exception):
    """A stage that stopped, or a measurement outside its bound; ``measured`` keeps what was seen."""

    def __init__(self, reason: str, measured: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.measured = measured or {}


class CheckSkipped(Exception):
    """A check that cannot say anything here (no CUDA, a package missing, nothing sharded on the CPU)."""


# --------------------------------------------------------------------------- the model, the data, the config

WORDS = (
    "apple river stone cloud music garden window paper light table green quick small bright calm north south "
    "winter summer road"
).split()
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# ChatML, as SmolLM2 (crs's default policy) formats a chat.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def write_data(ws: Workspace) -> list[str]:
    """The four data files the stages read; returns every text in them (the tokenizer's corpus).

    Good replies end in "excellent" and bad ones in "poor", so a reward model has something to learn.
    """
    rng = random.Random(0)

    def phrase() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))

    rows: dict[str, list[dict[str, Any]]] = {"sft": [], "rankings": [], "absolute": [], "prompts": []}
    for i in range(ws.scale.examples):
        prompt = f"Question {i}: {phrase()}?"
        good, middle, bad = f"{phrase()} excellent", phrase(), f"{phrase()} poor"
        rows["sft"].append({"prompt": prompt, "reply": good})
        rows["rankings"].append({"prompt": prompt, "replies": [good, middle, bad], "scores": [0.9, 0.5, 0.1]})
        rows["absolute"].append({"prompt": prompt, "reply": good if i % 2 else bad, "score": 0.9 if i % 2 else 0.1})
        rows["prompts"].append({"prompt": prompt, "id": f"p{i}"})
    for kind, table in rows.items():
        ws.data(kind).parent.mkdir(parents=True, exist_ok=True)
        ws.data(kind).write_text("".join(json.dumps(row) + "\n" for row in table), encoding="utf-8")
    return [row["prompt"] for row in rows["prompts"]] + [reply for row in rows["rankings"] for reply in row["replies"]]


def build_tokenizer(texts: list[str]) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` with a ChatML template: any text encodes (bytes are the
    fallback) and nothing is downloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([*texts, "system user assistant"], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )


def build_model(ws: Workspace, tokenizer: Any) -> None:
    """A randomly initialised Llama of ``ws.scale``, saved with ``tokenizer`` as a plain model folder.

    Its weights start ten times larger than Llama's default, so that its next-token distributions depend on the
    context: a check that sampling kept the context could not fail on a model that ignores it.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    s = ws.scale
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=s.hidden,
        intermediate_size=s.intermediate,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(ws.model_dir)
    tokenizer.save_pretrained(ws.model_dir)


LENGTH_REWARD = [{"name": "length", "path": "length", "weight": 1.0, "normalize": "zscore"}]


def config_blocks(ws: Workspace) -> dict[str, dict[str, Any]]:
    """The generated config: ``default`` (the model, sizes, LoRA) and one subset per stage run."""
    s = ws.scale
    default = {
        "run": {"output_dir": str(ws.root / "runs"), "seed": 0, "logging_steps": 1, "report_to": "none"},
        "model": {
            "name": str(ws.model_dir),
            "dtype": "bf16",
            "lora": {"enabled": True, "r": LORA_RANK, "alpha": 2 * LORA_RANK, "dropout": 0.0},
        },
        "data": {"max_length": s.max_length, "max_prompt_length": s.max_length // 2, "val_fraction": 0.25},
        "train": {"max_steps": s.steps, "batch_size": s.batch, "learning_rate": 1e-2, "warmup_ratio": 0.0},
        "rl": {
            "steps": s.steps,
            "batch_size": s.batch,
            "mini_batch_size": s.batch,
            "ppo_epochs": 1,  # one optimiser step per rollout: step 1's ratio is the rollout's against the update's
            "group_size": 2,
            "max_new_tokens": s.max_new_tokens,
            "learning_rate": 1e-3,
            "save_steps": 0,
            "sample_every": 0,
            "rewards": LENGTH_REWARD,
        },
    }
    checkpointed = {"gradient_checkpointing": True}
    from_sampling = {"logprobs_from_sampling": True}
    subsets = {
        "sft_bf16": _subset(ws, "sft"),
        "sft_4bit": _subset(ws, "sft", model={"quantization": "4bit"}),
        "rm_ranking": _subset(ws, "rankings", rm={"loss": "pairwise"}),
        "rm_absolute": _subset(ws, "absolute", rm={"loss": "absolute"}),
        # The rollout's own forward gives the old log-probs, so the ratio compares two forwards.
        "ppo_bf16": _subset(ws, "prompts", rl={"old_logprobs_from_update": False}),
        "ppo_4bit_checkpointing": _subset(
            ws, "prompts", model={"quantization": "4bit", **checkpointed}, rl=from_sampling
        ),
        "ppo_full_checkpointing": _subset(
            ws, "prompts", model={"lora": {"enabled": False}, **checkpointed}, rl=from_sampling
        ),
        "grpo": _subset(ws, "prompts", rl={"algorithm": "grpo"}),
        "dpo": _subset(ws, "rankings", rl={"algorithm": "dpo"}),
        "predict_seeded": _subset(
            ws,
            "prompts",
            eval_pred={
                "models": [{"name": PREDICTOR, "path": str(ws.model_dir)}],
                "do_sample": True,
                "temperature": 1.0,
                "max_new_tokens": s.max_new_tokens,
                "batch_size": s.batch,
            },
        ),
        "sft_fsdp2": _subset(ws, "sft"),
        "sft_zero3": _subset(ws, "sft"),
        "sft_zero2": _subset(ws, "sft"),
    }
    for name, block in subsets.items():
        block["run"] = {"name": name}
    return {"default": default, **subsets}


def _subset(ws: Workspace, data: str, **sections: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"source": str(ws.data(data))}, **sections}


def prepare(ws: Workspace) -> None:
    """Write the data, the tokenizer, the model and the config into ``ws.root``."""
    import yaml

    texts = write_data(ws)
    build_model(ws, build_tokenizer(texts))
    ws.config.write_text(yaml.safe_dump(config_blocks(ws), sort_keys=False), encoding="utf-8")


# --------------------------------------------------------------------------- running crs's stages


class ErrorLineTap:
    """A stream that passes everything to ``stream`` and keeps the last ``error: ...`` line crs printed."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.error_line = ""

    def write(self, text: str) -> int:
        """Pass ``text`` on; remember an error line."""
        for line in text.splitlines():
            if line.startswith("error: "):
                self.error_line = line
        return self.stream.write(text)

    def flush(self) -> None:
        """Flush the stream underneath."""
        self.stream.flush()


def run_crs(ws: Workspace, command: str, subset: str, *extra: str) -> None:
    """``crs COMMAND --config <generated> --config_subset SUBSET [extra]`` in this process; a stage that exits
    non-zero is a :class:`CheckFailed` with its error line."""
    from crs.cli import main as crs_main

    argv = [command, "--config", str(ws.config), "--config_subset", subset, *extra]
    tap = ErrorLineTap(sys.stderr)
    try:
        with contextlib.redirect_stderr(tap):
            crs_main(argv)
    except SystemExit as stop:
        if stop.code not in (None, 0):
            said = tap.error_line or "(no error line; see the log above)"
            raise CheckFailed(f"crs {command} --config_subset {subset} exited with code {stop.code}: {said}") from None


def stage_config(ws: Workspace, subset: str) -> Any:
    """The resolved :class:`crs.config.CRSConfig` of ``subset``, as the stage read it."""
    from crs.config import load_config

    return load_config(subset, ws.config)


@contextlib.contextmanager
def models_handed_to_save(probe: Callable[[Any], Any], stage_modules: tuple[str, ...]) -> Iterator[list[Any]]:
    """Yields a list that fills with ``probe(model)`` for every model a stage hands to
    ``crs.models.saving.save_run_model``, called before the model is saved (the in-memory model).

    Every crs module that imported the function by name (``stage_modules`` are imported first) sees the wrapper.
    """
    import importlib

    import crs.models.saving as saving

    for module in stage_modules:
        importlib.import_module(module)
    original = saving.save_run_model
    probed: list[Any] = []

    def probing_save(model: Any, *args: Any, **kwargs: Any) -> Any:
        probed.append(probe(model))
        return original(model, *args, **kwargs)

    holders = [
        module
        for name, module in list(sys.modules.items())
        if (name == "crs" or name.startswith("crs.")) and getattr(module, "save_run_model", None) is original
    ]
    for module in holders:
        module.save_run_model = probing_save
    try:
        yield probed
    finally:
        for module in holders:
            module.save_run_model = original


def reward_sources(ws: Workspace) -> tuple[list[str], list[str]]:
    """The RL checks' reward: both reward models of the RM checks z-scored and summed where both finished (the
    combined reward, scored on the GPU), else the built-in length source. Returns (``--set`` arguments, names)."""
    import yaml

    from crs.runs import is_finished

    runs = [ws.run_dir("rm_ranking"), ws.run_dir("rm_absolute")]
    if not all(is_finished(run) for run in runs):
        return [], ["length"]
    rewards = [{"name": run.name, "path": str(run), "weight": 0.5, "normalize": "zscore"} for run in runs]
    return ["--set", "rl.rewards=" + yaml.safe_dump(rewards, default_flow_style=True).strip()], [r.name for r in runs]


def step_statistics(run_dir: Path) -> dict[str, Any]:
    """Steps and seconds per step of a finished run: each step's ``time/step`` (PPO, GRPO, DPO), else the
    Trainer's run time over its steps (SFT, reward models)."""
    from crs.io import read_jsonl

    metrics, train_log = run_dir / "metrics.jsonl", run_dir / "train_log.jsonl"
    times = [row["time/step"] for row in read_jsonl(metrics, torn_tail_ok=True)] if metrics.is_file() else []
    if times:
        return {
            "steps": len(times),
            "step_times_s": [round(t, 4) for t in times],
            "mean_step_s": sum(times) / len(times),
        }
    rows = (
        [row for row in read_jsonl(train_log, torn_tail_ok=True) if "train_runtime" in row]
        if train_log.is_file()
        else []
    )
    if rows and rows[-1].get("step"):
        return {
            "steps": rows[-1]["step"],
            "step_times_s": [],
            "mean_step_s": rows[-1]["train_runtime"] / rows[-1]["step"],
        }
    return {"steps": None, "step_times_s": [], "mean_step_s": None}


# --------------------------------------------------------------------------- what the checks measure


def probe_batch(ws: Workspace) -> tuple[Any, Any]:
    """Two (prompt, reply) pairs of the SFT data as right-padded ids and attention mask: what logits are
    compared on."""
    import torch

    from crs.data.schema import user_prompt
    from crs.io import read_jsonl
    from crs.models.formatting import encode_prompt_reply, pad_batch
    from crs.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(ws.model_dir))
    rows = read_jsonl(ws.data("sft"))[:2]
    encoded = [
        encode_prompt_reply(tokenizer, user_prompt(r["prompt"]), r["reply"], ws.scale.max_length).input_ids
        for r in rows
    ]
    ids, mask = pad_batch(encoded, tokenizer.pad_token_id)
    return torch.tensor(ids), torch.tensor(mask)


def causal_lm_logits(model: Any, batch: tuple[Any, Any], dtype: Any) -> Any:
    """``model``'s logits on ``batch`` in eval mode under crs's autocast: float32, on the CPU, padding zeroed."""
    import torch

    from crs.models.precision import autocast

    ids, mask = batch
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad(), autocast(dtype, device):
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
    model.train(was_training)
    return logits * mask[..., None]


def adapter_logits_probe(batch: tuple[Any, Any], dtype: Any) -> Callable[[Any], tuple[Any, Any]]:
    """A probe for :func:`models_handed_to_save`: the in-memory LoRA model's logits with its adapter and without."""

    def probe(model: Any) -> tuple[Any, Any]:
        with_adapter = causal_lm_logits(model, batch, dtype)
        with model.disable_adapter():
            base = causal_lm_logits(model, batch, dtype)
        return with_adapter, base

    return probe


def logit_agreement(reloaded: Any, in_memory: Any, base: Any) -> dict[str, float]:
    """How far reloaded logits are from the in-memory model's, against how far the adapter moved them from the
    base's: ``gap_to_effect`` is 0 for a faithful reload and about 1 for one that lost the adapter."""
    effect = (in_memory - base).abs().mean().item()
    gap = (reloaded - in_memory).abs().mean().item()
    return {
        "adapter_effect": effect,
        "mean_abs_gap": gap,
        "max_abs_gap": (reloaded - in_memory).abs().max().item(),
        "gap_to_effect": gap / effect if effect > 0 else float("inf"),
        "same_argmax": (reloaded.argmax(-1) == in_memory.argmax(-1)).float().mean().item(),
    }


def reloaded_logits(run_dir: Path, cfg: Any, batch: tuple[Any, Any], as_evaluated: bool) -> Any:
    """Logits of the run's saved model loaded back by crs: its adapter on the base as training held it (weights
    quantized as ``model.quantization`` says), or ``as_evaluated``, as the predict stage loads a model to evaluate
    (:func:`crs.eval.predict.load_generator`: the base unquantized, the adapter merged into it)."""
    from crs.eval.predict import load_generator
    from crs.models.loading import load_model
    from crs.models.precision import resolve_dtype
    from crs.processes import place_on_device, process_device

    dtype = resolve_dtype(cfg.model.dtype)
    if as_evaluated:
        return causal_lm_logits(load_generator(str(run_dir), cfg)[0], batch, dtype)
    model = load_model(str(run_dir), "causal_lm", dtype, cfg.model.quantization, merge_adapter=False)
    return causal_lm_logits(place_on_device(model, process_device()), batch, dtype)


def saved_adapter(run_dir: Path) -> dict[str, Any]:
    """What the run's saved adapter file holds: tensors, zero-size ones (ZeRO-3's placeholders), ranks that are
    not ``LORA_RANK``, non-finite values, and how far ``lora_B`` moved from its zero start."""
    from safetensors.torch import load_file

    from crs.models.manifest import read_run_manifest

    manifest = read_run_manifest(run_dir) or {}
    tensors = load_file(run_dir / manifest.get("adapter", "adapter") / "adapter_model.safetensors")
    rank_of = {"lora_A": lambda t: t.shape[0], "lora_B": lambda t: t.shape[-1]}
    wrong_rank = [
        k
        for k, t in tensors.items()
        for part, rank in rank_of.items()
        if part in k and t.numel() and rank(t) != LORA_RANK
    ]
    lora_b = [t.float().abs().max().item() for k, t in tensors.items() if "lora_B" in k and t.numel()]
    return {
        "tensors": len(tensors),
        "zero_size": sorted(k for k, t in tensors.items() if t.numel() == 0),
        "wrong_rank": sorted(wrong_rank),
        "finite": all(bool(t.float().isfinite().all()) for t in tensors.values() if t.numel()),
        "lora_B_max_abs": max(lora_b, default=0.0),
    }


def adapter_verdict(ws: Workspace, subset: str, measured: dict[str, Any]) -> dict[str, Any]:
    """The saved adapter of ``subset`` is non-empty, of rank ``LORA_RANK`` and finite, and reloads through crs into
    a model with finite logits; else a :class:`CheckFailed`."""
    import torch

    run_dir = ws.run_dir(subset)
    adapter = saved_adapter(run_dir)
    measured["adapter"] = adapter
    if not adapter["tensors"] or adapter["zero_size"] or adapter["wrong_rank"] or not adapter["finite"]:
        raise CheckFailed(
            f"the saved adapter is not whole: {adapter['tensors']} tensors, {len(adapter['zero_size'])} of zero "
            f"size, {len(adapter['wrong_rank'])} of another rank, finite {adapter['finite']}",
            measured,
        )
    logits = reloaded_logits(run_dir, stage_config(ws, subset), probe_batch(ws), as_evaluated=True)
    measured["reloaded_logits_finite"] = bool(torch.isfinite(logits).all())
    if not measured["reloaded_logits_finite"]:
        raise CheckFailed("the run's model, reloaded through crs, gives non-finite logits", measured)
    return measured


def within(measured: dict[str, Any], bounds: list[tuple[str, float, float]]) -> dict[str, Any]:
    """``measured`` when each named value lies in its [low, high]; else a :class:`CheckFailed` naming those
    outside."""
    outside = [
        f"{key} = {measured.get(key)!r} outside [{low:g}, {high:g}]"
        for key, low, high in bounds
        if not isinstance(measured.get(key), (int, float)) or not low <= measured[key] <= high
    ]
    if outside:
        raise CheckFailed("; ".join(outside), measured)
    return measured


# --------------------------------------------------------------------------- the checks


def check_sft_reload(ws: Workspace, subset: str) -> dict[str, Any]:
    """SFT a few steps; the saved adapter, loaded back by crs, gives the logits the in-memory model gave."""
    from crs.models.precision import resolve_dtype

    dtype = resolve_dtype(stage_config(ws, subset).model.dtype)
    batch = probe_batch(ws)
    with models_handed_to_save(adapter_logits_probe(batch, dtype), ("crs.sft.fine_tuning",)) as probed:
        run_crs(ws, "sft", subset)
    if not probed:
        raise CheckFailed("the stage handed no model to crs.models.saving.save_run_model")
    in_memory, base = probed[-1]
    cfg = stage_config(ws, subset)
    measured: dict[str, Any] = {}
    for as_evaluated in (False, True):
        reloaded = reloaded_logits(ws.run_dir(subset), cfg, batch, as_evaluated)
        for key, value in logit_agreement(reloaded, in_memory, base).items():
            measured[f"{'eval_load' if as_evaluated else 'adapter'}/{key}"] = value
    # On the training base only the saved adapter can differ from memory. Merged for evaluation, bf16 rounding
    # adds a little; a 4-bit run is evaluated on the unquantized base, which differs by the quantization itself.
    bounds = [("adapter/gap_to_effect", 0.0, 0.05)]
    if cfg.model.quantization == "none":
        bounds.append(("eval_load/gap_to_effect", 0.0, 0.5))
    return within(measured, bounds)


def check_reward_model(ws: Workspace, subset: str) -> dict[str, Any]:
    """A reward model a few steps; reloaded by crs's scorer it lands on this device and scores finitely."""
    import torch

    from crs.data.schema import user_prompt
    from crs.io import read_jsonl
    from crs.rm.scorer import load_reward_scorers

    run_crs(ws, "rm", subset)
    scorer = load_reward_scorers([str(ws.run_dir(subset))], stage_config(ws, subset).model)[0]
    rows = read_jsonl(ws.data("rankings"))
    prompts = [user_prompt(row["prompt"]) for row in rows for _ in row["replies"]]
    scores = scorer.score(prompts, [reply for row in rows for reply in row["replies"]])
    by_row = scores.reshape(len(rows), -1)
    device = next(scorer.model.parameters()).device
    measured = {
        "device": str(device),
        "scores": scores.numel(),
        "finite": bool(torch.isfinite(scores).all()),
        "min": scores.min().item(),
        "max": scores.max().item(),
        "best_above_worst": (by_row[:, 0] > by_row[:, -1]).float().mean().item(),
    }
    expected = "cuda" if ws.cuda else "cpu"
    if device.type != expected or not measured["finite"]:
        raise CheckFailed(f"scores on {device} (expected {expected}), finite: {measured['finite']}", measured)
    return measured


def check_ppo_first_step(ws: Workspace, subset: str, ratio_tol: float, approx_kl_max: float) -> dict[str, Any]:
    """PPO a few steps; at the first update the policy has not moved, so the probability ratio is about 1 and
    its approximate KL about 0 (with ``rl.logprobs_from_sampling``: the sampled log-probs equal a full forward's)."""
    from crs.io import read_jsonl

    extra, rewards = reward_sources(ws)
    run_crs(ws, "rl", subset, *extra)
    first = read_jsonl(ws.run_dir(subset) / "metrics.jsonl")[0]
    keys = ("policy/ratio", "policy/approx_kl", "kl/sequence", "policy/entropy", "reward/combined", "reply/length")
    measured: dict[str, Any] = {key: first.get(key) for key in keys}
    measured["reward_sources"] = rewards
    measured["tokens_per_second"] = first.get("tokens_per_second")
    bounds = [("policy/ratio", 1 - ratio_tol, 1 + ratio_tol), ("policy/approx_kl", 0.0, approx_kl_max)]
    if subset == "ppo_bf16":  # the LoRA policy starts as its reference: no KL at the first rollout
        bounds.append(("kl/sequence", -0.01, 0.01))
    return within(measured, bounds)


def check_trl_adapter(ws: Workspace, subset: str) -> dict[str, Any]:
    """GRPO or DPO (TRL) a few steps; the saved adapter is whole and reloads."""
    extra, rewards = reward_sources(ws)
    run_crs(ws, "rl", subset, *(extra if subset == "grpo" else ()))
    return adapter_verdict(ws, subset, {"reward_sources": rewards if subset == "grpo" else []})


def check_predictions_repeat(ws: Workspace) -> dict[str, Any]:
    """The predict stage twice with one seed, sampling: the same replies."""
    from crs.eval.predict import predictions_path
    from crs.runs import run_state

    run_crs(ws, "predict", "predict_seeded")
    run_crs(ws, "predict", "predict_seeded", "--name_suffix", "_again")
    runs = [ws.run_dir("predict_seeded"), ws.run_dir("predict_seeded_again")]
    outputs = [[row["output"] for row in json.loads(predictions_path(run, PREDICTOR).read_text())] for run in runs]
    summary = (run_state(runs[0]) or {}).get("summary", {})
    measured = {
        "replies": len(outputs[0]),
        "differing": sum(a != b for a, b in zip(*outputs)) + abs(len(outputs[0]) - len(outputs[1])),
        "distinct_replies": len(set(outputs[0])),
        "replies_per_second": summary.get("models", {}).get(PREDICTOR, {}).get("replies_per_second"),
    }
    return within(measured, [("differing", 0, 0)])


def check_sharded_save(ws: Workspace, subset: str, accelerate_config: str, expected: str) -> dict[str, Any]:
    """SFT under ``accelerate launch`` with one of crs's shipped sharding configs and one process; the saved
    adapter is whole (not shards, not ZeRO-3's empty placeholders) and reloads."""
    report = ws.root / f"{subset}.child.json"
    command = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1"),
        *("--config_file", str(ACCELERATE_CONFIGS / accelerate_config), "--main_process_port", str(free_port())),
        *(str(Path(__file__).resolve()), CHILD_FLAG, str(report)),
        *("sft", "--config", str(ws.config), "--config_subset", subset),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    timeout = max(ws.deadline - time.monotonic(), 0.0) + 60.0
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    child = json.loads(report.read_text()) if report.is_file() else {}
    measured = {"exit_code": done.returncode, **child}
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if "Error" in line or line.startswith("error: ")]
        raise CheckFailed(f"accelerate launch exited with code {done.returncode}: {(said or ['?'])[-1]}", measured)
    if child.get("distributed_type") != expected:
        what = f"accelerate ran {accelerate_config} as {child.get('distributed_type')}, not {expected}"
        if not ws.cuda:
            raise CheckSkipped(f"on the CPU {what}: nothing was sharded")
        raise CheckFailed(what, measured)
    return adapter_verdict(ws, subset, measured)


def free_port() -> int:
    """A TCP port free on this machine now (the launcher's rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Check:
    """One check: its name (also its run's subset), what a pass means, how it runs, and what it needs."""

    name: str
    meaning: str
    run: Callable[[Workspace], dict[str, Any]]
    needs_cuda: bool = False
    packages: tuple[str, ...] = ()


CHECKS = [
    Check(
        "sft_bf16",
        "SFT (LoRA, bf16): the reloaded adapter gives the in-memory logits",
        partial(check_sft_reload, subset="sft_bf16"),
    ),
    Check(
        "rm_ranking", "ranking RM: scores on this device, all finite", partial(check_reward_model, subset="rm_ranking")
    ),
    Check(
        "rm_absolute",
        "absolute RM: scores on this device, all finite",
        partial(check_reward_model, subset="rm_absolute"),
    ),
    Check(
        "ppo_bf16",
        "PPO (LoRA, bf16): ratio ~1 and KL ~0 at the first step",
        partial(check_ppo_first_step, subset="ppo_bf16", ratio_tol=0.01, approx_kl_max=1e-3),
    ),
    Check(
        "ppo_full_checkpointing",
        "PPO (full fine-tuning, checkpointing): sampled log-probs = a full forward's",
        partial(check_ppo_first_step, subset="ppo_full_checkpointing", ratio_tol=0.05, approx_kl_max=5e-3),
    ),
    Check("predict_seeded", "predictions twice with one seed: identical", check_predictions_repeat),
    Check(
        "grpo",
        "GRPO (TRL): the saved adapter is whole and reloads",
        partial(check_trl_adapter, subset="grpo"),
        packages=("trl", "datasets"),
    ),
    Check(
        "dpo",
        "DPO (TRL): the saved adapter is whole and reloads",
        partial(check_trl_adapter, subset="dpo"),
        packages=("trl", "datasets"),
    ),
    Check(
        "sft_4bit",
        "SFT (QLoRA, 4-bit): the reloaded adapter gives the in-memory logits",
        partial(check_sft_reload, subset="sft_4bit"),
        needs_cuda=True,
        packages=("bitsandbytes",),
    ),
    Check(
        "ppo_4bit_checkpointing",
        "PPO (4-bit, checkpointing): sampled log-probs = a full forward's",
        partial(check_ppo_first_step, subset="ppo_4bit_checkpointing", ratio_tol=0.05, approx_kl_max=5e-3),
        needs_cuda=True,
        packages=("bitsandbytes",),
    ),
    Check(
        "sft_fsdp2",
        "SFT under FSDP2, one process: the saved adapter is whole and reloads",
        partial(check_sharded_save, subset="sft_fsdp2", accelerate_config="fsdp.yaml", expected="FSDP"),
    ),
    Check(
        "sft_zero3",
        "SFT under DeepSpeed ZeRO-3, one process: the saved adapter is whole and reloads",
        partial(check_sharded_save, subset="sft_zero3", accelerate_config="deepspeed_zero3.yaml", expected="DEEPSPEED"),
        needs_cuda=True,
        packages=("deepspeed",),
    ),
    Check(
        "sft_zero2",
        "SFT under DeepSpeed ZeRO-2, one process: it runs, and its adapter is whole and reloads",
        partial(check_sharded_save, subset="sft_zero2", accelerate_config="deepspeed_zero2.yaml", expected="DEEPSPEED"),
        needs_cuda=True,
        packages=("deepspeed",),
    ),
]


# --------------------------------------------------------------------------- running the checks


def why_not(check: Check, ws: Workspace) -> str | None:
    """Why ``check`` cannot run here, or None."""
    if check.needs_cuda and not ws.cuda:
        return f"needs a CUDA GPU (crs uses {', '.join(check.packages)} only on one)"
    missing = [name for name in check.packages if importlib.util.find_spec(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed (docs/gpu_check.md: the wheels a machine without network carries)"
    if time.monotonic() > ws.deadline:
        return "the time budget was spent before this check started"
    return None


def release_between_checks() -> None:
    """Free what a check left and forget accelerate's process-wide state, so each check starts as in a fresh
    process (a Trainer stage's mixed precision would otherwise carry into PPO's accelerator)."""
    gc.collect()
    if "accelerate" in sys.modules:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gpu_memory_mib() -> float | None:
    """``torch.cuda.max_memory_allocated`` in MiB since the last reset (None without CUDA)."""
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def run_check(check: Check, ws: Workspace) -> dict[str, Any]:
    """Run one check in isolation: whatever it raises becomes its status and reason, never the end of the run."""
    result: dict[str, Any] = {
        "name": check.name,
        "meaning": check.meaning,
        "status": "skipped",
        "reason": why_not(check, ws) or "",
        "seconds": 0.0,
        "peak_gpu_memory_mib": None,
        "measured": {},
    }
    if result["reason"]:
        return {**result, **step_statistics(ws.run_dir(check.name))}
    release_between_checks()
    started, measured = time.perf_counter(), {}
    try:
        measured, result["status"] = check.run(ws), "pass"
    except CheckSkipped as skipped:
        result["reason"] = str(skipped)
    except CheckFailed as failed:
        measured, result["status"], result["reason"] = failed.measured, "fail", str(failed)
    except Exception as err:  # the check's own isolation: any error is its result
        result["status"], result["reason"] = "fail", f"{type(err).__name__}: {str(err)[:1000]}"
        result["traceback"] = "".join(traceback.format_tb(err.__traceback__)[-12:])  # where, not the long message
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["peak_gpu_memory_mib"] = measured.pop("peak_gpu_memory_mib", None) or peak_gpu_memory_mib()
    result["measured"] = json.loads(json.dumps(measured, default=str))  # NaN and infinities stay, as JSON allows
    result.update(step_statistics(ws.run_dir(check.name)))
    release_between_checks()
    return result


def environment(ws: Workspace) -> dict[str, Any]:
    """The machine, the device, the package versions, and those outside crs's tested ranges."""
    import torch

    from crs.dependencies import outside_tested_range, tested_ranges

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    device = {"type": "cuda" if ws.cuda else "cpu"}
    if ws.cuda:
        device.update(
            name=torch.cuda.get_device_name(0),
            capability=".".join(map(str, torch.cuda.get_device_capability(0))),
            cuda=torch.version.cuda,
            bf16=torch.cuda.is_bf16_supported(),
            memory_mib=round(torch.cuda.get_device_properties(0).total_memory / 2**20),
        )
    outside = [line for name in tested_ranges() if (line := outside_tested_range(name))]
    return {"python": platform.python_version(), "device": device, "versions": versions, "untested_versions": outside}


def write_report(path: Path, ws: Workspace, results: list[dict[str, Any]], header: dict[str, Any]) -> dict[str, Any]:
    """The JSON report (written again after every check, so a run cut short leaves what it did)."""
    from crs.io import write_json_atomic

    counts = {status: sum(r["status"] == status for r in results) for status in STATUSES}
    report = {**header, "workdir": str(ws.root), "counts": counts, "checks": results}
    write_json_atomic(path, report)
    return report


def table(results: list[dict[str, Any]]) -> str:
    """The short table printed at the end: one row per check."""

    def cell(value: Any, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [f"{'check':<24} {'status':<8} {'s':>7} {'s/step':>8} {'peak MiB':>9}  reason"]
    for r in results:
        reason = r["reason"] if len(r["reason"]) <= 110 else r["reason"][:107] + "..."
        lines.append(
            f"{r['name']:<24} {r['status']:<8} {cell(r['seconds'], 1):>7} {cell(r['mean_step_s'], 3):>8} "
            f"{cell(r['peak_gpu_memory_mib'], 0):>9}  {reason}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- the command line


def run_child(report_path: Path, crs_argv: list[str]) -> int:
    """This script under ``accelerate launch`` (the sharded checks): crs's command line, then what the parent
    cannot see from outside (how the model handed to saving held its weights, accelerate's mode, peak memory)."""
    from crs.cli import main as crs_main

    code: int | str = 0
    with models_handed_to_save(parameter_kinds, ("crs.sft.fine_tuning",)) as saved:
        try:
            crs_main(crs_argv)
        except SystemExit as stop:
            code = stop.code or 0
        except Exception as err:
            code = f"{type(err).__name__}: {err}"
            raise
        finally:
            from crs.io import write_json_atomic

            write_json_atomic(
                report_path,
                {
                    "child_exit": code,
                    "distributed_type": accelerate_mode(),
                    "saved_models": saved,
                    "peak_gpu_memory_mib": peak_gpu_memory_mib(),
                },
            )
    return code if isinstance(code, int) else 1


def parameter_kinds(model: Any) -> dict[str, int]:
    """How a model handed to saving holds its weights: whole, as DTensor shards (FSDP2), or as ZeRO-3's
    zero-size placeholders."""
    params = list(model.parameters())
    return {
        "parameters": len(params),
        "dtensor": sum(type(p).__name__ == "DTensor" or type(p.data).__name__ == "DTensor" for p in params),
        "zero_size": sum(p.numel() == 0 for p in params),
    }


def accelerate_mode() -> str | None:
    """accelerate's distributed type in this process (None: no accelerator was made)."""
    from accelerate.state import AcceleratorState

    # Read, not constructed: AcceleratorState() would make a state where the stage made none.
    mode = AcceleratorState._shared_state.get("distributed_type")
    return None if mode is None else getattr(mode, "value", str(mode))


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON report's path")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, tiniest sizes, 4-bit and DeepSpeed skipped")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds after which no check starts")
    parser.add_argument("--scale", choices=sorted(SCALES), help="model size (default: small on a GPU, tiny dry)")
    parser.add_argument("--checks", help=f"comma-separated, of: {', '.join(c.name for c in CHECKS)} (default: all)")
    parser.add_argument("--workdir", type=Path, help="where models, data and runs go (default: a new temp folder)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the checks; exit 0 when none failed, 1 when one did, 2 on bad input."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD_FLAG]:
        return run_child(Path(argv[1]), argv[2:])
    args = parse_args(argv)
    names = args.checks.split(",") if args.checks else [c.name for c in CHECKS]
    unknown = sorted(set(names) - {c.name for c in CHECKS})
    if unknown or importlib.util.find_spec("crs") is None:
        what = f"unknown check(s) {unknown}" if unknown else "crs is not importable: run from the repository root"
        print(f"error: {what} (PYTHONPATH=$PWD python benchmarks/gpu_check.py --out report.json)", file=sys.stderr)
        return 2
    if args.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # crs would take a GPU that is there; the dry run is the CPU's
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device here; --dry-run runs the checks on the CPU", file=sys.stderr)
        return 2
    started = time.monotonic()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="crs_gpu_check_"))
    scale = args.scale or ("tiny" if args.dry_run else "small")
    ws = Workspace(root.resolve(), SCALES[scale], cuda=not args.dry_run, deadline=started + args.budget)
    prepare(ws)
    header = {
        "format": REPORT_FORMAT,
        "mode": "dry-run" if args.dry_run else "gpu",
        "scale": {"name": scale, **vars(ws.scale)},
        "budget_s": args.budget,
        "environment": environment(ws),
        "setup_seconds": round(time.monotonic() - started, 3),
    }
    results: list[dict[str, Any]] = []
    for check in [c for c in CHECKS if c.name in names]:
        results.append(run_check(check, ws))
        print(f"gpu_check: {check.name}: {results[-1]['status']} {results[-1]['reason']}", flush=True)
        write_report(args.out, ws, results, {**header, "elapsed_s": round(time.monotonic() - started, 3)})
    print(table(results))
    print(f"report: {args.out}")
    return 1 if any(r["status"] == "fail" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
