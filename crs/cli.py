"""The command line: the ``crs`` command and the stage scripts at the top of the repository.

``crs sft|rm|rl|predict|score --config_subset NAME`` and ``python sft_train.py --config_subset NAME``
(and the other four scripts) are the same thing: :func:`main` picks the stage from
:data:`STAGES`, and :func:`run_stage` parses the common options, resolves the config,
prepares the run directory, then calls the stage's ``main_fn(config, run_dir, resume)``.
``crs demo`` runs the whole pipeline (:mod:`crs.study.demo`). Bad input (config, data, model
names) ends with one clear line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from crs.config import DEFAULT_CONFIG_PATH, ConfigError, CRSConfig, load_config
from crs.processes import distributed_state, is_main_process, rank_and_world

StageMain = Callable[[CRSConfig, Path, bool], object]

# command -> (the stage function, as module:function so that `crs --help` imports no torch; what it does)
STAGES: dict[str, tuple[str, str]] = {
    "sft": (
        "crs.sft.fine_tuning:train_sft",
        "Supervised fine-tuning of a causal LM on prompt/reply pairs (loss on replies only).",
    ),
    "rm": (
        "crs.rm.training:train_reward_model",
        "Train a reward model on rankings (pairwise / K-wise loss) or absolute scores (rm.loss).",
    ),
    "rl": (
        "crs.cli:train_rl",
        "RL of the SFT policy: PPO (default), GRPO or RLOO on a weighted combination of reward models, "
        "or DPO (rl.algorithm).",
    ),
    "predict": (
        "crs.eval.predict:predict",
        "Generate replies to the eval prompts with every configured model (one JSON per model).",
    ),
    "score": (
        "crs.eval.score:score_predictions",
        "Score predictions with reward models, combined rewards and the gold judge; write win rates and a report.",
    ),
    "pool": (
        "crs.eval.bon.pool:make_pool",
        "A best-of-n pool: every prompt of bon.splits answered bon.samples times by bon.policy "
        "(one AlpacaEval file per sample).",
    ),
    "bon": (
        "crs.eval.bon.instrument:run_bon_study",
        "A best-of-n study on one pool: every reward model, every weight of the combination and the judge pick from "
        "the same replies; curves, agreement, the best weight with its interval, and the study's power.",
    ),
    "sweep": (
        "crs.study.sweep:run_sweep",
        "A study over reward weights and seeds: RL, predictions and judging per (weight, seed); curves with intervals. "
        "--jobs N: N runs side by side.",
    ),
    "online": (
        "crs.study.online:run_online",
        "Iterated online RLHF: label the policy's replies, refresh both reward models, continue RL; round by round.",
    ),
}


SERVE_REWARD = (
    "Answer reward requests over HTTP with a subset's combined reward (rl.rewards, rl.combine, clip, EOS penalty), "
    "loaded once: OpenRLHF's remote reward protocol, POST /get_reward; settings under serve."
)


def train_rl(cfg: CRSConfig, run_dir: Path, resume: bool) -> dict[str, object]:
    """The RL stage (:func:`crs.rl.dispatch.run_rl_stage`), then its over-optimisation figure.

    The figure is drawn here, once training has written its log, so that training code never
    imports plotting (matplotlib)."""
    from crs.eval.overoptimization_figures import plot_run_overoptimization
    from crs.rl.dispatch import run_rl_stage

    summary = run_rl_stage(cfg, run_dir, resume)
    if is_main_process():
        plot_run_overoptimization(run_dir, cfg.run_name)
    return summary


def main(argv: list[str] | None = None) -> None:
    """``crs COMMAND [options]``: one of :data:`STAGES`, or ``demo`` (the whole pipeline)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = [*STAGES, "demo", "serve-reward"]
    if not argv or argv[0] not in commands:
        lines = [f"  {name:<12} {STAGES[name][1]}" for name in STAGES]
        lines.append(
            f"  {'demo':<12} The whole pipeline on the embedded defaults "
            "(skips finished stages, resumes interrupted ones)."
        )
        lines.append(f"  {'serve-reward':<12} {SERVE_REWARD}")
        usage = (
            "usage: crs {" + ",".join(commands) + "} [--config_subset NAME] [options]\n\ncommands:\n" + "\n".join(lines)
        )
        usage += f"\n\n{subsets_line(DEFAULT_CONFIG_PATH)}\n`crs COMMAND --help` lists a command's options."
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(usage, file=sys.stdout if asked else sys.stderr)
        sys.exit(0 if asked else 2)
    if argv[0] == "demo":
        from crs.study.demo import run_demo

        run_demo(argv[1:])
        return
    called_as_crs = Path(sys.argv[0]).name == "crs"  # else a stage script (sft_train.py ...), argparse's own name
    prog = f"crs {argv[0]}" if called_as_crs else None
    if argv[0] == "serve-reward":
        serve_reward(argv[1:], prog)
        return
    target, description = STAGES[argv[0]]
    rest = jobs_as_override(argv[1:]) if argv[0] == "sweep" else argv[1:]
    run_stage(target, description, rest, prog=prog)


