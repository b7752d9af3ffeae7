"""LoRA: a trainable adapter on a frozen base, and the weights of an earlier run's adapter loaded into it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from crs.config import LoraConfig
from crs.models.manifest import ModelKind, read_run_manifest
from crs.models.model_error import ModelError
from crs.models.precision import upcast_trainable
from crs.models.resolution import base_location, same_model


def prepare_quantized_base(model: Any, gradient_checkpointing: bool) -> Any:
    """A quantized (k-bit) base prepared for training an adapter on it (QLoRA); other models unchanged.

    peft's preparation switches gradient checkpointing on unless told otherwise: it is passed
    ``model.gradient_checkpointing`` (crs's choice), non-reentrant as crs's own checkpointing.
    """
    if not (getattr(model, "is_quantized", False) or getattr(model, "is_loaded_in_8bit", False)):
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


def add_lora(model: Any, lora: LoraConfig, kind: ModelKind, gradient_checkpointing: bool = False) -> Any:
    """Wrap ``model`` in a trainable LoRA adapter (peft); the base stays frozen.

    Quantized bases are prepared for k-bit training first (QLoRA; checkpointing only when
    ``gradient_checkpointing``, ``model.gradient_checkpointing``). For a reward model the new
    scalar head is trained in full (``modules_to_save``).
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    model = prepare_quantized_base(model, gradient_checkpointing)
    head = _classifier_head_name(model) if kind == "reward_model" else None
    config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type=TaskType.CAUSAL_LM if kind == "causal_lm" else TaskType.SEQ_CLS,
        modules_to_save=[head] if head else None,
    )
    peft_model = get_peft_model(model, config)
    upcast_trainable(peft_model)
    return peft_model


def load_adapter_weights(
    model: Any, run_dir: str | Path, base_name: str, key: str = "rl.init_adapter", give: str = "an earlier LoRA RL run"
) -> None:
    """Load the LoRA weights of the earlier run ``run_dir`` into ``model``'s own (same-shaped) adapter.

    The run must have been trained on the same base ``base_name``, so the adapter continues
    where it stopped while switching it off still gives ``base_name``: the reference of KL
    penalties stays the SFT policy (crs's PPO and TRL's trainers alike). A reward model's
    head (peft's ``modules_to_save``) comes with it. ``key`` (the config key that named the
    run) and ``give`` (what to give instead) word the errors.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    manifest = read_run_manifest(run_dir)
    adapter_file = Path(run_dir) / (manifest or {}).get("adapter", "adapter") / "adapter_model.safetensors"
    if manifest is None or manifest.get("full_model") or not adapter_file.is_file():
        raise ModelError(f"{key}={run_dir}: not a crs run with a LoRA adapter (its crs_model.json); give {give}")
    base = base_location(run_dir, manifest["base"])
    if not same_model(base, base_name):
        raise ModelError(
            f"{key}={run_dir} was trained on {base}, not on {base_name}: "
            f"its adapter cannot continue on this {'policy' if key.startswith('rl.') else 'model'}"
        )
    try:
        result = set_peft_model_state_dict(model, load_file(str(adapter_file)))
    except RuntimeError as err:  # shapes differ: another LoRA rank or other target modules
        raise ModelError(
            f"{key}={run_dir}: its adapter does not fit this run's model.lora settings ({str(err).splitlines()[0]})"
        ) from None
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise ModelError(
            f"{key}={run_dir}: its adapter does not match this run's model.lora settings "
            f"(e.g. {(result.unexpected_keys or missing)[0]})"
        )


def _classifier_head_name(model: Any) -> str:
    for candidate in ("score", "classifier"):
        if isinstance(getattr(model, candidate, None), torch.nn.Module):
            return candidate
    raise ModelError(f"cannot find the classification head of {type(model).__name__}")
