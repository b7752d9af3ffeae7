"""The score stage end to end: scores, the judge, the report numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from length_cases import vowel_calibration
from paths import FIXTURES
from stage_runs import frozen_rl_run

from crs.cli import run_stage
from crs.eval.score import score_predictions

FIXTURE = FIXTURES / "crs_demo_tiny.jsonl"


@pytest.mark.parametrize(
    "combine", [{}, {"combine": "conservative", "conservative": "mean_std", "conservative_k": 2.0}]
)
def test_evaluation_scores_with_the_formula_ppo_optimised(tmp_path: Path, combine: dict[str, Any]) -> None:
    """An RL run's own reward (its combination strategy too), and a named combination, score a reply exactly as PPO's
    CombinedReward does."""
    import torch

    from crs.config import RewardSourceConfig, load_config
    from crs.data.schema import user_prompt
    from crs.eval.score import score_all
    from crs.rl.combined_reward import CombinedReward

    sources = [
        {"name": "length", "path": "python:tests.reward_fns:reply_length", "weight": 0.7, "normalize": "zscore"},
        {"name": "vowels", "path": "python:tests.reward_fns:count_vowels", "weight": 0.3, "normalize": "zscore"},
    ]
    frozen = {
        "length": {"stats": {"mean": 20.0, "std": 8.0}, "origin": "first batch"},
        "vowels": {"stats": {"mean": 5.0, "std": 2.0}, "origin": "first batch"},
    }
    rl_block = {"rewards": sources, "reward_clip": 1.5, "missing_eos_penalty": -0.5, **combine}
    rl_run = frozen_rl_run(tmp_path, rl_block, frozen, step=2)

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
            "eval_rewarding.combined=[{name: mix, weights: {length: 0.7, vowels: 0.3}, reward_clip: 1.5, "
            "missing_eos_penalty: -0.5}]",
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


def test_length_and_a_calibrated_source_score_and_combine_with_a_negative_weight(tmp_path: Path) -> None:
    """`path: length` and a length-calibrated source as scorers, "vowels minus length" as a named combination and as
    an RL run's own reward (read back from its config, the calibration with it)."""
    from crs.config import load_config
    from crs.eval.score import score_all

    outputs = {"rl": ["aeiou", "a much longer reply", "xyz", "queue"], "base": ["no", "oh", "a fine answer", "kiwi"]}
    per_model = {
        m: [{"instruction": f"Q{i}?", "output": o, "prompt_id": str(i), "run": 0} for i, o in enumerate(texts)]
        for m, texts in outputs.items()
    }
    every = [o for texts in outputs.values() for o in texts]
    lengths, vowels, calibration = vowel_calibration(every, tmp_path / "cal.json", "the test replies")
    sources = [
        {
            "name": "vowels",
            "path": "python:tests.reward_fns:count_vowels",
            "length_calibration": str(tmp_path / "cal.json"),
        },
        {"name": "length", "path": "length"},
    ]
    frozen = {"length": {"stats": {"mean": 8.0, "std": 4.0}, "origin": "first batch"}}
    rl_rewards = [{**sources[0], "weight": 1.0}, {**sources[1], "weight": -0.5}]
    rl_run = frozen_rl_run(tmp_path, {"rewards": rl_rewards}, frozen)
    cfg = load_config(
        "eval_rewarding",
        overrides=[
            "eval_rewarding.judge=none",
            f"eval_rewarding.rewards={json.dumps(sources)}",
            "eval_rewarding.combined=[{name: vowels_minus_length, weights: {vowels: 1, length: -0.5}}]",
        ],
    )
    scores, raw = score_all(per_model, cfg, {"rl": str(rl_run)})

    def both(values: dict[str, list[float]]) -> list[float]:
        return values["rl"] + values["base"]

    calibrated = vowels - calibration.trend_at(lengths)
    assert both(raw["length"]) == lengths.tolist()
    assert both(raw["vowels"]) == pytest.approx(calibrated.tolist(), abs=1e-5)
    z_length = (lengths - lengths.mean()) / lengths.std()  # no saved scale: pooled over the predictions
    z_vowels = (calibrated - calibration.stats["mean"]) / calibration.stats["std"]  # the calibration set's scale
    assert both(scores["length"]) == pytest.approx(z_length.tolist(), abs=1e-5)
    assert both(scores["vowels"]) == pytest.approx(z_vowels.tolist(), abs=1e-5)
    assert both(scores["vowels_minus_length"]) == pytest.approx((z_vowels - 0.5 * z_length).tolist(), abs=1e-5)
    trained = z_vowels - 0.5 * (lengths - 8.0) / 4.0  # the length scale the run froze
    assert both(scores["reward of rl"]) == pytest.approx(trained.tolist(), abs=1e-5)


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
        match=r"eval_rewarding.judge: gold is the demo annotator's rule set, and 1 of 2 prompts "
        r".*run.allow_gold_outside_demo: true",
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