def jobs_as_override(argv: list[str]) -> list[str]:
    """The sweep's ``--jobs N`` (runs side by side) as ``--set sweep.jobs=N``."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--jobs":
            out += ["--set", f"sweep.jobs={next(args, '')}"]
        elif arg.startswith("--jobs="):
            out += ["--set", f"sweep.jobs={arg.split('=', 1)[1]}"]
        else:
            out.append(arg)
    return out


def subsets_line(config_path: str | Path) -> str:
    """``config subsets in PATH: a, b, ...``, read with YAML alone (``--help`` imports no torch)."""
    import yaml

    try:
        loaded = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        return f"config subsets: {config_path} is not readable ({type(err).__name__})"
    names = [str(k) for k in (loaded if isinstance(loaded, dict) else {}) if k != "default"]
    return f"config subsets in {config_path}: {', '.join(names) or 'none'}"


def stage_parser(description: str, prog: str | None = None, argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The options every stage script takes; ``--help`` also lists the config's subsets
    (those of ``--config`` when ``argv`` names one)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=subsets_line(named_config(argv)))
    parser.add_argument("--config_subset", required=True, help="the config.yaml block to run (merged over `default`)")
    parser.add_argument("--name_suffix", default="", help="appended to run.name; names the output directory")
    add_config_options(parser)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an unfinished run from its last checkpoint, or extend a finished one (more steps)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    return parser


def named_config(argv: list[str] | None) -> str | Path:
    """The config file ``argv`` names with ``--config`` (for ``--help``'s list of subsets), else config.yaml."""
    config_path: str | Path = DEFAULT_CONFIG_PATH
    for i, arg in enumerate(argv or []):
        if arg == "--config" and i + 1 < len(argv or []):
            config_path = (argv or [])[i + 1]
        elif arg.startswith("--config="):
            config_path = arg.split("=", 1)[1]
    return config_path


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--set``: which YAML file, and overrides of its keys."""
    parser.add_argument("--config", default=None, help="another YAML config file (default: config.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set rl.kl_coef=0.1 (repeatable; values are read as YAML)",
    )


def serve_reward(argv: list[str], prog: str | None = None) -> None:
    """``crs serve-reward --config_subset NAME``: :func:`crs.serve.app.serve_reward` on that subset's config. It
    writes no run directory; bad config or reward sources end in one line, exit code 2."""
    parser = argparse.ArgumentParser(prog=prog, description=SERVE_REWARD, epilog=subsets_line(named_config(argv)))
    parser.add_argument("--config_subset", required=True, help="the subset whose rl.rewards and combination to serve")
    add_config_options(parser)
    args = parser.parse_args(argv)
    from crs.data.schema import DataError
    from crs.dependencies import warn_untested_versions
    from crs.models.model_error import ModelError
    from crs.runs import RunError
    from crs.serve.app import serve_reward as serve

    setup_logging()
    try:
        config = load_config(args.config_subset, args.config, args.overrides)
        warn_untested_versions()
        serve(config)
    except (ConfigError, DataError, ModelError, RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def setup_logging() -> None:
    """INFO logs for crs on the main process, warnings elsewhere."""
    logging.basicConfig(
        level=logging.INFO if is_main_process() else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def run_stage(
    main_fn: StageMain | str, description: str, argv: list[str] | None = None, prog: str | None = None
) -> None:
    """Parse arguments, resolve the config, prepare the run dir and run ``main_fn``.

    ``main_fn`` may be given as ``"module:function"``: it is imported once the arguments are
    parsed, so that ``--help`` answers without importing torch.

    Expected errors (config, data, model, a run that cannot go on: :class:`crs.runs.RunError`)
    end as one line ``error: ...`` and exit code 2;
    anything else keeps its traceback (exit 1). ``--resume`` of a finished run with no steps
    left to train says so in one line and returns (exit 0), the run untouched. Once the run directory is prepared, a
    stage that stops short never leaves ``run_state.json`` "running": it is marked
    ``failed`` (with the error) or ``interrupted`` (Ctrl-C, SIGTERM) first.
    """
    import signal

    args = stage_parser(description, prog, argv).parse_args(argv)
    # Imported here, not at the top: they pull in torch, and `--help` should be instant.
    from crs.data.schema import DataError
    from crs.dependencies import warn_untested_versions
    from crs.models.cpu_memory import keep_freed_memory
    from crs.models.model_error import ModelError
    from crs.runs import NothingToResume, RunError, mark_failed, run_state

    expected = (ConfigError, DataError, ModelError, RunError)
    if isinstance(main_fn, str):
        module, function = main_fn.split(":")
        main_fn = getattr(importlib.import_module(module), function)
    setup_logging()
    try:
        config = load_config(args.config_subset, args.config, args.overrides, args.name_suffix)
        warn_untested_versions()
        if config.run.keep_freed_memory:
            keep_freed_memory()
        run_dir = _prepare_on_main_process(config, args.resume, args.overwrite)
    except NothingToResume as done:  # a finished run with no steps left: said, and left as it was
        logging.getLogger(__name__).warning("%s", done)
        return
    except expected as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

    is_main = is_main_process()  # only the main process writes the run dir

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
        print(
            f"error: terminated (SIGTERM); {run_dir} is marked interrupted: continue it with --resume", file=sys.stderr
        )
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
    """Only rank 0 touches the run directory; the others wait for it (torchrun / accelerate).

    The others first read what ``--resume`` of a finished run decides (nothing to resume, or
    refused), before rank 0 rewrites its state, so that every process stops alike.
    """
    from crs.runs import NothingToResume, check_finished_resume, check_resume_compatible, is_finished, prepare_run_dir

    _, world_size = rank_and_world()
    if world_size == 1:
        return prepare_run_dir(config, resume, overwrite)
    # The process group starts here, with the config's timeout (the Trainer's later one would not apply).
    state = distributed_state(config.run.ddp_timeout)
    error: ConfigError | NothingToResume | None = None
    if not state.is_main_process and resume and not overwrite and is_finished(config.run_dir):
        try:
            check_resume_compatible(config, config.run_dir)
            check_finished_resume(config, config.run_dir)
        except (ConfigError, NothingToResume) as err:
            error = err
    state.wait_for_everyone()  # the finished state read everywhere before rank 0 rewrites it
    if state.is_main_process:
        try:
            prepare_run_dir(config, resume, overwrite)
        except (ConfigError, NothingToResume) as err:
            error = err
    state.wait_for_everyone()
    if error is not None:
        raise error
    if not config.run_dir.is_dir():
        raise ConfigError(f"{config.run_dir} could not be prepared (see the main process's error)")
    return config.run_dir
