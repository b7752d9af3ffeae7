"""Loading a configuration: YAML with its subsets, ``--set`` overrides, saving what was resolved.

``config.yaml`` holds a ``default`` block and named subsets; :func:`load_config` deep-merges
the chosen subset over ``default``, applies the ``--set key.sub=value`` overrides, builds
the dataclasses (:mod:`crs.config.coercion`) and checks the values
(:mod:`crs.config.validation`). A key repeated in a YAML mapping is an error, not "the last
wins".
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from crs.config.coercion import build_dataclass
from crs.config.errors import ConfigError
from crs.config.root import CRSConfig
from crs.config.validation import validate_values
from crs.io import write_text_atomic

# The shipped config.yaml, at the repository root (three levels up from crs/config/reader.py).
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent.parent / "config.yaml"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with a clear error when that fails."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    try:
        check_unique_keys(yaml.compose(text, Loader=yaml.SafeLoader), path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("default", {}), dict):
        raise ConfigError(f"{path}: expected a mapping with a 'default' block and named subsets")
    return data


def check_unique_keys(node: yaml.Node | None, path: str | Path) -> None:
    """Refuse a mapping that repeats a key (plain YAML keeps the last one, silently).

    Works on the composed node tree, before merge keys (``<<: *anchor``) are applied:
    a key that overrides a merged-in one is not a duplicate.
    """
    seen_nodes: set[int] = set()

    def walk(node: yaml.Node | None, where: list[str]) -> None:
        if node is None or id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, [*where[:-1], f"{where[-1]}[{index}]"] if where else [f"[{index}]"])
        elif isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    walk(value_node, where)
                    continue
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else repr(key_node.value)
                line = key_node.start_mark.line + 1
                if (key_node.tag, key) in first:
                    what = f"subset {key!r}" if not where else f"key {'.'.join([*where, key])!r}"
                    raise ConfigError(
                        f"{path}, line {line}: duplicate {what} (first at line {first[key_node.tag, key]}); "
                        "YAML would keep only the last one: rename or merge them"
                    )
                first[key_node.tag, key] = line
                walk(value_node, [*where, key])

    walk(node, [])


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``override`` merged into ``base`` key by key; lists are replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"rl.kl_coef=0.1"`` -> (["rl", "kl_coef"], 0.1); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_override(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``data[p0][p1]... = value`` in place, creating intermediate dicts."""
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def load_config(
    subset: str,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    name_suffix: str = "",
) -> CRSConfig:
    """Resolve ``default`` + ``subset`` + ``--set`` overrides into a validated CRSConfig."""
    path = Path(config_path) if config_path else DEFAULT_CONFIG_PATH
    raw = read_yaml(path)
    subsets = sorted(k for k in raw if k != "default")
    if subset == "default" or subset not in raw:
        raise ConfigError(f"unknown config subset {subset!r} in {path}; valid subsets: {', '.join(subsets)}")
    subset_block = raw[subset] or {}
    if not isinstance(subset_block, dict):
        raise ConfigError(f"{path}: subset {subset!r} must be a mapping")
    merged = deep_merge(raw.get("default") or {}, subset_block)
    for text in overrides or []:
        parts, value = parse_override(text)
        apply_override(merged, parts, value)
    config = build_dataclass(CRSConfig, merged, "")
    config.subset = subset
    config.name_suffix = name_suffix
    config.config_path = str(path)
    validate_values(config)
    return config


def save_resolved_config(config: CRSConfig, path: str | Path) -> None:
    """Write the fully resolved config (reload it with ``--config PATH --config_subset <subset>``)."""
    data = config.to_dict()
    subset = data.pop("subset")
    data.pop("name_suffix")
    data.pop("config_path")
    text = yaml.safe_dump({"default": {}, subset: data}, sort_keys=False)
    write_text_atomic(path, text)
