"""Nothing silent: bad values refused up front, bad data said out loud, one-line errors,
run_state.json never left "running", a run that never trained starts again, evaluation
refuses missing models and unknown reference models. No models are trained here."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from stage_runs import write_prediction_run

import crs.config
from crs.cli import run_stage
from crs.config import DEFAULT_CONFIG_PATH, ConfigError, DataConfig, load_config
from crs.data import load_examples
from crs.runs import mark_finished, run_state

# --------------------------------------------------------------------------- 1. values that make no sense

# Every value rule (a field's metadata["rule"], listed by crs.config.value_rules) with values
# it must refuse (as --set overrides of the `sft` subset); `test_every_rule_has_a_bad_value_here`
# keeps the two lists in step.
BAD_VALUES: dict[str, list[str]] = {
    "run.logging_steps": ["0"],
    "run.ddp_timeout": ["0"],
    "model.lora.r": ["0"],
    "model.lora.alpha": ["0"],
    "model.lora.dropout": ["1.0", "-0.1"],
    "data.val_fraction": ["1.0", "-0.5"],
    "data.max_examples": ["0"],
    "data.max_prompt_length": ["0"],
    "data.max_length": ["128", "64"],  # the shipped default block sets max_prompt_length 128
    "data.label_weights": ["{quality: .nan}"],
    "train.learning_rate": ["-1e-4", ".nan", ".inf"],
    "train.num_epochs": ["0", "-1"],
    "train.batch_size": ["0", "-8"],
    "train.eval_batch_size": ["0"],
    "train.gradient_accumulation_steps": ["0"],
    "train.warmup_ratio": ["1.0", "-0.1"],
    "train.weight_decay": ["-0.01"],
    "train.max_grad_norm": ["-1", ".nan"],
    "train.eval_steps": ["-1"],
    "train.save_steps": ["0"],
    "train.save_total_limit": ["-1"],
    "rm.max_replies": ["1"],
    "rm.l2_coef": ["-0.1"],
    "rm.margin_scale": ["-1"],
    "rm.threshold": ["1.5"],
    "rm.loss_weight_strength": ["-1"],
    "rm.undersample_bins": ["0"],
    "rm.undersample_max_ratio": ["0.5"],
    "rm.strength_scale": ["-1", ".nan"],
    "rm.joint_absolute_weight": ["-0.5", ".inf"],
    "rm.joint_preference_weight": ["1.5", "-0.1"],
    "rm.init_from": ["outputs/rm_preference"],  # with rm.loss disentangled (see _overrides)
    "rm.disentangled_length_weight": ["-1", ".nan"],
    "rm.disentangled_quality_weight": ["-0.5"],
    "rm.disentangled_orthogonality_weight": [".inf"],
    "rl.rewards[*].weight": [".nan", ".inf"],
    "rl.rewards[*].length_calibration": ["sometimes", "Run"],
    "eval_rewarding.rewards[*].length_calibration": ["calibrated"],
    "bon.rewards[*].length_calibration": ["length_calibration.txt"],
    "sweep.rewards[*].length_calibration": ["calibration.yaml"],
    "rl.reward_clip": ["0", "-4"],
    "rl.combine": ["sum_per_prompt"],  # with rl.algorithm ppo (the default): one reply per prompt, no group
    "rl.conservative_k": ["-1", ".nan"],
    "rl.missing_eos_penalty": [".nan"],
    "rl.steps": ["0", "-3"],
    "rl.batch_size": ["0"],
    "rl.mini_batch_size": ["0", "3"],  # 3 does not divide the default batch of 8
    "rl.gradient_accumulation_steps": ["0"],
    "rl.ppo_epochs": ["0"],
    "rl.learning_rate": ["-1e-4", ".inf"],
    "rl.max_grad_norm": ["0"],
    "rl.max_new_tokens": ["0"],
    "rl.temperature": ["0", "-1"],
    "rl.top_p": ["0", "1.5"],
    "rl.top_k": ["-1"],
    "rl.eval_prompts": ["-1"],
    "rl.gamma": ["1.5"],
    "rl.lam": ["-0.1"],
    "rl.cliprange": ["0"],
    "rl.cliprange_value": ["-0.2"],
    "rl.vf_coef": ["-0.1"],
    "rl.kl_coef": ["-0.05", ".nan"],
    "rl.target_kl": ["0"],
    "rl.kl_horizon": ["0"],
    "rl.early_stop_kl": ["-1"],
    "rl.max_nonfinite_in_row": ["0"],
    "rl.save_steps": ["-1"],
    "rl.sample_every": ["-1"],
    "rl.num_sample_prompts": ["-1"],
    "rl.adam_eps": ["0"],
    "rl.save_total_limit": ["-1"],
    "rl.group_size": ["1", "3"],  # with rl.algorithm grpo (see _override): 3 does not divide the batch of 8
    "rl.reward_normalization": ["trl"],  # with rl.algorithm rloo
    "rl.adaptive_kl": ["true"],  # with rl.algorithm grpo
    "rl.vllm": ["colocate", "server"],  # with rl.algorithm ppo (the default): TRL's GRPO and RLOO only
    "rl.vllm_gpu_memory_utilization": ["0.5"],  # with rl.vllm none (the default): colocate only
    "rl.vllm_server_url": ["http://localhost:8000"],  # with rl.vllm none (the default): server only
    "rl.dpo_beta": ["0", "-0.1"],
    "rl.dpo_min_gap": ["-0.1", ".nan"],
    "eval_pred.num_runs": ["0"],
    "eval_pred.temperature": ["0"],
    "eval_pred.top_p": ["0", "1.01"],
    "eval_pred.top_k": ["-5"],
    "eval_pred.max_new_tokens": ["0", "-1"],
    "eval_pred.batch_size": ["0"],
    "eval_rewarding.combined[*].weights": [".nan", "0"],
    "eval_rewarding.combined[*].reward_clip": ["0", "-1"],
    "eval_rewarding.combined[*].missing_eos_penalty": [".inf"],
    "eval_rewarding.n_boot": ["0"],
    "sweep.weights[*]": ["1.5", "-0.1"],
    "sweep.weights": ["[0.5, 0.5]", "[]"],
    "sweep.seeds": ["[]", "[1, 2, 1]"],
    "bon.samples": ["1"],
    "bon.batch_size": ["0"],
    "bon.weights[*]": [".nan"],
    "bon.weights": ["[]", "[0.5, 0.5]"],
    "bon.n_boot": ["0"],
    "bon.strategies": ["[conservative]", "[sum, sum]"],
    "bon.preference_source": ["preferense", "absolute_rm"],  # with two bon.rewards sources (see _override)
    "bon.absolute_source": ["absolut"],
    "serve.port": ["-1", "70000"],
    "serve.batch_size": ["0"],
    "serve.max_items": ["0"],
    "serve.max_request_mb": ["0", "5000"],
    "serve.eos_texts": ["[]", "['']"],
    "sweep.arms": ["[{name: a}, {name: a}]", "[{name: a/b}]", "[{name: ''}]"],
    "sweep.arms[*].weight": ["2", "-0.5"],
    "sweep.arms[*].set": ["{run.seed: 3}", "{run.output_dir: elsewhere}"],
    "sweep.jobs": ["0"],
    "sweep.n_boot": ["0"],
    "rl.init_adapter": ["outputs/rl_crs"],  # with full fine-tuning (see _overrides)
    "online.rounds": ["0"],
    "online.rl_steps": ["0"],
    "online.prompts_per_round": ["0"],
    "online.replies_per_prompt": ["1"],
    "online.probe_prompts": ["-1"],
    "online.ranking_noise": ["-0.1"],
    "online.label_wait_minutes": ["-1"],
    "online.rm_epochs": ["0"],
    "online.replay_ratio": ["-0.5"],
    "online.n_boot": ["0"],
    "eval_rewarding.judge": ["gpt4", "annotations.txt"],
    "eval_rewarding.batch_size": ["0"],
}


# Rules that hold for one algorithm only: the bad value is given with that algorithm.
_WITH_ALGORITHM = {"rl.group_size": "grpo", "rl.reward_normalization": "rloo", "rl.adaptive_kl": "grpo"}


def _overrides(key: str, value: str) -> list[str]:
    if key == "rl.init_adapter":
        return ["model.lora.enabled=false", f"{key}={value}"]
    if key == "rm.init_from":
        return ["rm.loss=disentangled", f"{key}={value}"]
    return [_override(key, value)]


def _override(key: str, value: str) -> str:
    if key in _WITH_ALGORITHM:
        return f"rl={{algorithm: {_WITH_ALGORITHM[key]}, {key.split('.')[1]}: {value}}}"
    if ".rewards[*]." in key:
        rewards, field = key.split("[*].")
        return f"{rewards}=[{{name: a, path: gold, {field}: {value}}}]"
    if key in ("sweep.weights[*]", "bon.weights[*]"):
        return f"{key[:-3]}=[{value}]"
    if key in ("bon.preference_source", "bon.absolute_source"):
        return (
            f"bon={{rewards: [{{name: preference, path: gold}}, {{name: absolute, path: gold}}], "
            f"{key.split('.')[1]}: {value}}}"
        )
    if key.startswith("sweep.arms[*]."):
        return f"sweep.arms=[{{name: a, {key.rsplit('.', 1)[1]}: {value}}}]"
    if key.startswith("eval_rewarding.combined[*]."):
        field = key.rsplit(".", 1)[1]
        combined = (
            f"{{name: c, weights: {{a: {value}}}}}"
            if field == "weights"
            else f"{{name: c, weights: {{a: 1}}, {field}: {value}}}"
        )
        return f"eval_rewarding={{rewards: [{{name: a, path: gold}}], combined: [{combined}]}}"
    return f"{key}={value}"


def _named(key: str) -> str:
    return (
        key.replace("rewards[*]", "rewards[0]")
        .replace("arms[*]", "arms[0]")
        .replace("combined[*]", "combined[0]")
        .replace("weights[*]", "weights[0]")
    )


@pytest.mark.parametrize("key, value", [(k, v) for k, values in BAD_VALUES.items() for v in values])
def test_a_value_that_makes_no_sense_is_refused_naming_key_and_range(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("sft", overrides=_overrides(key, value))
    message = str(caught.value)
    assert message.startswith(f"{_named(key)}=") and ": must be " in message
    assert "\n" not in message


def test_every_rule_has_a_bad_value_here() -> None:
    assert sorted(path for path, _ in crs.config.value_rules()) == sorted(BAD_VALUES)


def test_every_bad_value_is_named_in_one_message() -> None:
    overrides = ["run.logging_steps=0", "rl.rewards=[{name: a, path: gold, weight: .inf}]", "sweep.weights=[0.5, 2]"]
    with pytest.raises(ConfigError) as caught:
        load_config("sft", overrides=overrides)
    assert str(caught.value) == (
        "run.logging_steps=0: must be an integer >= 1; "
        "rl.rewards[0].weight=inf: must be a finite number (0: the source is not loaded; negative: subtracted); "
        "sweep.weights[1]=2.0: must be in [0, 1] (the preference source's weight; the absolute source gets 1 - w)"
    )


def test_conditional_rules_accept_what_makes_sense() -> None:
    cfg = load_config("sft", overrides=["train.num_epochs=0", "train.max_steps=5", "data.max_length=129"])
    assert cfg.train.max_steps == 5
    load_config("sft", overrides=["rl.rewards=[{name: a, path: gold, weight: 0}]", "rl.reward_clip=null"])


def test_a_bon_source_name_that_names_no_source_is_refused_naming_the_sources_there_are() -> None:
    rewards = "bon.rewards=[{name: pref_rm, path: gold}, {name: abs_rm, path: gold}]"
    with pytest.raises(ConfigError) as caught:
        load_config(
            "sft", overrides=[rewards, "bon.absolute_source=abs_rm"]
        )  # bon.preference_source left at its default
    assert str(caught.value) == (
        "bon.preference_source='preference': must be one of the bon.rewards names (pref_rm, abs_rm); "
        "the weight grid needs both"
    )
    cfg = load_config("sft", overrides=[rewards, "bon.preference_source=pref_rm", "bon.absolute_source=abs_rm"])
    assert (cfg.bon.preference_source, cfg.bon.absolute_source) == ("pref_rm", "abs_rm")
    load_config("sft", overrides=["bon.rewards=[{name: rm, path: gold}]"])  # one source alone: no weight grid to name


def test_a_duplicate_subset_or_key_is_refused_naming_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "default:\n  run: {seed: 1}\nsft:\n  run: {name: a}\nrm:\n  run: {name: b}\nsft:\n  run: {name: c}\n"
    )
    with pytest.raises(ConfigError, match=r"config.yaml, line 7: duplicate subset 'sft' \(first at line 3\)"):
        load_config("sft", path)
    path.write_text("default: {}\nsft:\n  train:\n    batch_size: 4\n    batch_size: 8\n")
    with pytest.raises(ConfigError, match=r"line 5: duplicate key 'sft.train.batch_size' \(first at line 4\)"):
        load_config("sft", path)


def test_the_shipped_config_loads_with_every_subset() -> None:
    subsets = [s for s in yaml.safe_load(DEFAULT_CONFIG_PATH.read_text()) if s != "default"]
    assert len(subsets) >= 8
    for subset in subsets:
        load_config(subset)
    assert load_config("rl_crs").rl.rewards[0].weight == 0.5  # a merge key (<<) is no duplicate


# --------------------------------------------------------------------------- 2. bad data said out loud


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_rankings_without_a_preference_are_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    path = write_jsonl(
        tmp_path / "prefs.jsonl",
        [
            {"prompt": "a", "chosen": "yes", "rejected": "no"},
            {"prompt": "b", "chosen": "same", "rejected": "same"},
            {"prompt": "c", "replies": ["x", "x", "x"]},
            {"prompt": "d", "replies": ["x", "x", "y"]},  # still orders x above y: kept
        ],
    )
    with caplog.at_level(logging.WARNING, logger="crs.data"):
        train, _ = load_examples(DataConfig(source=str(path), val_fraction=0.0), "ranking", seed=0)
    assert [e.prompt[-1]["content"] for e in train] == ["a", "d"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("prefs.jsonl: skipped 2 ranking rows whose replies are all identical" in w for w in warnings), warnings


def test_prompt_ids_shared_by_different_prompts_are_a_warning(tmp_path: Path, caplog) -> None:
    rows = [{"prompt": f"question {i}", "id": "q1" if i < 3 else f"q{i}"} for i in range(5)]
    rows.append({"prompt": "question 4", "id": "q4"})  # the same prompt twice: a plain repeat
    path = write_jsonl(tmp_path / "prompts.jsonl", rows)
    with caplog.at_level(logging.INFO, logger="crs.data"):
        train, _ = load_examples(DataConfig(source=str(path), val_fraction=0.0), "prompts", seed=0)
    assert [e.id for e in train] == ["q1", "q3", "q4"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "prompts.jsonl: 2 prompts dropped: their id is already used by a different prompt" in w and "'q1'" in w
        for w in warnings
    ), warnings
    assert not any("repeated" in w for w in warnings)  # the repeat itself is counted, not warned about


# --------------------------------------------------------------------------- 3. one line, not a traceback


def _stage_argv(tmp_path: Path, *overrides: str) -> list[str]:
    argv = ["--config_subset", "sft", "--set", f"run.output_dir={tmp_path / 'out'}"]
    for item in overrides:
        argv += ["--set", item]
    return argv


def _exit_line(capsys, main_fn, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as caught:
        run_stage(main_fn, "test", argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _bad_data_file(tmp_path: Path, kind: str) -> Path:
    if kind == "latin-1":
        path = tmp_path / "data.jsonl"
        path.write_bytes(b'{"prompt": "ok", "reply": "ok"}\n{"prompt": "caf\xe9", "reply": "x"}\n')
    elif kind == "not-gzip":
        path = tmp_path / "data.jsonl.gz"
        path.write_text('{"prompt": "a", "reply": "b"}\n')
    elif kind == "truncated-gzip":
        path = tmp_path / "data.jsonl.gz"
        path.write_bytes(gzip.compress(b'{"prompt": "a", "reply": "b"}\n' * 50)[:40])
    else:
        path = tmp_path / "data.csv"
        path.write_bytes(b"prompt,reply\n\xff\xfe,x\n")
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("latin-1", "data.jsonl, line 2: not UTF-8 text"),
        ("csv-latin-1", "data.csv, line 2: not UTF-8 text"),
        ("not-gzip", "data.jsonl.gz: not a gzip file"),
        ("truncated-gzip", "data.jsonl.gz: not a gzip file"),
    ],
)
def test_unreadable_data_files_end_in_one_line(tmp_path: Path, capsys, kind: str, message: str) -> None:
    path = _bad_data_file(tmp_path, kind)

    def main(cfg, run_dir, resume):
        load_examples(cfg.data, "sft", cfg.run.seed)

    line = _exit_line(capsys, main, _stage_argv(tmp_path, f"data.source={path}", "data.adapter=canonical"))
    assert message in line


def _fake_run(folder: Path, manifest: str | None, kind: str = "causal_lm", adapter: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "run_state.json").write_text('{"status": "finished"}')
    if manifest == "valid":
        manifest = json.dumps(
            {"base": "embedded:smollm2-135m-instruct", "adapter": "adapter", "kind": kind, "full_model": False}
        )
    if manifest is not None:
        (folder / "crs_model.json").write_text(manifest)
    if adapter:
        (folder / "adapter").mkdir()
    return folder


@pytest.mark.parametrize(
    "case, message",
    [
        ("not-a-model", "is a directory but neither a model"),
        ("unfinished-run", "has not saved its model yet"),
        ("corrupt-manifest", "crs_model.json is not valid JSON"),
        ("manifest-without-base", "crs_model.json lacks 'base'"),
        ("no-adapter", "adapter is missing"),
        ("reward-model-as-policy", "is a reward model (rm_train.py), not a causal LM"),
        ("causal-lm-as-reward", "is a causal LM (sft_train.py / rl_train.py), not a reward model"),
        ("causal-lm-as-critic", "is a causal LM (sft_train.py / rl_train.py), not a reward model"),
        ("joint-rm-as-critic", "is a reward model with 2 output(s), not 1"),
        ("corrupt-rm-format", "rm_format.json is not valid JSON"),
        ("rm-format-unknown-key", "rm_format.json does not describe an RM format"),
        ("corrupt-reward-stats", "reward_stats.json is not a JSON object"),
    ],
)
def test_model_paths_that_cannot_work_end_in_one_line(tmp_path: Path, capsys, case: str, message: str) -> None:
    from crs.models.loading import load_causal_lm, load_tokenizer
    from crs.rm.scorer import load_reward_scorers

    folder = tmp_path / "model"
    if case == "not-a-model":
        folder.mkdir()
        (folder / "notes.txt").write_text("not a model")
    elif case == "unfinished-run":
        folder.mkdir()
        (folder / "run_state.json").write_text('{"status": "running"}')
    elif case == "corrupt-manifest":
        _fake_run(folder, '{"base": "embedded:smollm2')
    elif case == "manifest-without-base":
        _fake_run(folder, '{"adapter": "adapter"}')
    elif case == "no-adapter":
        _fake_run(folder, "valid", adapter=False)
    elif case == "reward-model-as-policy":
        _fake_run(folder, "valid", kind="reward_model")
    elif case == "joint-rm-as-critic":
        manifest = {
            "base": "embedded:smollm2-135m-instruct",
            "adapter": "adapter",
            "kind": "reward_model",
            "full_model": False,
            "num_labels": 2,
        }
        _fake_run(folder, json.dumps(manifest), kind="reward_model")
    elif case in ("corrupt-rm-format", "rm-format-unknown-key", "corrupt-reward-stats"):
        _fake_run(folder, "valid", kind="reward_model")
        (folder / "rm_format.json").write_text(
            {"corrupt-rm-format": '{"max_length": ', "rm-format-unknown-key": '{"max_lenght": 256}'}.get(case, "{}")
        )
        if case == "corrupt-reward-stats":
            (folder / "reward_stats.json").write_text("[1, 2]")
    else:
        _fake_run(folder, "valid", kind="causal_lm")

    def main(cfg, run_dir, resume):
        if case in ("causal-lm-as-reward", "corrupt-rm-format", "rm-format-unknown-key", "corrupt-reward-stats"):
            load_reward_scorers([cfg.model.name])
        elif case in ("causal-lm-as-critic", "joint-rm-as-critic"):
            from dataclasses import replace

            from crs.rl.ppo.stage import build_models

            build_models(replace(cfg, rl=replace(cfg.rl, value_model=str(folder))))
        elif case == "reward-model-as-policy":
            load_causal_lm(cfg.model.name, cfg.model)
        else:
            load_tokenizer(cfg.model.name)

    line = _exit_line(capsys, main, _stage_argv(tmp_path, f"model.name={folder}"))
    assert message in line and str(folder) in line


def test_a_reward_module_with_a_syntax_error_ends_in_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    from crs.rl.reward_sources import import_callable

    (tmp_path / "broken_reward_mod.py").write_text("def score(prompts, replies):\n    return [1.0 for r in replies\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def main(cfg, run_dir, resume):
        import_callable("python:broken_reward_mod:score")

    line = _exit_line(capsys, main, _stage_argv(tmp_path))
    assert (
        "python:broken_reward_mod:score" in line and "broken_reward_mod.py, line 2" in line and "syntax error" in line
    )


def _score_argv(tmp_path: Path, predictions: Path, *overrides: str) -> list[str]:
    return [
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
        "eval_rewarding.judge=none",
        "--set",
        "eval_rewarding.n_boot=20",
        *[x for item in overrides for x in ("--set", item)],
    ]


def test_predictions_with_no_prompt_in_common_end_in_one_line(tmp_path: Path, capsys) -> None:
    from crs.eval.score import score_predictions

    predictions = write_prediction_run(tmp_path / "pred", {"a": ["p1", "p2"], "b": ["p3", "p4"]})
    line = _exit_line(capsys, score_predictions, _score_argv(tmp_path, predictions, "eval_rewarding.reference_model=a"))
    assert "no prompt in common" in line and str(predictions) in line


# --------------------------------------------------------------------------- 4. run_state.json after a stop


@pytest.mark.parametrize(
    "error, status, exit_code",
    [
        (ConfigError("rl.policy: bad"), "failed", 2),
        (RuntimeError("CUDA out of memory"), "failed", None),
        (KeyboardInterrupt(), "interrupted", None),
    ],
)
def test_a_stopped_stage_is_marked_and_its_rerun_needs_no_flag(
    tmp_path: Path, capsys, error, status, exit_code
) -> None:
    argv = _stage_argv(tmp_path)
    run_dir = tmp_path / "out" / "sft"

    def crashing(cfg, run_dir, resume):
        raise error

    expected = SystemExit if exit_code is not None else type(error)
    with pytest.raises(expected) as caught:
        run_stage(crashing, "test", argv)
    if exit_code is not None:
        assert caught.value.code == exit_code
    state = run_state(run_dir)
    assert state["status"] == status
    assert (str(error) if status == "failed" else "interrupted") in state["error"]

    seen = []

    def fixed(cfg, run_dir, resume):
        seen.append(resume)
        mark_finished(run_dir)

    run_stage(fixed, "test", argv)  # the run never trained: no --resume / --overwrite needed
    assert seen == [False] and run_state(run_dir)["status"] == "finished"
    assert "error" not in run_state(run_dir)


def test_sigterm_marks_the_run_interrupted_and_exits_in_one_line(tmp_path: Path, capsys) -> None:
    import os
    import signal
    import time

    def terminated(cfg, run_dir, resume):
        os.kill(os.getpid(), signal.SIGTERM)  # what torchrun or a scheduler sends
        time.sleep(5)

    def unhandled(signum, frame):  # stands in for the default action, which would end pytest
        raise AssertionError("SIGTERM reached the handler outside run_stage")

    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        with pytest.raises(SystemExit) as caught:
            run_stage(terminated, "test", _stage_argv(tmp_path))
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the handler is put back
    finally:
        signal.signal(signal.SIGTERM, before)
    assert caught.value.code == 128 + signal.SIGTERM
    assert "error: terminated (SIGTERM)" in capsys.readouterr().err
    assert run_state(tmp_path / "out" / "sft")["status"] == "interrupted"


def test_a_run_that_trained_still_needs_resume_or_overwrite(tmp_path: Path, capsys) -> None:
    argv = _stage_argv(tmp_path)
    run_dir = tmp_path / "out" / "sft"

    def crashing_after_a_step(cfg, run_dir, resume):
        (run_dir / "train_log.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_stage(crashing_after_a_step, "test", argv)
    line = _exit_line(capsys, lambda *a: None, argv)
    assert "unfinished run; pass --resume" in line
    assert (run_dir / "train_log.jsonl").read_text().startswith('{"step": 1')


# --------------------------------------------------------------------------- 5. evaluation


def test_missing_prediction_files_are_named_unless_allowed(tmp_path: Path, capsys) -> None:
    from crs.eval.score import score_predictions

    predictions = write_prediction_run(
        tmp_path / "pred", {"a": ["p1", "p2"], "c": ["p1", "p2"]}, listed=["a", "b", "c", "d"]
    )
    line = _exit_line(capsys, score_predictions, _score_argv(tmp_path, predictions, "eval_rewarding.reference_model=a"))
    assert "missing the predictions of b, d" in line and "allow_missing_models" in line

    run_stage(
        score_predictions,
        "test",
        _score_argv(
            tmp_path,
            predictions,
            "eval_rewarding.reference_model=a",
            "eval_rewarding.allow_missing_models=true",
            "run.name=allowed",
        ),
    )
    results = json.loads((tmp_path / "out" / "allowed" / "results.json").read_text())
    assert results["models"] == ["a", "c"]


def test_an_unknown_reference_model_is_a_config_error(tmp_path: Path, capsys) -> None:
    from crs.eval.score import score_predictions

    predictions = write_prediction_run(tmp_path / "pred", {"a": ["p1"], "b": ["p1"]}, listed=["a", "b"])
    line = _exit_line(
        capsys, score_predictions, _score_argv(tmp_path, predictions, "eval_rewarding.reference_model=sft")
    )
    assert "eval_rewarding.reference_model 'sft'" in line and "a, b" in line
