"""Both eval scripts end to end on tiny models: predictions, scores, report numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
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


@pytest.mark.parametrize(
    "combine", [{}, {"combine": "conservative", "conservative": "mean_std", "conservative_k": 2.0}]
)
def test_evaluation_scores_with_the_formula_ppo_optimised(tmp_path: Path, combine: dict[str, Any]) -> None:
    """An RL run's own reward (its combination strategy too), and a named combination, score a reply exactly as PPO's CombinedReward does."""
    import torch

    from crs.config import RewardSourceConfig, load_config
    from crs.data.schema import user_prompt
    from crs.eval.score import score_all
    from crs.rl.rewards import CombinedReward
    from crs.runs import seal_checkpoint

    sources = [
        {"name": "length", "path": "python:tests.reward_fns:reply_length", "weight": 0.7, "normalize": "zscore"},
        {"name": "vowels", "path": "python:tests.reward_fns:count_vowels", "weight": 0.3, "normalize": "zscore"},
    ]
    frozen = {
        "length": {"stats": {"mean": 20.0, "std": 8.0}, "origin": "first batch"},
        "vowels": {"stats": {"mean": 5.0, "std": 2.0}, "origin": "first batch"},
    }
    rl_run = tmp_path / "rl_run"
    (rl_run / "checkpoints" / "step_2").mkdir(parents=True)
    rl_block = {"rewards": sources, "reward_clip": 1.5, "missing_eos_penalty": -0.5, **combine}
    (rl_run / "config.resolved.yaml").write_text(yaml.safe_dump({"default": {}, "rl_x": {"rl": rl_block}}))
    (rl_run / "checkpoints" / "step_2" / "trainer_state.json").write_text(json.dumps({"step": 2, "reward": frozen}))
    seal_checkpoint(rl_run / "checkpoints" / "step_2")

    outputs = ["a short one", "a much longer reply that goes on and on about everything", "aeiou aeiou", "x"]
    eos = [True, False, True, False]
    per_model = {
        m: [
            {"instruction": f"Question {i}?", "output": o, "ended_with_eos": e, "prompt_id": str(i), "run": 0}
            for i, (o, e) in enumerate(zip(texts, eos))
        ]
        for m, texts in {"rl": outputs, "base": outputs[::-1]}.items()
    }
    cfg = load_config(
        "eval_rewarding",
        overrides=[
            "eval_rewarding.judge=none",
            f"eval_rewarding.rewards={json.dumps([{'name': s['name'], 'path': s['path']} for s in sources])}",
            "eval_rewarding.combined=[{name: mix, weights: {length: 0.7, vowels: 0.3}, reward_clip: 1.5, missing_eos_penalty: -0.5}]",
        ],
    )
    scores, raw = score_all(per_model, cfg, {"rl": str(rl_run), "base": "embedded:smollm2-135m-instruct"})
    assert set(scores) == {"length", "vowels", "mix", "reward of rl"}  # base is no RL run: no training reward

    configs = [RewardSourceConfig(**s) for s in sources]
    for model, rows in per_model.items():
        prompts, replies = [user_prompt(r["instruction"]) for r in rows], [r["output"] for r in rows]
        strategy = (
            {"strategy": combine["combine"], "method": combine["conservative"], "k": combine["conservative_k"]}
            if combine
            else {}
        )
        ppo = CombinedReward.from_config(configs, reward_clip=1.5, missing_eos_penalty=-0.5, **strategy)
        ppo.load_state_dict(frozen)  # the scale PPO froze in its checkpoint
        expected = ppo(prompts, replies, torch.tensor([r["ended_with_eos"] for r in rows])).combined.tolist()
        assert scores["reward of rl"][model] == pytest.approx(expected, abs=1e-6)
        # The named mix has no frozen scale: each source is z-scored over all predictions (population
        # std, the one convention), as PPO would be with those statistics.
        pooled = CombinedReward.from_config(configs, reward_clip=1.5, missing_eos_penalty=-0.5)
        for source in pooled.sources:
            values = torch.tensor([v for m in per_model for v in raw[source.name][m]])
            source.stats = {"mean": float(values.mean()), "std": float(values.std(unbiased=False))}
        assert scores["mix"][model] == pytest.approx(
            pooled(prompts, replies, torch.tensor(eos)).combined.tolist(), abs=1e-6
        )
    assert min(scores["reward of rl"]["rl"]) < max(scores["reward of rl"]["rl"])  # not a constant


def test_evaluation_z_scores_with_the_one_convention() -> None:
    """A source without saved statistics is z-scored over every model's replies with RL's z-score:
    population std, and a near-constant source centred, not blown up."""
    from crs.config import load_config
    from crs.eval.score import score_all

    outputs = {"a": ["one", "three", "fivee"], "b": ["x", "seven..", "twelve......"]}
    per_model = {
        m: [{"instruction": f"Q{i}?", "output": o, "prompt_id": str(i), "run": 0} for i, o in enumerate(texts)]
        for m, texts in outputs.items()
    }
    cfg = load_config(
        "eval_rewarding",
        overrides=[
            "eval_rewarding.judge=none",
            "eval_rewarding.combined=[]",
            "eval_rewarding.rewards=[{name: length, path: 'python:tests.reward_fns:reply_length'}, "
            "{name: noisy, path: 'python:tests.reward_fns:nearly_constant'}]",
        ],
    )
    scores, raw = score_all(per_model, cfg)
    lengths = np.array(
        [3, 5, 5, 1, 7, 12], dtype=float
    )  # mean 5.5, population variance (6.25+.25+.25+20.25+2.25+42.25)/6
    z = (lengths - 5.5) / math.sqrt(71.5 / 6)
    assert scores["length"]["a"] + scores["length"]["b"] == pytest.approx(z.tolist(), abs=1e-6)
    # The noise (one float32 step at 1000) has a std far under 1e-6 x 1000: centred, so it stays about 6e-5, not +-1.
    assert max(abs(v) for m in outputs for v in scores["noisy"][m]) <= 2.0**-14
    assert raw["noisy"]["a"] != raw["noisy"]["b"]  # the source did vary, by its noise


def test_the_judge_alone_is_enough_to_score(tmp_path: Path) -> None:
    from crs.config import load_config
    from crs.eval.score import score_all

    rows = [
        {
            "instruction": "Explain why dogs wag their tails.",
            "output": "Dogs wag their tails to show how they feel.",
            "prompt_id": "p",
            "run": 0,
        }
    ]
    cfg = load_config(
        "eval_rewarding",
        overrides=["eval_rewarding.rewards=[]", "eval_rewarding.combined=[]", "eval_rewarding.judge=gold"],
    )
    scores, raw = score_all({"a": rows, "b": rows}, cfg)
    assert list(scores) == ["gold"] and raw == {} and 0 < scores["gold"]["a"][0] <= 1


def test_the_gold_judge_refuses_prompts_that_are_not_the_demos(caplog) -> None:
    from crs.config import ConfigError, load_config
    from crs.eval.score import score_all

    demo = {
        "instruction": "Explain why dogs wag their tails.",
        "output": "To show how they feel.",
        "prompt_id": "p1",
        "run": 0,
    }
    own = {"instruction": "Summarise our Q3 sales call.", "output": "Sales rose.", "prompt_id": "p2", "run": 0}
    per_model = {"a": [demo, own], "b": [demo, own]}
    lengths = "eval_rewarding.rewards=[{name: length, path: 'python:tests.reward_fns:reply_length'}]"

    def scorers(*overrides: str) -> list[str]:
        cfg = load_config("eval_rewarding", overrides=[lengths, "eval_rewarding.combined=[]", *overrides])
        return list(score_all(per_model, cfg)[0])

    from crs.config import EvalRewardingConfig, OnlineConfig, RLConfig, SweepConfig

    assert {c().judge for c in (EvalRewardingConfig, OnlineConfig, RLConfig, SweepConfig)} == {
        "auto"
    }  # the default everywhere
    with caplog.at_level("WARNING"):
        assert scorers("eval_rewarding.judge=auto") == ["length"]  # no gold: the first reward source is the reference
    assert "eval_rewarding.judge auto -> none: 1 of 2 prompts are not the demo dataset's" in caplog.text
    assert "the first reward source (length) is the reference scorer" in caplog.text
    with pytest.raises(
        ConfigError,
        match=r"eval_rewarding.judge: gold is the demo annotator's rule set, and 1 of 2 prompts .*run.allow_gold_outside_demo: true",
    ):
        scorers("eval_rewarding.judge=gold")
    assert scorers("eval_rewarding.judge=gold", "run.allow_gold_outside_demo=true") == ["gold", "length"]  # knowingly
    assert scorers("eval_rewarding.judge=auto", "eval_rewarding.rewards=[]") == []  # nothing: score_predictions says so
    per_model = {"a": [demo], "b": [demo]}
    assert scorers("eval_rewarding.judge=auto") == ["gold", "length"]  # the demo's prompts: gold


@pytest.mark.parametrize(
    "function, says",
    [
        ("one_score_short", r"returned 1 scores for 2 replies: expected one per reply"),
        ("raises", r"raised ZeroDivisionError at .*reward_fns.py:\d+: float division by zero"),
        ("strings", r"returned \['good', 'good'\]: expected a list of 2 numbers, one per reply"),
    ],
)
def test_a_broken_python_reward_is_one_line_naming_the_source(tmp_path: Path, capsys, function: str, says: str) -> None:
    import re

    from crs.runs import run_state

    # AlpacaEval's own outputs format (no prompt_id, run or dataset), as another tool wrote it
    for model, reply in (("a", "Fine."), ("b", "Fine, thanks.")):
        rows = [{"instruction": q, "output": reply, "generator": model} for q in ("How are you?", "Name a colour.")]
        (tmp_path / "preds" / "predictions").mkdir(parents=True, exist_ok=True)
        (tmp_path / "preds" / "predictions" / f"{model}.json").write_text(json.dumps(rows))
    source = f"python:tests.reward_fns:{function}"
    overrides = [
        f"run.output_dir={tmp_path / 'out'}",
        f"eval_rewarding.predictions_dir={tmp_path / 'preds'}",
        f"eval_rewarding.rewards=[{{name: bad, path: '{source}'}}]",
        "eval_rewarding.combined=[]",
        "eval_rewarding.reference_model=a",
        "eval_rewarding.judge=auto",
    ]
    with pytest.raises(SystemExit) as exited:
        run_stage(
            score_predictions,
            "score",
            ["--config_subset", "eval_rewarding", *[a for o in overrides for a in ("--set", o)]],
        )
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: reward source '{source}' ") and re.search(says, error), (
        error
    )  # sources load by path here
    state = run_state(tmp_path / "out" / "eval_rewarding")
    assert state["status"] == "failed" and state["error"] == error.removeprefix("error: ")


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


def test_a_reward_source_standing_in_for_the_judge_is_named_a_reference_scorer(tmp_path: Path) -> None:
    """`eval_rewarding.judge: none` on a user's own prompts: the first reward source heads the
    tables as the reference scorer, never as a gold judge."""
    for model, reply in (("a", "Fine."), ("b", "Fine, thanks.")):
        rows = [{"instruction": q, "output": reply, "generator": model} for q in ("How are you?", "Name a colour.")]
        (tmp_path / "preds" / "predictions").mkdir(parents=True, exist_ok=True)
        (tmp_path / "preds" / "predictions" / f"{model}.json").write_text(json.dumps(rows))
    overrides = [
        f"run.output_dir={tmp_path / 'out'}",
        f"eval_rewarding.predictions_dir={tmp_path / 'preds'}",
        "eval_rewarding.rewards=[{name: mine, path: 'python:tests.reward_fns:reply_length'}]",
        "eval_rewarding.combined=[]",
        "eval_rewarding.reference_model=a",
        "eval_rewarding.judge=none",
        "eval_rewarding.n_boot=20",
    ]
    run_stage(
        score_predictions, "score", ["--config_subset", "eval_rewarding", *[a for o in overrides for a in ("--set", o)]]
    )
    out = tmp_path / "out" / "eval_rewarding"
    report = (out / "report.md").read_text()
    assert json.loads((out / "results.json").read_text())["judge_role"] == "reference scorer"
    assert "Reference scorer: **mine**" in report and "**mine** (reference scorer)" in report
    assert "Gold judge" not in report and "(gold judge)" not in report
