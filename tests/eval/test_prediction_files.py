"""Tests for crs.eval.prediction_files: prediction files in AlpacaEval's layout, read, checked and written."""

from __future__ import annotations

import json

import pytest

from crs.data.schema import DataError
from crs.eval.prediction_files import read_predictions, write_predictions


def _rows():
    return [
        {"instruction": "Say hi", "output": "Hi!", "generator": "sft", "dataset": "hh", "prompt_id": "hh-0", "run": 0},
        {
            "instruction": "Add 2+2",
            "output": "4",
            "generator": "sft",
            "dataset": "gsm",
            "prompt_id": "gsm-1",
            "run": 2,
            "reward": 0.75,
            "meta": {"k": [1, 2]},
        },
    ]


def test_predictions_round_trip_keeps_extra_keys(tmp_path):
    path = tmp_path / "preds" / "sft.json"
    write_predictions(path, _rows())
    assert read_predictions(path) == _rows()
    assert isinstance(json.loads(path.read_text()), list)  # AlpacaEval: a JSON list
    assert sorted(p.name for p in path.parent.iterdir()) == ["sft.json"]  # no temp left


def test_read_predictions_names_file_and_row(tmp_path):
    rows = _rows()
    del rows[1]["output"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError) as info:
        read_predictions(path)
    message = str(info.value)
    assert str(path) in message and "row 1" in message and "output" in message

    rows = _rows()
    rows[0]["run"] = "0"
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match="row 0.*'run'"):
        read_predictions(path)


def test_alpaca_eval_outputs_rows_are_read_as_they_are(tmp_path):
    from crs.data.adapters import prompt_id
    from crs.data.schema import user_prompt
    from crs.eval.predict import read_all_predictions

    theirs = [  # what alpaca_eval's own outputs files hold: no prompt_id, no run
        {"instruction": "Say hi", "output": "Hello there", "generator": "their_model", "dataset": "helpful_base"},
        {"instruction": "Add 2+2", "output": "4", "generator": "their_model"},
        {"instruction": "Say hi", "output": "Hi again", "generator": "their_model"},
    ]
    (tmp_path / "theirs.json").write_text(json.dumps(theirs))
    rows = read_predictions(tmp_path / "theirs.json")
    assert [r["run"] for r in rows] == [0, 0, 1]  # the n-th answer to the same instruction
    assert rows[0]["prompt_id"] == rows[2]["prompt_id"] == prompt_id(user_prompt("Say hi")) != rows[1]["prompt_id"]
    assert rows[0]["dataset"] == "helpful_base" and rows[1]["dataset"] == ""
    # crs's own predictions of prompts without an id carry the same id: the two files line up
    ours = [
        {
            "instruction": t,
            "output": "x",
            "generator": "sft",
            "dataset": "d",
            "prompt_id": prompt_id(user_prompt(t)),
            "run": 0,
        }
        for t in ("Add 2+2", "Say hi")
    ]
    write_predictions(tmp_path / "sft.json", ours)
    per_model = read_all_predictions(tmp_path)
    assert {r["instruction"]: r["output"] for r in per_model["theirs"]} == {"Add 2+2": "4", "Say hi": "Hello there"}
    assert [r["instruction"] for r in per_model["sft"]] == [r["instruction"] for r in per_model["theirs"]]  # aligned


def test_write_predictions_validates_before_writing(tmp_path):
    rows = _rows()
    del rows[0]["generator"]
    path = tmp_path / "out.json"
    with pytest.raises(DataError, match="row 0"):
        write_predictions(path, rows)
    assert not path.exists()
