"""The weight x seed study on tiny models: every run trained once, resumable, a complete report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny import tiny_causal_lm

from crs.cli import run_stage
from crs.eval.power import power_line
from crs.runs import run_state
from crs.study.stage_commands import cores_share_env
from crs.study.sweep import run_sweep


@pytest.fixture()
def sweep_config(tmp_path: Path, smol_tokenizer) -> Path:
    model = tmp_path / "tiny"
    tiny_causal_lm(smol_tokenizer, seed=0).save_pretrained(model)
    smol_tokenizer.save_pretrained(model)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": f"Say {i % 4 + 1} words about topic {i}.", "id": f"p{i}"}) + "\n" for i in range(12)
        )
    )
    rewards = [
        {"name": "length", "path": "python:tests.reward_fns:reply_length", "weight": 0.5, "normalize": "zscore"},
        {"name": "vowels", "path": "python:tests.reward_fns:count_vowels", "weight": 0.5, "normalize": "zscore"},
    ]
    config = {
        "default": {
            "run": {"output_dir": str(tmp_path / "out"), "logging_steps": 1},
            "model": {"name": str(model), "dtype": "fp32", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
            "data": {"source": str(prompts), "max_prompt_length": 32, "val_fraction": 0.34},
        },
        "rl_tiny": {
            "run": {"name": "rl"},
            "rl": {
                "rewards": rewards,
                "steps": 2,
                "batch_size": 4,
                "mini_batch_size": 4,
                "ppo_epochs": 1,
                "max_new_tokens": 5,
                "save_steps": 2,
                "sample_every": 1,
                "num_sample_prompts": 1,
                "eval_prompts": 4,
                "judge": "python:tests.reward_fns:count_vowels",
                "learning_rate": 1e-3,
            },
        },
        "pred": {"eval_pred": {"max_new_tokens": 5, "batch_size": 8}},
        "sweep_tiny": {
            "run": {"name": "sweep"},
            "sweep": {
                "base_subset": "rl_tiny",
                "preference_source": "length",
                "absolute_source": "vowels",
                "weights": [0.0, 1.0],
                "seeds": [1, 2],
                "eval_subset": "pred",
                "reference": {"name": "base", "path": str(model)},
                "judge": "python:tests.reward_fns:count_vowels",
                "rewards": [{"name": "length_rm", "path": "python:tests.reward_fns:reply_length"}],
                "n_boot": 50,
            },
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_sweep_interrupted_and_resumed_redoes_no_finished_run(tmp_path: Path, sweep_config: Path) -> None:
    argv = ["--config", str(sweep_config), "--config_subset", "sweep_tiny"]
    run_stage(run_sweep, "sweep", argv)
    sweep_dir = tmp_path / "out" / "sweep"
    names = ["w0_s1", "w0_s2", "w1_s1", "w1_s2"]
    for name in names:
        assert run_state(sweep_dir / "runs" / name)["status"] == "finished"
    trained = {name: (sweep_dir / "runs" / name / "metrics.jsonl").stat().st_mtime_ns for name in names}
    # Each run trained on its own weight: w=1 is all length, w=0 all vowels.
    config = yaml.safe_load((sweep_dir / "runs" / "w1_s2" / "config.resolved.yaml").read_text())
    run_cfg = config["rl_tiny"]
    assert {r["name"]: r["weight"] for r in run_cfg["rl"]["rewards"]} == {"length": 1.0, "vowels": 0.0}
    assert run_cfg["run"]["seed"] == 2

    results = json.loads((sweep_dir / "results.json").read_text())
    judge = results["scorers"]["judge"]
    assert set(judge["win_rate"]) == {"0", "1"} and judge["win_rate"]["0"]["n_seeds"] == 2
    for entry in judge["win_rate"].values():
        assert entry["ci_low"] <= entry["mean"] <= entry["ci_high"]
    assert "slope" in judge and set(judge["each_vs_each"]["0"]) == {"1"}
    assert "length_rm" in results["scorers"] and results["n_prompts"] == 12
    report = (sweep_dir / "report.md").read_text()
    assert "## The answer" in report and "inverse relation" in report and "| 0 |" in report
    power = judge["power"]  # what these runs could have seen, from their own rounds
    assert power["standard_error"] >= 0 and power["minimum_detectable_difference"] >= 1.959964 * power["standard_error"]
    assert power_line(power, "these runs", "win rate between neighbouring weights") in report
    assert (sweep_dir / "sweep_curves.png").stat().st_size > 1000
    assert (sweep_dir / "sweep_overoptimization.png").stat().st_size > 1000

    # An interruption: one run stopped mid-way (unfinished), one model's predictions never written.
    state_file = sweep_dir / "runs" / "w1_s1" / "run_state.json"
    state = json.loads(state_file.read_text())
    state["status"] = "interrupted"
    state_file.write_text(json.dumps(state))
    (sweep_dir / "eval_pred" / "predictions" / "w0_s2.json").unlink()
    run_stage(run_sweep, "sweep", [*argv, "--resume"])
    for name in ("w0_s1", "w0_s2", "w1_s2"):
        assert (sweep_dir / "runs" / name / "metrics.jsonl").stat().st_mtime_ns == trained[name], name  # not retrained
    assert run_state(sweep_dir / "runs" / "w1_s1")["status"] == "finished"
    metrics = [json.loads(line) for line in (sweep_dir / "runs" / "w1_s1" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]  # resumed at its checkpoint, nothing logged twice
    assert (sweep_dir / "eval_pred" / "predictions" / "w0_s2.json").is_file()
    assert "training 1 of the 4 RL runs (the others finished earlier)" in (sweep_dir / "report.md").read_text()
    again = json.loads((sweep_dir / "results.json").read_text())
    assert again["scorers"]["judge"]["win_rate"].keys() == judge["win_rate"].keys()


def test_a_failed_rl_run_is_a_run_failure_not_bad_input(
    tmp_path: Path, sweep_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An RL run that exits non-zero stops the sweep with a RunError (a run that cannot go on), not a
    ConfigError: one line, exit code 2, the sweep marked failed (no training: every run "fails")."""
    import crs.study.sweep as sweep
    from crs.config import ConfigError, load_config
    from crs.runs import RunError

    monkeypatch.setattr(sweep, "run_logged", lambda command, log_path, env=None: 3)
    cfg = load_config("sweep_tiny", sweep_config)
    with pytest.raises(RunError, match=r"sweep: RL run w0_s1 failed \(exit 3\); see .*w0_s1\.log") as raised:
        sweep.train_runs(cfg, tmp_path / "direct", sweep.sweep_runs(cfg, cfg.sweep.weights))
    assert not isinstance(raised.value, ConfigError)
    with pytest.raises(SystemExit) as exited:
        run_stage(run_sweep, "sweep", ["--config", str(sweep_config), "--config_subset", "sweep_tiny"])
    assert exited.value.code == 2
    assert "error: sweep: RL run w0_s1 failed (exit 3)" in capsys.readouterr().err
    assert run_state(tmp_path / "out" / "sweep")["status"] == "failed"


