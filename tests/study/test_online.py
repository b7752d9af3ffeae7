"""Iterated online RLHF on tiny models: rounds, resume mid-round, refreshed RMs, label files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from paths import ROOT
from tiny import tiny_causal_lm, tiny_sequence_classifier

import crs.study.online as online
from crs.cli import run_stage
from crs.config import CRSConfig, load_config
from crs.data.schema import DataError
from crs.io import read_jsonl
from crs.rm.training import train_reward_model
from crs.runs import RunError, run_state

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

WORDS = "apple river stone cloud green light quick table music paper".split()


def _rankings(n: int) -> list[dict]:
    return [
        {
            "prompt": f"Say {i % 4 + 1} words about topic {i}.",
            "replies": [f"{WORDS[i % 10]} excellent answer", WORDS[(i + 3) % 10]],
        }
        for i in range(n)
    ]


def _scores(n: int) -> list[dict]:
    return [
        {
            "prompt": f"Say {i % 4 + 1} words about topic {i}.",
            "reply": f"{WORDS[i % 10]} excellent" if i % 2 else WORDS[i % 10],
            "score": 0.9 if i % 2 else 0.2,
        }
        for i in range(n)
    ]


@pytest.fixture()
def online_config(tmp_path: Path, smol_tokenizer) -> Path:
    """A config whose RL subset rewards two tiny LoRA RMs (trained here as round 0's) and whose loop has 2 rounds."""
    policy, rm_base = tmp_path / "tiny_lm", tmp_path / "tiny_rm"
    tiny_causal_lm(smol_tokenizer, seed=0).save_pretrained(policy)
    tiny_sequence_classifier(smol_tokenizer, seed=0).save_pretrained(rm_base)
    for folder in (policy, rm_base):
        smol_tokenizer.save_pretrained(folder)
    prompts, rankings, scores = tmp_path / "prompts.jsonl", tmp_path / "rankings.jsonl", tmp_path / "scores.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": f"Tell me {i % 3 + 1} facts about item {i}.", "id": f"p{i}"}) + "\n"
            for i in range(16)
        )
    )
    rankings.write_text("".join(json.dumps(r) + "\n" for r in _rankings(24)))
    scores.write_text("".join(json.dumps(r) + "\n" for r in _scores(24)))
    out = tmp_path / "out"
    rm_common = {
        "model": {"name": str(rm_base), "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}},
        "train": {
            "max_steps": 3,
            "batch_size": 4,
            "eval_batch_size": 8,
            "eval_steps": 100,
            "save_steps": 100,
            "warmup_ratio": 0.0,
            "learning_rate": 1e-3,
        },
    }
    config = {
        "default": {
            # The simulated annotator on prompts that are not the demo's: asked for knowingly
            # (the loop's mechanics are tested).
            "run": {"output_dir": str(out), "logging_steps": 1, "allow_gold_outside_demo": True},
            "model": {"name": str(policy), "dtype": "fp32", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
            "data": {"source": str(prompts), "max_prompt_length": 32, "max_length": 64, "val_fraction": 0.25},
        },
        "rm_pref": {
            **rm_common,
            "run": {"name": "rm_pref"},
            "data": {"source": str(rankings)},
            "rm": {"loss": "pairwise"},
        },
        "rm_abs": {**rm_common, "run": {"name": "rm_abs"}, "data": {"source": str(scores)}, "rm": {"loss": "absolute"}},
        "rl_tiny": {
            "run": {"name": "rl"},
            "rl": {
                "policy": str(policy),
                "rewards": [
                    {"name": "preference", "path": str(out / "rm_pref"), "weight": 0.5, "normalize": "zscore"},
                    {"name": "absolute", "path": str(out / "rm_abs"), "weight": 0.5, "normalize": "zscore"},
                ],
                "steps": 2,
                "batch_size": 4,
                "mini_batch_size": 4,
                "ppo_epochs": 1,
                "max_new_tokens": 5,
                "save_steps": 2,
                "sample_every": 0,
                "learning_rate": 1e-3,
            },
        },
        "pred": {"eval_pred": {"max_new_tokens": 5, "batch_size": 8}},
        "online_tiny": {
            "run": {"name": "online"},
            "online": {
                "base_subset": "rl_tiny",
                "preference_rm_subset": "rm_pref",
                "absolute_rm_subset": "rm_abs",
                "rounds": 2,
                "rl_steps": 2,
                "prompts_per_round": 3,
                "replies_per_prompt": 2,
                "probe_prompts": 2,
                "rm_epochs": 1,
                "replay_ratio": 1.0,
                "baseline": True,
                "baseline_split": "train",
                "eval_subset": "pred",
                "reference": {"name": "start", "path": str(policy)},
                "judge": "python:tests.reward_fns:count_vowels",
                "n_boot": 50,
            },
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    for subset in ("rm_pref", "rm_abs"):  # round 0's reward models
        cfg = load_config(subset, path)
        train_reward_model(cfg, cfg.run_dir)
    return path


@pytest.mark.slow
def test_a_two_round_loop_resumes_mid_round_and_refreshes_both_rms(
    tmp_path: Path, online_config: Path, monkeypatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the stages run as subprocesses
    argv = ["--config", str(online_config), "--config_subset", "online_tiny"]
    loop_dir = tmp_path / "out" / "online"
    real_train_rm = online.train_rm

    def stop_after_labels(*args, **kwargs):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C once round 1's replies were labelled

    monkeypatch.setattr(online, "train_rm", stop_after_labels)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        run_stage(online.run_online, "online", argv)
    assert run_state(loop_dir / "round_0" / "rl")["status"] == "finished"
    round0_trained = (loop_dir / "round_0" / "rl" / "metrics.jsonl").stat().st_mtime_ns
    labelled = (loop_dir / "round_1" / "labels" / "rankings.jsonl").read_text()

    monkeypatch.setattr(online, "train_rm", real_train_rm)
    run_stage(online.run_online, "online", [*argv, "--resume"])
    assert (loop_dir / "round_0" / "rl" / "metrics.jsonl").stat().st_mtime_ns == round0_trained  # round 0 not redone
    assert (loop_dir / "round_1" / "labels" / "rankings.jsonl").read_text() == labelled  # nor relabelled

    # The round-1 RMs trained on round 0's policy's replies (plus a replayed sample as large).
    asked = read_jsonl(loop_dir / "round_1" / "to_label.jsonl")
    policy_replies = {reply for row in asked for reply in row["replies"]}
    trained_on = read_jsonl(loop_dir / "round_1" / "rm_data" / "rankings.jsonl")
    assert len(trained_on) == 2 * len(asked) == 6
    assert sum(set(row["replies"]) <= policy_replies for row in trained_on) >= 3
    for kind in ("preference", "absolute"):
        rm_run = loop_dir / "round_1" / f"rm_{kind}"
        assert run_state(rm_run)["status"] == "finished"
        block = yaml.safe_load((rm_run / "config.resolved.yaml").read_text())[
            "rm_pref" if kind == "preference" else "rm_abs"
        ]
        assert block["model"]["name"] == str(
            tmp_path / "out" / ("rm_pref" if kind == "preference" else "rm_abs")
        )  # continued from round 0's
        # Statistics recomputed per round: the refreshed RM's differ from round 0's.
        stats = json.loads((rm_run / "reward_stats.json").read_text())
        original = json.loads((Path(block["model"]["name"]) / "reward_stats.json").read_text())
        assert stats["mean"] != original["mean"]

    # Round 1's RL continued round 0's adapter on the refreshed RMs.
    rl_cfg = yaml.safe_load((loop_dir / "round_1" / "rl" / "config.resolved.yaml").read_text())["rl_tiny"]["rl"]
    assert rl_cfg["init_adapter"] == str(loop_dir / "round_0" / "rl")
    # A fresh adapter starts as the reference (KL exactly 0 at step 1); round 1's starts where round 0 stopped.
    first_kl = [read_jsonl(loop_dir / f"round_{n}" / "rl" / "metrics.jsonl")[0]["kl/sequence"] for n in (0, 1)]
    assert first_kl[0] == 0.0 and first_kl[1] != 0.0
    assert {r["path"] for r in rl_cfg["rewards"]} == {
        str(loop_dir / "round_1" / "rm_preference"),
        str(loop_dir / "round_1" / "rm_absolute"),
    }

    results = json.loads((loop_dir / "results.json").read_text())
    assert [r["round"] for r in results["rounds"]] == [0, 1]
    assert results["rounds"][1]["labels"] == {"rankings": 3, "scores": 6}
    win = results["rounds"][1]["win_rate_vs_round_0"]
    assert win["ci_low"] <= win["mean"] <= win["ci_high"]
    assert set(results["rm_accuracy"]["preference"]["0"]) <= {"held_out", "next_policy"} and set(
        results["rm_pairs"]
    ) == {"held_out", "round 1 probe"}
    assert "own_policy" in results["rm_accuracy"]["absolute"]["1"]
    assert results["baseline"]["labels"]["rankings"] == 3
    report = (loop_dir / "report.md").read_text()
    assert "## Against the fair baseline" in report
    # The rounds, and the loop against the baseline: a detectable difference, or "cannot tell" where the
    # tiny models' interval has no width (a standard error of 0 is no power).
    assert (
        report.count("Power: these eval prompts tell apart differences of")
        + report.count("Power: these eval prompts cannot tell")
        == 2
    )
    assert "tell apart differences of 0.0 points" not in report
    # The fixture's RM files have one split, so the baseline drew prompts the RMs trained on: said so.
    assert results["baseline"]["labels"]["rankings_seen"] > 0
    assert "**Not a fair baseline:**" in (loop_dir / "report.md").read_text()


def test_adapter_weights_load_only_from_a_run_on_the_same_base(tmp_path: Path, smol_tokenizer) -> None:
    from crs.config import LoraConfig
    from crs.models.loading import load_causal_lm
    from crs.models.lora import add_lora, load_adapter_weights
    from crs.models.model_error import ModelError
    from crs.models.saving import save_run_model

    base_a, base_b = tmp_path / "a", tmp_path / "b"
    for folder, seed in ((base_a, 0), (base_b, 1)):
        tiny_causal_lm(smol_tokenizer, seed=seed).save_pretrained(folder)
        smol_tokenizer.save_pretrained(folder)
    lora = LoraConfig(r=4, alpha=8, dropout=0.0)
    trained = add_lora(load_causal_lm(str(base_a)), lora, "causal_lm")
    for param in trained.parameters():
        if param.requires_grad:
            param.data.normal_(0, 0.5)
    save_run_model(trained, smol_tokenizer, tmp_path / "run", str(base_a), kind="causal_lm")
    fresh = add_lora(load_causal_lm(str(base_a)), lora, "causal_lm")
    load_adapter_weights(fresh, tmp_path / "run", str(base_a))
    saved = {n: p for n, p in trained.named_parameters() if "lora_" in n}
    loaded = {n: p for n, p in fresh.named_parameters() if "lora_" in n}
    assert saved and all(torch.equal(saved[n], loaded[n]) for n in saved)  # the adapter continues exactly
    assert all(p.requires_grad for p in loaded.values())
    with pytest.raises(ModelError, match="trained on"):
        load_adapter_weights(add_lora(load_causal_lm(str(base_b)), lora, "causal_lm"), tmp_path / "run", str(base_b))
    with pytest.raises(ModelError, match="does not fit|does not match"):
        load_adapter_weights(
            add_lora(load_causal_lm(str(base_a)), LoraConfig(r=8, alpha=16, dropout=0.0), "causal_lm"),
            tmp_path / "run",
            str(base_a),
        )


def test_the_file_labeller_round_trips_and_rejects_bad_labels_with_file_and_line(tmp_path: Path) -> None:
    asked = [
        {
            "prompt_id": "p1",
            "messages": [{"role": "user", "content": "Name 2 fruits."}],
            "replies": ["apple and pear", "rocks"],
        }
    ]
    cfg = load_config("rm_preference", ROOT / "config.yaml")
    label_dir = tmp_path / "round_1" / "labels"
    label_dir.mkdir(parents=True)
    rankings, scores = online.simulated_labels(asked, noise=0.0, seed=0)
    assert rankings[0]["replies"] == ["apple and pear", "rocks"]  # noise-free annotator: the relevant reply first
    assert [row["reply"] for row in scores] == asked[0]["replies"] and all(0.0 <= row["score"] <= 1.0 for row in scores)
    (label_dir / "rankings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rankings))
    (label_dir / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scores))
    online.check_label_files(label_dir, asked, cfg.data)  # well-formed: accepted

    bad = [scores[0], {**scores[1], "score": 7}]
    (label_dir / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    with pytest.raises(DataError, match=r"scores\.jsonl.*2"):
        online.check_label_files(label_dir, asked, cfg.data)
    (label_dir / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scores))
    stranger = {**rankings[0], "messages": [{"role": "user", "content": "Something never asked."}]}
    (label_dir / "rankings.jsonl").write_text(json.dumps(rankings[0]) + "\n" + json.dumps(stranger) + "\n")
    with pytest.raises(DataError, match=r"rankings\.jsonl:2: this prompt was not among"):
        online.check_label_files(label_dir, asked, cfg.data)


def test_the_file_labeller_stops_and_says_what_to_write(tmp_path: Path) -> None:
    cfg = CRSConfig()
    cfg.online.labeller = "file"
    loop = online.Loop(cfg, tmp_path / "loop")
    with pytest.raises(RunError, match=r"waiting for labels.*rankings\.jsonl.*scores\.jsonl"):
        online.labels(loop, 1, [])


def test_the_simulated_labeller_is_refused_on_prompts_that_are_not_the_demos(
    tmp_path: Path, online_config: Path
) -> None:
    from crs.config import ConfigError

    cfg = load_config("online_tiny", online_config, overrides=["run.allow_gold_outside_demo=false"])
    with pytest.raises(
        ConfigError,
        match="online.labeller simulated .*: gold is the demo annotator's rule set, "
        "and 12 of 12 prompts.*online.labeller: file",
    ):
        online.run_online(cfg, tmp_path / "loop", resume=False)
    assert not (tmp_path / "loop" / "round_0").exists()  # refused before round 0 trained


def test_the_loops_sampling_policy_runs_on_the_process_accelerator(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round N's replies are sampled on this process's accelerator (here a fake one: the meta device),
    not on the CPU the policy is loaded on (nothing is generated: only where the model is, is looked at)."""
    from types import SimpleNamespace

    from stage_runs import write_rl_config

    import crs.eval.predict as predict
    from crs.data.schema import PromptExample, user_prompt

    cfg = load_config("tiny_rl", write_rl_config(tmp_path / "cfg.yaml", tiny_model_dir, tmp_path / "out"))
    cfg.online.base_subset, cfg.online.replies_per_prompt = "tiny_rl", 2
    devices: list[torch.device] = []

    def fake_generate(model, tokenizer, prompts, *args, **kwargs):
        devices.append(next(model.parameters()).device)
        return [SimpleNamespace(text=f"reply {i}") for i in range(len(prompts))]

    monkeypatch.setattr(predict, "process_device", lambda: torch.device("meta"))
    monkeypatch.setattr(online, "generate_replies", fake_generate)
    prompts = [PromptExample(user_prompt(f"topic {i}"), f"p{i}") for i in range(2)]
    rows = online.sample_from_policy(online.Loop(cfg, tmp_path / "loop"), tiny_model_dir, prompts, seed=0)
    assert devices == [torch.device("meta")]
    assert [row["replies"] for row in rows] == [["reply 0", "reply 1"], ["reply 2", "reply 3"]]
