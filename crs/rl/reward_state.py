"""The statistics a combined reward froze, read back from an RL run or a reward-state file.

An RL run keeps its reward's scale (:meth:`crs.rl.combined_reward.CombinedReward.state_dict`: per source its
``stats`` and their ``origin``) in every checkpoint: PPO under ``reward`` in ``step_*/trainer_state.json``,
GRPO and RLOO in ``checkpoint-*/crs_reward_state.json``. Scoring a run's replies with its own reward
(``crs score``) and serving that reward (``crs serve-reward``) read it here, the same way.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from crs.config import ConfigError
from crs.rl.combined_reward import REWARD_STATE_FILE
from crs.runs import latest_checkpoint


def run_reward_state(run_dir: str | Path) -> dict[str, Any]:
    """The reward state of an RL run's newest complete checkpoint (PPO's, else GRPO's or RLOO's); ``{}`` when it has
    none."""
    checkpoints = Path(run_dir) / "checkpoints"
    checkpoint = latest_checkpoint(checkpoints, "step_*")
    if checkpoint is not None:
        return _read_json(checkpoint / "trainer_state.json").get("reward", {})
    checkpoint = latest_checkpoint(checkpoints, "checkpoint-*")
    state = checkpoint / REWARD_STATE_FILE if checkpoint is not None else None
    return _read_json(state) if state is not None and state.is_file() else {}


def read_reward_state(location: str | Path, key: str = "serve.reward_state") -> dict[str, Any]:
    """A reward state to load into a :class:`~crs.rl.combined_reward.CombinedReward`, from an RL run folder
    (:func:`run_reward_state`) or a file (``crs_reward_state.json``, or a ``trainer_state.json`` holding one under
    ``reward``); an entry without an ``origin`` gets ``location``. A ConfigError naming ``key`` when there is none
    or it is misshapen."""
    path = Path(location)
    if path.is_dir():
        state = run_reward_state(path)
        if not state:
            raise ConfigError(f"{key}: {path} has no complete checkpoint with a reward state (an RL run saves one)")
    elif path.is_file():
        loaded = _read_json(path)
        wrapped = isinstance(loaded.get("reward"), dict) and "stats" not in loaded["reward"]  # a trainer_state.json
        state = loaded["reward"] if wrapped else loaded
    else:
        raise ConfigError(f"{key}: {path} does not exist (an RL run folder or a reward-state JSON file)")
    for name, entry in state.items():
        _check_entry(name, entry, f"{key} ({path})")
    origin = str(path)
    return {name: {"stats": entry["stats"], "origin": entry.get("origin") or origin} for name, entry in state.items()}


def _check_entry(name: str, entry: Any, where: str) -> None:
    stats = entry.get("stats", "missing") if isinstance(entry, dict) else "missing"
    if stats is None:
        return
    if not (isinstance(stats, dict) and all(_finite_number(stats.get(k)) for k in ("mean", "std"))):
        raise ConfigError(
            f"{where}: source {name!r}: expected {{stats: {{mean: <number>, std: <number>}}}} or {{stats: null}}, "
            f"got {entry!r}"
        )


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(loaded).__name__}")
    return loaded


__all__ = ["read_reward_state", "run_reward_state"]
