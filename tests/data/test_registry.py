"""Tests of the data layer's names (crs/data/registry.py): adapters and embedded sources, imported on use."""

from __future__ import annotations

from crs.data import ADAPTERS, Adapter, resolve_adapter
from crs.data.registry import EMBEDDED_SOURCES, registered


def test_every_registered_adapter_is_an_adapter_of_that_name() -> None:
    for name, target in ADAPTERS.items():
        adapter = registered(target)
        assert isinstance(adapter, Adapter) and adapter.name == name, target
        assert resolve_adapter(name, "data/train.jsonl") is adapter


def test_every_embedded_source_names_a_function() -> None:
    assert EMBEDDED_SOURCES and all(callable(registered(target)) for target in EMBEDDED_SOURCES.values())


def test_auto_adapter() -> None:
    assert resolve_adapter("auto", "embedded:crs-demo").name == "crs_demo"
    assert resolve_adapter("auto", "data/train.jsonl").name == "canonical"
