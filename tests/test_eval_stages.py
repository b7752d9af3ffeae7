"""Both eval scripts end to end on tiny models: predictions, scores, report numbers."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from tiny import tiny_causal_lm

from crs.cli import run_stage
from crs.eval_stages import predict, score_predictions
from crs.evaluation import read_predictions, win_rate

FIXTURE = Path(__file__).parent / "fixtures" / "crs_demo_tiny.jsonl"


def test_predict_then_score_end_to_end(tmp_path: Path, smol_tokenizer) -> None:
    models = {}
    for seed in (0, 1):
        path = tmp_path / f"tiny{seed}"
        tiny_causal_lm(smol_tokenizer, seed=seed).save_pretrained(path)
        smol_tokenizer.save_pretrained(path)
        models[f"m{seed}"] = str(path)
    config = {
        "default": {
            "run": {"output_dir": str(tmp_path / "out")},
            "model": {"dtype": "fp32"},
            "data": {"source": str(FIXTURE), "adapter": "crs_demo", "split": "sft"},
        },
        "pred": {
            "run": {"name": "pred"},
            "eval_pred": {
                "models": [{"name": n, "path": p} for n, p in models.items()],
                "do_sample": True, "num_runs": 2, "max_new_tokens": 8, "batch_size": 4,
            },
        },
        "score": {
            "run": {"name": "score"},
            "eval_rewarding": {
                "predictions_dir": str(tmp_path / "out" / "pred"),
                "rewards": [
                    {"name": "length", "path": "python:tests.reward_fns:reply_length"},
                    {"name": "vowels", "path": "python:tests.reward_fns:count_vowels"},
                ],
                "combined_weights": [0.5],
                "reference_model": "m0",
                "n_boot": 200,
            },
        },
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    run_stage(predict, "pred", ["--config", str(config_path), "--config_subset", "pred"])
    rows = read_predictions(tmp_path / "out" / "pred" / "predictions" / "m0.json")
    assert len(rows) == 2 * 2  # two sft prompts in the fixture, two sampling runs
    assert {r["generator"] for r in rows} == {"m0"} and {r["run"] for r in rows} == {0, 1}
    assert rows[0]["instruction"] and rows[0]["dataset"] == "crs_demo_tiny.jsonl/sft"

    run_stage(score_predictions, "score", ["--config", str(config_path), "--config_subset", "score"])
    out = tmp_path / "out" / "score"
    results = json.loads((out / "results.json").read_text())
    per_item = json.loads((out / "scores.json").read_text())
    assert results["scorers"] == ["gold", "length", "vowels", "crs w=0.5"]

    # Every win rate in the report is recomputed here from the per-prompt scores.
    for scorer in results["scorers"]:
        a = [r[scorer] for r in per_item if r["model"] == "m0"]
        b = [r[scorer] for r in per_item if r["model"] == "m1"]
        expected = win_rate(a, b, n_boot=10)
        assert results["win_rates"][scorer]["m0"]["m1"]["win_rate"] == expected.win_rate
        assert results["win_rates"][scorer]["m0"]["m1"]["n_total"] == 4
    lengths = [r["length (raw)"] for r in per_item if r["model"] == "m1"]
    assert lengths == [float(len(r["output"])) for r in per_item if r["model"] == "m1"]
    report = (out / "report.md").read_text()
    assert "m0" in report and "gold" in report
    assert (out / "win_rates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
