"""A study over reward weights and seeds: ``crs sweep --config_subset sweep_crs``.

For every preference weight ``w`` (the absolute source gets ``1 - w``) and every seed, the
sweep trains an RL run of ``sweep.base_subset``, has every run and the reference model
answer the eval prompts, and judges them. It then reports, per weight, the judge's win rate
against the reference and its mean score, each with a 95% interval that counts seed and
prompt variance (pivotal rounds: a Student-t seed level and a paired prompt bootstrap; none with
one seed), the same curve under each
reward model, the slope of the win rate on the weight (does the reference study's inverse
relation hold?), each weight against each other, length-controlled win rates, and the
runs' over-optimisation curves overlaid.

With ``sweep.arms`` it compares strategies instead of weights (``crs sweep --config_subset
strategies_crs``): each arm is an RL subset (its ``rl.combine``, sources and reward models),
optionally at a weight and with overrides, trained at every seed and judged the same way; the
report says which arm wins against which, with intervals.

With ``sweep.bon_subset`` it first runs the best-of-n study on one pool over its whole weight
grid (minutes; :mod:`crs.eval.bon.instrument`), trains RL at ``sweep.weights`` or, when that is empty, at
the best-of-n optimum and both ends, and reports the two side by side: does PPO order the
weights as best-of-n does?

Everything lives under the sweep's run directory::

    bon/                      the best-of-n study (with sweep.bon_subset)
    runs/w0.25_s1/ ...        one RL run per (weight, seed), or <arm>_s1/ per (arm, seed), as `crs rl` writes it
    logs/w0.25_s1.log         its output
    eval_pred/predictions/    every run's and the reference's predictions
    results.json, report.md, sweep_curves.png, sweep_overoptimization.png

A finished run is skipped and an interrupted one resumed, so a sweep stopped anywhere
continues where it stopped when started again with ``--resume``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crs.config import ConfigError, CRSConfig, EvalModelConfig, RewardSourceConfig, RLConfig, load_config
from crs.eval import hierarchical, length_control, win_rates
from crs.eval.overoptimization_figures import plot_overoptimization
from crs.eval.power import power_of_neighbours
from crs.eval.predict import predict_models
from crs.eval.score import SourceScores, judge_replies, study_judge
from crs.io import read_jsonl, write_json_atomic, write_text_atomic
from crs.rl.combine import describe_strategy
from crs.rl.overoptimization import judge_peak
from crs.rl.reward_sources import build_sources
from crs.runs import RunError, is_finished, mark_finished
from crs.study.scheduler import Stage, run_stages
from crs.study.stage_commands import JobDevices, override_texts, run_logged, stage_command
from crs.study.sweep_report import plot_sweep_curves, render_sweep_report

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepRun:
    """One RL run of the sweep: a weight of the base subset, or an arm (``sweep.arms``), at a seed."""

    seed: int
    subset: str
    weight: float | None = None  # the preference weight; None: the subset's own weights
    arm: str | None = None  # the arm's name; None: a run of the weight curve
    overrides: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        """Its row in the tables: the weight (``0.25``) or the arm's name."""
        return self.arm if self.arm is not None else f"{self.weight:g}"

    @property
    def name(self) -> str:
        """Its run (and model) name, e.g. ``w0.25_s1`` or ``conservative_s1``."""
        return f"{self.arm}_s{self.seed}" if self.arm is not None else f"w{self.weight:g}_s{self.seed}"


def sweep_runs(cfg: CRSConfig, weights: Sequence[float]) -> list[SweepRun]:
    """Every RL run, arm- (or weight-) major: each of ``sweep.arms``, else each of ``weights``, at every seed."""
    sweep = cfg.sweep
    if sweep.arms:
        return [
            SweepRun(s, arm.subset or sweep.base_subset, arm.weight, arm.name, dict(arm.set))
            for arm in sweep.arms
            for s in sweep.seeds
        ]
    return [SweepRun(s, sweep.base_subset, w) for w in weights for s in sweep.seeds]


