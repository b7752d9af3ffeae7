"""What ``data.adapter`` and an embedded ``data.source`` name: ``"module:attribute"`` strings, imported on use.

As :data:`crs.cli.STAGES` names stages, the data layer names its adapters and embedded sources by
string, so that those living above it (the demo's, :mod:`crs.demo.dataset`) plug in without
crs.data importing them.
"""

from __future__ import annotations

import importlib
from typing import Any

EMBEDDED_DEMO = "embedded:crs-demo"

ADAPTERS: dict[str, str] = {
    "canonical": "crs.data.adapters:CANONICAL",
    "instruction": "crs.data.adapters:INSTRUCTION",
    "crs_demo": "crs.demo.dataset:CRS_DEMO",
    "oasst1": "crs.data.public:OASST1",
    "hh_rlhf": "crs.data.public:HH_RLHF",
    "shp": "crs.data.public:SHP",
    "ultrafeedback": "crs.data.public:ULTRAFEEDBACK",
}
"""Every ``data.adapter`` name and the :class:`~crs.data.adapters.Adapter` it names (listed in this order in
messages)."""

EMBEDDED_SOURCES: dict[str, str] = {EMBEDDED_DEMO: "crs.demo.dataset:embedded_demo_file"}
"""Every embedded ``data.source`` and the function that returns its file (a DataError when the install lacks it)."""


def registered(target: str) -> Any:
    """The object a ``"module:attribute"`` string names, its module imported now."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)
