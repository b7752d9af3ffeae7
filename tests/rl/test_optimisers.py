"""GRPO, RLOO (TRL's, on-policy, on crs's combined reward) and DPO (TRL's, offline): learning, rewards, outputs, resume.

Tiny models only (tests/tiny.py); each test takes seconds at one thread.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from paths import FIXTURES, ROOT
from stage_runs import (
    capture_trl_rewards,
    check_run_outputs,
    log_rows,
    record_arguments_and_loads,
    run_cli,
    run_files,
    run_rl_under_torchrun,
    trained_after_arguments,
    write_config,
)

from crs.config import ConfigError, CRSConfig, LoraConfig, RLConfig, load_config
from crs.data.schema import AbsoluteExample, RankingExample, user_prompt
from crs.rl.combined_reward import CombinedReward
from crs.rl.reward_sources import RewardSource

pytest.importorskip("trl")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# --------------------------------------------------------------------------- config


def test_algorithm_keys_are_checked_up_front(tmp_path):
    def load(**rl):
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump({"default": {}, "s": {"rl": rl}}))
        return load_config("s", path)

    assert load().rl.algorithm == "ppo"  # PPO stays the default
    assert load(algorithm="grpo", batch_size=8, group_size=4).rl.group_size == 4
    with pytest.raises(ConfigError, match="rl.group_size=3: must be an integer >= 2 that divides rl.batch_size"):
        load(algorithm="grpo", batch_size=8, group_size=3)
    with pytest.raises(ConfigError, match="rl.reward_normalization='trl'"):
        load(algorithm="rloo", reward_normalization="trl")
    with pytest.raises(ConfigError, match="rl.adaptive_kl=True"):
        load(algorithm="grpo", adaptive_kl=True)
    with pytest.raises(ConfigError, match="rl.algorithm"):
        load(algorithm="ppo2")
    load(algorithm="dpo", batch_size=6, mini_batch_size=4)  # PPO's mini-batch rule is PPO's only


def test_the_demo_subsets_match_the_ppo_budget_and_reward():
    ppo = load_config("rl_crs").rl
    for subset, algorithm in (("rl_grpo_crs", "grpo"), ("rl_rloo_crs", "rloo")):
        rl = load_config(subset).rl
        assert rl.algorithm == algorithm
        assert rl.steps * rl.batch_size == ppo.steps * ppo.batch_size == 192  # the same number of sampled replies
        assert [vars(r) for r in rl.rewards] == [vars(r) for r in ppo.rewards]
        assert (rl.reward_clip, rl.missing_eos_penalty, rl.kl_coef, rl.max_new_tokens) == (
            ppo.reward_clip,
            ppo.missing_eos_penalty,
            ppo.kl_coef,
            ppo.max_new_tokens,
        )
    dpo = load_config("dpo")
    assert dpo.rl.algorithm == "dpo" and dpo.data.split == "rm" and dpo.rl.policy == "outputs/sft"


# --------------------------------------------------------------------------- DPO pairs


def test_dpo_pairs_from_rankings():
    from crs.rl.dpo import pairs_from_rankings

    ranked = RankingExample(user_prompt("q"), ["a", "b", "c", "d"])
    best = pairs_from_rankings([ranked], "best_vs_rest")
    assert [(p.chosen, p.rejected) for p in best] == [("a", "b"), ("a", "c"), ("a", "d")]
    every = pairs_from_rankings([ranked], "all_pairs")
    assert [(p.chosen, p.rejected) for p in every] == [
        ("a", "b"),
        ("a", "c"),
        ("a", "d"),
        ("b", "c"),
        ("b", "d"),
        ("c", "d"),
    ]
    tied = RankingExample(user_prompt("q"), ["a", "b", "c"], scores=[0.9, 0.9, 0.1])
    assert [(p.chosen, p.rejected) for p in pairs_from_rankings([tied], "all_pairs")] == [("a", "c"), ("b", "c")]


def test_dpo_pairs_from_absolute_scores_respect_the_gap():
    from crs.rl.dpo import pairs_from_scores

    meta = {"group": "p1"}
    rows = [
        AbsoluteExample(user_prompt("q"), r, s, meta)
        for r, s in (("ok", 0.5), ("best", 1.0), ("bad", 0.25), ("close", 0.4))
    ]
    rows.append(AbsoluteExample(user_prompt("q"), "ok", 0.75, meta))  # "ok" scored twice: mean 0.625
    other = AbsoluteExample(user_prompt("other"), "x", 0.0, {"group": "p2"})  # alone: no pair
    best = pairs_from_scores([*rows, other], "best_vs_rest", min_gap=0.25)
    assert [(p.chosen, p.rejected) for p in best] == [("best", "ok"), ("best", "close"), ("best", "bad")]
    every = pairs_from_scores(rows, "all_pairs", min_gap=0.25)  # ok-close (0.225) and close-bad (0.15) are too close
    assert sorted((p.chosen, p.rejected) for p in every) == [
        ("best", "bad"),
        ("best", "close"),
        ("best", "ok"),
        ("ok", "bad"),
    ]
    assert len(pairs_from_scores(rows, "all_pairs", min_gap=0.0)) == 6
    assert pairs_from_scores(rows, "best_vs_rest", min_gap=0.8) == []


# --------------------------------------------------------------------------- learning (GRPO, RLOO)


def direction_text_reward(lm, tokenizer, seed: int = 1):
    """A reward the tiny policy can reach: the mean score of its reply's tokens under a fixed
    linear token scorer (output embedding . a random direction, standardised over the vocab).
    TRL hands crs text, so the reply is tokenized again (mostly the sampled tokens)."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(lm.config.hidden_size, generator=g)
    proj = lm.get_output_embeddings().weight.detach() @ direction
    token_score = (proj - proj.mean()) / proj.std()

    def reward(prompts, replies):
        ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in replies]
        return [sum(float(token_score[t]) for t in row) / max(len(row), 1) for row in ids]

    return reward


