"""External judges: AlpacaEval annotations and verdict CSVs give AlpacaEval's numbers.

The fixture (tests/fixtures/external_judge/) is a prediction run of three models on six
prompts with hand-written verdicts. rl_crs against the reference sft (rl_crs is AlpacaEval's
output_2), preferences per prompt: 2, 2, 1, 1.5, null, 1.75. AlpacaEval drops the null,
maps the rest to [0, 1] (preference - 1): 1, 1, 0, 0.5, 0.75, and prints

    win_rate = 3.25 / 5 = 65.0; n_wins 3 (> 0.5), n_wins_base 1, n_draws 1 (exactly 1.5), n_total 5
    standard_error = sem = sqrt(((.35² + .35² + .65² + .15² + .10²) = .70) / 4) / sqrt(5) = 18.7083 %
    discrete_win_rate = (1 + 1 + 0 + .5 + 1) / 5 = 70.0
    avg_length = int(mean(10, 11, 12, 13, 15, 16) = 12.83) = 12

base (output_1) against sft: preferences 1, 2, 2 on three prompts -> 1, 0, 0: 33.33 %, sem
sqrt(p(1-p)/(n-1)) = 1/3. Nothing compares rl_crs with base: a missing pair.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from paths import FIXTURES

from crs.cli import run_stage
from crs.config import ConfigError
from crs.data.schema import DataError
from crs.eval.judges import load_judge, preference_outcome
from crs.eval.predict import read_all_predictions
from crs.eval.score import score_predictions
from crs.eval.score_report import build_results

FIXTURE = FIXTURES / "external_judge"
RL_CRS_ROW = {
    "model": "rl_crs",
    "win_rate": 65.0,
    "standard_error": 100 * math.sqrt(0.70 / 4) / math.sqrt(5),
    "n_wins": 3,
    "n_wins_base": 1,
    "n_draws": 1,
    "n_total": 5,
    "avg_length": 12,
    "discrete_win_rate": 70.0,
    "n_failed": 1,
}
BASE_ROW = {
    "model": "base",
    "win_rate": 100 / 3,
    "standard_error": 100 / 3,
    "n_wins": 1,
    "n_wins_base": 2,
    "n_draws": 0,
    "n_total": 3,
    "avg_length": 5,
    "n_failed": 0,
}


def _predictions() -> tuple[dict, list[str]]:
    per_model = read_all_predictions(FIXTURE)
    first = next(iter(per_model.values()))
    return per_model, [f"{r['prompt_id']}#{r['run']}" for r in first]


def _results(spec: str) -> dict:
    per_model, items = _predictions()
    judge = load_judge(spec, per_model, items)
    outputs = {m: [r["output"] for r in rows] for m, rows in per_model.items()}
    return build_results(
        {},
        outputs,
        judge=judge.name,
        prompt_ids=items,
        reference="sft",
        models=list(per_model),
        categories=[r["dataset"] for r in per_model["sft"]],
        n_boot=50,
        pairwise_judge=judge.verdicts,
    )


def _row(results: dict, model: str) -> dict:
    return next(row for row in results["leaderboard"] if row["model"] == model)


@pytest.mark.parametrize("spec", ["annotations.json", "verdicts.csv"])
def test_annotations_give_the_hand_computed_alpaca_eval_row(spec: str) -> None:
    results = _results(str(FIXTURE / spec))
    for expected in (RL_CRS_ROW, BASE_ROW):
        row = _row(results, expected["model"])
        assert {k: row[k] for k in expected} == pytest.approx(expected)
    assert isinstance(_row(results, "rl_crs")["avg_length"], int)
    # the reference is the anchor row: all draws
    assert {k: _row(results, "sft")[k] for k in ("win_rate", "standard_error", "n_draws", "n_total")} == {
        "win_rate": 50.0,
        "standard_error": 0.0,
        "n_draws": 6,
        "n_total": 6,
    }
    assert results["missing_pairs"] == [["rl_crs", "base"]]
    assert "base" not in results["win_rates"][results["judge"]]["rl_crs"]
    assert results["win_rates"][results["judge"]]["sft"]["rl_crs"]["win_rate"] == pytest.approx(0.35)
    # per dataset, from the prediction files' own dataset column: helpful_base 1, 1, 0; koala .5, .75
    assert results["win_rates_by_category"]["rl_crs"] == {
        "helpful_base": {"win_rate": pytest.approx(200 / 3), "n": 3},
        "koala": {"win_rate": pytest.approx(62.5), "n": 2},
    }


def test_the_numbers_are_pandas_sem_as_alpaca_eval_computes_them() -> None:
    pd = pytest.importorskip("pandas")
    preferences = pd.Series([2, 2, 1, 1.5, None, 1.75]).astype(float)
    kept = preferences[(preferences >= 1) & (preferences <= 2)] - 1  # AlpacaEval drops what is not a preference
    row = _row(_results(str(FIXTURE / "annotations.json")), "rl_crs")
    assert row["win_rate"] == kept.mean() * 100
    assert row["standard_error"] == kept.sem() * 100  # same float, not only close


def test_the_judge_is_named_and_what_was_not_used_is_counted() -> None:
    per_model, items = _predictions()
    judge = load_judge(str(FIXTURE / "annotations.json"), per_model, items)
    assert judge.name == "weighted_alpaca_eval_gpt4_turbo"
    assert judge.summary["n_rows"] == 11 and judge.summary["n_used"] == 9 and judge.summary["n_failed"] == 1
    assert judge.summary["skipped"] == {
        "annotation(s) of a model without predictions (gpt4_turbo)": 1,
        "annotation(s) of a prompt the predictions do not have": 1,
    }
    assert load_judge(str(FIXTURE / "verdicts.csv"), per_model, items, taken=["verdicts"]).name == "verdicts (judge)"


def test_preferences_are_read_as_alpaca_eval_reads_them() -> None:
    assert preference_outcome(1, "x") == 1.0  # the first output is better
    assert preference_outcome(2, "x") == 0.0
    assert preference_outcome(1.5, "x") == 0.5 and preference_outcome(0, "x") == 0.5  # 0: AlpacaEval's old draw
    assert preference_outcome(1.75, "x") == pytest.approx(0.25)
    assert preference_outcome(None, "x") is None and preference_outcome(float("nan"), "x") is None
    assert preference_outcome("", "x") is None and preference_outcome("null", "x") is None
    with pytest.raises(DataError, match=r"x: preference 3 is outside \[1, 2\]"):
        preference_outcome(3, "x")
    with pytest.raises(DataError, match="not a number"):
        preference_outcome("B", "x")


def test_a_second_verdict_on_the_same_pair_and_prompt_is_refused(tmp_path: Path) -> None:
    rows = json.loads((FIXTURE / "annotations.json").read_text())
    swapped = {
        **rows[0],
        "generator_1": "rl_crs",
        "output_1": rows[0]["output_2"],
        "generator_2": "sft",
        "output_2": rows[0]["output_1"],
    }
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.json").write_text(json.dumps([swapped]))
    per_model, items = _predictions()
    with pytest.raises(DataError, match=r"b.json, annotation 0: a second verdict on sft vs rl_crs for prompt p1#0"):
        load_judge(str(tmp_path / "*.json"), per_model, items)
    (tmp_path / "b.json").unlink()
    assert load_judge(str(tmp_path / "*.json"), per_model, items).summary["files"] == [str(tmp_path / "a.json")]


def test_a_judge_spec_that_names_nothing_usable_is_a_config_error(tmp_path: Path) -> None:
    per_model, items = _predictions()
    with pytest.raises(ConfigError, match="no file matches"):
        load_judge(str(tmp_path / "*.json"), per_model, items)
    with pytest.raises(ConfigError, match="neither gold, none, nor an existing file"):
        load_judge(str(tmp_path / "gpt4.json"), per_model, items)
    (tmp_path / "other.csv").write_text("prompt_id,model_a,model_b,preference\nq1,x,y,1\n")
    with pytest.raises(ConfigError, match="none of the 1 verdicts"):
        load_judge(str(tmp_path / "other.csv"), per_model, items)


def test_sampling_runs_are_told_apart_by_outputs(tmp_path: Path) -> None:
    from crs.eval.prediction_files import write_predictions

    for model in ("a", "b"):
        rows = [
            {
                "instruction": "Same prompt",
                "output": f"{model} run {run}",
                "generator": model,
                "dataset": "t",
                "prompt_id": "p",
                "run": run,
            }
            for run in (0, 1)
        ]
        write_predictions(tmp_path / "predictions" / f"{model}.json", rows)
    per_model = read_all_predictions(tmp_path)
    items = ["p#0", "p#1"]
    annotation = {
        "instruction": "Same prompt",
        "generator_1": "a",
        "output_1": "a run 1",
        "generator_2": "b",
        "output_2": "b run 1",
        "preference": 2,
    }
    (tmp_path / "ann.json").write_text(json.dumps([annotation]))
    judge = load_judge(str(tmp_path / "ann.json"), per_model, items)
    assert judge.verdicts.between("a", "b") == {"p#1": 0.0}
    (tmp_path / "v.csv").write_text("prompt_id,model_a,model_b,preference\np,a,b,1\n")
    with pytest.raises(DataError, match="answered in 2 sampling runs; add a run column"):
        load_judge(str(tmp_path / "v.csv"), per_model, items)
    (tmp_path / "v.csv").write_text("prompt_id,run,model_a,model_b,preference\np,0,a,b,1\n")
    assert load_judge(str(tmp_path / "v.csv"), per_model, items).verdicts.between("b", "a") == {"p#0": 0.0}


def test_one_config_change_gives_report_csv_and_plots(tmp_path: Path) -> None:
    predictions = tmp_path / "pred"
    shutil.copytree(FIXTURE / "predictions", predictions / "predictions")
    shutil.copy(FIXTURE / "config.resolved.yaml", predictions)
    run_stage(
        score_predictions,
        "test",
        [
            "--config_subset",
            "eval_rewarding",
            "--set",
            f"run.output_dir={tmp_path / 'out'}",
            "--set",
            f"eval_rewarding.predictions_dir={predictions}",
            "--set",
            "eval_rewarding.rewards=[{name: length, path: 'python:tests.reward_fns:reply_length'}]",
            "--set",
            "eval_rewarding.combined=[]",
            "--set",
            "eval_rewarding.score_with_training_reward=false",  # the fixture's model paths name no real run
            "--set",
            f"eval_rewarding.judge={FIXTURE / 'annotations.json'}",
            "--set",
            "eval_rewarding.reference_model=sft",
            "--set",
            "eval_rewarding.n_boot=50",
        ],
    )
    out = tmp_path / "out" / "eval_rewarding"
    lines = (out / "leaderboard.csv").read_text().splitlines()
    assert lines[0] == ",win_rate,standard_error,n_wins,n_wins_base,n_draws,n_total,mode,avg_length,discrete_win_rate"
    assert lines[1] == "rl_crs,65.0,18.708286933869704,3,1,1,5,community,12,70.0"
    assert lines[2] == "sft,50.0,0.0,0,0,6,6,community,18,50.0"
    assert lines[3].startswith("base,33.33333333333333,33.33333333333333") and lines[3].endswith(
        ",1,2,0,3,community,5,33.33333333333333"
    )
    results = json.loads((out / "results.json").read_text())
    assert results["judge"] == "weighted_alpaca_eval_gpt4_turbo" and results["judge_kind"] == "pairwise"
    assert results["judge_source"]["n_failed"] == 1 and results["missing_pairs"] == [["rl_crs", "base"]]
    assert (
        list(results["agreement"]) == ["length"] and results["agreement"]["length"]["n"] == 8
    )  # 5 + 3 decided comparisons
    report = (out / "report.md").read_text()
    assert "| rl_crs | 65.00 | 18.71 |" in report and "| 12 | 1 |" in report  # avg_length, judge failed
    assert "1 where the judge failed" in report and "rl_crs vs base" in report and "n/a" in report
    assert "| helpful_base | koala |" in report  # per-dataset tables from the files' own column
    assert (out / "win_rates.png").read_bytes()[:4] == b"\x89PNG"


def test_the_external_judge_alone_is_enough(tmp_path: Path) -> None:
    predictions = tmp_path / "pred"
    shutil.copytree(FIXTURE / "predictions", predictions / "predictions")
    run_stage(
        score_predictions,
        "test",
        [
            "--config_subset",
            "eval_rewarding",
            "--set",
            f"run.output_dir={tmp_path / 'out'}",
            "--set",
            f"eval_rewarding.predictions_dir={predictions}",
            "--set",
            "eval_rewarding.rewards=[]",
            "--set",
            "eval_rewarding.combined=[]",
            "--set",
            f"eval_rewarding.judge={FIXTURE / 'verdicts.csv'}",
            "--set",
            "eval_rewarding.reference_model=sft",
            "--set",
            "eval_rewarding.n_boot=20",
        ],
    )
    out = tmp_path / "out" / "eval_rewarding"
    results = json.loads((out / "results.json").read_text())
    assert results["scorers"] == ["verdicts"] and results["score_scorers"] == [] and results["agreement"] == {}
    assert (out / "leaderboard.csv").read_text().splitlines()[
        1
    ] == "rl_crs,65.0,18.708286933869704,3,1,1,5,community,12,70.0"
    assert (out / "win_rates.png").is_file() and not (out / "mean_scores.png").exists()
    assert "## 3. Leaderboard" in (out / "report.md").read_text()


def test_annotations_name_a_model_by_its_rows_generator_a_slash_included(tmp_path: Path) -> None:
    """AlpacaEval names models `org/model`, which no file name holds: the prediction rows' generator names the model
    (its file, rl_crs.json, names it where no rows carry that name); the numbers are the fixture's hand-computed
    ones."""
    predictions = tmp_path / "pred" / "predictions"
    shutil.copytree(FIXTURE / "predictions", predictions)
    rows = json.loads((predictions / "rl_crs.json").read_text())
    (predictions / "rl_crs.json").write_text(json.dumps([{**row, "generator": "allenai/rl-crs-13b"} for row in rows]))
    renamed = [
        {k: "allenai/rl-crs-13b" if k.startswith("generator") and v == "rl_crs" else v for k, v in row.items()}
        for row in json.loads((FIXTURE / "annotations.json").read_text())
    ]
    (tmp_path / "annotations.json").write_text(json.dumps(renamed))
    csv = (FIXTURE / "verdicts.csv").read_text().replace(",rl_crs,", ",allenai/rl-crs-13b,")
    (tmp_path / "verdicts.csv").write_text(csv)
    assert ",allenai/rl-crs-13b," in csv
    per_model = read_all_predictions(tmp_path / "pred")
    items = [f"{r['prompt_id']}#{r['run']}" for r in per_model["sft"]]
    for spec in ("annotations.json", "verdicts.csv"):
        judge = load_judge(str(tmp_path / spec), per_model, items)
        outputs = {m: [r["output"] for r in rows] for m, rows in per_model.items()}
        results = build_results(
            {},
            outputs,
            judge=judge.name,
            prompt_ids=items,
            reference="sft",
            models=list(per_model),
            categories=[r["dataset"] for r in per_model["sft"]],
            n_boot=20,
            pairwise_judge=judge.verdicts,
        )
        row = _row(results, "rl_crs")
        assert {k: row[k] for k in RL_CRS_ROW} == pytest.approx(RL_CRS_ROW), spec
    # The scoring stage end to end, the judge alone.
    run_stage(
        score_predictions,
        "test",
        [
            "--config_subset",
            "eval_rewarding",
            "--set",
            f"run.output_dir={tmp_path / 'out'}",
            "--set",
            f"eval_rewarding.predictions_dir={tmp_path / 'pred'}",
            "--set",
            "eval_rewarding.rewards=[]",
            "--set",
            "eval_rewarding.combined=[]",
            "--set",
            f"eval_rewarding.judge={tmp_path / 'annotations.json'}",
            "--set",
            "eval_rewarding.reference_model=sft",
            "--set",
            "eval_rewarding.n_boot=20",
        ],
    )
    leaderboard = (tmp_path / "out" / "eval_rewarding" / "leaderboard.csv").read_text().splitlines()
    assert leaderboard[1] == "rl_crs,65.0,18.708286933869704,3,1,1,5,community,12,70.0"


def test_a_generator_two_files_carry_names_neither_model() -> None:
    from crs.eval.judges import model_names

    per_model = {"a": [{"generator": "org/m"}], "b": [{"generator": "org/m"}], "c": [{"generator": "org/c"}], "d": [{}]}
    assert model_names(per_model) == {"a": "a", "b": "b", "c": "c", "d": "d", "org/c": "c"}
    # a generator that is another model's file name: the generator names the model
    assert model_names({"x": [{"generator": "y"}], "y": [{"generator": "z"}]}) == {"x": "x", "y": "x", "z": "y"}