def run_rewards(cfg: CRSConfig, run: SweepRun) -> tuple[RLConfig, list[dict[str, Any]]]:
    """The RL section ``run`` trains with (its subset and overrides) and its ``rl.rewards`` at its weight;
    an invalid one is a ConfigError naming the arm (or the base subset)."""
    try:
        rl = load_config(run.subset, cfg.config_path, override_texts(run.overrides)).rl
        return rl, weighted_rewards(rl, cfg, run.weight) if run.weight is not None else [
            dict(vars(r)) for r in rl.rewards
        ]
    except ConfigError as err:
        where = f"sweep.arms ({run.arm})" if run.arm is not None else f"sweep.base_subset ({run.subset})"
        raise ConfigError(f"{where}: {err}") from err


def check_runs(cfg: CRSConfig, runs: Sequence[SweepRun]) -> dict[str, str]:
    """Every run's config is valid before anything trains; returns each row's reward as the report names it."""
    checked = {run.label: run_rewards(cfg, run) for run in runs}
    paths: dict[str, set[str]] = {}
    for _, rewards in checked.values():
        for r in rewards:
            paths.setdefault(r["name"], set()).add(r["path"])
    described: dict[str, str] = {}
    for label, (rl, rewards) in checked.items():
        # A source is named by its path too where the rows read one name from different places.
        names = [source_text(r, with_path=len(paths[r["name"]]) > 1) for r in rewards if r["weight"] != 0]
        weights = [r["weight"] for r in rewards if r["weight"] != 0]
        if rl.combine == "conservative":  # the weights do not enter its score
            sources = "of " + ", ".join(names)
        else:
            sources = " + ".join(f"{w:g} x {name}" for w, name in zip(weights, names))
        described[label] = f"{describe_strategy(rl.combine, rl.conservative, rl.conservative_k)}: {sources}"
    return described


def source_text(reward: Mapping[str, Any], with_path: bool) -> str:
    """A reward source in the report: its name, then where it reads from and whether its length is calibrated."""
    notes = ([reward["path"]] if with_path else []) + (
        ["length-calibrated"] if reward.get("length_calibration", "none") != "none" else []
    )
    return f"{reward['name']} ({', '.join(notes)})" if notes else reward["name"]


def best_of_n_first(cfg: CRSConfig, run_dir: Path) -> dict[str, Any] | None:
    """With ``sweep.bon_subset``: make the pool (``sweep.pool_subset``, skipped when finished) and run
    the best-of-n study over its whole weight grid into ``<sweep>/bon``; its results, else None."""
    sweep = cfg.sweep
    if not sweep.bon_subset:
        return None
    steps = (
        [("pool", sweep.pool_subset, load_config(sweep.pool_subset, cfg.config_path).run_dir)]
        if sweep.pool_subset
        else []
    )
    steps.append(("bon", sweep.bon_subset, run_dir / "bon"))
    for stage, subset, target in steps:
        if is_finished(target):
            logger.info("sweep: %s %s finished earlier (%s)", stage, subset, target)
            continue
        logger.info("sweep: %s --config_subset %s into %s", stage, subset, target)
        code = run_logged(stage_command(stage, cfg.config_path, subset, target, {}), run_dir / "logs" / f"{stage}.log")
        if code != 0:
            raise RunError(
                f"sweep: crs {stage} --config_subset {subset} failed (exit {code}); "
                f"see {run_dir / 'logs' / (stage + '.log')}"
            )
    return json.loads((run_dir / "bon" / "results.json").read_text(encoding="utf-8"))


def rl_weights(cfg: CRSConfig, bon: Mapping[str, Any] | None) -> list[float]:
    """The weights RL trains at: ``sweep.weights``, or, when empty, the best-of-n optimum and both ends of its grid."""
    if cfg.sweep.weights:
        return list(cfg.sweep.weights)
    if not bon or not bon.get("weights"):
        raise ConfigError(
            "sweep.weights is empty and the best-of-n study (sweep.bon_subset) gave no weight grid: name the weights"
        )
    grid = bon["weights"]["grid"]
    return sorted({grid[0], bon["weights"]["best"]["weight"], grid[-1]})