def tiny_cfg(algorithm: str, tmp_path: Path, **rl) -> CRSConfig:
    cfg = CRSConfig()
    cfg.run.output_dir, cfg.run.logging_steps = str(tmp_path), 100
    cfg.model.dtype = "fp32"
    cfg.model.lora = LoraConfig(r=8, alpha=16, dropout=0.0)
    cfg.data.max_prompt_length = 8  # the prompt's last tokens: short sequences, fast steps
    cfg.rl = RLConfig(algorithm=algorithm, save_steps=0, temperature=1.0, **rl)
    return cfg


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_quantized_trl_policy_checkpoints_only_when_the_config_says_so(smol_tokenizer, monkeypatch, checkpointing):
    """peft's k-bit preparation (a 4-bit policy) gets model.gradient_checkpointing, not its default of on."""
    from tiny import tiny_causal_lm
    from transformers.modeling_layers import GradientCheckpointingLayer

    import crs.rl.trl_common as trl_common

    def quantized_policy(name, model_cfg, **kwargs):
        model = tiny_causal_lm(smol_tokenizer)
        model.is_loaded_in_4bit = model.is_quantized = True  # as bitsandbytes marks it (it needs CUDA)
        return model

    monkeypatch.setattr(trl_common, "load_causal_lm", quantized_policy)
    cfg = CRSConfig()
    cfg.model.gradient_checkpointing = checkpointing
    model, peft_config, *_ = trl_common.load_policy(cfg)
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert peft_config is not None and [m.gradient_checkpointing for m in layers] == [checkpointing] * 2


def learning_prompts(n: int = 16) -> list:
    return [[{"role": "system", "content": "Hi"}, {"role": "user", "content": f"topic {i}"}] for i in range(n)]


