"""Saving a trained model into its run directory: the model or adapter, ``crs_model.json``, and
the plain base an adapter names so that peft alone loads what crs trained."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from crs.config import ModelConfig
from crs.io import folder_written_atomically, write_json_atomic
from crs.models.loading import load_model, load_tokenizer
from crs.models.manifest import RUN_MANIFEST, ModelKind, check_run_kind, read_run_manifest
from crs.models.precision import resolve_dtype
from crs.models.resolution import EMBEDDED_PREFIX, resolve_model_path
from crs.processes import is_main_process, wait_for_everyone

logger = logging.getLogger(__name__)


def save_run_model(
    model: Any,
    tokenizer: Any,
    run_dir: str | Path,
    base_name: str,
    kind: ModelKind,
    merge: bool = False,
    state_dict: dict[str, Any] | None = None,
    plain_base: str | None = None,
) -> Path:
    """Save a trained model into ``run_dir`` in the Hugging Face layout, plus ``crs_model.json``.

    A LoRA model saves its adapter in ``<run_dir>/adapter``, whose ``adapter_config.json``
    names the very weights it was trained on (:func:`plain_base_location`; ``plain_base``: that
    location as resolved before training, :func:`plain_base_before_training`), so peft's
    ``from_pretrained`` gives the model crs trained; a fully fine-tuned one saves the whole
    model there. ``merge`` also writes ``<run_dir>/merged``, a plain model with the adapter folded in.

    Under ZeRO-3 or FSDP ``model`` holds placeholders or slices: ``state_dict`` then carries its
    whole weights (:func:`crs.models.sharding.gathered_state_dict`), and the merge reads the saved
    adapter back onto the plain base. Called on the main process alone.
    """
    run_dir = Path(run_dir)
    adapter_dir = run_dir / "adapter"
    is_peft = hasattr(model, "peft_config")
    model.save_pretrained(adapter_dir, state_dict=state_dict)  # None: the model's own weights
    tokenizer.save_pretrained(adapter_dir)
    if is_peft:
        name_plain_base(adapter_dir, plain_base or plain_base_location(base_name, frozen_dtype(model)))
        if merge:
            merged = model.merge_and_unload() if state_dict is None else merged_from_files(model, adapter_dir, kind)
            merged.save_pretrained(run_dir / "merged")
            tokenizer.save_pretrained(run_dir / "merged")
    # A base that is a local folder (e.g. the SFT run under an RL run) is stored relative to
    # this run dir, so loading works from any working directory and runs can move together.
    if not base_name.startswith(EMBEDDED_PREFIX) and Path(base_name).is_dir():
        base_name = os.path.relpath(Path(base_name).resolve(), run_dir.resolve())
    manifest: dict[str, Any] = {"base": base_name, "adapter": "adapter", "kind": kind, "full_model": not is_peft}
    outputs = getattr(getattr(model, "config", None), "num_labels", 1)
    if kind == "reward_model" and outputs != 1:  # a joint RM's two heads (absent: one, as every earlier run)
        manifest["num_labels"] = outputs
    write_json_atomic(run_dir / RUN_MANIFEST, manifest)
    return adapter_dir


def merged_from_files(model: Any, adapter_dir: Path, kind: ModelKind) -> Any:
    """The saved adapter in ``adapter_dir`` folded into the plain base its config names, loaded whole here.

    What a merge does when ``model``'s own weights are shards: the adapter was saved from the
    gathered weights, the base is read from its files; the trained model's config (its pad token,
    its head's labels) goes with the result, as an in-memory merge keeps it.
    """
    import copy

    from peft import PeftModel

    config = model.config
    base = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    labels = config.num_labels if kind == "reward_model" else None
    base_model = load_model(base, kind, dtype=frozen_dtype(model), num_labels=labels)
    merged = PeftModel.from_pretrained(base_model, str(adapter_dir)).merge_and_unload()
    merged.config = copy.deepcopy(config)
    return merged


def frozen_dtype(model: Any) -> torch.dtype:
    """The dtype of a LoRA model's frozen base: the dtype of its plain copy (a k-bit base: bf16)."""
    frozen = next((p.dtype for p in model.parameters() if not p.requires_grad), torch.float32)
    return frozen if frozen.is_floating_point else torch.bfloat16


def plain_base_before_training(model_cfg: ModelConfig, kind: ModelKind, base_name: str | None = None) -> str | None:
    """:func:`plain_base_location` resolved before training starts: where a LoRA stage's ``kind`` of model
    loads from (``base_name``, default ``model_cfg.name``, in ``model_cfg.dtype``); None without LoRA.

    The main process writes a run's merged copy (a whole-model load and save, before the stage's
    ``TrainingArguments`` turn ZeRO-3's partitioned init on); the other processes wait for it
    (up to ``run.ddp_timeout``), then only read the location. The trained model then loads as a
    plain model, which ZeRO-3 and FSDP's RAM-efficient loading can shard as it loads.
    """
    if not model_cfg.lora.enabled:
        return None
    base_name, dtype = base_name or model_cfg.name, resolve_dtype(model_cfg.dtype)
    if kind == "causal_lm":
        check_run_kind(base_name, kind)  # a reward-model run is no policy (as load_model says)
    if is_main_process():
        plain_base_location(base_name, dtype)
    wait_for_everyone()
    return plain_base_location(base_name, dtype)


def plain_base_location(base_name: str, dtype: torch.dtype) -> str:
    """Where ``from_pretrained`` finds exactly the weights an adapter trained on ``base_name`` sits on.

    An embedded name is its folder; a crs run with a LoRA adapter (an RL run's SFT policy) is
    its ``merged`` folder, written once in ``dtype`` when missing: naming that run's raw base
    instead would silently drop what it learned. Absolute paths, so the plain load works from
    any directory (crs itself goes by the relative paths of ``crs_model.json``).
    """
    if base_name.startswith(EMBEDDED_PREFIX):
        return str(Path(resolve_model_path(base_name)).resolve())
    path = Path(base_name)
    manifest = read_run_manifest(path) if path.is_dir() else None
    if manifest is None:
        return str(path.resolve()) if path.is_dir() else base_name
    if manifest.get("full_model"):
        return str((path / manifest["adapter"]).resolve())
    merged = path / "merged"
    if not (merged / "config.json").is_file():
        kind = manifest.get("kind", "causal_lm")
        model = load_model(str(path), kind, dtype=dtype)
        with folder_written_atomically(merged, replace=False) as tmp:  # a racing run's copy wins
            model.save_pretrained(tmp)
            load_tokenizer(str(path)).save_pretrained(tmp)
        logger.info("wrote %s: the plain model the adapters trained on %s sit on", merged, path)
    return str(merged.resolve())


def name_plain_base(adapter_dir: Path, base: str) -> None:
    """Point a saved adapter's ``adapter_config.json`` (``base_model_name_or_path``) at ``base``."""
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base
    write_json_atomic(config_path, config)
