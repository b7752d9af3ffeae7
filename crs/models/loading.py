"""Loading models and tokenizers from any name the resolver accepts (:mod:`crs.models.resolution`).

A causal LM (a policy) or a sequence classifier (a reward or value model); a crs run
directory loads its base (recursively) and applies its adapter (:mod:`crs.models.manifest`).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from crs.config import ModelConfig
from crs.models.manifest import ModelKind, check_run_kind, read_run_manifest
from crs.models.model_error import ModelError
from crs.models.precision import build_quantization_config, resolve_dtype
from crs.models.resolution import base_location, resolve_model_path
from crs.models.sharding import whole_model_loading


def load_tokenizer(name: str, cache_dir: str | Path | None = None, padding_side: str = "right") -> Any:
    """The tokenizer of ``name`` (any form the resolver accepts), with a pad token set."""
    from transformers import AutoTokenizer

    manifest = read_run_manifest(name) if Path(name).is_dir() else None
    if manifest is not None:
        location = str(Path(name) / manifest["adapter"])
    else:
        location = resolve_model_path(name, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(location)
    if tokenizer.pad_token is None:
        # Padding is always masked out, so reusing EOS (or UNK) as the pad token is safe.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = padding_side
    return tokenizer


def _load_plain(
    kind: ModelKind, location: str, dtype: torch.dtype, quantization: str, num_labels: int = 1, to_train: bool = False
) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {"dtype": dtype}
    quant_config = build_quantization_config(quantization, dtype)
    if quant_config is not None:
        kwargs["quantization_config"] = quant_config
    if kind == "causal_lm":
        check_decoder_only(location)
        auto: Any = AutoModelForCausalLM
    else:
        auto, kwargs["num_labels"] = AutoModelForSequenceClassification, num_labels
        # a joint RM's two heads on a base whose saved head (if any) has another shape: a fresh head
        kwargs["ignore_mismatched_sizes"] = num_labels != 1
    with nullcontext() if to_train else whole_model_loading():
        return auto.from_pretrained(location, **kwargs)


def check_decoder_only(location: str) -> None:
    """Refuse, before the weights load, a policy that is not a decoder-only causal LM.

    transformers gives many encoders (BERT and its kin) a causal-LM head on request; such a
    model loads, then fails deep in attention, or generates nonsense, far from the cause.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    config = AutoConfig.from_pretrained(location)
    model_type = getattr(config, "model_type", "?")
    encoder = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)
    if getattr(config, "is_encoder_decoder", False) or encoder or model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        what = (
            "an encoder-decoder"
            if getattr(config, "is_encoder_decoder", False)
            else "an encoder"
            if encoder
            else "not a causal LM"
        )
        raise ModelError(
            f"model '{location}' is {what} "
            f"(model_type {model_type!r}, {', '.join(config.architectures or ['no architectures'])}): "
            "a policy must be a decoder-only causal LM (e.g. SmolLM2, Llama, Qwen, Mistral); "
            "an encoder belongs in a reward model (rm.model / model.name of an rm subset)"
        )


def load_model(
    name: str,
    kind: ModelKind,
    dtype: torch.dtype = torch.float32,
    quantization: str = "none",
    cache_dir: str | Path | None = None,
    merge_adapter: bool = True,
    num_labels: int | None = None,
    to_train: bool = False,
) -> Any:
    """Load ``name`` as a causal LM (policy) or a sequence classifier (reward model).

    A crs run directory loads its base (recursively: an RL run's base may be an SFT run)
    and applies its adapter, merged into the weights unless ``merge_adapter`` is False
    (then a ``PeftModel`` is returned, e.g. to stack several reward adapters on one base).
    A classifier has ``num_labels`` outputs; None: what a reward-model run's manifest says
    (``num_labels``, 2 for a joint RM), else 1. Asking a reward-model run for another count is a ModelError.

    Every process gets the whole weights (:func:`crs.models.sharding.whole_model_loading`), except
    with ``to_train``: the model a Trainer stage trains, which ZeRO-3 then partitions as it loads and
    FSDP's RAM-efficient loading reads on the first process alone (the Trainer shards it in both
    cases). A run with an adapter loads whole even so: the adapter is merged into whole weights.
    """
    manifest = read_run_manifest(name) if Path(name).is_dir() else None
    if kind == "causal_lm":
        check_run_kind(name, kind)  # (a reward-model run may start from an SFT run, not the reverse)
    labels = classifier_outputs(name, manifest, num_labels) if kind == "reward_model" else 1
    if manifest is None:
        model = _load_plain(kind, resolve_model_path(name, cache_dir), dtype, quantization, labels, to_train=to_train)
    elif manifest.get("full_model"):
        model = _load_plain(kind, str(Path(name) / manifest["adapter"]), dtype, quantization, labels, to_train=to_train)
    else:
        from peft import PeftModel

        base = load_model(base_location(name, manifest["base"]), kind, dtype, quantization, cache_dir, True, labels)
        model = PeftModel.from_pretrained(base, str(Path(name) / manifest["adapter"]))
        if merge_adapter:
            model = model.merge_and_unload()
    if model.config.pad_token_id is None:
        # Sequence classifiers find the last real token through pad_token_id.
        model.config.pad_token_id = model.config.eos_token_id if model.config.eos_token_id is not None else 0
    return model


def classifier_outputs(name: str, manifest: dict[str, Any] | None, wanted: int | None) -> int:
    """How many outputs the classifier loaded from ``name`` has: ``wanted``, else its run's, else 1.

    A reward-model run saved its head's output count (``num_labels``; absent: 1); loading it
    with another count would silently swap its trained head for a random one.
    """
    saved = int(manifest.get("num_labels", 1)) if manifest and manifest.get("kind") == "reward_model" else None
    if wanted is not None and saved is not None and wanted != saved:
        raise ModelError(
            f"{name} is a reward model with {saved} output(s), not {wanted}: "
            "a joint RM (rm.loss: joint) has 2, the others 1; "
            "give a run of the matching kind, or its base model"
        )
    return wanted if wanted is not None else saved or 1


def load_causal_lm(name: str, model_cfg: ModelConfig | None = None, **kwargs: Any) -> Any:
    """A causal LM, with dtype / quantization / cache taken from ``model_cfg`` (``kwargs`` win)."""
    return load_model(name, "causal_lm", **{**_load_kwargs(model_cfg), **kwargs})


def load_sequence_classifier(name: str, model_cfg: ModelConfig | None = None, **kwargs: Any) -> Any:
    """A sequence classifier with one scalar output (a reward model)."""
    return load_model(name, "reward_model", **{**_load_kwargs(model_cfg), **kwargs})


def _load_kwargs(model_cfg: ModelConfig | None) -> dict[str, Any]:
    if model_cfg is None:
        return {}
    return {
        "dtype": resolve_dtype(model_cfg.dtype),
        "quantization": model_cfg.quantization,
        "cache_dir": model_cfg.cache_dir,
    }