def run_grpo_rloo_learning(
    smol_tokenizer, left_tokenizer, tmp_path, algorithm, broken=False, monkeypatch=None, steps=12
) -> list[dict]:
    import trl
    from tiny import tiny_causal_lm

    from crs.rl.grpo_rloo import build_grpo_rloo_trainer
    from crs.rl.trl_common import peft_lora_config

    # A larger init makes the tiny model's next-token distribution peaked enough to have signal.
    lm = tiny_causal_lm(smol_tokenizer, seed=0, initializer_range=0.5)
    reward = CombinedReward([RewardSource("direction", direction_text_reward(lm, smol_tokenizer), normalize="none")])
    if broken:
        base = trl.GRPOTrainer if algorithm == "grpo" else trl.RLOOTrainer
        real = base._generate_and_score_completions

        def flipped(self, inputs):
            out = real(self, inputs)
            out["advantages"] = -out["advantages"]  # the update now pushes away from what was rewarded
            return out

        monkeypatch.setattr(base, "_generate_and_score_completions", flipped)
    cfg = tiny_cfg(
        algorithm, tmp_path, steps=steps, batch_size=16, group_size=4, max_new_tokens=4, learning_rate=2e-2, kl_coef=0.0
    )
    torch.manual_seed(0)
    trainer, _ = build_grpo_rloo_trainer(
        cfg, tmp_path, lm, peft_lora_config(cfg), left_tokenizer, reward, learning_prompts()
    )
    trainer.train()
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("broken", [False, True], ids=["learns", "advantage-sign-flipped"])
@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_grpo_and_rloo_raise_a_reachable_reward(
    smol_tokenizer, left_tokenizer, tmp_path, monkeypatch, algorithm, broken
):
    rows = run_grpo_rloo_learning(smol_tokenizer, left_tokenizer, tmp_path, algorithm, broken, monkeypatch)
    rewards = [round(r["reward/combined"], 3) for r in rows]
    assert [r["step"] for r in rows] == list(range(1, 13))
    start, end = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    if broken:
        assert end < start + 0.1, rewards  # the control: the same run with the sign flipped does not learn
    else:
        assert end > start + 0.3, rewards  # a reply's reward has sd ~0.4 at the start


# --------------------------------------------------------------------------- the stage: outputs, resume


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_grpo_rloo_stage_writes_ppos_outputs_and_trl_optimises_the_combined_reward(
    tmp_path, tiny_model_dir, smol_tokenizer, monkeypatch, algorithm
):
    seen = capture_trl_rewards(monkeypatch, algorithm)
    run_dir = run_cli(write_config(tmp_path, tiny_model_dir, algorithm=algorithm, steps=3, save_steps=0))
    state = check_run_outputs(run_dir, algorithm, 3)
    rows = log_rows(run_dir)
    for key in (
        "reward/combined",
        "reward/chars/raw",
        "reward/chars/normalized",
        "reward/vowels/raw",
        "reward/ended_with_eos",
        "kl/sequence",
        "kl/coef",
        "reply/length",
        "loss/policy",
        "policy/entropy",
    ):
        assert key in rows[0], key
    assert rows[0]["kl/sequence"] == pytest.approx(0.0, abs=1e-5)  # a fresh adapter: the policy is its reference
    assert any(abs(r["kl/sequence"]) > 1e-4 for r in rows[1:])  # then it moves

    # The reward TRL optimised is CombinedReward on the same replies (statistics of the first batch, clip, EOS penalty).
    described = {s["name"]: s for s in state["summary"]["rewards"]}
    assert described["chars"]["stats_origin"] == "first batch"
    from tests.reward_fns import count_vowels, reply_length

    fresh = CombinedReward(
        [
            RewardSource("chars", reply_length, 1.0, "zscore", described["chars"]["stats"]),
            RewardSource("vowels", count_vowels, 0.5, "zscore", described["vowels"]["stats"]),
        ],
        reward_clip=4.0,
        missing_eos_penalty=-1.0,
    )
    assert len(seen) == 3
    for prompts, completions, ids, trl_rewards in seen:
        replies = [c[-1]["content"] for c in completions]
        ended = [bool(i) and i[-1] == smol_tokenizer.eos_token_id for i in ids]
        expected = fresh(prompts, replies, ended).combined.tolist()
        assert trl_rewards == pytest.approx(expected, abs=1e-5)
    assert seen[0][3] and rows[0]["reward/combined"] == pytest.approx(sum(seen[0][3]) / len(seen[0][3]), abs=1e-5)


def test_grpo_with_trls_own_normalisation(tmp_path, tiny_model_dir, monkeypatch):
    import trl

    real, seen = trl.GRPOTrainer._calculate_rewards, []

    def capture(self, inputs, prompts, completions, completion_ids_list):
        out = real(self, inputs, prompts, completions, completion_ids_list)
        seen.append((completions, out.tolist(), self.multi_objective_aggregation, self.reward_weights.tolist()))
        return out

    monkeypatch.setattr(trl.GRPOTrainer, "_calculate_rewards", capture)
    run_dir = run_cli(
        write_config(tmp_path, tiny_model_dir, algorithm="grpo", steps=2, save_steps=0, reward_normalization="trl")
    )
    check_run_outputs(run_dir, "grpo", 2)
    completions, per_func, aggregation, weights = seen[0]
    assert aggregation == "normalize_then_sum" and weights == [1.0, 0.5, 1.0]  # chars, vowels, missing_eos
    replies = [c[-1]["content"] for c in completions]
    assert [row[0] for row in per_func] == [float(len(r)) for r in replies]  # raw scores: TRL normalises them itself
    row = log_rows(run_dir)[0]
    assert {
        "trl/rewards/chars/mean",
        "trl/rewards/missing_eos/mean",
        "reward/chars/raw",
        "reward/combined",
    } <= row.keys()


