"""Value checks: every value that type checks alone let through, against its field's rule.

A field's rule is ``metadata["rule"]`` (a :class:`~crs.config.fields.Rule`, or a tuple of
them: one for each item and one for the whole list), declared beside its help text.
:func:`validate_values` walks the built config, nested sections and the dataclass items of
list fields included, and names every value its rule refuses in one :class:`ConfigError`, in
the order of the fields. Run by :func:`crs.config.reader.load_config` before any run starts.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from typing import Any

from crs.config.errors import ConfigError
from crs.config.fields import Rule
from crs.config.root import CRSConfig


def value_rules(cls: type = CRSConfig, path: str = "") -> list[tuple[str, Rule]]:
    """Every rule in the field tree of ``cls``, with its key path; ``[*]`` stands for every list item.

    E.g. ``("rl.mini_batch_size", rule)``, ``("rl.rewards[*].weight", rule)``, ``("sweep.weights[*]", rule)``.
    """
    rules: list[tuple[str, Rule]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        rules += [(f"{key}[*]" if rule.each else key, rule) for rule in rules_of(f)]
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rules += value_rules(tp, key)
        elif (item := _list_item_dataclass(tp)) is not None:
            rules += value_rules(item, f"{key}[*]")
    return rules


def rules_of(f: dataclasses.Field) -> tuple[Rule, ...]:
    """The rules a field declares: none, one, or several (``metadata["rule"]`` may be a tuple)."""
    rule = f.metadata.get("rule")
    if rule is None:
        return ()
    return rule if isinstance(rule, tuple) and not isinstance(rule, Rule) else (rule,)


def _list_item_dataclass(tp: Any) -> type | None:
    """The item dataclass of a ``list[D]`` annotation, else None."""
    if typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
        return typing.get_args(tp)[0]
    return None


def _violations(node: Any, path: str, config: CRSConfig) -> Iterator[str]:
    """``key=value: must be ...`` for each value under the dataclass ``node`` that its field's rule refuses."""
    for f in dataclasses.fields(node):
        key = f"{path}.{f.name}" if path else f.name
        value = getattr(node, f.name)
        for rule in rules_of(f):
            checked = [(f"{key}[{i}]", item) for i, item in enumerate(value)] if rule.each else [(key, value)]
            yield from (f"{k}={v!r}: must be {rule.valid_for(config)}" for k, v in checked if not rule.check(v, config))
        if dataclasses.is_dataclass(value):
            yield from _violations(value, key, config)
        elif isinstance(value, list):  # list[D]: each entry's own rules, named key[i].field
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    yield from _violations(item, f"{key}[{i}]", config)


def validate_values(config: CRSConfig) -> None:
    """Raise one ConfigError naming every value outside its field's rule (see :func:`value_rules`)."""
    problems = list(_violations(config, "", config))
    if problems:
        raise ConfigError("; ".join(problems))
