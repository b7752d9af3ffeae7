"""``load_examples``: a data config and an example kind in, (train, val) examples out.

Steps: read the source (:mod:`crs.data.sources`), rename columns (``data.columns``),
convert rows with the adapter, hold out validation examples by prompt (or read
``data.val_source``), then cap both sides at ``data.max_examples``. Every row left out
on the way is counted and logged with its reason on the ``crs.data`` logger.
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any

from crs.config import ConfigError, DataConfig
from crs.data.adapters import Adapter, Context, Drops, Example, check_kind, require_columns
from crs.data.registry import ADAPTERS, EMBEDDED_DEMO, registered
from crs.data.sources import Table, apply_columns, read_rows

LOGGER = logging.getLogger(__name__)


def resolve_adapter(name: str, source: str) -> Adapter:
    """The adapter called ``name``; ``auto`` is crs_demo for the embedded data, else canonical."""
    if name == "auto":
        name = "crs_demo" if source == EMBEDDED_DEMO else "canonical"
    if name not in ADAPTERS:
        raise ConfigError(f"data.adapter: unknown adapter {name!r}; choose one of auto, {', '.join(ADAPTERS)}")
    return registered(ADAPTERS[name])


def convert_table(
    table: Table, cfg: DataConfig, kind: str, split: str | None = None, adapter_name: str | None = None
) -> tuple[list[Example], Drops]:
    """Rows of one table -> examples of ``kind`` with ``cfg.adapter``, plus the drop counts.

    ``split`` (default ``cfg.split``) is the split the table was read as; the
    ``crs_demo`` adapter keeps the rows of that split. ``cfg.columns`` must already
    be applied. Prompt examples are de-duplicated by id (several preference rows often
    share one prompt), and rankings without a preference (all replies identical) are
    skipped; both count as drops, and the surprising cases are logged as warnings.
    ``adapter_name`` (default ``cfg.adapter``) overrides the adapter.
    """
    adapter = resolve_adapter(adapter_name or cfg.adapter, cfg.source)
    check_kind(adapter, kind)
    require_columns(table, adapter, kind)
    ctx = Context(table=table, cfg=cfg, kind=kind, adapter=adapter.name, split=split or cfg.split)
    examples = adapter.convert(ctx)
    if kind == "ranking":
        examples = _drop_rankings_without_preference(examples, ctx)
    if kind == "prompts":
        examples = _unique_prompt_ids(examples, ctx)
    return examples, ctx.drops


def _drop_rankings_without_preference(examples: list[Example], ctx: Context) -> list[Example]:
    """Rankings whose replies are all the same text (a pair with chosen == rejected) teach
    nothing: they are counted, skipped and warned about, whatever the adapter."""
    kept = [e for e in examples if len(set(e.replies)) > 1]
    skipped = len(examples) - len(kept)
    if skipped:
        ctx.drops.add("ranking whose replies are all identical", skipped)
        LOGGER.warning(
            "%s: skipped %d ranking rows whose replies are all identical (chosen == rejected): "
            "they carry no preference",
            ctx.table.name,
            skipped,
        )
    return kept


def _unique_prompt_ids(examples: list[Example], ctx: Context) -> list[Example]:
    """One example per prompt id, the first. A repeat of the same prompt (several preference
    rows often share one) is counted; an id shared by *different* prompts is a data error
    the file should fix, so those are dropped with a warning naming the first such ids."""
    first: dict[str, Example] = {}
    clashes: list[str] = []
    for example in examples:
        seen = first.get(example.id)
        if seen is None:
            first[example.id] = example
        elif seen.prompt == example.prompt:
            ctx.drops.add("repeated prompt (same id and text)")
        else:
            clashes.append(example.id)
    if clashes:
        ctx.drops.add("prompt whose id is used by a different prompt", len(clashes))
        shown = list(dict.fromkeys(clashes))
        LOGGER.warning(
            "%s: %d prompts dropped: their id is already used by a different prompt (ids %s%s); "
            "give every prompt its own id, or drop the id column to use a hash of the prompt",
            ctx.table.name,
            len(clashes),
            ", ".join(repr(i) for i in shown[:5]),
            ", ..." if len(shown) > 5 else "",
        )
    return list(first.values())


def _load_one(cfg: DataConfig, source: str, split: str, kind: str, adapter_name: str | None = None) -> list[Example]:
    table = apply_columns(read_rows(source, split, cfg.hub_config), cfg.columns)
    examples, drops = convert_table(table, cfg, kind, split, adapter_name)
    if drops.total:
        LOGGER.info("%s: %d left out of the %s examples: %s", table.name, drops.total, kind, drops.summary())
    if not examples:
        raise ConfigError(
            f"{table.name}: no {kind} examples (from {len(table)} rows, adapter "
            f"{resolve_adapter(cfg.adapter, cfg.source).name}, split {split!r}); check "
            "data.adapter, data.split and data.languages"
        )
    LOGGER.info("%s: %d %s examples from %d rows", table.name, len(examples), kind, len(table))
    return examples


def group_key(example: Any) -> str:
    """What keeps examples together in the train/val split: ``meta["group"]`` (a tree,
    post or prompt id) where the adapter sets one, else the prompt itself."""
    group = example.meta.get("group")
    return str(group) if group is not None else json.dumps(example.prompt, sort_keys=True)


def split_by_prompt(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out ``val_fraction`` of the prompt groups (at least one, never all), seeded.

    All examples of one prompt land on the same side, so validation measures prompts
    the model has not seen. Both sides keep the input order.
    """
    groups = list(dict.fromkeys(group_key(e) for e in examples))
    if val_fraction <= 0 or len(groups) < 2:
        if val_fraction > 0:
            LOGGER.warning("only %d prompt group(s): no validation examples held out", len(groups))
        return list(examples), []
    n_val = min(len(groups) - 1, max(1, round(val_fraction * len(groups))))
    val_groups = set(random.Random(seed).sample(groups, n_val))
    train = [e for e in examples if group_key(e) not in val_groups]
    val = [e for e in examples if group_key(e) in val_groups]
    return train, val


