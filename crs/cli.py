"""The command line shared by every stage script.

Each script is ``run_stage(main_fn, description)``: parse the common options, resolve
the config, prepare the run directory, then call ``main_fn(config, run_dir, resume)``.
Bad input (config, data, model names) ends with one clear line and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from crs.config import ConfigError, CRSConfig, load_config

StageMain = Callable[[CRSConfig, Path, bool], object]


def stage_parser(description: str) -> argparse.ArgumentParser:
    """The options every stage script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config_subset", required=True, help="the config.yaml block to run (merged over `default`)")
    parser.add_argument("--name_suffix", default="", help="appended to run.name; names the output directory")
    parser.add_argument("--config", default=None, help="another YAML config file (default: config.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set rl.kl_coef=0.1 (repeatable; values are read as YAML)",
    )
    parser.add_argument("--resume", action="store_true", help="continue an unfinished run from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    return parser


def setup_logging() -> None:
    """INFO logs for crs on the main process, warnings elsewhere."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def run_stage(main_fn: StageMain, description: str, argv: list[str] | None = None) -> None:
    """Parse arguments, resolve the config, prepare the run dir and run ``main_fn``.

    Expected errors (config, data, model) end as one line ``error: ...`` and exit code 2;
    anything else keeps its traceback (exit 1). Once the run directory is prepared, a
    stage that stops short never leaves ``run_state.json`` "running": it is marked
    ``failed`` (with the error) or ``interrupted`` (Ctrl-C, SIGTERM) first.
    """
    import signal

    from crs.data.schema import DataError
    from crs.models import ModelError
    from crs.runs import mark_failed, run_state

    expected = (ConfigError, DataError, ModelError)
    args = stage_parser(description).parse_args(argv)
    setup_logging()
    try:
        config = load_config(args.config_subset, args.config, args.overrides, args.name_suffix)
        run_dir = _prepare_on_main_process(config, args.resume, args.overwrite)
    except expected as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

    is_main = int(os.environ.get("RANK", "0")) == 0  # only the main process writes the run dir

    def mark(message: str, status: str = "failed") -> None:
        if is_main:
            mark_failed(run_dir, message, status)

    class Terminated(BaseException):
        """SIGTERM (torchrun stopping its workers, a scheduler's kill) as an exception."""

    def on_sigterm(signum: int, frame: object) -> None:
        raise Terminated

    try:
        previous, installed = signal.signal(signal.SIGTERM, on_sigterm), True
    except ValueError:  # not the main thread: leave signals alone
        previous, installed = None, False
    try:
        main_fn(config, run_dir, args.resume)
    except expected as err:
        mark(str(err))
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        mark("interrupted (Ctrl-C); continue with --resume", "interrupted")
        raise
    except Terminated:
        mark("terminated (SIGTERM); continue with --resume", "interrupted")
        print(f"error: terminated (SIGTERM); {run_dir} is marked interrupted: continue it with --resume", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except SystemExit as err:
        if err.code not in (None, 0):
            mark(f"exited with code {err.code}")
        raise
    except BaseException as err:
        mark(f"{type(err).__name__}: {err}")
        raise
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    state = run_state(run_dir) if is_main else None
    if state is not None and state.get("status") == "running":
        logging.getLogger(__name__).warning("%s: the stage returned without marking the run finished", run_dir)
        mark("the stage returned without marking the run finished")


def _prepare_on_main_process(config: CRSConfig, resume: bool, overwrite: bool) -> Path:
    """Only rank 0 touches the run directory; the others wait for it (torchrun / accelerate)."""
    from crs.runs import prepare_run_dir

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return prepare_run_dir(config, resume, overwrite)
    import torch
    from accelerate import PartialState

    # cpu=True on CUDA-less machines, else each CPU rank believes it is the main process.
    state = PartialState(cpu=not torch.cuda.is_available())
    error: ConfigError | None = None
    if state.is_main_process:
        try:
            prepare_run_dir(config, resume, overwrite)
        except ConfigError as err:
            error = err
    state.wait_for_everyone()
    if error is not None:
        raise error
    if not config.run_dir.is_dir():
        raise ConfigError(f"{config.run_dir} could not be prepared (see the main process's error)")
    return config.run_dir
