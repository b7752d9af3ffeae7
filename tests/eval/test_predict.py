"""The predict stage end to end on tiny models: predictions written, then scored; under torchrun, once."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from paths import FIXTURES, ROOT
from tiny import tiny_causal_lm

from crs.cli import run_stage
from crs.eval.predict import predict
from crs.eval.prediction_files import read_predictions
from crs.eval.score import score_predictions
from crs.eval.win_rates import win_rate

FIXTURE = FIXTURES / "crs_demo_tiny.jsonl"


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
                "do_sample": True,
                "num_runs": 2,
                "max_new_tokens": 8,
                "batch_size": 4,
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
                "combined": [{"name": "crs_0.5", "weights": {"length": 0.5, "vowels": 0.5}}],
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

    # The fixture's prompts are not the demo dataset's: gold only when asked for knowingly.
    score_args = ["--config", str(config_path), "--config_subset", "score", "--set", "eval_rewarding.judge=gold"]
    run_stage(score_predictions, "score", [*score_args, "--set", "run.allow_gold_outside_demo=true"])
    out = tmp_path / "out" / "score"
    results = json.loads((out / "results.json").read_text())
    per_item = json.loads((out / "scores.json").read_text())
    assert results["scorers"] == ["gold", "length", "vowels", "crs_0.5"]

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


def test_predict_and_score_under_torchrun_write_once_what_one_process_writes(
    tmp_path: Path, tiny_model_dir, smol_tokenizer
) -> None:
    """Two processes share the prompts (by batch, each batch its own seed) and the main process
    writes: the files are those of one process, sampling included."""
    import os
    import subprocess
    import sys

    root = ROOT
    other = tmp_path / "tiny1"
    tiny_causal_lm(smol_tokenizer, seed=1).save_pretrained(other)
    smol_tokenizer.save_pretrained(other)
    config = {
        "default": {
            "model": {"dtype": "fp32"},
            "data": {"source": str(root / "examples" / "sft_example.jsonl"), "split": "sft", "max_prompt_length": 32},
        },
        "pred": {
            "run": {"name": "pred"},
            "eval_pred": {
                "models": [{"name": "a", "path": str(tiny_model_dir)}, {"name": "b", "path": str(other)}],
                "do_sample": True,
                "num_runs": 2,
                "max_new_tokens": 6,
                "batch_size": 2,
            },
        },
        "score": {
            "run": {"name": "score"},
            "eval_rewarding": {
                "predictions_dir": "out/pred",
                "rewards": [{"name": "length", "path": "python:tests.reward_fns:reply_length"}],
                "combined": [],
                "reference_model": "a",
                "judge": "none",
                "n_boot": 50,
            },
        },
    }
    env = {
        **os.environ,
        "PYTHONPATH": f"{root}{os.pathsep}{root / 'tests'}",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    outputs = {}
    for launcher in ("python", "torchrun"):
        folder = tmp_path / launcher
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        start = (
            [sys.executable]
            if launcher == "python"
            else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        )
        for script, subset in (("rl_eval_pred.py", "pred"), ("rl_eval_rewarding.py", "score")):
            done = subprocess.run(
                [
                    *start,
                    str(root / script),
                    "--config",
                    "config.yaml",
                    "--config_subset",
                    subset,
                    "--set",
                    "run.output_dir=out",
                ],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr[-3000:]
        out = folder / "out"
        assert sorted(p.name for p in (out / "pred" / "predictions").iterdir()) == [
            "a.json",
            "b.json",
        ]  # no temporary left
        assert json.loads((out / "pred" / "run_state.json").read_text())["status"] == "finished"
        outputs[launcher] = (
            (out / "pred" / "predictions" / "a.json").read_text(),
            json.loads((out / "score" / "results.json").read_text()),
        )
    rows = json.loads(outputs["python"][0])
    assert len(rows) > 2 * 2 and len({r["output"] for r in rows}) > 1  # several batches of sampled replies
    assert outputs["torchrun"][0] == outputs["python"][0]
    assert outputs["torchrun"][1]["scorers"] == outputs["python"][1]["scorers"]
