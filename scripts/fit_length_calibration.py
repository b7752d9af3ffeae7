"""Fit a reward source's length calibration once and save it: python scripts/fit_length_calibration.py SOURCE

A length calibration (crs/rm/length_calibration.py) is the source's trend in reply length, a LOWESS fit on a
calibration set of replies, that ``length_calibration`` subtracts from its scores in RL, scoring and best-of-n.

    # a reward-model run trained before crs rm fitted one: refit on its own validation replies, as crs rm does,
    # into <run>/length_calibration.json (what `length_calibration: run` reads)
    python scripts/fit_length_calibration.py outputs/rm_preference

    # any source (a reward-model run, gold, python:module:function) on a file of replies: a predictions file
    # ({instruction, output} rows, what crs predict writes) or a best-of-n pool (what bon.pool takes)
    python scripts/fit_length_calibration.py python:my_rewards:score --replies outputs/bon_pool --out cal.json

Then name the file in the source's entry: ``length_calibration: cal.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crs.config import ConfigError, RewardSourceConfig
from crs.data.schema import DataError, user_prompt
from crs.eval.bon.pool import read_pool
from crs.eval.prediction_files import read_predictions
from crs.models.model_error import ModelError
from crs.rl.length_source import fit_source_calibration
from crs.rl.reward_sources import build_sources
from crs.rm.length_calibration import (
    CALIBRATION_FILE,
    DEFAULT_ITERATIONS,
    DEFAULT_SPAN,
    LengthCalibration,
    write_length_calibration,
)
from crs.rm.rm_evaluation import refit_own_length_calibration


def read_replies(path: Path) -> tuple[list[str], list[str]]:
    """(instructions, replies) of a predictions file, or of every reply of a best-of-n pool."""
    try:
        rows = read_predictions(path) if path.is_file() and path.suffix == ".json" else None
    except DataError:
        rows = None  # not a predictions file: perhaps a pool file
    if rows is not None:
        return [r["instruction"] for r in rows], [r["output"] for r in rows]
    pool = read_pool(path)
    pairs = [(text, reply) for text, row in zip(pool.instructions, pool.replies) for reply in row]
    return [text for text, _ in pairs], [reply for _, reply in pairs]


def fit(args: argparse.Namespace) -> tuple[LengthCalibration, Path]:
    """The calibration the arguments ask for, and where it goes."""
    if args.replies is None:
        if not Path(args.source).is_dir():
            raise ConfigError(f"{args.source}: no reward-model run folder; for other sources give --replies and --out")
        calibration = refit_own_length_calibration(args.source)
        return calibration, Path(args.out) if args.out else Path(args.source) / CALIBRATION_FILE
    if args.out is None:
        raise ConfigError(
            f"--replies: give --out too (`length_calibration: run` reads {CALIBRATION_FILE} fitted on the run's own "
            "validation replies; a fit on other replies is a file of its own)"
        )
    source = build_sources([RewardSourceConfig(name=args.source, path=args.source)])[0]
    texts, replies = read_replies(Path(args.replies))
    calibration = fit_source_calibration(
        source, [user_prompt(t) for t in texts], replies, f"the replies of {args.replies}", args.span, args.iterations
    )
    return calibration, Path(args.out)


def main() -> None:
    """Parse arguments, fit, write; a bad input ends in one line and exit code 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a reward-model run dir, gold or python:module:function")
    parser.add_argument("--replies", default=None, help="a predictions file or a pool (default: the run's own)")
    parser.add_argument("--out", default=None, help=f"the file to write (default: <run>/{CALIBRATION_FILE})")
    parser.add_argument("--span", type=float, default=DEFAULT_SPAN, help="LOWESS span, in (0, 1] (default 2/3)")
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="robustness passes (default 3)")
    args = parser.parse_args()
    try:
        calibration, out = fit(args)
    except (ConfigError, DataError, ModelError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    write_length_calibration(out, calibration)
    trend = calibration.trend
    print(
        f"{out}: {calibration.calibration_set}, {int(calibration.stats['n'])} replies, "
        f"{len(calibration.lengths)} lengths from {calibration.lengths[0]:.0f} to {calibration.lengths[-1]:.0f} "
        f"characters; trend from {trend[0]:.4g} to {trend[-1]:.4g}"
    )


if __name__ == "__main__":
    main()