def sample_examples(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    """At most ``limit`` examples chosen by a seeded shuffle, returned in input order."""
    if limit is None or len(examples) <= limit:
        return list(examples)
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def load_examples(cfg: DataConfig, kind: str, seed: int) -> tuple[list[Example], list[Example]]:
    """Train and validation examples of ``kind`` (sft, ranking, absolute or prompts).

    Validation comes from ``cfg.val_source`` / ``cfg.val_split`` when either is set (a
    missing one defaults to ``cfg.source`` / ``cfg.split``), else from a seeded split of
    ``cfg.val_fraction`` of the prompts. ``cfg.train_source``, when set, replaces the training
    side. ``cfg.max_examples`` then caps each side.
    """
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.max_examples is not None and cfg.max_examples < 1:
        raise ConfigError(f"data.max_examples must be >= 1 or null, got {cfg.max_examples}")
    examples = _load_one(cfg, cfg.source, cfg.split, kind)
    if cfg.val_source or cfg.val_split:
        val_source, val_split = cfg.val_source or cfg.source, cfg.val_split or cfg.split
        if (val_source, val_split) == (cfg.source, cfg.split):
            raise ConfigError(
                "data.val_source/val_split point at the training data; unset them to hold out val_fraction instead"
            )
        train, val = examples, _load_one(cfg, val_source, val_split, kind)
    else:
        train, val = split_by_prompt(examples, cfg.val_fraction, seed)
    if cfg.train_source:
        # The source's held-out prompts stay the validation side; training is the other source's.
        train = _load_one(cfg, cfg.train_source, cfg.split, kind, "canonical")
    if cfg.max_examples is not None:
        for name, part in (("train", train), ("val", val)):
            if len(part) > cfg.max_examples:
                LOGGER.info(
                    "data.max_examples: keeping %d of %d %s examples",
                    cfg.max_examples,
                    len(part),
                    name,
                )
        train = sample_examples(train, cfg.max_examples, seed)
        val = sample_examples(val, cfg.max_examples, seed + 1)
    LOGGER.info("%s examples: %d train, %d val", kind, len(train), len(val))
    return train, val
