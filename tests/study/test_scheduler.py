"""The stage scheduler on the demo's pipeline: dependencies, parallelism, failures (fake stages, no training)."""

from __future__ import annotations

import threading
import time

import pytest

from crs.study.demo import PIPELINE
from crs.study.scheduler import Stage, StageFailed, run_stages


def recorder(seconds: float = 0.05, fail: str | None = None):
    """A fake stage runner logging (event, subset) and the peak number running at once."""
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    state = {"running": 0, "peak": 0}

    def run(stage: Stage, alone: bool) -> None:
        with lock:
            events.append(("start", stage.name))
            state.setdefault("alone", set()).update({stage.name} if alone else set())
            state["running"] += 1
            state["peak"] = max(state["peak"], state["running"])
        time.sleep(seconds)
        with lock:
            state["running"] -= 1
            events.append(("end", stage.name))
        if stage.name == fail:
            raise StageFailed(f"{stage.name} broke")

    return run, events, state


def assert_dependencies_respected(events: list[tuple[str, str]], stages: list[Stage]) -> None:
    ended = [subset for kind, subset in events if kind == "end"]
    for stage in stages:
        started_at = events.index(("start", stage.subset))
        for need in stage.after:
            assert ("end", need) in events[:started_at], f"{stage.subset} started before {need} ended"
    assert sorted(ended) == sorted(s.subset for s in stages)


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_pipeline_runs_every_stage_after_its_inputs_and_at_most_jobs_at_once(jobs: int) -> None:
    run, events, state = recorder()
    run_stages(PIPELINE, jobs, run)
    assert_dependencies_respected(events, PIPELINE)
    assert state["peak"] <= jobs
    if jobs > 1:
        assert state["peak"] == jobs  # SFT and the two RMs are independent: they overlap


def test_only_stages_nothing_else_can_run_beside_get_every_core() -> None:
    run, _, state = recorder(0.01)
    run_stages(PIPELINE, 2, run)
    assert state["alone"] == {"eval_pred", "eval_rewarding"}  # the PPO runs and the first three overlap


def test_finished_stages_are_skipped() -> None:
    run, events, _ = recorder(0.0)
    run_stages(PIPELINE, 2, run, done={"sft", "rm_preference", "rm_absolute", "rl_preference"})
    started = {subset for kind, subset in events if kind == "start"}
    assert started == {"rl_absolute", "rl_crs", "eval_pred", "eval_rewarding"}


def test_a_failure_stops_new_stages_lets_running_ones_finish_and_is_raised() -> None:
    run, events, _ = recorder(0.05, fail="sft")
    with pytest.raises(StageFailed, match="sft broke"):
        run_stages(PIPELINE, 2, run)
    started = [subset for kind, subset in events if kind == "start"]
    assert "rl_preference" not in started and "eval_pred" not in started
    for subset in started:
        assert ("end", subset) in events  # nothing left running


def test_a_stage_waiting_for_a_missing_one_is_an_error() -> None:
    run, _, _ = recorder(0.0)
    with pytest.raises(StageFailed, match="never finish"):
        run_stages([Stage("rl", "rl_x", ("nowhere",))], 2, run)


def test_runs_of_one_subset_are_told_apart_by_their_run_names() -> None:
    """The sweep's runs: one subset many times, each its own stage, started in order, at most jobs at once."""
    run, events, state = recorder(0.02)
    stages = [Stage("rl", "rl_crs", run_name=f"w{w}_s1") for w in range(5)]
    run_stages(stages, 2, run, done={"w0_s1"})
    assert [subset for kind, subset in events if kind == "start"] == ["w1_s1", "w2_s1", "w3_s1", "w4_s1"]
    assert state["peak"] == 2
