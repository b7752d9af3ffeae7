"""Config: subset merge, --set overrides, validation errors, CLI exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from paths import ROOT

from crs.config import ConfigError, deep_merge, load_config, parse_override


@pytest.fixture()
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "default": {
                    "run": {"name": "base", "seed": 1},
                    "model": {"lora": {"r": 8, "alpha": 16}},
                    "train": {"learning_rate": "5e-5"},
                },
                "small": {"run": {"name": "small"}, "model": {"lora": {"r": 4}}},
                "rl_mix": {"rl": {"rewards": [{"name": "a", "path": "x", "weight": 0.5}]}},
            }
        )
    )
    return path


def test_subset_is_deep_merged_over_default(config_file: Path) -> None:
    cfg = load_config("small", config_file)
    assert cfg.run.name == "small"
    assert cfg.run.seed == 1  # from default
    assert cfg.model.lora.r == 4  # subset wins
    assert cfg.model.lora.alpha == 16  # sibling key kept (a shallow merge would lose it)
    assert cfg.train.learning_rate == pytest.approx(5e-5)  # YAML 1.1 string coerced to float


def test_deep_merge_replaces_lists_and_leaves_inputs_alone() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}}
    merged = deep_merge(base, {"a": {"c": [3]}})
    assert merged == {"a": {"b": 1, "c": [3]}}
    assert base == {"a": {"b": 1, "c": [1, 2]}}


def test_overrides_coerce_types(config_file: Path) -> None:
    cfg = load_config(
        "small",
        config_file,
        ["rl.kl_coef=0.2", "model.lora.enabled=false", "rl.steps=7", "data.languages=[en, de]", "run.name=x"],
        name_suffix="_try",
    )
    assert cfg.rl.kl_coef == 0.2 and cfg.model.lora.enabled is False and cfg.rl.steps == 7
    assert cfg.data.languages == ["en", "de"]
    assert cfg.run_name == "x_try" and cfg.run_dir == Path("outputs") / "x_try"
    assert parse_override("a.b=hello") == (["a", "b"], "hello")


def test_list_of_sections_is_typed(config_file: Path) -> None:
    cfg = load_config("rl_mix", config_file)
    assert cfg.rl.rewards[0].weight == 0.5 and cfg.rl.rewards[0].normalize == "zscore"


def test_unknown_subset_lists_valid_ones(config_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config subset 'nope'.*rl_mix, small"):
        load_config("nope", config_file)


def test_unknown_key_names_closest(config_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'rl.kl_coeff'; did you mean 'rl.kl_coef'"):
        load_config("small", config_file, ["rl.kl_coeff=0.1"])


def test_wrong_type_names_path_and_expected_type(config_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"rl.steps: expected int, got 'many'"):
        load_config("small", config_file, ["rl.steps=many"])
    with pytest.raises(ConfigError, match=r"model.dtype: expected one of 'auto' \| 'bf16'"):
        load_config("small", config_file, ["model.dtype=int3"])
    with pytest.raises(ConfigError, match=r"rl.rewards\[0\].weight: expected float"):
        load_config("small", config_file, ["rl.rewards=[{weight: heavy}]"])


def test_repository_config_subsets_all_validate() -> None:
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    for subset in raw:
        if subset != "default":
            load_config(subset)  # raises on any bad key or type


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config_subset", "nope"], "unknown config subset"),
        (["--config_subset", "sft", "--set", "train.learning_rat=1"], "did you mean 'train.learning_rate'"),
        (["--config_subset", "sft", "--set", "train.batch_size=big"], "train.batch_size: expected int"),
    ],
)
def test_stage_script_exits_2_with_one_clear_line(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "sft_train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "script", ["sft_train.py", "rm_train.py", "rl_train.py", "rl_eval_pred.py", "rl_eval_rewarding.py"]
)
def test_help_works_for_every_stage(script: str) -> None:
    result = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--config_subset" in result.stdout


def test_relative_paths_resolve_against_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from crs.data import load_examples
    from crs.rl.reward_sources import import_callable
    from crs.runs import prepare_run_dir

    work, configs = tmp_path / "work", tmp_path / "configs"
    # The same relative names in both folders, with different contents: which one is read shows the rule.
    for folder, value in ((work, 1.0), (configs, 2.0)):
        folder.mkdir()
        (folder / "data.jsonl").write_text(json.dumps({"prompt": "Hi?", "reply": f"reply {value}"}) + "\n")
        (folder / "crs_cwd_rule_reward.py").write_text(
            f"def score(prompts, replies):\n    return [{value}] * len(replies)\n"
        )
    (configs / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "default": {"run": {"output_dir": "out"}, "data": {"source": "data.jsonl", "val_fraction": 0.0}},
                "sft": {"run": {"name": "s"}},
            }
        )
    )
    monkeypatch.chdir(work)
    monkeypatch.setattr(
        sys, "path", [p for p in sys.path if p not in ("", str(work))]
    )  # as under the `crs` console script
    cfg = load_config("sft", configs / "config.yaml")
    assert prepare_run_dir(cfg).resolve() == work / "out" / "s"
    train, _ = load_examples(cfg.data, "sft", 0)
    assert [ex.reply for ex in train] == ["reply 1.0"]
    assert import_callable("python:crs_cwd_rule_reward:score")([], ["a", "b"]) == [1.0, 1.0]
    assert not (configs / "out").exists()