def weighted_rewards(rl: RLConfig, cfg: CRSConfig, weight: float) -> list[dict[str, Any]]:
    """The RL section's ``rewards`` with the preference source at ``weight`` and the absolute one at ``1 - weight``."""
    sweep = cfg.sweep
    if rl.combine == "conservative":  # its score ignores the weights: every run would train on one reward
        raise ConfigError(
            "sweep: a weight for an RL subset with rl.combine=conservative, which ignores the weights "
            "the sweep varies; use sum or sum_per_prompt there, or leave the arm's weight null"
        )
    rewards = [dict(vars(r)) for r in rl.rewards]
    names = [r["name"] for r in rewards]
    for name in (sweep.preference_source, sweep.absolute_source):
        if name not in names:
            raise ConfigError(
                f"sweep: {name!r} is not a reward source of the RL subset (its rl.rewards: {names}); "
                "set sweep.preference_source and sweep.absolute_source"
            )
    for reward in rewards:
        if reward["name"] == sweep.preference_source:
            reward["weight"] = weight
        elif reward["name"] == sweep.absolute_source:
            reward["weight"] = 1.0 - weight
    return rewards


def rl_command(cfg: CRSConfig, run: SweepRun, runs_dir: Path) -> list[str]:
    """The ``crs rl`` command line of one run (``--resume`` when it started before)."""
    overrides: dict[str, Any] = {**run.overrides, "run.seed": run.seed}
    if run.weight is not None:
        overrides["rl.rewards"] = run_rewards(cfg, run)[1]
    return stage_command("rl", cfg.config_path, run.subset, runs_dir / run.name, overrides)


def train_runs(cfg: CRSConfig, run_dir: Path, runs: Sequence[SweepRun]) -> dict[str, float]:
    """Train every unfinished run, ``sweep.jobs`` at a time (in order, each as soon as a place is free);
    returns each trained run's wall time (s)."""
    runs_dir, logs_dir = run_dir / "runs", run_dir / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    pending = [run for run in runs if not is_finished(runs_dir / run.name)]
    done = len(runs) - len(pending)
    logger.info(
        "sweep: %d RL runs, %d finished earlier, %d to train, %d at a time",
        done + len(pending),
        done,
        len(pending),
        cfg.sweep.jobs,
    )
    devices = JobDevices(cfg.sweep.jobs)
    by_name = {run.name: run for run in pending}
    times: dict[str, float] = {}
    counted = threading.Lock()

    def train(stage: Stage, alone: bool) -> None:  # every run gets its share of the cores and GPUs, the last one too
        run = by_name[stage.name]
        start = time.time()
        with devices.job_env() as env:
            code = run_logged(rl_command(cfg, run, runs_dir), logs_dir / f"{run.name}.log", env)
        seconds = time.time() - start
        if code != 0:
            raise RunError(
                f"sweep: RL run {run.name} failed (exit {code}); see {logs_dir / (run.name + '.log')}; "
                "start the sweep again to continue once it is fixed"
            )
        with counted:
            times[run.name] = seconds
            logger.info("sweep: [%d/%d] %s trained in %.0f s", done + len(times), len(runs), run.name, seconds)

    run_stages([Stage("rl", run.subset, run_name=run.name) for run in pending], cfg.sweep.jobs, train)
    return {run.name: times[run.name] for run in pending}  # in the runs' order


def judge_scores(
    cfg: CRSConfig, per_model: dict[str, list[dict[str, Any]]], judge_path: str
) -> dict[str, dict[str, np.ndarray]]:
    """Per-prompt scores of every model: the judge's (``"judge"``), then each reward model's."""
    cache = SourceScores(per_model, cfg.model, 32)
    judge = build_sources([RewardSourceConfig(name="judge", path=judge_path)], cfg.model)[0]
    scores = {"judge": judge_replies(judge, per_model)}
    for spec in cfg.sweep.rewards:
        scores[spec.name] = {m: v.numpy() for m, v in cache.get(spec)[1].items()}
    return scores


# --------------------------------------------------------------------------- the study's numbers


