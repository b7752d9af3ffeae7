"""Run directories: one per stage run, with its resolved config and a finished marker.

``<run.output_dir>/<run.name><name_suffix>/`` holds everything a run writes:
``config.resolved.yaml`` (rerun with ``--config`` it reproduces the run), checkpoints,
metrics and the final model. ``run_state.json`` says whether the run finished.
A finished run is never overwritten without ``--overwrite``; an unfinished one
(crashed, interrupted: ``status`` failed / interrupted, with the ``error``) continues with
``--resume``, or, when it never trained anything, simply starts again. A finished training
run records its final step; ``--resume`` extends it only when the config asks for more steps
and a checkpoint can continue it (:func:`check_finished_resume`).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from crs.config import ConfigError, CRSConfig, load_config, save_resolved_config
from crs.io import recover_replaced_in, write_json_atomic

logger = logging.getLogger(__name__)

STATE_FILE = "run_state.json"
CHECKPOINT_MANIFEST = "crs_checkpoint.json"
LOG_FILES = ("metrics.jsonl", "train_log.jsonl")  # the step logs: PPO's, and the Trainer stages'


class RunError(RuntimeError):
    """A run that cannot go on or did not do what was asked; the message says why and what to do.

    The stage command line prints it as one line, exits with code 2 and marks the run failed.
    """


class NonFiniteError(RunError, FloatingPointError):
    """Rewards, losses or gradients that are not finite numbers, more often than the run tolerates."""


class NothingToResume(Exception):
    """``--resume`` of a finished run whose config asks for no more steps than it trained.

    Not an error: the stage command says so in one line and exits 0, leaving the run as it was.
    """


# The config keys that bound how long a training stage runs (what extending a finished run changes).
TRAIN_LENGTH_KEYS = ("train.max_steps", "train.num_epochs")  # SFT and reward models (transformers' Trainer)
RL_LENGTH_KEYS = ("rl.steps",)  # PPO, GRPO, RLOO, DPO


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    import numpy as np  # here, not at the top: the demo and `--help` use this module without torch
    import torch

    np.random.seed(seed)
    torch.manual_seed(seed)


def run_state(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``run_state.json``, or None if the folder holds no run."""
    path = Path(run_dir) / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def is_finished(run_dir: str | Path) -> bool:
    """Whether a run completed (its outputs are final)."""
    state = run_state(run_dir)
    return bool(state and state.get("status") == "finished")


def check_run_location(config: CRSConfig) -> Path:
    """The run directory, refused when it is ``output_dir`` itself or lies outside it.

    A name like ``""``, ``"."`` or ``"../x"`` would make crs write (and ``--overwrite``
    delete) a folder that is not a run of its own.
    """
    output_dir = Path(config.run.output_dir).resolve()
    run_dir = config.run_dir.resolve()
    if run_dir == output_dir or output_dir not in run_dir.parents:
        raise ConfigError(
            f"run.name={config.run.name!r} with --name_suffix={config.name_suffix!r} resolves to {run_dir}, "
            f"which is not a folder inside run.output_dir ({output_dir}); give the run a plain name"
        )
    return config.run_dir


