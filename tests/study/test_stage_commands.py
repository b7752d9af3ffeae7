"""Side-by-side stage processes: their share of the cores and, on a (faked) multi-GPU machine, a GPU each."""

from __future__ import annotations

import logging

import pytest
import torch

from crs.study.stage_commands import JobDevices, cores_share_env, visible_gpus


def fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int, listed: str | None = None) -> None:
    """``count`` CUDA GPUs, as torch.cuda reports them; ``listed``: the CUDA_VISIBLE_DEVICES set."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    if listed is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", listed)


def test_visible_gpus_are_named_as_a_child_process_must_name_them(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 2)
    assert visible_gpus() == ["0", "1"]
    fake_gpus(monkeypatch, 2, listed="3, 5")  # this process sees physical GPUs 3 and 5 as cuda:0 and cuda:1
    assert visible_gpus() == ["3", "5"]
    fake_gpus(monkeypatch, 0)
    assert visible_gpus() == []


def test_side_by_side_jobs_each_get_their_own_gpu_while_they_run(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 2, listed="4,6")
    devices = JobDevices(2)
    with devices.job_env() as first, devices.job_env() as second:
        assert (first["CUDA_VISIBLE_DEVICES"], second["CUDA_VISIBLE_DEVICES"]) == ("4", "6")
        assert first["OMP_NUM_THREADS"] == cores_share_env(2)["OMP_NUM_THREADS"]  # the cores as before
    with devices.job_env() as first:
        with devices.job_env() as second:
            pass  # the second job ends: its GPU is free again
        with devices.job_env() as third:
            assert (first["CUDA_VISIBLE_DEVICES"], third["CUDA_VISIBLE_DEVICES"]) == ("4", "6")


def test_more_jobs_than_gpus_share_them_and_say_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_gpus(monkeypatch, 2)
    caplog.set_level(logging.WARNING, logger="crs.study.stage_commands")
    devices = JobDevices(3)
    assert "3 jobs at once on 2 GPU(s): up to 2 jobs share a GPU" in caplog.text
    with devices.job_env() as a, devices.job_env() as b, devices.job_env() as c:
        assert [env["CUDA_VISIBLE_DEVICES"] for env in (a, b, c)] == ["0", "1", "0"]


def test_without_gpus_or_with_one_job_only_the_cores_are_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 0)
    with JobDevices(2).job_env() as env:
        assert env == cores_share_env(2)  # CPU: unchanged
    fake_gpus(monkeypatch, 2)
    with JobDevices(1).job_env() as env:
        assert env == cores_share_env(1)  # one job at a time keeps every GPU it sees
