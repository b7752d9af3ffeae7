"""Tests of crs.data: file formats, every adapter's views, bad rows, splits and caps.

The fixtures in tests/fixtures are a handful of hand-written rows per dataset, in each
public dataset's own schema. Nothing here touches the network.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from fixture_examples import load, user
from paths import FIXTURES

from crs.config import ConfigError, DataConfig
from crs.data import (
    DataError,
    load_examples,
    read_rows,
)
from crs.data.public import label_score


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- data.demo_labels


@pytest.mark.parametrize("adapter", ["auto", "canonical"])
def test_facets_with_another_adapter_is_a_one_line_config_error(adapter: str) -> None:
    cfg = DataConfig(source=str(FIXTURES / "canonical_ranking.jsonl"), adapter=adapter, demo_labels="facets")
    with pytest.raises(ConfigError, match="data.demo_labels") as err:
        load_examples(cfg, "ranking", seed=0)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- canonical


def test_canonical_sft_reads_prompt_text_and_messages() -> None:
    first, second = load("canonical_sft.jsonl", "canonical", "sft")
    assert (first.prompt, first.reply) == (user("Say hello in French."), "Bonjour !")
    assert [m["role"] for m in second.prompt] == ["system", "user", "assistant", "user"]
    assert second.prompt[-1]["content"] == "And times 3?"
    assert second.reply == "12."
    assert second.meta["source"].endswith("canonical_sft.jsonl, line 2")


def test_canonical_ranking_replies_or_chosen_rejected() -> None:
    listed, pair = load("canonical_ranking.jsonl", "canonical", "ranking")
    assert listed.replies == ["7", "9", "banana"]
    assert listed.scores == [1.0, 0.2, 0.0]
    assert pair.prompt == user("Capital of Italy?")
    assert (pair.replies, pair.scores) == (["Rome.", "Milan."], None)


def test_canonical_absolute_and_prompts() -> None:
    scored = load("canonical_absolute.jsonl", "canonical", "absolute")
    assert [(e.reply, e.score) for e in scored] == [("tac", 1.0), ("dgo", 0.25)]
    given, hashed = load("canonical_prompts.jsonl", "canonical", "prompts")
    assert given.id == "haiku-1"
    # Without an id the prompt's hash is used: stable, and the same on every load.
    assert hashed.id.startswith("p-") and hashed.id == load("canonical_prompts.jsonl", "canonical", "prompts")[1].id


def test_system_prompt_is_prepended_or_merged() -> None:
    first, second = load("canonical_sft.jsonl", "canonical", "sft", system_prompt="Be kind.")
    assert first.prompt == [
        {"role": "system", "content": "Be kind."},
        *user("Say hello in French."),
    ]
    # The row's own system turn stays, after the configured text, in one system turn.
    assert second.prompt[0] == {"role": "system", "content": "Be kind.\n\nAnswer briefly."}
    assert [m["role"] for m in second.prompt].count("system") == 1
    (demo,) = load("crs_demo_tiny.jsonl", "crs_demo", "prompts", split="rl", system_prompt="Be kind.")
    assert demo.prompt[0] == {"role": "system", "content": "Be kind."}


def test_messages_must_end_on_a_user_turn(tmp_path: Path) -> None:
    bad = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": bad, "reply": "x"}])
    with pytest.raises(DataError, match=r"chat\.jsonl, line 1: messages must end on a user turn"):
        load_examples(DataConfig(source=str(path)), "sft", seed=0)


# --------------------------------------------------------------------------- instruction


def test_instruction_joins_instruction_and_input() -> None:
    plain, with_input = load("alpaca_tiny.json", "instruction", "sft")
    assert plain.prompt == user("Give three tips for staying healthy.")
    assert plain.reply == "Eat vegetables, sleep enough and move every day."
    assert with_input.prompt == user("Translate the sentence into Spanish.\n\nThe cat is black.")
    assert with_input.meta["source"].endswith("alpaca_tiny.json, row 2")
    prompts = load("alpaca_tiny.json", "instruction", "prompts")
    assert [p.prompt for p in prompts] == [plain.prompt, with_input.prompt]


# --------------------------------------------------------------------------- oasst1


def test_oasst1_sft_uses_rank_0_replies_with_the_conversation_prefix() -> None:
    examples = load("oasst1_tiny.jsonl", "oasst1", "sft")
    assert [e.meta["prompt_id"] for e in examples] == ["m1", "m5", "m20"]  # m10 is German
    assert examples[0].reply.startswith("Start with one ball")
    multi_turn = examples[1]
    assert multi_turn.prompt == [
        {"role": "user", "content": "What is a good way to learn to juggle?"},
        {"role": "assistant", "content": "Buy juggling clubs and try five at once."},
        {"role": "user", "content": "That sounds hard. Is there an easier start?"},
    ]
    assert multi_turn.reply == "Yes: practise throwing a single ball from hand to hand."
    assert multi_turn.meta["group"] == "t1"  # one tree = one split group
    assert examples[2].reply.startswith("Red, yellow and blue")  # rank 0 listed after rank 1


def test_oasst1_ranking_sorts_by_rank_and_skips_deleted_and_synthetic(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="crs.data"):
        examples = load("oasst1_tiny.jsonl", "oasst1", "ranking")
    by_id = {e.meta["prompt_id"]: e for e in examples}
    assert set(by_id) == {"m1", "m5", "m20"}
    assert by_id["m1"].replies == [
        "Start with one ball, then two, and only add a third when the rhythm is steady.",
        "Buy juggling clubs and try five at once.",
    ]  # the deleted m4 is not among them
    assert by_id["m20"].replies == [
        "Red, yellow and blue (in traditional colour theory).",
        "Red, green and purple.",
    ]
    assert by_id["m1"].scores is None
    summary = caplog.text
    assert "1 deleted message" in summary and "1 synthetic message" in summary
    assert "1 language not in ['en']" in summary


def test_oasst1_absolute_weighted_labels_and_language_filter() -> None:
    examples = load("oasst1_tiny.jsonl", "oasst1", "absolute")
    assert {e.meta["message_id"]: e.score for e in examples} == {
        "m2": 0.8,
        "m3": 0.4,
        "m6": 0.6,
        "m21": 0.5,
        "m22": 0.9,
    }  # m7 has no labels; m11/m12 are German
    weighted = load("oasst1_tiny.jsonl", "oasst1", "absolute", label_weights={"quality": 1.0, "toxicity": -1.0})
    scores = {e.meta["message_id"]: e.score for e in weighted}
    assert scores["m2"] == pytest.approx((0.8 + (1 - 0.0)) / 2)
    assert scores["m3"] == pytest.approx((0.4 + (1 - 0.2)) / 2)
    assert scores["m6"] == pytest.approx(0.6)  # no toxicity label: scored on quality alone
    german = load("oasst1_tiny.jsonl", "oasst1", "absolute", languages=["de"])
    assert sorted(e.score for e in german) == [0.1, 0.9]
    assert len(load("oasst1_tiny.jsonl", "oasst1", "prompts", languages=[])) == 4  # empty keeps all


def test_label_score_orients_negative_weights() -> None:
    assert label_score({"quality": 1.0, "toxicity": 1.0}, {"quality": 1.0, "toxicity": -1.0}) == 0.5
    assert label_score({"quality": 0.2}, {"quality": 3.0, "humor": 1.0}) == pytest.approx(0.2)
    assert label_score({"spam": 0.0}, {"quality": 1.0}) is None


def test_oasst1_prompts_use_message_ids() -> None:
    examples = load("oasst1_tiny.jsonl", "oasst1", "prompts")
    assert [(e.id, len(e.prompt)) for e in examples] == [("m1", 1), ("m5", 3), ("m20", 1)]


# --------------------------------------------------------------------------- hh-rlhf


def test_hh_rlhf_views() -> None:
    sft = load("hh_rlhf_tiny.jsonl", "hh_rlhf", "sft")
    assert sft[0].prompt == user("How do I boil an egg?")
    assert sft[0].reply.startswith("Put it in boiling water")
    assert sft[1].prompt == [
        {"role": "user", "content": "I need a name for my cat."},
        {"role": "assistant", "content": "What is the cat like?"},
        {"role": "user", "content": "Grey and very lazy."},
    ]
    ranking = load("hh_rlhf_tiny.jsonl", "hh_rlhf", "ranking")
    assert ranking[1].replies == ["How about Cloud, or Sofa?", "Dog."]
    prompts = load("hh_rlhf_tiny.jsonl", "hh_rlhf", "prompts")
    assert len(prompts) == 2  # rows 1 and 3 share their prompt


def test_hh_rlhf_transcripts_must_share_the_prefix(tmp_path: Path) -> None:
    row = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!",
        "rejected": "\n\nHuman: Hey\n\nAssistant: Go away.",
    }
    good = json.loads((FIXTURES / "hh_rlhf_tiny.jsonl").read_text().splitlines()[0])
    path = write_jsonl(tmp_path / "hh.jsonl", [good, row])
    with pytest.raises(DataError, match=r"hh\.jsonl, line 2: chosen and rejected do not share"):
        load_examples(DataConfig(source=str(path), adapter="hh_rlhf"), "ranking", seed=0)


# --------------------------------------------------------------------------- SHP


def test_shp_pairs_and_grouped_rankings() -> None:
    single, grouped = load("shp_tiny.jsonl", "shp", "ranking")
    assert single.prompt == user("Why does my bread come out dense?")
    assert single.replies == ["Your dough probably did not rise long enough.", "Use more flour."]
    assert single.scores == [25.0, 4.0]
    # Post p2 has two pairs over three comments: one ranking sorted by score.
    assert grouped.meta["prompt_id"] == "p2" and grouped.meta["pairs"] == 2
    assert grouped.scores == [30.0, 12.0, 5.0]
    assert grouped.replies[1:] == ["Rivers carry dissolved minerals into it.", "Fish sweat."]
    assert [p.id for p in load("shp_tiny.jsonl", "shp", "prompts")] == ["p1", "p2"]


def test_shp_label_must_agree_with_scores(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (FIXTURES / "shp_tiny.jsonl").read_text().splitlines()]
    rows[1]["labels"] = 0  # says B is preferred, but A has more upvotes
    path = write_jsonl(tmp_path / "shp.jsonl", rows)
    with pytest.raises(DataError, match=r"shp\.jsonl, line 2: labels=0 disagrees"):
        load_examples(DataConfig(source=str(path), adapter="shp"), "ranking", seed=0)


def test_adapter_without_the_kind_names_what_it_supports() -> None:
    with pytest.raises(ConfigError, match="'shp' has no 'sft' examples; it supports ranking, prompts"):
        load("shp_tiny.jsonl", "shp", "sft")


# --------------------------------------------------------------------------- UltraFeedback


def test_ultrafeedback_absolute_scores_from_aspect_ratings() -> None:
    examples = load("ultrafeedback_tiny.jsonl", "ultrafeedback", "absolute")
    assert [(e.reply, e.score) for e in examples] == [
        ("It helps cakes rise.", 0.75),  # ratings 4, 5, 4, 3
        ("Paint.", 0.25),  # 2, N/A, 2, 2: N/A is skipped
        ("It is a leavening agent that makes baked goods rise.", 1.0),
        ("Danke.", 0.5),  # all N/A: fine-grained_score 3.0
        ("Danke schön.", 0.5),
        ("9", 1.0),  # "6" has no rating at all and is left out
    ]
    assert examples[0].meta["model"] == "m-a"


def test_ultrafeedback_ranking_and_sft() -> None:
    (ranking,) = load("ultrafeedback_tiny.jsonl", "ultrafeedback", "ranking")  # row 2 ties, row 3 has 1
    assert ranking.replies == [
        "It is a leavening agent that makes baked goods rise.",
        "It helps cakes rise.",
        "Paint.",
    ]
    assert ranking.scores == [1.0, 0.75, 0.25]
    assert ranking.meta["models"] == ["m-c", "m-a", "m-b"]
    sft = load("ultrafeedback_tiny.jsonl", "ultrafeedback", "sft")
    assert [e.reply for e in sft] == [
        "It is a leavening agent that makes baked goods rise.",
        "Danke.",
        "9",
    ]


# --------------------------------------------------------------------------- bad rows


def test_missing_column_names_file_and_columns_found(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [{"prompt": "Hi", "answer": "Hello"}])
    with pytest.raises(DataError, match=r"qa\.jsonl: missing column 'reply'.*columns found: \['prompt', 'answer'\]"):
        load_examples(DataConfig(source=str(path)), "sft", seed=0)
    # data.columns maps it; a mapping to an absent column is reported the same way.
    train, _ = load_examples(DataConfig(source=str(path), columns={"reply": "answer"}, val_fraction=0), "sft", seed=0)
    assert train[0].reply == "Hello"
    with pytest.raises(
        DataError,
        match=r"qa\.jsonl: column\(s\) \['output'\].*columns found: \['prompt', 'answer'\]",
    ):
        load_examples(DataConfig(source=str(path), columns={"reply": "output"}), "sft", seed=0)


def test_empty_reply_names_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "a", "reply": "b"}, {"prompt": "c", "reply": "  "}])
    with pytest.raises(DataError, match=r"sft\.jsonl, line 2: empty reply.*skip_bad_rows"):
        load_examples(DataConfig(source=str(path)), "sft", seed=0)


def test_out_of_range_score_names_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "abs.jsonl", [{"prompt": "a", "reply": "b", "score": 1.5}])
    with pytest.raises(DataError, match=r"abs\.jsonl, line 1: score 1.5 is outside \[0, 1\]"):
        load_examples(DataConfig(source=str(path)), "absolute", seed=0)


def test_skip_bad_rows_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [
        {"prompt": "a", "reply": "ok", "score": 0.5},
        {"prompt": "b", "reply": "", "score": 0.5},
        {"prompt": "c", "reply": "ok", "score": -0.1},
        {"prompt": "d", "reply": "ok", "score": 1.0},
    ]
    path = write_jsonl(tmp_path / "abs.jsonl", rows)
    cfg = DataConfig(source=str(path), skip_bad_rows=True, val_fraction=0)
    with caplog.at_level(logging.INFO, logger="crs.data"):
        train, _ = load_examples(cfg, "absolute", seed=0)
    assert [e.prompt[-1]["content"] for e in train] == ["a", "d"]
    assert "skipping bad row: " in caplog.text
    assert "abs.jsonl, line 2: empty reply" in caplog.text
    assert "abs.jsonl, line 3: score -0.1 is outside [0, 1]" in caplog.text
    assert "2 left out of the absolute examples: 2 bad row (skipped)" in caplog.text


# --------------------------------------------------------------------------- splits and caps


def _many_prompts(tmp_path: Path, n_prompts: int = 40, per_prompt: int = 3) -> Path:
    rows = [
        {"prompt": f"question {p}", "chosen": f"good {p}.{k}", "rejected": f"bad {p}.{k}"}
        for p in range(n_prompts)
        for k in range(per_prompt)
    ]
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


def test_validation_split_is_by_prompt_and_seeded(tmp_path: Path) -> None:
    cfg = DataConfig(source=str(_many_prompts(tmp_path)), val_fraction=0.25)
    train, val = load_examples(cfg, "ranking", seed=1)
    prompts_train = {e.prompt[-1]["content"] for e in train}
    prompts_val = {e.prompt[-1]["content"] for e in val}
    assert not prompts_train & prompts_val
    assert len(prompts_val) == 10 and len(val) == 30 and len(train) == 90
    again_train, again_val = load_examples(cfg, "ranking", seed=1)
    assert again_val == val and again_train == train
    _, other_val = load_examples(cfg, "ranking", seed=2)
    assert {e.prompt[-1]["content"] for e in other_val} != prompts_val


def test_max_examples_keeps_a_seeded_sample(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = DataConfig(source=str(_many_prompts(tmp_path)), val_fraction=0.25, max_examples=7)
    with caplog.at_level(logging.INFO, logger="crs.data"):
        train, val = load_examples(cfg, "ranking", seed=3)
    assert len(train) == 7 and len(val) == 7
    assert "keeping 7 of 90 train examples" in caplog.text
    assert load_examples(cfg, "ranking", seed=3) == (train, val)
    assert load_examples(cfg, "ranking", seed=4)[0] != train


def test_val_split_reads_another_split_of_the_same_source() -> None:
    cfg = DataConfig(
        source=str(FIXTURES / "crs_demo_tiny.jsonl"),
        adapter="crs_demo",
        split="rl",
        val_split="eval",
    )
    train, val = load_examples(cfg, "prompts", seed=0)
    assert [e.id for e in train] == ["explain-0004"]
    assert [e.id for e in val] == ["explain-0005"]


def test_val_source_is_read_with_the_same_adapter() -> None:
    cfg = DataConfig(
        source=str(FIXTURES / "canonical_sft.jsonl"),
        val_source=str(FIXTURES / "alpaca_tiny.json"),
        adapter="instruction",
    )
    with pytest.raises(DataError, match=r"canonical_sft\.jsonl: missing column 'instruction'"):
        load_examples(cfg, "sft", seed=0)


# --------------------------------------------------------------------------- file formats


SFT_ROWS = [
    {"prompt": "One, two", "reply": "three"},
    {"prompt": 'Multi\nline, "quoted"', "reply": "yes"},
    {"prompt": "last", "reply": "row"},
]


def _write_all_formats(tmp_path: Path) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = write_jsonl(tmp_path / "rows.jsonl", SFT_ROWS)
    as_json = tmp_path / "rows.json"
    as_json.write_text(json.dumps(SFT_ROWS), encoding="utf-8")
    as_csv = tmp_path / "rows.csv"
    with as_csv.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["prompt", "reply"])
        writer.writeheader()
        writer.writerows(SFT_ROWS)
    as_parquet = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(SFT_ROWS), as_parquet)
    return [jsonl, as_json, as_csv, as_parquet]


def test_all_file_formats_read_the_same_rows(tmp_path: Path) -> None:
    for path in _write_all_formats(tmp_path):
        table = read_rows(str(path))
        assert table.rows == SFT_ROWS, path.suffix
        assert table.columns == ["prompt", "reply"]
        train, _ = load_examples(DataConfig(source=str(path), val_fraction=0), "sft", seed=0)
        assert [(e.prompt[-1]["content"], e.reply) for e in train] == [(r["prompt"], r["reply"]) for r in SFT_ROWS]


def test_row_locations_per_format(tmp_path: Path) -> None:
    jsonl, as_json, as_csv, as_parquet = _write_all_formats(tmp_path)
    assert read_rows(str(jsonl)).where(2) == f"{jsonl}, line 3"
    assert read_rows(str(as_json)).where(2) == f"{as_json}, row 3"
    # The second CSV record spans two lines, so the third starts on line 5 (header = 1).
    assert read_rows(str(as_csv)).numbers == [2, 3, 5]
    assert read_rows(str(as_parquet)).where(0) == f"{as_parquet}, row 1"


def test_gzipped_json_lines_read_like_plain_ones(tmp_path: Path) -> None:
    plain = FIXTURES / "crs_demo_tiny.jsonl"
    packed = tmp_path / "demo.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_rows(str(packed)).rows == read_rows(str(plain)).rows


def test_csv_cells_are_parsed(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    path.write_text("prompt,reply,score\nhi,hello,0.75\nyo,sup,2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"scores\.csv, line 3: score 2.0 is outside"):
        load_examples(DataConfig(source=str(path)), "absolute", seed=0)


def test_missing_file_and_unknown_type_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data file not found: .*nope\.jsonl"):
        read_rows(str(tmp_path / "nope.jsonl"))
    odd = tmp_path / "rows.txt"
    odd.write_text("x")
    with pytest.raises(DataError, match=r"rows\.txt: unsupported file type"):
        read_rows(str(odd))


def test_hub_sources_go_through_datasets_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    class FakeDataset:
        column_names = ("instruction", "output")

        def to_list(self) -> list[dict[str, str]]:
            return [{"instruction": "Hi", "output": "Hello"}]

    def fake_load_dataset(name: str, config: str | None, split: str) -> FakeDataset:
        calls.append((name, config, split))
        return FakeDataset()

    # A stand-in module: the test must never reach the network (or import datasets).
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load_dataset))
    cfg = DataConfig(source="hub:tatsu-lab/alpaca", adapter="instruction", split="train", val_fraction=0)
    train, _ = load_examples(cfg, "sft", seed=0)
    assert calls == [("tatsu-lab/alpaca", None, "train")]
    assert train[0].reply == "Hello"
    assert train[0].meta["source"] == "hub:tatsu-lab/alpaca[train], row 1"


def test_train_source_replaces_the_training_side_and_keeps_the_held_out_prompts(tmp_path: Path) -> None:
    extra = tmp_path / "new_labels.jsonl"
    extra.write_text(
        json.dumps({"messages": [{"role": "user", "content": "A new prompt?"}], "replies": ["good", "bad"]}) + "\n"
    )
    cfg = DataConfig(source="embedded:crs-demo", split="rm", val_fraction=0.1)
    train, val = load_examples(cfg, "ranking", 42)
    new_train, new_val = load_examples(
        DataConfig(source="embedded:crs-demo", split="rm", val_fraction=0.1, train_source=str(extra)), "ranking", 42
    )
    assert [ex.prompt for ex in new_val] == [
        ex.prompt for ex in val
    ]  # the same held-out prompts (forgetting is measured on them)
    assert [ex.replies for ex in new_train] == [["good", "bad"]] and len(train) > 100
