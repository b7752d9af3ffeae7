"""The examples a fixture file gives through crs.data, shared by the data layer's and the demo's tests."""

from __future__ import annotations

from typing import Any

from paths import FIXTURES

from crs.config import DataConfig
from crs.data import load_examples


def load(name: str, adapter: str, kind: str, **overrides: Any) -> list[Any]:
    """All examples of a fixture (no validation split), for checking conversions."""
    cfg = DataConfig(source=str(FIXTURES / name), adapter=adapter, val_fraction=0.0, **overrides)
    train, val = load_examples(cfg, kind, seed=0)
    assert val == []
    return train


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]