def test_grpo_rloo_resume_continues_from_a_sealed_checkpoint(tmp_path, tiny_model_dir):
    from crs.runs import checkpoint_problem

    straight = run_cli(write_config(tmp_path / "a", tiny_model_dir, algorithm="grpo", steps=4))
    path = write_config(tmp_path / "b", tiny_model_dir, algorithm="grpo", steps=2)
    first = run_cli(path)  # stops after step 2, its last checkpoint
    kept = log_rows(first)
    kept[0]["marker"] = "from the first session"  # survives only if the run resumes (a fresh start rewrites the log)
    (first / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in kept) + '{"step": 3, "reward/comb'
    )  # + a torn line
    resumed = run_cli(write_config(tmp_path / "b", tiny_model_dir, algorithm="grpo", steps=4), "--resume")
    a, b = log_rows(straight), log_rows(resumed)
    assert [r["step"] for r in b] == [1, 2, 3, 4]  # no step twice, the torn line gone
    assert b[0].get("marker") == "from the first session" and "marker" not in b[2]
    for key in ("reward/combined", "reward/chars/raw", "loss/policy"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], rel=1e-4, abs=1e-6), key
    checkpoints = sorted(p.name for p in (resumed / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    assert checkpoint_problem(resumed / "checkpoints" / "checkpoint-4") is None  # sealed
    reward_state = json.loads((resumed / "checkpoints" / "checkpoint-2" / "crs_reward_state.json").read_text())
    assert reward_state["chars"]["origin"] == "first batch"  # the first batch's scale travels with the checkpoint
    check_run_outputs(resumed, "grpo", 4)


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_init_adapter_continues_an_earlier_runs_adapter(tmp_path, tiny_model_dir, algorithm):
    first = run_cli(write_config(tmp_path / "a", tiny_model_dir, algorithm=algorithm, steps=2))
    assert log_rows(first)[0]["kl/sequence"] == pytest.approx(0.0, abs=1e-6)  # a fresh adapter starts as the reference
    continued = run_cli(
        write_config(tmp_path / "b", tiny_model_dir, algorithm=algorithm, steps=2, init_adapter=str(first))
    )
    assert (
        abs(log_rows(continued)[0]["kl/sequence"]) > 1e-4
    )  # it starts where the first run stopped, still measured against the SFT policy
    check_run_outputs(continued, algorithm, 2)


@pytest.mark.parametrize("algorithm", ["grpo", "dpo"])
def test_trl_stages_make_their_config_before_they_load_the_policy(tmp_path, tiny_model_dir, monkeypatch, algorithm):
    events = record_arguments_and_loads(monkeypatch)
    check_run_outputs(run_cli(write_config(tmp_path, tiny_model_dir, algorithm=algorithm, steps=1)), algorithm, 1)
    assert trained_after_arguments(events), events  # under ZeRO-3 the policy then loads partitioned


def test_full_finetuning_with_a_kl_penalty_is_refused_before_loading(tmp_path, tiny_model_dir):
    from crs.rl.grpo_rloo import run_grpo_rloo_stage

    cfg = load_config("tiny", write_config(tmp_path, tiny_model_dir, algorithm="rloo"))
    cfg.model.lora.enabled = False
    with pytest.raises(ConfigError, match="full fine-tuning"):
        run_grpo_rloo_stage(cfg, tmp_path / "run", resume=False)


# --------------------------------------------------------------------------- DPO


def test_dpo_raises_the_chosen_minus_rejected_log_ratio(tmp_path, tiny_model_dir):
    from crs.models.loading import load_model, load_tokenizer
    from crs.rl.dpo import PreferencePair, logratio_margins

    path = write_config(
        tmp_path, tiny_model_dir, algorithm="dpo", steps=10, learning_rate=2e-2, dpo_beta=0.1, save_steps=5
    )
    run_dir = run_cli(path)
    state = check_run_outputs(run_dir, "dpo", 10)
    assert state["summary"]["pairs"] == {"train": 18, "held_out": 6, "signal": "ranking", "pairing": "best_vs_rest"}
    rows = log_rows(run_dir)
    assert rows[0]["dpo/logratio_margin"] == pytest.approx(0.0, abs=1e-5)  # the first batch is scored before any update
    margins = [r["dpo/logratio_margin"] for r in rows]
    assert margins[-1] > 1.0 and rows[-1]["dpo/accuracy"] == 1.0, margins
    assert state["summary"]["held_out"]["accuracy"] == 1.0 and state["summary"]["held_out"]["logratio_margin"] > 1.0

    # Measured independently on the saved run: the adapter on vs off (the reference, the SFT policy).
    cfg = load_config("tiny", path)
    policy = load_model(str(run_dir), "causal_lm", merge_adapter=False).eval()
    tokenizer = load_tokenizer(str(run_dir))
    pairs = [PreferencePair(user_prompt(f"new topic {i}"), "yes yes yes", "no no") for i in range(3)]
    margins = logratio_margins(policy, tokenizer, pairs, cfg)
    assert all(m > 1.0 for m in margins), margins  # and on prompts it never saw


def test_dpo_continues_an_adapter_on_new_training_pairs(tmp_path, tiny_model_dir):
    first = run_cli(
        write_config(tmp_path / "a", tiny_model_dir, algorithm="dpo", steps=6, learning_rate=2e-2, save_steps=6)
    )
    new_pairs = tmp_path / "new_pairs.jsonl"  # the online loop's round data: rows the source never had
    new_pairs.write_text(
        "".join(json.dumps({"prompt": f"new topic {i}", "replies": ["yes yes yes", "no"]}) + "\n" for i in range(8))
    )
    path = write_config(tmp_path / "b", tiny_model_dir, algorithm="dpo", steps=2, save_steps=2, init_adapter=str(first))
    config = yaml.safe_load(path.read_text())
    config["tiny"]["data"]["train_source"] = str(new_pairs)
    path.write_text(yaml.safe_dump(config))
    continued = run_cli(path)
    # Before any update of its own: the first run's preference.
    assert log_rows(continued)[0]["dpo/logratio_margin"] > 0.3
    assert check_run_outputs(continued, "dpo", 2)["summary"]["pairs"]["train"] == 8  # trained on the new pairs only


def test_dpo_from_absolute_scores(tmp_path, tiny_model_dir):
    path = write_config(
        tmp_path, tiny_model_dir, algorithm="dpo", steps=2, dpo_signal="absolute", dpo_min_gap=0.3, save_steps=0
    )
    scores = tmp_path / "scores.jsonl"
    rows = [
        {"prompt": f"topic {i}", "reply": reply, "score": score}
        for i in range(8)
        for reply, score in (("good", 1.0), ("fine", 0.8), ("bad", 0.2))
    ]
    scores.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = yaml.safe_load(path.read_text())
    config["tiny"]["data"]["source"] = str(scores)
    path.write_text(yaml.safe_dump(config))
    pairs = check_run_outputs(run_cli(path), "dpo", 2)["summary"]["pairs"]
    assert pairs["signal"] == "absolute"
    assert pairs["train"] + pairs["held_out"] == 8  # one pair a prompt: good > bad (good > fine is only 0.2 apart)


# --------------------------------------------------------------------------- the evaluation stages take every run


def test_eval_stages_take_grpo_and_dpo_runs_unchanged(tmp_path, tiny_model_dir):
    from crs.cli import run_stage
    from crs.eval.predict import predict
    from crs.eval.score import score_predictions
    from crs.rl.combined_reward import REWARD_STATE_FILE

    grpo = run_cli(write_config(tmp_path / "grpo", tiny_model_dir, algorithm="grpo", steps=2, save_steps=2))
    dpo = run_cli(write_config(tmp_path / "dpo", tiny_model_dir, algorithm="dpo", steps=2, save_steps=0))
    fixture = FIXTURES / "crs_demo_tiny.jsonl"
    config = {
        "default": {
            "run": {"output_dir": str(tmp_path / "eval")},
            "model": {"dtype": "fp32"},
            "data": {"source": str(fixture), "adapter": "crs_demo", "split": "sft"},
        },
        "pred": {
            "run": {"name": "pred"},
            "eval_pred": {
                "models": [
                    {"name": "sft", "path": str(tiny_model_dir)},
                    {"name": "grpo", "path": str(grpo)},
                    {"name": "dpo", "path": str(dpo)},
                ],
                "do_sample": True,
                "max_new_tokens": 6,
                "batch_size": 4,
            },
        },
        "score": {
            "run": {"name": "score"},
            "eval_rewarding": {
                "predictions_dir": str(tmp_path / "eval" / "pred"),
                "rewards": [{"name": "chars", "path": "python:tests.reward_fns:reply_length"}],
                "reference_model": "sft",
                "n_boot": 50,
            },
        },
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    run_stage(predict, "pred", ["--config", str(path), "--config_subset", "pred"])
    run_stage(score_predictions, "score", ["--config", str(path), "--config_subset", "score"])
    results = json.loads((tmp_path / "eval" / "score" / "results.json").read_text())
    assert (
        "reward of grpo" in results["scorers"] and "reward of dpo" not in results["scorers"]
    )  # DPO optimised no reward
    assert {"grpo", "dpo"} <= set(
        results["win_rates"]["chars"]["sft"]
    )  # the fixture is no demo data: judge auto -> none

    # "reward of grpo" is the reward GRPO optimised, on the scale its checkpoint froze.
    from tests.reward_fns import count_vowels, reply_length

    frozen = json.loads((grpo / "checkpoints" / "checkpoint-2" / REWARD_STATE_FILE).read_text())
    reward = CombinedReward(
        [RewardSource("chars", reply_length, 1.0, "zscore"), RewardSource("vowels", count_vowels, 0.5, "zscore")],
        reward_clip=4.0,
        missing_eos_penalty=-1.0,
    )
    reward.load_state_dict(frozen)
    rows = json.loads((tmp_path / "eval" / "score" / "scores.json").read_text())
    for model in ("sft", "grpo", "dpo"):
        predictions = json.loads((tmp_path / "eval" / "pred" / "predictions" / f"{model}.json").read_text())
        by_key = {(r["prompt_id"], r["run"]): r for r in predictions}
        for row in (r for r in rows if r["model"] == model):
            pred = by_key[(row["prompt_id"], row["run"])]
            expected = reward(
                [user_prompt(pred["instruction"])], [pred["output"]], [pred.get("ended_with_eos", True)]
            ).combined.item()
            assert row["reward of grpo"] == pytest.approx(expected, abs=1e-5)
    assert len({row["reward of grpo"] for row in rows}) > 1  # real replies, not a constant


# --------------------------------------------------------------------------- processes


@pytest.mark.slow
def test_grpo_with_two_processes_under_torchrun(tmp_path, tiny_model_dir):
    path = write_config(tmp_path, tiny_model_dir, algorithm="grpo", steps=2, batch_size=4, group_size=2)
    run_rl_under_torchrun(path, "tiny", ROOT, timeout=300)
    run_dir = tmp_path / "out" / "rl"
    rows = log_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2]  # only the main process writes
    assert json.loads((run_dir / "run_state.json").read_text())["status"] == "finished"
    assert (run_dir / "checkpoints" / "checkpoint-2" / "crs_checkpoint.json").is_file()
    assert (run_dir / "adapter" / "adapter_config.json").is_file()


def test_resuming_a_finished_trl_run_with_no_steps_left_or_no_checkpoint_changes_nothing(
    tmp_path, tiny_model_dir, caplog, capsys
):

    from crs.runs import run_state

    path = write_config(tmp_path, tiny_model_dir, algorithm="dpo", steps=2, save_steps=0)
    run_dir = run_cli(path)
    finished = run_files(run_dir)
    assert run_state(run_dir)["final_step"] == 2 and run_state(run_dir)["length_keys"] == ["rl.steps"]
    caplog.set_level(logging.INFO)
    run_cli(path, "--resume")  # returns: exit code 0
    assert f"{run_dir} already finished at step 2; nothing to resume (rl.steps=2" in caplog.text
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        run_cli(path, "--resume", "--set", "rl.steps=3")  # TRL would start again at step 0: refused
    assert caught.value.code == 2 and "kept no complete checkpoint (rl.save_steps: 0)" in capsys.readouterr().err
    assert run_files(run_dir) == finished and run_state(run_dir)["status"] == "finished"