def is_crs_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` is provably a crs run: its ``run_state.json`` parses and has a status."""
    try:
        state = run_state(run_dir)
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and "status" in state


# Keys a resumed run may change: where and how often it logs and saves, and how long it
# runs (extending a run). Any other change could not be held by the checkpoint (a LoRA rank),
# or would silently mix two settings in one run (a learning rate, a reward weight).
RESUMABLE_CHANGES = (
    "run.output_dir",  # the same folder, named another way (the run dir is checked itself)
    "run.logging_steps",
    "run.report_to",
    "run.keep_freed_memory",
    "model.cache_dir",
    "train.max_steps",
    "train.num_epochs",
    "train.save_steps",
    "train.save_total_limit",
    "train.eval_steps",
    "train.eval_batch_size",
    "rl.steps",
    "rl.save_steps",
    "rl.save_total_limit",
    "rl.sample_every",
    "rl.max_nonfinite_in_row",
    "eval_pred.batch_size",
    "sweep.weights",  # a sweep extended with more weights or seeds keeps its finished runs
    "sweep.seeds",
    "sweep.jobs",
    "sweep.n_boot",
    "bon.samples",  # a pool extended with more samples keeps the ones it made
    "bon.batch_size",
    "bon.rewards",  # a best-of-n study scores only the sources it has not scored yet (<run>/scores/)
    "bon.weights",
    "bon.n_boot",
    "online.label_wait_minutes",
    "online.n_boot",
)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def _saved_config(config: CRSConfig, run_dir: Path) -> CRSConfig | None:
    """The run's own ``config.resolved.yaml`` (None when it has none); a one-line ConfigError when unreadable."""
    saved_path = run_dir / "config.resolved.yaml"
    if not saved_path.is_file():
        return None
    try:
        return load_config(config.subset, saved_path, name_suffix=config.name_suffix)
    except ConfigError as err:
        raise ConfigError(
            f"--resume: the run's saved config cannot be read ({err}); use --overwrite to start again"
        ) from None


def check_resume_compatible(config: CRSConfig, run_dir: Path) -> list[str]:
    """Compare ``config`` with the run's saved ``config.resolved.yaml`` before resuming it.

    Returns the harmless changed keys (:data:`RESUMABLE_CHANGES`, logged); raises ConfigError
    naming every other changed key with its old and new value.
    """
    saved = _saved_config(config, run_dir)
    if saved is None:
        return []
    old, new = _flatten(saved.to_dict()), _flatten(config.to_dict())
    changed = sorted(
        k
        for k in old.keys() | new.keys()
        if old.get(k) != new.get(k) and k not in ("subset", "name_suffix", "config_path")
    )
    harmless = [k for k in changed if k in RESUMABLE_CHANGES]
    refused = [k for k in changed if k not in RESUMABLE_CHANGES]
    if refused:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in refused[:8])
        more = f" (and {len(refused) - 8} more)" if len(refused) > 8 else ""
        raise ConfigError(
            f"--resume: {run_dir} was started with another config, which its checkpoints cannot continue: "
            f"{details}{more}. "
            "Resume with the run's own config.resolved.yaml, or start a new run (--name_suffix) or --overwrite"
        )
    for key in harmless:
        logger.info("--resume: %s changed from %r to %r", key, old.get(key), new.get(key))
    return harmless


def trained_length(state: dict[str, Any]) -> tuple[int, tuple[str, ...]] | None:
    """A finished training run's final step and the config keys that bounded it (None: not a training run).

    Runs finished before ``final_step`` was recorded give the step in their summary:
    ``global_step`` (reward models), ``steps`` with ``train_loss`` (SFT), ``steps`` (the RL stages).
    """
    if isinstance(state.get("final_step"), int) and state.get("length_keys"):
        return state["final_step"], tuple(state["length_keys"])
    summary = state.get("summary")
    if not isinstance(summary, dict):
        return None
    if isinstance(summary.get("global_step"), int):
        return summary["global_step"], TRAIN_LENGTH_KEYS
    if isinstance(summary.get("steps"), int):
        return summary["steps"], TRAIN_LENGTH_KEYS if "train_loss" in summary else RL_LENGTH_KEYS
    return None


def _asks_for_more(saved: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...], final_step: int) -> bool:
    """Whether the new step bound (flattened configs) lies past the ``final_step`` the run reached."""
    if all(saved.get(key) == new.get(key) for key in keys):
        return False  # the very bound the run finished at
    if keys == RL_LENGTH_KEYS:
        return new["rl.steps"] > final_step
    if new["train.max_steps"] > 0:
        return new["train.max_steps"] > final_step
    if saved["train.max_steps"] <= 0:  # epochs before and now
        return new["train.num_epochs"] > saved["train.num_epochs"]
    return True  # a step bound before, epochs now: how many steps that is depends on the data, which the Trainer counts


def _bound_text(config: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The key that bounds the run's length, with its value (``train.max_steps`` > 0 overrides the epochs)."""
    key = keys[0] if keys == RL_LENGTH_KEYS or config["train.max_steps"] > 0 else "train.num_epochs"
    return f"{key}={config[key]}"


def _has_complete_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds a sealed checkpoint (read only: nothing is recovered or deleted)."""
    if not folder.is_dir():
        return False
    return any(p.is_dir() and checkpoint_step(p) >= 0 and checkpoint_problem(p) is None for p in folder.iterdir())


def check_finished_resume(config: CRSConfig, run_dir: Path) -> None:
    """Decide, before anything is written, whether ``--resume`` of the finished run in ``run_dir`` has steps to train.

    Raises :class:`NothingToResume` when ``config`` asks for no more steps than the run
    trained (same bound, or a lower one): training would run past its end or all over
    again. Raises a one-line ConfigError when it asks for more but the run kept no complete
    checkpoint (``rl.save_steps: 0``): it cannot continue exactly, and starting again from
    step 0 would silently replace the finished model. Returns when the run can be extended.
    Runs that are not training runs (a sweep, a pool) are left to their stage, which skips
    what is done.
    """
    trained = trained_length(run_state(run_dir) or {})
    if trained is None:
        return
    final_step, keys = trained
    new = _flatten(config.to_dict())
    saved_config = _saved_config(config, run_dir)
    saved = _flatten(saved_config.to_dict()) if saved_config is not None else new
    bound = _bound_text(new, keys)
    if not _asks_for_more(saved, new, keys, final_step):
        key = bound.split("=")[0]
        above = saved[key] if key == "train.num_epochs" else final_step
        raise NothingToResume(
            f"{run_dir} already finished at step {final_step}; nothing to resume ({bound} asks for no more steps; "
            f"set {key} above {above} to extend the run)"
        )
    if _has_complete_checkpoint(run_dir / "checkpoints"):
        return
    if keys == RL_LENGTH_KEYS:
        how = (
            f"start a new run beside it (--name_suffix) with rl.init_adapter={run_dir} to continue from its policy "
            "(the optimizer starts afresh), or train it again with --overwrite and rl.save_steps > 0"
        )
    else:
        how = "train it again with --overwrite, or start a new run beside it (--name_suffix)"
    save_key = "rl.save_steps" if keys == RL_LENGTH_KEYS else "train.save_steps"
    raise ConfigError(
        f"--resume: {run_dir} finished at step {final_step} and kept no complete checkpoint "
        f"({save_key}: {saved.get(save_key)}), "
        f"so it cannot continue to {bound} exactly: {how}"
    )


def _logged_rows(path: Path) -> int:
    """How many complete JSON rows a step log holds (a torn last line is no row)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return 0
    rows = 0
    for line in filter(str.strip, lines):
        try:
            rows += isinstance(json.loads(line), dict)
        except ValueError:
            continue
    return rows


def _alive_elsewhere(state: dict[str, Any]) -> bool:
    """Whether the process a "running" state names is alive on this host (and is not us)."""
    pid = state.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or state.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, but another user's
        return True
    return True


def run_progress(run_dir: str | Path) -> str:
    """What an unfinished run has to show for itself ("" when nothing: it never trained).

    Checkpoints, logged steps, predictions and a sweep's or online loop's runs count; only a run with none of them
    starts again without ``--resume`` / ``--overwrite``.
    """
    run_dir = Path(run_dir)
    found = []
    for folder in ("checkpoints", "predictions", "runs", "round_0"):  # (runs: a sweep's; round_0: an online loop's)
        entries = sum(1 for _ in (run_dir / folder).iterdir()) if (run_dir / folder).is_dir() else 0
        if entries:
            found.append(f"{entries} entr{'y' if entries == 1 else 'ies'} in {folder}/")
    for log in LOG_FILES:
        rows = _logged_rows(run_dir / log)
        if rows:
            found.append(f"{rows} row{'s' * (rows != 1)} in {log}")
    return ", ".join(found)


def prepare_run_dir(config: CRSConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Create (or reopen) the run directory and save the resolved config into it.

    Raises ConfigError when the directory holds something that must not be touched:
    files that are not a crs run (never deleted, whatever the flags), a finished run
    without ``--overwrite`` or ``--resume`` (which extends it: more steps, more seeds), an
    unfinished one without ``--resume``. A finished training run resumed with no steps left
    raises :class:`NothingToResume`, the folder untouched (:func:`check_finished_resume`). An unfinished run
    that never trained anything (no checkpoint, logged step or prediction:
    :func:`run_progress`) simply starts again, with a warning, nothing in it deleted
    but empty step logs.
    """
    run_dir = check_run_location(config)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run directory; choose another run.name or --name_suffix")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not is_crs_run(run_dir):
            raise ConfigError(
                f"{run_dir} holds files that are not a crs run (no valid {STATE_FILE}); crs will not write into "
                "or delete it: choose another run.name / --name_suffix, or move those files away"
            )
        if overwrite:
            shutil.rmtree(run_dir)
        elif is_finished(run_dir) and not resume:
            raise ConfigError(
                f"{run_dir} holds a finished run; pass --overwrite to replace it, --resume to extend it "
                "(e.g. more rl.steps, more sweep seeds), or --name_suffix to write a new run beside it"
            )
        elif is_finished(run_dir):
            check_resume_compatible(config, run_dir)  # extending a finished run: only harmless changes
            check_finished_resume(
                config, run_dir
            )  # and only with steps left to train and a checkpoint to start them from
        elif not resume:
            progress = run_progress(run_dir)
            if progress:
                raise ConfigError(
                    f"{run_dir} holds an unfinished run; pass --resume to continue it "
                    f"or --overwrite to start again (it has {progress})"
                )
            state = run_state(run_dir) or {}
            if state.get("status") == "running" and _alive_elsewhere(state):
                raise ConfigError(
                    f"{run_dir} is being written by a running process (pid {state['pid']}); wait for it, "
                    "or pass --resume if that process is not this run"
                )
            logger.warning(
                "%s: the earlier run (%s) never trained anything; starting it again", run_dir, state.get("status")
            )
            for log in LOG_FILES:
                (run_dir / log).unlink(missing_ok=True)  # nothing but blank or torn lines in it
        elif run_progress(run_dir):
            check_resume_compatible(config, run_dir)  # only a run that trained has something to keep
    elif resume:
        logger.warning("--resume: %s holds no earlier run, starting fresh", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The state file first: from here on the folder is provably a crs run.
    state = run_state(run_dir) or {"created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for stale in ("error", "stopped"):
        state.pop(stale, None)
    state.update(status="running", subset=config.subset, pid=os.getpid(), host=socket.gethostname())
    write_json_atomic(run_dir / STATE_FILE, state)
    save_resolved_config(config, run_dir / "config.resolved.yaml")
    return run_dir


def mark_finished(
    run_dir: str | Path,
    summary: dict[str, Any] | None = None,
    final_step: int | None = None,
    length_keys: tuple[str, ...] = (),
) -> None:
    """Record that the run completed, with an optional summary of its results.

    A training stage also gives its ``final_step`` and the config keys that bounded it
    (:data:`TRAIN_LENGTH_KEYS` or :data:`RL_LENGTH_KEYS`): what ``--resume`` compares a new
    config with (:func:`check_finished_resume`).
    """
    state = run_state(run_dir) or {}
    state.pop("error", None)
    state.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if summary:
        state["summary"] = summary
    if final_step is not None and length_keys:
        state.update(final_step=int(final_step), length_keys=list(length_keys))
    write_json_atomic(Path(run_dir) / STATE_FILE, state)


def mark_failed(run_dir: str | Path, message: str, status: str = "failed") -> None:
    """Record that the run stopped before finishing (``failed``, or ``interrupted``) and why.

    Never raises: it runs while another error is on its way out, which must not be hidden.
    """
    try:
        state = run_state(run_dir) or {}
        state.update(status=status, stopped=time.strftime("%Y-%m-%dT%H:%M:%S"), error=message)
        write_json_atomic(Path(run_dir) / STATE_FILE, state)
    except (OSError, ValueError) as err:
        logger.warning("could not mark %s as %s: %s", run_dir, status, err)


def seal_checkpoint(folder: str | Path) -> None:
    """Mark a fully written checkpoint complete: a manifest of its files and their sizes.

    Written last, atomically; a checkpoint without a valid manifest, or with a file
    missing or of another size (a crash mid-write), is torn and never resumed from.
    """
    folder = Path(folder)
    files = {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != CHECKPOINT_MANIFEST and not p.name.endswith(".tmp")
    }
    write_json_atomic(folder / CHECKPOINT_MANIFEST, {"files": files})


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why a checkpoint is not complete, or None when it is."""
    folder = Path(folder)
    try:
        files = json.loads((folder / CHECKPOINT_MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return f"no {CHECKPOINT_MANIFEST} (written last, so the save did not finish)"
    except (OSError, ValueError, KeyError, TypeError):
        return f"unreadable {CHECKPOINT_MANIFEST}"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    return None


def checkpoint_step(path: Path) -> int:
    """The step number at the end of a checkpoint folder's name (``checkpoint-40``, ``step_40``), or -1."""
    digits = "".join(ch for ch in path.name.rsplit("-", 1)[-1].rsplit("_", 1)[-1] if ch.isdigit())
    return int(digits) if digits and not path.name.startswith(".") else -1


def latest_checkpoint(folder: str | Path, pattern: str = "checkpoint-*", remove_torn: bool = False) -> Path | None:
    """The complete checkpoint with the highest step number, or None.

    Torn checkpoints (a crash while saving) are skipped with a warning naming what is
    wrong, and deleted when ``remove_torn`` (a resumed run would otherwise save into them).
    A checkpoint whose replacement a crash interrupted is put back first.
    """
    recover_replaced_in(folder)
    candidates = sorted(
        (p for p in Path(folder).glob(pattern) if p.is_dir() and checkpoint_step(p) >= 0),
        key=checkpoint_step,
        reverse=True,
    )
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning(
            "checkpoint %s is incomplete (%s)%s", path, problem, "; deleting it" if remove_torn else "; skipped"
        )
        if remove_torn:
            shutil.rmtree(path, ignore_errors=True)
    return None
