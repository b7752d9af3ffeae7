"""The demo's pipeline: its stages and their order."""

from __future__ import annotations

from crs.study.demo import PIPELINE


def test_pipeline_order_is_a_valid_sequential_order() -> None:
    seen: set[str] = set()
    for stage in PIPELINE:
        assert set(stage.after) <= seen, stage
        seen.add(stage.subset)
