"""The length source and length calibration in RL's reward: characters or tokens, first-batch z-scale, a calibrated
source on its calibration set's scale, RM minus length from the config, a reward-model run's own calibration end to
end, and one PPO step on them."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
import torch
from paths import ROOT
from reward_fns import count_vowels, distinct_characters
from stage_runs import trained_tiny_rm

from crs.config import ConfigError, ModelConfig, RewardSourceConfig, load_config
from crs.data.schema import user_prompt
from crs.rl.combined_reward import CombinedReward
from crs.rl.reward_sources import build_sources
from crs.rm.length_calibration import fit_length_calibration, read_length_calibration, write_length_calibration

pytestmark = pytest.mark.usefixtures("one_thread")

REPLIES = ["a", "an apple", "bee", "a long reply about an orange", "kiwi", "io", "queue of aeiou vowels", "zz"]
PROMPTS = [user_prompt(f"question {i}") for i in range(len(REPLIES))]


def _calibration_file(folder: Path, fn, name: str) -> Path:
    """A calibration of ``fn`` fitted on REPLIES, saved as ``name``."""
    calibration = fit_length_calibration(
        [len(r) for r in REPLIES], fn(PROMPTS, REPLIES), "the test replies", name, iterations=0
    )
    path = folder / f"{name}.json"
    write_length_calibration(path, calibration)
    return path


def test_the_length_source_counts_characters_or_tokens(smol_tokenizer, tiny_model_dir) -> None:
    chars = build_sources([RewardSourceConfig(name="len", path="length")])[0]
    assert chars.score(PROMPTS, REPLIES).tolist() == [float(len(r)) for r in REPLIES]
    assert (chars.stats, chars.stats_origin) == (None, "first batch")  # no saved scale: the first batch's
    tokens = [float(len(smol_tokenizer(r, add_special_tokens=False)["input_ids"])) for r in REPLIES]
    named = RewardSourceConfig(
        name="tok", path="length", length_unit="tokens", length_tokenizer="embedded:smollm2-135m-instruct"
    )
    assert build_sources([named])[0].score(PROMPTS, REPLIES).tolist() == tokens
    policy = RewardSourceConfig(name="tok", path="length", length_unit="tokens")
    assert build_sources([policy], ModelConfig(name=str(tiny_model_dir)))[0].score(PROMPTS, REPLIES).tolist() == tokens
    assert tokens != [float(len(r)) for r in REPLIES]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"path": "gold", "length_unit": "tokens"}, "length_unit applies to path: length alone"),
        ({"path": "length", "length_tokenizer": "embedded:smollm2-135m-instruct"}, "length_tokenizer applies"),
        ({"path": "length", "length_calibration": "cal.json"}, "all the length source has"),
        ({"path": "gold", "length_calibration": "run"}, "'gold' is no run folder"),
        ({"path": "/no/such/rm", "length_calibration": "run"}, "is no run folder"),  # refused before loading a model
        ({"path": "python:tests.reward_fns:count_vowels", "length_calibration": "none.json"}, "no such file"),
        ({"path": "length", "length_unit": "tokens"}, "needs a tokenizer"),
    ],
)
def test_length_keys_that_mean_nothing_here_are_refused_in_one_line(keys, message) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        build_sources([RewardSourceConfig(name="src", **keys)])
    assert "\n" not in str(caught.value)


def test_a_run_without_its_calibration_file_says_how_to_fit_one(tmp_path) -> None:
    with pytest.raises(ConfigError, match="has no length_calibration.json") as caught:
        build_sources([RewardSourceConfig(name="rm", path=str(tmp_path), length_calibration="run")])
    assert f"python scripts/fit_length_calibration.py {tmp_path}" in str(caught.value)


def test_a_calibrated_source_scores_without_its_length_trend_on_its_calibration_scale(tmp_path) -> None:
    path = _calibration_file(tmp_path, count_vowels, "vowels")
    calibration = read_length_calibration(path)
    config = RewardSourceConfig(name="v", path="python:tests.reward_fns:count_vowels", length_calibration=str(path))
    reward = CombinedReward.from_config([config])
    (source,) = reward.sources
    raw = np.array(count_vowels(PROMPTS, REPLIES))
    expected = raw - calibration.trend_at([len(r) for r in REPLIES])
    out = reward(PROMPTS, REPLIES)
    assert out.raw["v"].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    # The z-scale is the calibrated score's on the calibration set (here the same replies), not a first batch's.
    assert source.stats == {"mean": calibration.stats["mean"], "std": calibration.stats["std"]}
    assert source.stats_origin == "calibration set"
    assert out.normalized["v"].tolist() == pytest.approx(
        ((expected - expected.mean()) / expected.std()).tolist(), abs=1e-5
    )
    assert reward.describe()[0]["length_calibration"] == "the test replies"


def test_rm_minus_length_is_written_in_the_config(tmp_path) -> None:
    path = _calibration_file(tmp_path, count_vowels, "vowels")
    rewards = [
        {
            "name": "vowels",
            "path": "python:tests.reward_fns:count_vowels",
            "weight": 1.0,
            "length_calibration": str(path),
        },
        {"name": "length", "path": "length", "weight": -0.5},
    ]
    overrides = [f"rl.rewards={json.dumps(rewards)}", "rl.reward_clip=null", "rl.missing_eos_penalty=null"]
    reward = CombinedReward.for_rl(load_config("rl_crs", overrides=overrides))
    out = reward(PROMPTS, REPLIES)
    lengths = np.array([len(r) for r in REPLIES], dtype=float)
    z_length = (lengths - lengths.mean()) / lengths.std()  # the first batch's scale, population std
    calibration = read_length_calibration(path)
    vowels = np.array(count_vowels(PROMPTS, REPLIES)) - calibration.trend_at(lengths)
    z_vowels = (vowels - calibration.stats["mean"]) / calibration.stats["std"]
    assert out.combined.tolist() == pytest.approx((z_vowels - 0.5 * z_length).tolist(), abs=1e-5)
    assert [(d["weight"], d["stats_origin"]) for d in reward.describe()] == [
        (1.0, "calibration set"),
        (-0.5, "first batch"),
    ]
    with pytest.raises(ConfigError, match="none negative"):
        load_config("rl_crs", overrides=[*overrides, "rl.combine=conservative"])


def fit_script(argv: list[str]) -> None:
    """scripts/fit_length_calibration.py, run in this process with ``argv``."""
    spec = importlib.util.spec_from_file_location(
        "fit_length_calibration", ROOT / "scripts" / "fit_length_calibration.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with patch.object(sys, "argv", ["fit_length_calibration.py", *argv]):
        module.main()


def test_the_script_fits_any_source_on_a_file_of_replies(tmp_path, capsys) -> None:
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"instruction": f"Q{i}?", "outputs": REPLIES[i::2]}) + "\n" for i in range(2)))
    out = tmp_path / "vowels.json"
    fit_script(["python:tests.reward_fns:count_vowels", "--replies", str(pool), "--out", str(out), "--iterations", "0"])
    by_hand = fit_length_calibration(
        [len(r) for r in REPLIES[0::2] + REPLIES[1::2]],
        count_vowels([], REPLIES[0::2] + REPLIES[1::2]),
        "",
        "",
        iterations=0,
    )
    saved = read_length_calibration(out)
    assert saved.trend.tolist() == pytest.approx(by_hand.trend.tolist()) and saved.stats == by_hand.stats
    assert saved.calibration_set == f"the replies of {pool}" and str(out) in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        fit_script(["python:tests.reward_fns:count_vowels", "--replies", str(pool)])
    assert exited.value.code == 2 and "give --out too" in capsys.readouterr().err


def test_a_reward_model_run_fits_its_own_calibration_that_rl_applies(tiny_rm_dir, tmp_path) -> None:
    from crs.rm.rm_evaluation import view_replies
    from crs.rm.scorer import RewardScorer
    from crs.rm.training_data import training_data

    run_dir = trained_tiny_rm(tiny_rm_dir, tmp_path)
    cfg = load_config("tiny_rm", run_dir / "config.resolved.yaml")  # the run's config, read back as the script does
    saved = json.loads((run_dir / "reward_stats.json").read_text())
    calibration = read_length_calibration(run_dir / "length_calibration.json")
    # Fitted on the very replies reward_stats.json describes: the raw statistics agree, and its own are the
    # calibrated reward's there.
    assert calibration.fitted_on_run and calibration.calibration_set == "the run's own val replies"
    assert (calibration.raw_stats["mean"], calibration.raw_stats["n"]) == (pytest.approx(saved["mean"]), saved["n"])
    views = training_data(cfg).views
    replies = view_replies(views, cfg.rm)
    prompts = [ex.prompt for ex in views.rankings for _ in ex.replies]
    raw = RewardScorer.from_path(str(run_dir)).score(prompts, replies).numpy()
    calibrated = calibration.apply(raw, [len(r) for r in replies])
    assert calibration.stats["mean"] == pytest.approx(calibrated.mean(), abs=1e-5)
    assert calibration.stats["std"] == pytest.approx(calibrated.std(), rel=1e-4)

    plain, own = build_sources(
        [
            RewardSourceConfig(name="plain", path=str(run_dir)),
            RewardSourceConfig(name="own", path=str(run_dir), length_calibration="run"),
        ]
    )
    assert (plain.stats_origin, plain.stats["mean"]) == ("saved", pytest.approx(saved["mean"]))
    assert (own.stats_origin, own.stats["std"]) == ("calibration set", pytest.approx(calibration.stats["std"]))
    assert own.score(prompts, replies).numpy() == pytest.approx(calibrated, abs=1e-5)

    (run_dir / "length_calibration.json").unlink()  # a run trained before crs fitted one: the script refits it
    fit_script([str(run_dir)])
    refit = read_length_calibration(run_dir / "length_calibration.json")
    assert refit.lengths.tolist() == calibration.lengths.tolist()
    assert refit.trend == pytest.approx(calibration.trend, abs=1e-5)
    assert refit.calibration_set == calibration.calibration_set
    (run_dir / "reward_stats.json").write_text(json.dumps({**saved, "mean": saved["mean"] + 1.0}))
    with pytest.raises(ConfigError, match="refit it"):
        build_sources([RewardSourceConfig(name="own", path=str(run_dir), length_calibration="run")])


def test_one_ppo_step_on_a_calibrated_source_minus_length(tiny_model_dir, tmp_path) -> None:
    from stage_runs import log_rows, write_rl_config

    from crs.cli import run_stage
    from crs.rl.dispatch import run_rl_stage
    from crs.runs import run_state

    path = _calibration_file(tmp_path, distinct_characters, "chars")
    rewards = [
        {"name": "chars", "path": "python:tests.reward_fns:distinct_characters", "length_calibration": str(path)},
        {"name": "length", "path": "length", "weight": -0.5},
    ]
    config = write_rl_config(tmp_path / "cfg.yaml", tiny_model_dir, tmp_path / "out", steps=1, rewards=rewards)
    run_stage(run_rl_stage, "test", ["--config", str(config), "--config_subset", "tiny_rl"])
    run_dir = tmp_path / "out" / "rl"
    described = {d["name"]: d for d in run_state(run_dir)["summary"]["rewards"]}
    calibration = read_length_calibration(path)
    assert described["chars"]["stats"] == {"mean": calibration.stats["mean"], "std": calibration.stats["std"]}
    assert described["length"]["weight"] == -0.5 and described["length"]["stats_origin"] == "first batch"
    (row,) = log_rows(run_dir)
    assert row["reward/length/raw"] > 0 and torch.isfinite(torch.tensor(row["reward/combined"]))
