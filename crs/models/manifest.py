"""Run manifests: the ``crs_model.json`` a training stage writes beside its model.

It names the base model, the adapter folder, the kind of model (``causal_lm`` or
``reward_model``) and whether the model was fully fine-tuned (``full_model``); a reward model
with more than one output also keeps ``num_labels``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from crs.models.model_error import ModelError

RUN_MANIFEST = "crs_model.json"


ModelKind = Literal["causal_lm", "reward_model"]


def read_run_json(path: Path, what_to_do: str) -> dict[str, Any]:
    """A JSON object a run saved; anything else is a ModelError naming the file, then ``what_to_do``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"{path} is not valid JSON ({err}); {what_to_do}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object; {what_to_do}")
    return data


def read_run_manifest(path: str | Path) -> dict[str, Any] | None:
    """The ``crs_model.json`` of a crs run directory, or None if ``path`` is not one.

    A manifest that does not parse, lacks a key, or points at a missing adapter folder is
    a ModelError naming the run: the run did not finish saving its model, or was damaged.
    """
    manifest = Path(path) / RUN_MANIFEST
    if not manifest.is_file():
        return None
    redo = "rerun that stage with --overwrite, or point at another run"
    data = read_run_json(manifest, f"the run's model is damaged: {redo}")
    for key in ("base", "adapter"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ModelError(f"{manifest} lacks {key!r}; the run's model is damaged: {redo}")
    if not (Path(path) / data["adapter"]).is_dir():
        raise ModelError(
            f"{Path(path) / data['adapter']} is missing (named by {manifest}); the run's model is damaged: {redo}"
        )
    return data


RUN_KIND_TEXT = {
    "causal_lm": "a causal LM (sft_train.py / rl_train.py)",
    "reward_model": "a reward model (rm_train.py)",
}


def check_run_kind(path: str | Path, kind: ModelKind) -> None:
    """Raise a ModelError when ``path`` is a crs run of the other kind (its manifest's ``kind``).

    A reward-model run can never be a policy, and an SFT/RL run is no reward model: loaded
    anyway, either would start with a head of random weights and no error at all.
    """
    manifest = read_run_manifest(path) if Path(path).is_dir() else None
    found = manifest.get("kind") if manifest else None
    if found in RUN_KIND_TEXT and found != kind:
        use = "an sft_train.py or rl_train.py run" if kind == "causal_lm" else "an rm_train.py run"
        raise ModelError(f"{path} is {RUN_KIND_TEXT[found]}, not {RUN_KIND_TEXT[kind].split(' (')[0]}: give {use} here")
