"""Tests of the embedded demo dataset's adapter (crs/demo/dataset.py): every view, and ``data.demo_labels``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fixture_examples import load, user
from paths import FIXTURES

from crs.config import ConfigError, DataConfig
from crs.data import AbsoluteExample, DataError, PromptExample, RankingExample, SFTExample, load_examples, read_rows
from crs.demo.dataset import demo_dataset_path
from crs.demo.facets import SEED, relabel_rows
from crs.io import iter_jsonl

needs_demo = pytest.mark.skipif(not demo_dataset_path().is_file(), reason="demo dataset not generated yet")


# --------------------------------------------------------------------------- crs_demo


def test_crs_demo_sft_takes_the_rank_0_reply_of_the_chosen_split() -> None:
    examples = load("crs_demo_tiny.jsonl", "crs_demo", "sft", split="sft")
    assert [type(e) for e in examples] == [SFTExample, SFTExample]
    first = examples[0]
    assert first.prompt == user("List 3 tips for falling asleep faster.")
    assert first.reply.endswith("3. Keep the room cool.")  # rank 0 is the second reply in the row
    assert first.meta["prompt_id"] == "list-0001"
    assert (first.meta["category"], first.meta["topic"]) == ("list", "sleep")
    assert examples[1].reply == "Heat water to about 80 C and steep for two minutes."


def test_crs_demo_ranking_is_sorted_by_rank_and_hides_the_gold_utility() -> None:
    (example,) = load("crs_demo_tiny.jsonl", "crs_demo", "ranking", split="rm")
    assert isinstance(example, RankingExample)
    assert example.replies == ["- A rain jacket\n- Spare socks", "- A rain jacket", "- Sunglasses"]
    assert example.scores is None
    assert "gold" not in json.dumps(example.meta)


def test_crs_demo_absolute_uses_each_reply_score() -> None:
    examples = load("crs_demo_tiny.jsonl", "crs_demo", "absolute", split="rm")
    assert [(e.reply, e.score, e.meta["likert"]) for e in examples] == [
        ("- A rain jacket\n- Spare socks", 1.0, 5),
        ("- Sunglasses", 0.0, 1),
        ("- A rain jacket", 0.5, 3),
    ]
    assert all(isinstance(e, AbsoluteExample) and "gold_utility" not in e.meta for e in examples)


def test_crs_demo_prompts_carry_id_and_spec() -> None:
    (example,) = load("crs_demo_tiny.jsonl", "crs_demo", "prompts", split="eval")
    assert isinstance(example, PromptExample)
    assert example.id == "explain-0005"
    assert example.prompt == user("Explain what photosynthesis does.")
    assert example.meta["spec"] == {"max_sentences": 2}
    assert (example.meta["category"], example.meta["topic"]) == ("explain", "plants")


def test_crs_demo_unknown_split_lists_the_splits() -> None:
    with pytest.raises(ConfigError, match="its splits are eval, rl, rm, sft"):
        load("crs_demo_tiny.jsonl", "crs_demo", "prompts", split="train")


@needs_demo
def test_embedded_demo_dataset_loads_every_view() -> None:
    for kind, split in (("sft", "sft"), ("ranking", "rm"), ("absolute", "rm"), ("prompts", "eval")):
        train, val = load_examples(DataConfig(split=split), kind, seed=0)
        assert train and val, (kind, split)
        assert not {e.meta["prompt_id"] for e in train} & {e.meta["prompt_id"] for e in val}
        assert "gold" not in json.dumps([e.meta for e in train[:20]])


def test_demo_dataset_path() -> None:
    assert demo_dataset_path().parts[-4:] == ("crs", "demo", "data", "crs_demo.jsonl.gz")


def test_a_missing_embedded_dataset_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("crs.demo.dataset.demo_dataset_path", lambda: tmp_path / "crs_demo.jsonl.gz")
    with pytest.raises(DataError, match="the embedded demo dataset is missing: .*; the crs package install is"):
        read_rows("embedded:crs-demo")


# --------------------------------------------------------------------------- data.demo_labels


@needs_demo
def test_loading_facets_keeps_prompts_and_replies_but_not_labels() -> None:
    def load(labels: str, kind: str) -> list[Any]:
        train, val = load_examples(DataConfig(split="rm", demo_labels=labels), kind, seed=0)
        return train + val

    standard, facets = load("standard", "absolute"), load("facets", "absolute")
    assert [(e.meta["prompt_id"], e.reply) for e in standard] == [(e.meta["prompt_id"], e.reply) for e in facets]
    assert [e.score for e in standard] != [e.score for e in facets]
    assert all(0.0 <= e.score <= 1.0 for e in facets)
    standard, facets = load("standard", "ranking"), load("facets", "ranking")
    assert [(e.meta["prompt_id"], sorted(e.replies)) for e in standard] == [
        (e.meta["prompt_id"], sorted(e.replies)) for e in facets
    ]
    reordered = sum(a.replies != b.replies for a, b in zip(standard, facets))
    assert reordered > len(standard) // 4


def test_facets_with_the_crs_demo_adapter_on_a_file_relabels_it() -> None:
    cfg = DataConfig(
        source=str(FIXTURES / "crs_demo_tiny.jsonl"),
        adapter="crs_demo",
        split="rm",
        val_fraction=0.0,
        demo_labels="facets",
    )
    rows = [row for _, row in iter_jsonl(FIXTURES / "crs_demo_tiny.jsonl") if row["split"] == "rm"]
    expected = [r["score"] for row in relabel_rows(rows, SEED) for r in row["replies"]]
    train, _ = load_examples(cfg, "absolute", seed=0)
    assert [e.score for e in train] == expected