def test_train_runs_trains_the_unfinished_runs_in_order_jobs_at_a_time(
    tmp_path: Path, sweep_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finished runs are skipped; the others start in order, sweep.jobs at once, each with its share of the
    cores; the wall times come back in the runs' order (no training: a fake run)."""
    import threading
    import time

    import crs.study.sweep as sweep
    from crs.config import load_config

    started, running, peak, lock = [], [0], [0], threading.Lock()

    def fake_run(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
        with lock:
            started.append((log_path.stem, dict(env or {})))
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05 if log_path.stem == "w0_s2" else 0.01)  # finishes after a run started later
        with lock:
            running[0] -= 1
        return 0

    monkeypatch.setattr(sweep, "run_logged", fake_run)
    cfg = load_config("sweep_tiny", sweep_config, ["sweep.jobs=2", "sweep.weights=[0.0, 0.5, 1.0]"])
    run_dir = tmp_path / "sweep"
    (run_dir / "runs" / "w0_s1").mkdir(parents=True)
    (run_dir / "runs" / "w0_s1" / "run_state.json").write_text(json.dumps({"status": "finished"}))
    times = sweep.train_runs(cfg, run_dir, sweep.sweep_runs(cfg, cfg.sweep.weights))
    names = ["w0_s2", "w0.5_s1", "w0.5_s2", "w1_s1", "w1_s2"]
    # Two runs launched together reach fake_run in the order the OS runs their threads.
    assert sorted(name for name, _ in started) == sorted(names) and list(times) == names
    assert peak[0] == 2
    assert all(env == cores_share_env(2) for _, env in started)

    started.clear()  # one at a time, the runs start in their order
    one = load_config("sweep_tiny", sweep_config, ["sweep.jobs=1", "sweep.weights=[0.0, 0.5, 1.0]"])
    sweep.train_runs(one, tmp_path / "one_at_a_time", sweep.sweep_runs(one, one.sweep.weights))
    assert [name for name, _ in started] == ["w0_s1", *names]


def test_runs_trained_side_by_side_each_get_a_gpu_of_their_own(
    tmp_path: Path, sweep_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a machine with 2 GPUs (faked), the 2 runs trained at once never share one; before, every run
    landed on cuda:0 (no fake run trains: only the environment each is started with is looked at)."""
    import threading
    import time

    import torch

    import crs.study.sweep as sweep
    from crs.config import load_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    held: list[str] = []
    overlaps: list[list[str]] = []
    lock = threading.Lock()

    def fake_run(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
        with lock:
            held.append((env or {}).get("CUDA_VISIBLE_DEVICES", "all"))
            overlaps.append(sorted(held))
        time.sleep(0.05)
        with lock:
            held.remove((env or {}).get("CUDA_VISIBLE_DEVICES", "all"))
        return 0

    monkeypatch.setattr(sweep, "run_logged", fake_run)
    cfg = load_config("sweep_tiny", sweep_config, ["sweep.jobs=2"])
    sweep.train_runs(cfg, tmp_path / "sweep", sweep.sweep_runs(cfg, cfg.sweep.weights))
    assert len(overlaps) == 4 and ["0", "1"] in overlaps  # two at once, on two GPUs
    assert all(len(set(running)) == len(running) and set(running) <= {"0", "1"} for running in overlaps)


def test_the_jobs_flag_sets_sweep_jobs(tmp_path: Path, sweep_config: Path) -> None:
    from crs.cli import jobs_as_override
    from crs.config import load_config

    argv = jobs_as_override(["--config", str(sweep_config), "--config_subset", "sweep_tiny", "--jobs", "2"])
    assert argv[-2:] == ["--set", "sweep.jobs=2"]
    assert jobs_as_override(["--jobs=3"]) == ["--set", "sweep.jobs=3"]
    assert load_config("sweep_tiny", sweep_config, ["sweep.jobs=2"]).sweep.jobs == 2


def test_a_sweep_over_a_conservative_reward_is_refused(sweep_config: Path) -> None:
    from crs.config import ConfigError, load_config
    from crs.study.sweep import weighted_rewards

    cfg = load_config("sweep_tiny", sweep_config)
    base = load_config("rl_tiny", sweep_config, ["rl.combine=conservative"])
    with pytest.raises(ConfigError, match="rl.combine=conservative, which ignores the weights"):
        weighted_rewards(base.rl, cfg, 0.5)
    assert [r["weight"] for r in weighted_rewards(load_config("rl_tiny", sweep_config).rl, cfg, 0.25)] == [0.25, 0.75]


ARMS = [
    {"name": "length_only", "weight": 1.0},
    {
        "name": "cautious",
        "set": {"rl.combine": "conservative", "rl.conservative": "mean_std", "rl.conservative_k": 0.5},
    },
]


def test_a_strategy_comparison_trains_every_arm_at_every_seed_and_says_which_wins(
    tmp_path: Path, sweep_config: Path
) -> None:
    arms = json.dumps(ARMS)
    argv = [
        "--config",
        str(sweep_config),
        "--config_subset",
        "sweep_tiny",
        "--set",
        f"sweep.arms={arms}",
        "--set",
        "sweep.weights=[]",
    ]
    run_stage(run_sweep, "sweep", argv)
    sweep_dir = tmp_path / "out" / "sweep"
    assert sorted(p.name for p in (sweep_dir / "runs").iterdir()) == [
        "cautious_s1",
        "cautious_s2",
        "length_only_s1",
        "length_only_s2",
    ]
    length_only = yaml.safe_load((sweep_dir / "runs" / "length_only_s2" / "config.resolved.yaml").read_text())[
        "rl_tiny"
    ]
    assert {r["name"]: r["weight"] for r in length_only["rl"]["rewards"]} == {"length": 1.0, "vowels": 0.0}
    assert length_only["rl"]["combine"] == "sum" and length_only["run"]["seed"] == 2
    cautious = yaml.safe_load((sweep_dir / "runs" / "cautious_s1" / "config.resolved.yaml").read_text())["rl_tiny"][
        "rl"
    ]
    assert (cautious["combine"], cautious["conservative"], cautious["conservative_k"]) == (
        "conservative",
        "mean_std",
        0.5,
    )
    assert {r["name"]: r["weight"] for r in cautious["rewards"]} == {"length": 0.5, "vowels": 0.5}  # the subset's own

    results = json.loads((sweep_dir / "results.json").read_text())
    assert results["labels"] == ["length_only", "cautious"] and "weights" not in results
    assert results["arms"] == {
        "length_only": "sum: 1 x length",
        "cautious": "conservative (mean - 0.5 x std): of length, vowels",
    }
    judge = results["scorers"]["judge"]
    assert judge["win_rate"]["cautious"]["n_seeds"] == 2 and "slope" not in judge and "power" in judge
    assert len(judge["per_seed"]["cautious"]) == 2
    assert sum(judge["per_seed"]["cautious"]) / 2 == pytest.approx(
        judge["win_rate"]["cautious"]["mean"]
    )  # same prompts per seed
    head = judge["each_vs_each"]["cautious"]["length_only"]
    assert head["ci_low"] <= head["mean"] <= head["ci_high"]
    report = (sweep_dir / "report.md").read_text()
    assert report.startswith("# Strategy comparison") and "| cautious | conservative (mean - 0.5 x std)" in report
    assert "training 4 of the 4 RL runs" in report and "| per seed % |" in report
    assert "has the highest win rate against the reference" in report and "Each arm against each other" in report
    assert (sweep_dir / "sweep_curves.png").stat().st_size > 1000


def test_bad_arms_are_refused_before_anything_trains(tmp_path: Path, sweep_config: Path) -> None:
    from crs.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="arms with distinct names"):
        load_config("sweep_tiny", sweep_config, ["sweep.arms=[{name: a}, {name: a}]"])
    with pytest.raises(ConfigError, match="arms with distinct names"):
        load_config("sweep_tiny", sweep_config, ["sweep.arms=[{name: a/b}]"])
    with pytest.raises(ConfigError, match=r"sweep.arms\[0\].weight=2.0: must be null or in \[0, 1\]"):
        load_config("sweep_tiny", sweep_config, ["sweep.arms=[{name: a, weight: 2}]"])
    with pytest.raises(
        ConfigError, match=r"sweep.arms\[0\].set=.*must be overrides other than run.name, run.output_dir, run.seed"
    ):
        load_config("sweep_tiny", sweep_config, ["sweep.arms=[{name: a, set: {run.seed: 3}}]"])
    weighted_conservative = "[{name: c, weight: 0.5, set: {rl.combine: conservative}}]"
    cfg = load_config("sweep_tiny", sweep_config, [f"sweep.arms={weighted_conservative}"])
    with pytest.raises(
        ConfigError, match=r"sweep.arms \(c\): sweep: a weight for an RL subset with rl.combine=conservative"
    ):
        run_sweep(cfg, tmp_path / "out" / "sweep", resume=False)
    cfg = load_config("sweep_tiny", sweep_config, ["sweep.arms=[{name: typo, set: {rl.combin: sum}}]"])
    with pytest.raises(
        ConfigError, match=r"sweep.arms \(typo\): unknown config key 'rl.combin'; did you mean 'rl.combine'"
    ):
        run_sweep(cfg, tmp_path / "out" / "sweep", resume=False)
    assert not (tmp_path / "out" / "sweep" / "runs").exists()


def test_the_sweeps_judge_is_decided_before_anything_trains(tmp_path: Path, sweep_config: Path, caplog) -> None:
    from crs.config import ConfigError, load_config
    from crs.eval.score import study_judge

    cfg = load_config("sweep_tiny", sweep_config)  # its prompts ("Say N words about topic i.") are not the demo's
    with caplog.at_level("WARNING"):
        assert (
            study_judge(cfg, "sweep.judge", "auto", "pred", cfg.sweep.rewards) == "python:tests.reward_fns:reply_length"
        )
    assert "sweep.judge auto -> none" in caplog.text and "the first reward model (length_rm) judges" in caplog.text
    with pytest.raises(ConfigError, match="sweep.judge: no judge for these prompts"):
        study_judge(cfg, "sweep.judge", "auto", "pred", [])
    cfg.sweep.judge = "gold"
    with pytest.raises(ConfigError, match="sweep.judge: gold is the demo annotator's rule set"):
        run_sweep(cfg, tmp_path / "out" / "sweep", resume=False)
    assert not (tmp_path / "out" / "sweep" / "runs").exists()  # refused before any RL run


def test_best_of_n_first_picks_the_rl_weights_and_sits_beside_rl(tmp_path: Path, sweep_config: Path) -> None:
    """sweep.bon_subset: the pool and the best-of-n study run first (as crs stages), and with
    sweep.weights [] RL trains at the best-of-n optimum and both ends of its grid."""
    from crs.config import load_config
    from crs.study.sweep import best_of_n_first, rl_weights, side_by_side

    config = yaml.safe_load(sweep_config.read_text())
    model = config["default"]["model"]["name"]
    config["pool_tiny"] = {
        "run": {"name": "pool"},
        "eval_pred": {"max_new_tokens": 5},
        "bon": {"policy": model, "samples": 4, "splits": [], "batch_size": 8},
    }
    config["bon_tiny"] = {
        "bon": {
            "pool": str(tmp_path / "out" / "pool"),
            "judge": "python:tests.reward_fns:vowel_share",
            "n_boot": 50,
            "weights": [0.0, 0.25, 0.5, 0.75, 1.0],
            "rewards": [
                {"name": "preference", "path": "python:tests.reward_fns:reply_length"},
                {"name": "absolute", "path": "python:tests.reward_fns:count_vowels"},
            ],
        }
    }
    config["sweep_tiny"]["sweep"].update(pool_subset="pool_tiny", bon_subset="bon_tiny", weights=[])
    sweep_config.write_text(yaml.safe_dump(config))
    cfg = load_config("sweep_tiny", sweep_config)
    run_dir = tmp_path / "out" / "sweep"
    bon = best_of_n_first(cfg, run_dir)
    assert (
        run_state(tmp_path / "out" / "pool")["status"] == "finished"
        and run_state(run_dir / "bon")["status"] == "finished"
    )
    best = bon["weights"]["best"]["weight"]
    assert rl_weights(cfg, bon) == sorted({0.0, best, 1.0})
    assert best_of_n_first(cfg, run_dir) == bon  # both finished: skipped, the same results read back
    # Beside RL: fake RL win rates that order the weights the other way round.
    ws = rl_weights(cfg, bon)
    rl = {
        "weights": ws,
        "scorers": {"judge": {"win_rate": {f"{w:g}": {"mean": 1 - w / 2, "ci_low": 0.0, "ci_high": 1.0} for w in ws}}},
    }
    table = side_by_side(bon, rl)
    assert set(table["rows"]) == {f"{w:g}" for w in ws} and table["pairs"] == len(ws) * (len(ws) - 1) // 2
    with pytest.raises(Exception, match="sweep.weights=\\[\\]: must be"):
        load_config("sweep_tiny", sweep_config, overrides=["sweep.bon_subset=null"])


def test_the_demos_strategy_comparisons_resolve_every_arm() -> None:
    from crs.config import load_config
    from crs.study.sweep import check_runs, sweep_runs

    cfg = load_config("strategies_facets")
    runs = sweep_runs(cfg, cfg.sweep.weights)
    assert [r.name for r in runs][:2] == ["sum_w0.125_s1", "sum_w0.125_s2"] and len(runs) == 6
    described = check_runs(cfg, runs)
    assert described["sum_w0.125"] == "sum: 0.125 x preference + 0.875 x absolute"
    assert (
        described["conservative_min"] == "conservative (min): of preference, absolute, absolute_then_preference, joint"
    )
    assert (
        check_runs(load_config("strategies_crs"), sweep_runs(load_config("strategies_crs"), []))["conservative"]
        == "conservative (min): of preference, absolute"
    )


def test_the_length_comparisons_arms_say_which_source_reads_where_and_which_is_calibrated() -> None:
    """length_ppo's arms share source names: the report tells them apart by path and calibration."""
    from crs.config import load_config
    from crs.study.sweep import check_runs, sweep_runs

    cfg = load_config("length_ppo")
    described = check_runs(cfg, sweep_runs(cfg, []))
    assert described == {
        "plain": "sum: 0.5 x preference (outputs/rm_preference) + 0.5 x absolute",
        "calibrated": "sum: 0.5 x preference (outputs/rm_preference, length-calibrated)"
        " + 0.5 x absolute (length-calibrated)",
        "disentangled": "sum: 0.5 x preference (outputs/rm_disentangled) + 0.5 x absolute (length-calibrated)",
    }
