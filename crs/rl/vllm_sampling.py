"""GRPO's and RLOO's replies sampled by vLLM, through TRL (``rl.vllm``).

crs runs no vLLM of its own: ``rl.vllm`` (``colocate`` or ``server``) becomes TRL's
``use_vllm`` and ``vllm_mode`` in the GRPOConfig / RLOOConfig crs builds, and TRL does the
rest (starting the engine or connecting to the server, pushing the policy's weights after
each update, the importance-sampling correction). This module maps the keys and checks,
before any model loads, that vLLM is installed. Docs: docs/optimisers.md#sampling-with-vllm.
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Any

from packaging.requirements import Requirement
from packaging.version import Version

from crs.config import ConfigError, CRSConfig
from crs.dependencies import installed_version

logger = logging.getLogger(__name__)


def vllm_arguments(cfg: CRSConfig) -> dict[str, Any]:
    """The GRPOConfig / RLOOConfig keyword arguments of ``rl.vllm`` and its keys; ``use_vllm=False`` when off.

    Colocated, vLLM's context is cut to the longest sequence crs samples (``data.max_prompt_length
    + rl.max_new_tokens``) so that its KV cache is sized for that, not for the model's whole context.
    """
    rl = cfg.rl
    if rl.vllm == "none":
        return {"use_vllm": False}
    kwargs: dict[str, Any] = {"use_vllm": True, "vllm_mode": rl.vllm}
    if rl.vllm == "colocate":
        kwargs["vllm_max_model_length"] = cfg.data.max_prompt_length + rl.max_new_tokens
        if rl.vllm_gpu_memory_utilization is not None:
            kwargs["vllm_gpu_memory_utilization"] = rl.vllm_gpu_memory_utilization
    elif rl.vllm_server_url is not None:
        kwargs["vllm_server_base_url"] = rl.vllm_server_url
    return kwargs


def trl_vllm_range() -> str:
    """The vLLM versions the installed TRL supports, from its ``vllm`` extra (``>=0.22.0,<=0.31.0``); "" if unknown."""
    try:
        declared = importlib.metadata.requires("trl") or []
    except importlib.metadata.PackageNotFoundError:
        return ""
    for line in declared:
        requirement = Requirement(line)
        if requirement.name.lower() == "vllm" and requirement.marker and requirement.marker.evaluate({"extra": "vllm"}):
            return ",".join(sorted((str(s) for s in requirement.specifier), reverse=True))  # lower bound first
    return ""


def vllm_install_hint() -> str:
    """The pip command that installs a vLLM the installed TRL supports."""
    supported = trl_vllm_range()
    return f"pip install 'vllm{supported}'" if supported else "pip install 'trl[vllm]'"


def require_vllm(cfg: CRSConfig) -> None:
    """With ``rl.vllm`` on: a one-line ConfigError when vLLM is not installed, a warning when outside TRL's range."""
    if cfg.rl.vllm == "none":
        return
    version = installed_version("vllm")
    if version is None:
        raise ConfigError(
            f"rl.vllm={cfg.rl.vllm} samples with vLLM, which is not installed: {vllm_install_hint()} "
            "(the versions TRL supports), or set rl.vllm: none"
        )
    supported = trl_vllm_range()
    # As TRL compares: the release alone (a build's "+cu129" would sort above the upper bound)
    if supported and not Requirement(f"vllm{supported}").specifier.contains(Version(version).base_version):
        logger.warning(
            "vllm %s is outside the range TRL %s supports (%s): %s",
            version,
            installed_version("trl"),
            supported,
            vllm_install_hint(),
        )
