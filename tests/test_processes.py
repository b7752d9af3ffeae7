"""The processes of a torchrun world: the process group waits on another process for ``run.ddp_timeout``."""

from __future__ import annotations

import json

from paths import ROOT
from stage_runs import run_under_torchrun


def test_a_process_waits_for_another_no_longer_than_run_ddp_timeout(tmp_path) -> None:
    # Rank 0 is busy for 8 s (as when it alone saves or merges a large model); the stage set run.ddp_timeout: 2.
    out = tmp_path / "out"
    out.mkdir()
    run_under_torchrun(ROOT / "tests" / "process_checks.py", ["timeout", str(tmp_path / "runs"), str(out)], ROOT, 120)
    waited = json.loads((out / "rank1.json").read_text())
    assert waited["error"] is not None, waited  # it gave up ...
    assert waited["waited"] < 6, waited  # ... after about 2 s, not once rank 0 came (the default: 30 min)
