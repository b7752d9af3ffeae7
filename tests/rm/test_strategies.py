"""Reward-model training strategies: preference strength in the ranking loss, sequential
training (``rm.init_from``) and the joint two-head RM (``rm.loss: joint``).

Tiny models built from a config (tests/tiny.py), tiny data files; each test takes seconds.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch

from crs.config import ConfigError, CRSConfig, RewardModelConfig, load_config
from crs.data.schema import RankingExample, user_prompt
from crs.rm.length_calibration import read_length_calibration
from crs.rm.reward_losses import ranking_loss
from crs.rm.rm_evaluation import evaluate_reward_model
from crs.rm.scorer import RewardScorer, load_reward_scorers
from crs.rm.training import train_reward_model
from crs.rm.training_data import ValidationViews

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

FILLER = "apple river stone cloud music garden window paper light table".split()


def nll(diff: float) -> float:
    """-log sigmoid(diff), by hand."""
    return math.log(1.0 + math.exp(-diff))


# --------------------------------------------------------------------------- preference strength


def test_scaled_strength_weights_pairs_by_rank_distance_with_mean_one():
    r = [1.0, 0.2, 0.5]  # pairs (0,1) d=1, (0,2) d=2, (1,2) d=1: mean distance 4/3
    losses = [nll(r[0] - r[1]), nll(r[0] - r[2]), nll(r[1] - r[2])]
    expected = (0.75 * losses[0] + 1.5 * losses[1] + 0.75 * losses[2]) / 3
    assert ranking_loss(torch.tensor(r), [3], pair_strength="scaled").item() == pytest.approx(expected)
    # strength_scale does not enter `scaled` (the normalisation removes any scale)
    assert ranking_loss(torch.tensor(r), [3], pair_strength="scaled", strength_scale=7.0).item() == pytest.approx(
        expected
    )


def test_margin_strength_enters_the_sigmoid():
    r, c = [1.0, 0.2, 0.5], 0.3
    expected = (nll(r[0] - r[1] - c) + nll(r[0] - r[2] - 2 * c) + nll(r[1] - r[2] - c)) / 3
    assert ranking_loss(torch.tensor(r), [3], pair_strength="margin", strength_scale=c).item() == pytest.approx(
        expected
    )


def test_strength_on_a_batch_of_two_prompts_with_different_k_and_beside_score_margins():
    rewards = torch.tensor([0.4, 0.9, -0.1, 2.0, 1.0])  # prompt 0: K=3, prompt 1: K=2
    scores = torch.tensor([0.9, 0.5, 0.1, 0.8, 0.2])
    m, c = 0.5, 0.2
    a, b = rewards[:3].tolist(), rewards[3:].tolist()
    sa, sb = scores[:3].tolist(), scores[3:].tolist()

    def pair(rs: list[float], ss: list[float], i: int, j: int) -> float:
        return nll(rs[i] - rs[j] - m * (ss[i] - ss[j]) - c * (j - i))

    margin = ((pair(a, sa, 0, 1) + pair(a, sa, 0, 2) + pair(a, sa, 1, 2)) / 3 + pair(b, sb, 0, 1)) / 2
    got = ranking_loss(rewards, [3, 2], scores=scores, margin_scale=m, pair_strength="margin", strength_scale=c)
    assert got.item() == pytest.approx(margin, rel=1e-6)

    def plain(rs: list[float], i: int, j: int) -> float:
        return nll(rs[i] - rs[j])

    # K=2 has one pair of distance 1: its weight is 1 whatever the strength
    scaled = ((0.75 * plain(a, 0, 1) + 1.5 * plain(a, 0, 2) + 0.75 * plain(a, 1, 2)) / 3 + plain(b, 0, 1)) / 2
    assert ranking_loss(rewards, [3, 2], pair_strength="scaled").item() == pytest.approx(scaled, rel=1e-6)
    assert ranking_loss(rewards, [3, 2]).item() != pytest.approx(scaled, rel=1e-3)
    with pytest.raises(ValueError, match="pair_strength"):
        ranking_loss(rewards, [3, 2], pair_strength="strong")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- tiny data and runs


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def marker_rows(n: int, seed: int) -> list[dict]:
    """Both views of each prompt: a ranking (the reply ending in "excellent" first) and one scored reply."""
    rng = random.Random(seed)

    def filler() -> str:
        return " ".join(rng.choice(FILLER) for _ in range(rng.randint(3, 6)))

    rows = []
    for i in range(n):
        good, bad = f"{filler()} excellent", filler()
        rows.append(
            {
                "prompt": f"Question {i}: {filler()}?",
                "replies": [good, bad],
                "scores": [0.9, 0.1],
                "reply": good if i % 2 else bad,
                "score": 0.9 if i % 2 else 0.1,
            }
        )
    return rows


def tiny_config(model: Path, data: Path, loss: str, steps: int, lr: float = 3e-3, lora: bool = False) -> CRSConfig:
    """The tiny model in fp32 on ``data`` (a quarter held out), no evaluation during training."""
    cfg = CRSConfig()
    cfg.model.name, cfg.model.dtype, cfg.model.lora.enabled = str(model), "fp32", lora
    cfg.model.lora.r, cfg.model.lora.alpha, cfg.model.lora.dropout = 4, 8, 0.0
    cfg.data.source, cfg.data.val_fraction, cfg.data.max_length = str(data), 0.25, 96
    cfg.rm.loss = loss
    cfg.train.learning_rate, cfg.train.max_steps, cfg.train.batch_size, cfg.train.warmup_ratio = lr, steps, 8, 0.0
    cfg.train.eval_steps, cfg.train.save_steps, cfg.run.logging_steps = 0, 1000, 1
    return cfg


@pytest.fixture(scope="module")
def marker_file(tmp_path_factory) -> Path:
    return write_rows(tmp_path_factory.mktemp("marker") / "both.jsonl", marker_rows(48, seed=0))


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory, smol_tokenizer) -> Path:
    """A tiny BERT classifier on the SmolLM2 vocabulary: its head has a bias (Llama's has none)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(smol_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=1,
        pad_token_id=smol_tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny_bert")
    BertForSequenceClassification(config).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def assert_same_metrics(got: dict, want: dict, keys: list[str]) -> None:
    for key in keys:
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key


# --------------------------------------------------------------------------- sequential: rm.init_from


def test_init_from_continues_a_full_model_head_bias_included(tiny_bert_dir, marker_file, tmp_path):
    """Absolute, then absolute again from it: the untrained figures of the second run are the first run's final ones
    (mse included: init_bias_to_mean left the trained bias alone), unlike a fresh start's."""
    cfg = tiny_config(tiny_bert_dir, marker_file, "absolute", steps=6, lr=1e-2)
    base_val = train_reward_model(cfg, tmp_path / "base")
    assert base_val["mse"] < metrics_of(tmp_path / "base")["val_before_training"]["mse"]  # training moved it

    cfg.rm.init_from, cfg.train.max_steps = str(tmp_path / "base"), 2
    train_reward_model(cfg, tmp_path / "continued")
    continued = metrics_of(tmp_path / "continued")
    assert_same_metrics(
        continued["val_before_training"],
        base_val,
        ["mse", "mae", "loss", "spearman", "pairwise_accuracy", "mean_margin"],
    )
    assert continued["init_from"] == {
        "run": str((tmp_path / "base").resolve()),
        "loss_kind": "absolute",
        "full_model": True,
    }

    cfg.rm.init_from = ""
    train_reward_model(cfg, tmp_path / "fresh")
    assert metrics_of(tmp_path / "fresh")["val_before_training"]["mse"] != pytest.approx(base_val["mse"], rel=1e-3)
    # the continued run is an ordinary RM run: it loads and scores like any other
    scorer = RewardScorer.from_path(str(tmp_path / "continued"), device="cpu")
    assert scorer.loss_kind == "absolute" and scorer.joint is None


def test_init_from_a_lora_run_into_another_loss(tiny_rm_dir, marker_file, tmp_path):
    """A pairwise LoRA run continued with the absolute loss: its adapter and head are where the first run stopped."""
    cfg = tiny_config(tiny_rm_dir, marker_file, "pairwise", steps=6, lr=1e-2, lora=True)
    base_val = train_reward_model(cfg, tmp_path / "base")
    cfg.rm.loss, cfg.rm.init_from, cfg.train.max_steps = "absolute", str(tmp_path / "base"), 2
    train_reward_model(cfg, tmp_path / "continued")
    before = metrics_of(tmp_path / "continued")["val_before_training"]
    # (not pearson: an absolute RM reports that of sigmoid(reward), a pairwise one that of the reward)
    assert_same_metrics(before, base_val, ["pairwise_accuracy", "mean_margin", "spearman"])
    cfg.rm.init_from = ""
    train_reward_model(cfg, tmp_path / "fresh")
    assert metrics_of(tmp_path / "fresh")["val_before_training"]["mean_margin"] != pytest.approx(
        base_val["mean_margin"], rel=1e-3
    )
    manifest = json.loads((tmp_path / "continued" / "crs_model.json").read_text())
    assert (
        manifest["full_model"] is False and Path(manifest["base"]).name == tiny_rm_dir.name
    )  # base: model.name, not the earlier run


def test_resume_prefers_the_checkpoint_over_init_from(tiny_rm_dir, marker_file, tmp_path, monkeypatch):
    import crs.rm.training as training

    cfg = tiny_config(tiny_rm_dir, marker_file, "pairwise", steps=3, lr=1e-2)
    base_val = train_reward_model(cfg, tmp_path / "base")
    cfg.rm.init_from, cfg.train.max_steps, cfg.train.save_steps = str(tmp_path / "base"), 2, 2
    first_val = train_reward_model(cfg, tmp_path / "run")
    built: list = []
    real = training.build_reward_model
    monkeypatch.setattr(training, "build_reward_model", lambda *args: built.append(args[3]) or real(*args))
    cfg.train.max_steps = 3
    train_reward_model(cfg, tmp_path / "run", resume=True)
    metrics = metrics_of(tmp_path / "run")
    assert built == [None]  # the model starts from the checkpoint, not from init_from
    assert metrics["val_at_resume"]["step"] == 2
    assert_same_metrics(metrics["val_at_resume"], first_val, ["pairwise_accuracy", "mean_margin", "loss"])
    assert metrics["val_at_resume"]["mean_margin"] != pytest.approx(base_val["mean_margin"], rel=1e-3)
    assert metrics["init_from"]["run"] == str((tmp_path / "base").resolve())


def _one_line_error(cfg: CRSConfig, run_dir: Path, *expected: str) -> str:
    with pytest.raises(ConfigError) as caught:
        train_reward_model(cfg, run_dir)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("rm.init_from=")
    for text in expected:
        assert text in message, message
    assert not (run_dir / "crs_model.json").exists()  # refused before training
    return message


def test_init_from_refuses_what_it_cannot_continue(tiny_rm_dir, smol_tokenizer, marker_file, tmp_path):
    from tiny import tiny_sequence_classifier

    other = tmp_path / "other_base"
    tiny_sequence_classifier(smol_tokenizer, seed=1).save_pretrained(other)
    smol_tokenizer.save_pretrained(other)
    cfg = tiny_config(tiny_rm_dir, marker_file, "pairwise", steps=1)
    train_reward_model(cfg, tmp_path / "base")
    (tmp_path / "empty").mkdir()

    cfg.rm.init_from = str(tmp_path / "empty")
    _one_line_error(cfg, tmp_path / "a", "not a reward-model run", "finished rm_train.py run")
    cfg.rm.init_from = str(tiny_rm_dir)  # a model folder, not a run
    _one_line_error(cfg, tmp_path / "b", "not a reward-model run")
    cfg.rm.init_from, cfg.model.name = str(tmp_path / "base"), str(other)
    _one_line_error(cfg, tmp_path / "c", f"not on model.name={other}", f"set model.name to {tiny_rm_dir.resolve()}")
    cfg.model.name, cfg.rm.loss = str(tiny_rm_dir), "joint"
    _one_line_error(cfg, tmp_path / "d", "is a pairwise RM and rm.loss is joint")
    cfg.rm.loss, cfg.model.lora.enabled = "pairwise", True
    _one_line_error(cfg, tmp_path / "e", "saved a full model", "model.lora.enabled=false")
    cfg.model.lora.enabled = False
    unfinished = tmp_path / "unfinished"
    shutil.copytree(tmp_path / "base", unfinished)
    state = json.loads((unfinished / "run_state.json").read_text())
    (unfinished / "run_state.json").write_text(json.dumps({**state, "status": "running"}))
    cfg.rm.init_from = str(unfinished)
    _one_line_error(cfg, tmp_path / "f", "has not finished")


# --------------------------------------------------------------------------- joint: two heads, one encoder


class RecordingScorer(RewardScorer):
    """The scorer train_reward_model builds, kept for the test (the in-memory model)."""

    made: list[RewardScorer] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        RecordingScorer.made.append(self)


def test_joint_rm_trains_saves_and_reloads_both_heads(tiny_rm_dir, marker_file, tmp_path, monkeypatch):
    import crs.rm.training as training

    RecordingScorer.made = []
    monkeypatch.setattr(training, "RewardScorer", RecordingScorer)
    cfg = tiny_config(tiny_rm_dir, marker_file, "joint", steps=4, lora=True)
    run_dir = tmp_path / "joint"
    val = train_reward_model(cfg, run_dir)
    in_memory = RecordingScorer.made[0]

    for prefix in ("", "preference_head_", "absolute_head_"):
        assert {f"{prefix}pairwise_accuracy", f"{prefix}mean_margin", f"{prefix}pearson", f"{prefix}spearman"} <= set(
            val
        )
    assert {"absolute_head_mse", "loss"} <= set(val) and "mse" not in val
    metrics = metrics_of(run_dir)
    assert metrics["loss_kind"] == "joint" and metrics["n_val_rankings"] == 12 and metrics["n_val_absolute"] == 12
    assert metrics["n_train_rankings"] == 36 and metrics["n_train"] == 72
    assert json.loads((run_dir / "crs_model.json").read_text())["num_labels"] == 2
    assert json.loads((run_dir / "rm_format.json").read_text())["joint_preference_weight"] == 0.5
    stats = json.loads((run_dir / "reward_stats.json").read_text())
    assert {"preference", "absolute"} <= set(stats["heads"]) and stats["split"] == "val" and stats["n"] == 12 * 2 + 12

    ranking = [
        RankingExample(user_prompt(f"New {i}?"), [f"{w} paper excellent", f"{w} cloud"]) for i, w in enumerate(FILLER)
    ]
    prompts, replies = [ex.prompt for ex in ranking for _ in ex.replies], [r for ex in ranking for r in ex.replies]
    reloaded = RewardScorer.from_path(str(run_dir), device="cpu")
    assert reloaded.loss_kind == "joint" and reloaded.joint is not None
    assert torch.allclose(reloaded.score_heads(prompts, replies), in_memory.score_heads(prompts, replies), atol=1e-5)
    assert torch.allclose(reloaded(prompts, replies), in_memory(prompts, replies), atol=1e-5)
    heads = reloaded.score_heads(prompts, replies)
    z = [
        (heads[:, i] - stats["heads"][h]["mean"]) / stats["heads"][h]["std"]
        for i, h in enumerate(("preference", "absolute"))
    ]
    assert torch.allclose(reloaded(prompts, replies), 0.5 * z[0] + 0.5 * z[1], atol=1e-5)
    assert reloaded.stats["mean"] == stats["mean"] and reloaded.stats["std"] == stats["std"]
    # the top-level stats are those of the score the scorer returns, on the validation replies
    assert stats["mean"] == pytest.approx(0.0, abs=1e-5)
    assert stats["std"] == pytest.approx(reloaded.joint.combined_stats()["std"], rel=1e-4)

    # Plain peft, outside crs, gives the same two heads.
    from peft import AutoPeftModelForSequenceClassification

    plain = AutoPeftModelForSequenceClassification.from_pretrained(
        str(run_dir / "adapter"), num_labels=2, ignore_mismatched_sizes=True
    )
    plain.config.pad_token_id = reloaded.tokenizer.pad_token_id
    with torch.no_grad():
        batch = reloaded.encode(prompts, replies)
        assert torch.allclose(plain.eval()(**batch).logits, heads, atol=1e-5)

    # A weight edited in rm_format.json: the preference head alone, with stats derived for it.
    fmt = json.loads((run_dir / "rm_format.json").read_text())
    (run_dir / "rm_format.json").write_text(json.dumps({**fmt, "joint_preference_weight": 1.0}))
    edited = RewardScorer.from_path(str(run_dir), device="cpu")
    assert torch.allclose(edited(prompts, replies), z[0], atol=1e-5)
    assert edited.stats["mean"] == 0.0 and edited.stats["std"] == pytest.approx(1.0)
    # The run's length calibration was fitted to the combined reward at the trained weight, on the replies of
    # reward_stats.json; for the edited weight's reward it is refused.
    calibration = read_length_calibration(run_dir / "length_calibration.json")
    assert calibration.raw_stats["std"] == pytest.approx(stats["std"]) and calibration.raw_stats["n"] == stats["n"]
    calibration.check_same_reward(stats, run_dir / "length_calibration.json")
    with pytest.raises(ConfigError, match="refit it"):
        calibration.check_same_reward(edited.stats, run_dir / "length_calibration.json")


def test_joint_and_one_head_rms_on_one_base_load_together(tiny_rm_dir, marker_file, tmp_path):
    """load_reward_scorers shares a base among LoRA RMs with as many outputs; a joint and a one-head RM
    each get theirs."""
    cfg = tiny_config(tiny_rm_dir, marker_file, "joint", steps=1, lora=True)
    train_reward_model(cfg, tmp_path / "joint")
    cfg.rm.loss = "pairwise"
    train_reward_model(cfg, tmp_path / "pairwise")
    runs = [str(tmp_path / "joint"), str(tmp_path / "pairwise")]
    together = load_reward_scorers(runs, device="cpu")
    assert together[0].model is not together[1].model
    prompts, replies = [user_prompt("How are you?")] * 2, ["Fine, thanks excellent.", "Fine."]
    for scorer, run in zip(together, runs):
        assert torch.allclose(
            scorer(prompts, replies), RewardScorer.from_path(run, device="cpu")(prompts, replies), atol=1e-5
        )


def test_joint_without_validation_takes_its_stats_on_the_training_replies(tiny_rm_dir, marker_file, tmp_path):
    cfg = tiny_config(tiny_rm_dir, marker_file, "joint", steps=1)
    cfg.data.val_fraction = 0.0
    assert train_reward_model(cfg, tmp_path / "run") == {}
    stats = json.loads((tmp_path / "run" / "reward_stats.json").read_text())
    assert stats["split"] == "train" and stats["n"] == 48 * 2 + 48 and stats["heads"]["absolute"]["n"] == 48 * 3


def held_out_accuracy(run_or_scorer: str | RewardScorer, pairs: list[RankingExample]) -> float:
    scorer = RewardScorer.from_path(run_or_scorer, device="cpu") if isinstance(run_or_scorer, str) else run_or_scorer
    return evaluate_reward_model(scorer, ValidationViews(pairs, []), RewardModelConfig(loss="pairwise"))[0][
        "pairwise_accuracy"
    ]


def test_joint_rm_learns_a_feature_both_views_carry(tiny_rm_dir, marker_file, tmp_path):
    cfg = tiny_config(tiny_rm_dir, marker_file, "joint", steps=30)
    val = train_reward_model(cfg, tmp_path / "joint")
    before = metrics_of(tmp_path / "joint")["val_before_training"]
    assert val["pairwise_accuracy"] >= 0.9 and val["pairwise_accuracy"] > before["pairwise_accuracy"]
    assert val["spearman"] > 0.6 and val["loss"] < before["loss"]
    fresh = [RankingExample(user_prompt(r["prompt"]), r["replies"], r["scores"]) for r in marker_rows(40, seed=1)]
    trained, untrained = held_out_accuracy(str(tmp_path / "joint"), fresh), held_out_accuracy(str(tiny_rm_dir), fresh)
    assert trained >= 0.85 and trained > untrained + 0.1


# Four kinds of reply ending: feature A (rankings) x feature B (absolute scores), three words each.
ENDINGS = {
    (0, 0): ["dog", "cat", "horse"],
    (1, 0): ["green", "blue", "red"],
    (0, 1): ["tree", "rock", "sand"],
    (1, 1): ["sunny", "happy", "yellow"],
}


def two_feature_rows(n: int, seed: int) -> list[dict]:
    """Rankings that order by A only (B the same in both replies) and scores that follow B only (A at random)."""
    rng = random.Random(seed)

    def reply(a: int, b: int) -> str:
        return " ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 4))) + " " + rng.choice(ENDINGS[(a, b)])

    rows = []
    for i in range(n):
        b, a, b_scored = rng.randint(0, 1), rng.randint(0, 1), rng.randint(0, 1)
        rows.append(
            {
                "prompt": f"Question {i}?",
                "replies": [reply(1, b), reply(0, b)],
                "reply": reply(a, b_scored),
                "score": 0.8 if b_scored else 0.2,
            }
        )
    return rows


def gold_pairs(n: int, seed: int, feature: str) -> list[RankingExample]:
    """Held-out pairs whose gold (A + B) differs in one feature only, better first."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        other = rng.randint(0, 1)
        better, worse = ((1, other), (0, other)) if feature == "A" else ((other, 1), (other, 0))
        replies = [
            " ".join(rng.choice(FILLER) for _ in range(3)) + " " + rng.choice(ENDINGS[cell]) for cell in (better, worse)
        ]
        pairs.append(RankingExample(user_prompt(f"Held out {i}?"), replies))
    return pairs


def test_joint_rm_uses_both_label_kinds_where_a_ranking_rm_sees_one(tiny_rm_dir, tmp_path):
    """Control: rankings carry feature A only, absolute scores feature B only, and the gold needs both.

    A ranking-only RM never sees B ordered, so it ranks B pairs about at chance; the joint
    RM (w = 0.5) gets B from its absolute head and A from its preference head.
    """
    data = write_rows(tmp_path / "two_features.jsonl", two_feature_rows(96, seed=0))
    joint_cfg = tiny_config(tiny_rm_dir, data, "joint", steps=40, lr=5e-3)
    train_reward_model(joint_cfg, tmp_path / "joint")
    ranking_cfg = tiny_config(tiny_rm_dir, data, "pairwise", steps=40, lr=5e-3)
    train_reward_model(ranking_cfg, tmp_path / "ranking")

    a_pairs, b_pairs = gold_pairs(40, 1, "A"), gold_pairs(40, 2, "B")
    joint_a, joint_b = (held_out_accuracy(str(tmp_path / "joint"), p) for p in (a_pairs, b_pairs))
    ranking_a, ranking_b = (held_out_accuracy(str(tmp_path / "ranking"), p) for p in (a_pairs, b_pairs))
    assert ranking_a >= 0.8 and joint_a >= 0.8  # both learnt A from the rankings
    assert joint_b >= 0.8 and joint_b > ranking_b + 0.15  # only the joint RM learnt B, from the scores
    assert (joint_a + joint_b) / 2 > (ranking_a + ranking_b) / 2 + 0.1


def test_joint_needs_both_kinds_of_data(tiny_rm_dir, tmp_path):
    rows = [{"prompt": f"Q{i}?", "replies": [f"good {i}", f"bad {i}"]} for i in range(8)]
    cfg = tiny_config(tiny_rm_dir, write_rows(tmp_path / "rankings.jsonl", rows), "joint", steps=1)
    with pytest.raises(ConfigError) as caught:
        train_reward_model(cfg, tmp_path / "run")
    message = str(caught.value)
    assert message.startswith("rm.loss=joint needs ranking and absolute examples") and "no absolute examples" in message
    assert "\n" not in message


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "override, named",
    [
        ("rm.loss=both", "rm.loss"),
        ("rm.pair_strength=strong", "rm.pair_strength"),
        ("rm.strength_scale=-1", "rm.strength_scale=-1.0: must be a finite number >= 0"),
        ("rm.joint_absolute_weight=-0.5", "rm.joint_absolute_weight=-0.5: must be a finite number >= 0"),
        ("rm.joint_preference_weight=1.5", "rm.joint_preference_weight=1.5: must be in [0, 1]"),
    ],
)
def test_bad_strategy_values_are_one_line_errors(override, named):
    with pytest.raises(ConfigError) as caught:
        load_config("sft", overrides=[override])
    assert named in str(caught.value) and "\n" not in str(caught.value)


def test_strategy_defaults():
    rm = load_config("rm_preference").rm
    assert (
        rm.init_from,
        rm.pair_strength,
        rm.strength_scale,
        rm.joint_absolute_weight,
        rm.joint_preference_weight,
    ) == ("", "none", 1.0, 1.0, 0.5)
    assert (
        load_config(
            "sft", overrides=["rm.loss=joint", "rm.pair_strength=margin", "rm.init_from=outputs/rm_absolute"]
        ).rm.loss
        == "joint"
    )