def study_results(
    scores: Mapping[str, Mapping[str, np.ndarray]],
    lengths: Mapping[str, Sequence[int]],
    runs: Sequence[SweepRun],
    reference: str,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Every number of the report, from per-prompt scores (``scores[scorer][model][prompt]``).

    Rows are the weights (sorted) of a weight curve, or the arms in their configured order.
    """
    curve = all(r.arm is None for r in runs)
    ordered = sorted(runs, key=lambda r: r.weight) if curve else list(runs)
    labels = list(dict.fromkeys(r.label for r in ordered))
    by_label = {label: [r for r in ordered if r.label == label] for label in labels}
    results: dict[str, Any] = {
        "labels": labels,
        "seeds": sorted({r.seed for r in runs}),
        "reference": reference,
        "scorers": {},
    }
    if curve:
        results["weights"] = [by_label[label][0].weight for label in labels]
    for scorer, per_model in scores.items():
        outcomes = {
            label: [win_rates.pairwise_outcomes(per_model[r.name], per_model[reference]) for r in group]
            for label, group in by_label.items()
        }
        rates = hierarchical.seed_prompt_intervals(outcomes, n_rounds=n_boot, seed=seed)
        entry: dict[str, Any] = {
            "win_rate": {
                k: _within_rate_bounds({name: v[name] for name in ("mean", "ci_low", "ci_high", "n_seeds")})
                for k, v in rates.items()
            }
        }
        if len(labels) >= 2:
            if curve:
                entry["slope"] = hierarchical.rounds_slope(
                    rates, {label: by_label[label][0].weight for label in labels}
                )
            rounds = [rates[label]["rounds"] for label in labels]  # the same resampled prompts: paired
            entry["power"] = (
                power_of_neighbours(rounds)
                if all(r is not None for r in rounds)
                else {"standard_error": None, "minimum_detectable_difference": None}
            )
        mean_score = hierarchical.seed_prompt_intervals(
            {label: [per_model[r.name] for r in group] for label, group in by_label.items()}, n_rounds=n_boot, seed=seed
        )
        entry["mean_score"] = {
            k: {name: v[name] for name in ("mean", "ci_low", "ci_high")} for k, v in mean_score.items()
        }
        entry["reference_mean_score"] = float(np.mean(per_model[reference]))
        if scorer == "judge":
            entry["per_seed"] = {
                label: [float(np.mean(o)) for o in group] for label, group in outcomes.items()
            }  # the seed spread, seen
            entry.update(length_entries(per_model, lengths, by_label, reference, n_boot, seed))
            entry["each_vs_each"] = _each_vs_each(per_model, by_label, n_boot, seed)
        results["scorers"][scorer] = entry
    results["mean_length"] = {
        label: float(np.mean([np.mean(lengths[r.name]) for r in group])) for label, group in by_label.items()
    }
    return results


def length_entries(
    per_model: Mapping[str, np.ndarray],
    lengths: Mapping[str, Sequence[int]],
    by_label: Mapping[str, list[SweepRun]],
    reference: str,
    n_boot: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Per label: ``lc_win_rate``, the mean over seeds of each run's length-controlled rate;
    ``lc_separation``, each seed's :func:`length_control.length_separation` (``reliable``: every
    seed's LC is); ``length_matched``, the win rate on the length-matched prompts pooled over
    the seeds (:func:`length_control.pooled_length_matched_win_rate`)."""
    entries: dict[str, dict[str, Any]] = {"lc_win_rate": {}, "lc_separation": {}, "length_matched": {}}
    for label, group in by_label.items():
        runs = [
            (win_rates.pairwise_outcomes(per_model[r.name], per_model[reference]), lengths[r.name], lengths[reference])
            for r in group
        ]
        entries["lc_win_rate"][label] = float(
            np.mean([length_control.length_controlled_win_rate(*run, n_boot=1).win_rate for run in runs])
        )
        seen = [length_control.length_separation(*run) for run in runs]
        entries["lc_separation"][label] = {
            "reliable": all(s.reliable for s in seen),
            "seeds": [r.seed for r in group],
            "per_seed": [s.as_dict() for s in seen],
        }
        entries["length_matched"][label] = length_control.pooled_length_matched_win_rate(
            runs, n_boot=n_boot, seed=seed
        ).as_dict()
    return entries


def _each_vs_each(
    per_model: Mapping[str, np.ndarray], by_label: Mapping[str, list[SweepRun]], n_boot: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Row's replies against column's, seed i against seed i, pooled with intervals."""
    table: dict[str, dict[str, Any]] = {}
    for a in by_label:
        groups = {}
        for b in by_label:
            if a != b:
                pairs = list(zip(by_label[a], by_label[b]))
                groups[b] = [win_rates.pairwise_outcomes(per_model[ra.name], per_model[rb.name]) for ra, rb in pairs]
        rates = hierarchical.seed_prompt_intervals(groups, n_rounds=n_boot, seed=seed) if groups else {}
        table[a] = {
            b: _within_rate_bounds({name: v[name] for name in ("mean", "ci_low", "ci_high")}) for b, v in rates.items()
        }
    return table


def _within_rate_bounds(entry: dict[str, Any]) -> dict[str, Any]:
    """A win rate's interval cut to [0, 1]: the Student-t seed level of 2-3 seeds can reach past a rate's bounds."""
    if entry["ci_low"] is not None:
        entry["ci_low"], entry["ci_high"] = max(entry["ci_low"], 0.0), min(entry["ci_high"], 1.0)
    return entry


def side_by_side(bon: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    """Best-of-n's headline beside RL's win rate at every RL weight, and whether the two order the weights alike."""
    rl_rates = results["scorers"]["judge"]["win_rate"]
    weights = [w for w in results["weights"] if f"w={w:g}" in bon["scorers"]]
    rows = {
        f"{w:g}": {"best_of_n": bon["scorers"][f"w={w:g}"]["win_rate"][-1], "rl": rl_rates[f"{w:g}"]} for w in weights
    }
    pairs = [(a, b) for i, a in enumerate(weights) for b in weights[i + 1 :]]
    agree = [
        np.sign(rows[f"{a:g}"]["best_of_n"]["mean"] - rows[f"{b:g}"]["best_of_n"]["mean"])
        == np.sign(rows[f"{a:g}"]["rl"]["mean"] - rows[f"{b:g}"]["rl"]["mean"])
        for a, b in pairs
    ]
    return {
        "samples": bon["pool"]["samples"],
        "best": bon["weights"]["best"],
        "verdict": bon["verdict"],
        "rows": rows,
        "pairs_ordered_alike": int(sum(agree)),
        "pairs": len(pairs),
    }


# --------------------------------------------------------------------------- the stage


def run_sweep(cfg: CRSConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Train, predict, judge and report every (weight, seed) of ``cfg.sweep``."""
    started = time.time()
    sweep = cfg.sweep
    planned = sweep_runs(cfg, sweep.weights)  # the arms, or the weights named: every one valid before anything trains
    described = check_runs(cfg, planned)
    judge_path = study_judge(cfg, "sweep.judge", sweep.judge, sweep.eval_subset, sweep.rewards)
    bon = best_of_n_first(cfg, run_dir)
    runs = planned if sweep.arms else sweep_runs(cfg, rl_weights(cfg, bon))
    train_times = train_runs(cfg, run_dir, runs)
    models = [sweep.reference] + [EvalModelConfig(run.name, str(run_dir / "runs" / run.name)) for run in runs]
    per_model = predict_models(cfg.config_path, sweep.eval_subset, cfg.run.seed, models, run_dir / "eval_pred")
    scores = judge_scores(cfg, per_model, judge_path)
    lengths = {m: [len(r["output"]) for r in rows] for m, rows in per_model.items()}
    results = study_results(scores, lengths, runs, sweep.reference.name, sweep.n_boot, cfg.run.seed)
    results.update(
        n_prompts=len(next(iter(per_model.values()))),
        wall_time_s=time.time() - started,
        train_time_s=train_times,
        jobs=sweep.jobs,
    )
    if sweep.arms:
        results["arms"] = described
    elif bon and bon.get("weights"):
        results["best_of_n"] = side_by_side(bon, results)
    overopt = {
        run.name: read_jsonl(run_dir / "runs" / run.name / "overoptimization.jsonl")
        for run in runs
        if (run_dir / "runs" / run.name / "overoptimization.jsonl").is_file()
    }
    if overopt:
        plot_overoptimization(overopt, run_dir / "sweep_overoptimization.png")
        judge_key = next((k for rows in overopt.values() for r in rows for k in r if k.startswith("judge/")), None)
        results["judge_peaks"] = (
            {name: judge_peak(rows, judge_key) for name, rows in overopt.items()} if judge_key else {}
        )
    write_json_atomic(run_dir / "results.json", results)
    report = render_sweep_report(results, judge_path)
    write_text_atomic(run_dir / "report.md", report)
    plot_sweep_curves(results, run_dir / "sweep_curves.png")
    print(report)
    summary = {"runs": len(runs), "wall_time_s": results["wall_time_s"]}
    if "slope" in results["scorers"]["judge"]:
        summary["judge_slope"] = results["scorers"]["judge"]["slope"]
    mark_finished(run_dir, summary)
    return results
