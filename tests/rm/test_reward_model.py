"""Reward models: metrics, data preparation, one tokenization path, learning, scoring, e2e."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import FIXTURES
from stage_runs import record_arguments_and_loads, tiny_config, trained_after_arguments, write_marker_data

from crs.config import CRSConfig, DataConfig, load_config
from crs.data.schema import AbsoluteExample, RankingExample, user_prompt
from crs.rm.collators import AbsoluteCollator, RankingCollator
from crs.rm.metrics import absolute_metrics, average_ranks, pair_agreement, ranking_metrics, reward_stats, spearman
from crs.rm.rm_evaluation import evaluate_reward_model, evaluate_runs
from crs.rm.rm_format import RMFormat
from crs.rm.scorer import RewardScorer, load_reward_scorers
from crs.rm.training import train_reward_model
from crs.rm.training_data import ValidationViews, absolute_train_rows, cap_replies

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# --------------------------------------------------------------------------- metrics


def test_ranking_metrics_by_hand():
    # Prompt 1: (0,1) right, (0,2) right, (1,2) wrong. Prompt 2: its only pair is a reward tie.
    metrics = ranking_metrics([[3.0, 1.0, 2.0], [0.5, 0.5]])
    assert metrics["pairwise_accuracy"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert metrics["best_vs_worst_accuracy"] == pytest.approx((1 + 0.5) / 2)
    assert metrics["mean_margin"] == pytest.approx((2.0 + 1.0 - 1.0 + 0.0) / 4)
    assert (metrics["n_pairs"], metrics["n_prompts"]) == (4, 2)


def test_ranking_metrics_skip_tied_scores():
    metrics = ranking_metrics([[0.0, 1.0, -1.0]], scores=[[1.0, 1.0, 0.0]])
    assert metrics["n_pairs"] == 2  # the (0, 1) tie is not a preference
    assert metrics["pairwise_accuracy"] == 1.0


def test_absolute_metrics_buckets_and_correlations():
    pred, true = [0.2, 0.3, 0.9, 0.6], [0.0, 0.25, 1.0, 0.75]
    metrics = absolute_metrics(pred, true, threshold=0.25)
    assert metrics["mse"] == pytest.approx(np.mean([0.04, 0.0025, 0.01, 0.0225]))
    assert metrics["mae"] == pytest.approx(np.mean([0.2, 0.05, 0.1, 0.15]))
    assert (metrics["low_n"], metrics["high_n"]) == (2, 2)
    assert metrics["low_mae"] == pytest.approx(0.125)
    assert metrics["high_mse"] == pytest.approx((0.01 + 0.0225) / 2)
    assert metrics["spearman"] == pytest.approx(1.0)
    assert absolute_metrics([0.5, 0.5], [0.0, 1.0], 0.4)["pearson"] is None  # constant prediction


def test_spearman_uses_average_ranks_for_ties():
    assert average_ranks([10, 20, 20, 30]).tolist() == [0.0, 1.5, 1.5, 3.0]
    # Ranks [0, 1, 2, 3] vs [0, 1.5, 1.5, 3]: both have mean 1.5; centred they are
    # [-1.5, -.5, .5, 1.5] and [-1.5, 0, 0, 1.5]: r = 4.5 / sqrt(5 * 4.5) = 0.9487.
    assert spearman([1, 2, 3, 4], [5, 6, 6, 9]) == pytest.approx(4.5 / math.sqrt(5 * 4.5))
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_reward_stats_has_mean_std_and_quantiles():
    stats = reward_stats(list(range(101)))
    assert stats["mean"] == pytest.approx(50.0)
    assert stats["std"] == pytest.approx(np.std(np.arange(101)))
    assert stats["quantiles"] == {"5": 5.0, "25": 25.0, "50": 50.0, "75": 75.0, "95": 95.0}
    assert stats["n"] == 101


def test_pair_agreement_counts_same_order_and_half_ties():
    prompt = user_prompt("q")
    pairs = [(prompt, "long reply", "short"), (prompt, "a", "bbb"), (prompt, "xx", "yy")]

    def by_length(prompts, replies):
        return torch.tensor([float(len(r)) for r in replies])

    def by_negative_length(prompts, replies):
        return -by_length(prompts, replies)

    assert pair_agreement(by_length, by_length, pairs) == pytest.approx((1 + 1 + 0.5) / 3)
    assert pair_agreement(by_length, by_negative_length, pairs) == pytest.approx((0 + 0 + 0.5) / 3)


# --------------------------------------------------------------------------- data preparation


def test_cap_replies_spread_keeps_best_and_worst():
    ex = RankingExample(user_prompt("q"), ["a", "b", "c", "d", "e", "f"], [6, 5, 4, 3, 2, 1])
    spread = cap_replies(ex, 3, "spread")
    assert spread.replies == ["a", "c", "f"] and spread.scores == [6, 4, 1]  # ranks 0, 2.5->2, 5
    assert cap_replies(ex, 3, "top").replies == ["a", "b", "c"]
    assert cap_replies(ex, 10).replies == ex.replies


def test_absolute_rows_undersample_and_weight():
    cfg = CRSConfig().rm
    cfg.threshold, cfg.loss_weight_strength = 0.4, 0.5
    cfg.undersample, cfg.undersample_bins, cfg.undersample_max_ratio = True, 2, 1.0
    examples = [AbsoluteExample(user_prompt(f"q{i}"), "r", s) for i, s in enumerate([0.1, 0.2] + [0.9] * 8)]
    rows = absolute_train_rows(examples, cfg, seed=0)
    scores = sorted(ex.score for ex, _ in rows)
    assert scores == [0.1, 0.2, 0.9, 0.9]  # the big bin is cut to the small one's size
    weights = {ex.score: w for ex, w in rows}
    assert weights[0.1] == pytest.approx(0.5 * 4 / 2) and weights[0.9] == 1.0


def test_absolute_head_starts_at_the_mean_score(smol_tokenizer):
    """rm.init_bias_to_mean: sigmoid(bias) is the weighted mean target; only the trained head moves."""
    from tiny import tiny_sequence_classifier
    from transformers import BertConfig, BertForSequenceClassification

    from crs.config import LoraConfig
    from crs.models.lora import add_lora
    from crs.rm.training import init_head_bias_to_mean

    torch.manual_seed(0)
    bert = BertForSequenceClassification(
        BertConfig(
            vocab_size=100,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=1,
        )
    )
    model = add_lora(bert, LoraConfig(r=2, alpha=4, dropout=0.0), "reward_model")
    rows = [
        (AbsoluteExample(user_prompt("q"), "r", score), weight)
        for score, weight in [(0.9, 1.0), (0.6, 1.0), (0.1, 2.0)]
    ]
    bias = init_head_bias_to_mean(model, rows)
    mean = (0.9 + 0.6 + 0.1 * 2) / 4
    assert bias == pytest.approx(math.log(mean / (1 - mean)), abs=1e-6)
    assert model.base_model.model.classifier.modules_to_save["default"].bias.item() == pytest.approx(bias, abs=1e-6)
    assert model.base_model.model.classifier.original_module.bias.item() != pytest.approx(bias, abs=1e-3)
    x = torch.randint(0, 100, (3, 5))
    with torch.no_grad():
        model.base_model.model.classifier.modules_to_save["default"].weight.zero_()
        assert torch.allclose(torch.sigmoid(model(input_ids=x).logits), torch.full((3, 1), mean), atol=1e-5)
    assert (
        init_head_bias_to_mean(tiny_sequence_classifier(smol_tokenizer), rows) is None
    )  # Llama's score head has no bias


def test_ranking_collator_flattens_prompts_with_group_sizes(smol_tokenizer):
    fmt = RMFormat(max_length=64, max_prompt_length=32)
    examples = [
        RankingExample(user_prompt("first?"), ["good", "bad", "worse"], [1.0, 0.5, 0.0]),
        RankingExample(user_prompt("second?"), ["yes", "no"]),
    ]
    batch = RankingCollator(smol_tokenizer, fmt)(examples)
    assert batch["input_ids"].shape[0] == 5
    assert batch["group_sizes"].tolist() == [3, 2]
    assert batch["scores"][:3].tolist() == [1.0, 0.5, 0.0] and batch["scores"][3:].isnan().all()


# --------------------------------------------------------------------------- one tokenization path


def _rows(batch: dict[str, torch.Tensor]) -> list[list[int]]:
    """The unpadded token ids of each row of a padded batch."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]


@pytest.mark.parametrize("tokenizer_name", ["smol_tokenizer", "minilm_tokenizer"])
def test_training_collator_and_scorer_feed_identical_ids(request, tokenizer_name, tmp_path):
    """Chat-template (SmolLM2) and text-pair (MiniLM) tokenizers alike."""
    tokenizer = request.getfixturevalue(tokenizer_name)
    fmt = RMFormat(max_length=48, max_prompt_length=16)
    prompt = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour " + "please " * 30},
    ]
    replies = ["Blue.", "A long answer " * 20]
    ranking = RankingCollator(tokenizer, fmt)([RankingExample(prompt, replies)])
    absolute = AbsoluteCollator(tokenizer, fmt)([(AbsoluteExample(prompt, r, 0.5), 1.0) for r in replies])
    scorer = RewardScorer(torch.nn.Linear(1, 1), tokenizer, fmt, dtype=torch.float32)
    scored = scorer.encode([prompt, prompt], replies)
    assert _rows(ranking) == _rows(absolute) == _rows(scored)
    assert ranking["input_ids"].tolist() == scored["input_ids"].tolist()  # padding included
    assert max(len(r) for r in _rows(scored)) == 48  # truncation applied the same way


def test_scorer_from_disk_and_eval_feed_the_model_the_training_ids(tiny_rm_dir, smol_tokenizer, tmp_path):
    """Training collator, a RewardScorer reloaded from a run dir, and the eval metrics: same ids."""
    cfg = tiny_config(tiny_rm_dir, write_marker_data(tmp_path, "pairwise", n=8), "pairwise", steps=1)
    cfg.data.max_length, cfg.data.max_prompt_length = 40, 12
    run_dir = tmp_path / "run"
    train_reward_model(cfg, run_dir)
    examples = [RankingExample(user_prompt("Which is best? " + "really " * 20), ["the excellent one", "a plain one"])]
    collated = RankingCollator(smol_tokenizer, RMFormat.from_data_config(cfg.data))(examples)

    scorer = RewardScorer.from_path(str(run_dir))
    seen: list[list[list[int]]] = []
    hook = scorer.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"].tolist()), with_kwargs=True
    )
    scorer([ex.prompt for ex in examples for _ in ex.replies], examples[0].replies)
    evaluate_reward_model(scorer, ValidationViews(examples, []), cfg.rm)
    hook.remove()
    assert seen == [collated["input_ids"].tolist()] * 2
    assert scorer.fmt == RMFormat.from_data_config(cfg.data)  # read back from rm_format.json


@pytest.mark.parametrize(("dtype", "trainer_fp16"), [("fp16", True), ("bf16", False)])
def test_an_fp16_rm_gives_its_precision_to_the_trainer_for_loss_scaling(
    tiny_rm_dir, tmp_path, monkeypatch, dtype, trainer_fp16
):
    """fp16 needs loss scaling, which the Trainer does when told fp16 (a GradScaler on a GPU); bf16 is
    left as it was (the loss autocasts itself, no scaling)."""
    import crs.rm.training as rm_training

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)  # else the Trainer follows it
    built = []
    real = rm_training.training_arguments
    monkeypatch.setattr(rm_training, "training_arguments", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    cfg = tiny_config(tiny_rm_dir, write_marker_data(tmp_path, "pairwise", n=8), "pairwise", steps=1)
    cfg.model.dtype = dtype
    train_reward_model(cfg, tmp_path / "run")
    assert (built[0].fp16, built[0].bf16, built[0].mixed_precision) == (
        trainer_fp16,
        False,
        dtype if trainer_fp16 else "no",
    )


# --------------------------------------------------------------------------- learning on a tiny model


def test_pairwise_rm_learns_separable_rankings(tiny_rm_dir, tmp_path):
    cfg = tiny_config(tiny_rm_dir, write_marker_data(tmp_path, "pairwise"), "pairwise", steps=25)
    run_dir = tmp_path / "run"
    final = train_reward_model(cfg, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_before_training"]["pairwise_accuracy"] <= 0.75
    assert final["pairwise_accuracy"] >= 0.9 and final["best_vs_worst_accuracy"] >= 0.9
    assert final["mean_margin"] > metrics["val_before_training"]["mean_margin"] + 0.2
    assert final["loss"] < metrics["val_before_training"]["loss"]
    evals = [row for row in metrics["history"] if "eval_pairwise_accuracy" in row]
    assert [row["step"] for row in evals] == [10, 20, 25]  # periodic eval, and at the end
    stats = json.loads((run_dir / "reward_stats.json").read_text())
    assert stats["n"] == 16 * 2 and stats["split"] == "val"  # 25% of 64 prompts, 2 replies each

    # Held out in another file (scripts/eval_reward_models.py): the trained run ranks new
    # prompts' pairs; the untrained base does not, and the two often disagree.
    (tmp_path / "fresh").mkdir()
    fresh = write_marker_data(tmp_path / "fresh", "pairwise", n=40, seed=1)
    results = evaluate_runs([str(run_dir), str(tiny_rm_dir)], DataConfig(source=str(fresh), val_fraction=0.0))
    assert results["run"]["pairwise_accuracy"] >= 0.9 and results["run"]["n_prompts"] == 40
    assert results[tiny_rm_dir.name]["pairwise_accuracy"] <= 0.8
    assert results[f"run ~ {tiny_rm_dir.name}"]["agreement"] < 0.9


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_rm_makes_its_training_arguments_before_it_loads_the_model(tiny_rm_dir, tmp_path, monkeypatch, lora):
    cfg = tiny_config(tiny_rm_dir, write_marker_data(tmp_path, "pairwise", n=16), "pairwise", steps=1)
    cfg.model.lora.enabled = lora
    events = record_arguments_and_loads(monkeypatch)
    train_reward_model(cfg, tmp_path / "run")
    assert trained_after_arguments(events), events  # under ZeRO-3 it then loads partitioned


def test_absolute_rm_regression_error_falls(tiny_rm_dir, tmp_path):
    cfg = tiny_config(tiny_rm_dir, write_marker_data(tmp_path, "absolute", n=96), "absolute", steps=25)
    run_dir = tmp_path / "run"
    final = train_reward_model(cfg, run_dir)
    before = json.loads((run_dir / "metrics.json").read_text())["val_before_training"]
    assert final["mse"] < 0.6 * before["mse"]
    assert final["spearman"] > 0.6
    assert final["low_n"] + final["high_n"] == 24


def test_extending_a_finished_absolute_rm_reports_the_state_it_continued_from(tiny_rm_dir, tmp_path):
    cfg = tiny_config(tiny_rm_dir, write_marker_data(tmp_path, "absolute", n=32), "absolute", steps=4, lr=1e-2)
    cfg.train.save_steps = 4
    run_dir = tmp_path / "run"
    first_val = train_reward_model(cfg, run_dir)
    first = json.loads((run_dir / "metrics.json").read_text())
    cfg.train.max_steps = 6
    train_reward_model(cfg, run_dir, resume=True)
    extended = json.loads((run_dir / "metrics.json").read_text())
    # the untrained model's figures are the first session's, not a freshly built head's
    assert extended["val_before_training"] == pytest.approx(first["val_before_training"])
    # and the extension started from the finished run's weights
    assert extended["val_at_resume"]["step"] == 4
    assert extended["val_at_resume"]["mse"] == pytest.approx(first_val["mse"], rel=1e-5)
    assert first_val["mse"] < first["val_before_training"]["mse"]  # the two differ: training moved the figure
    assert "val_at_resume" not in first


def test_resume_continues_from_the_last_checkpoint(tiny_rm_dir, tmp_path):
    data = write_marker_data(tmp_path, "pairwise", n=16)
    cfg = tiny_config(tiny_rm_dir, data, "pairwise", steps=4)
    cfg.train.save_steps, cfg.train.eval_steps = 2, 0
    run_dir = tmp_path / "run"
    train_reward_model(cfg, run_dir)
    assert (run_dir / "checkpoints" / "checkpoint-4").is_dir()
    cfg.train.max_steps = 6
    train_reward_model(cfg, run_dir, resume=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 6
    # Only steps 5 and 6 ran in the second call: its first logged loss is at step 5 or later.
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    second_run = log[[i for i, row in enumerate(log) if "train_runtime" in row][0] + 1 :]
    assert second_run and min(row["step"] for row in second_run) >= 5


def test_length_grouped_batches_pad_less_and_resume_in_the_same_order():
    from crs.models.hf_trainer import SeededLengthGroupedSampler

    lengths = [random.Random(i).randint(5, 300) for i in range(640)]
    sampler = SeededLengthGroupedSampler(16, lengths, seed=3)

    def padded(order: list[int]) -> int:
        return sum(max(lengths[i] for i in order[k : k + 16]) * 16 for k in range(0, len(order), 16))

    first = list(sampler)
    assert sorted(first) == list(range(640)) and list(sampler) == first  # a permutation, the same on resume
    shuffled = list(range(640))
    random.Random(0).shuffle(shuffled)
    assert padded(first) < 0.75 * padded(shuffled)
    sampler.set_epoch(1)
    assert list(sampler) != first


def _logged_losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


def test_length_grouped_rm_training_resumed_matches_an_uninterrupted_run(tiny_rm_dir, tmp_path):
    data = write_marker_data(tmp_path, "absolute", n=96)
    cfg = tiny_config(tiny_rm_dir, data, "absolute", steps=6)
    cfg.train.group_by_length, cfg.train.lr_scheduler, cfg.train.eval_steps = True, "constant", 0
    cfg.train.save_steps, cfg.run.logging_steps = 3, 1
    train_reward_model(cfg, tmp_path / "straight")
    cfg.train.max_steps = 3
    train_reward_model(cfg, tmp_path / "resumed")
    cfg.train.max_steps = 6
    train_reward_model(cfg, tmp_path / "resumed", resume=True)
    straight, resumed = _logged_losses(tmp_path / "straight"), _logged_losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(1, 7))
    for step in range(1, 7):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-4), step


# --------------------------------------------------------------------------- several RMs, one base


def _random_lora_rm_run(base_dir: Path, tokenizer, run_dir: Path, seed: int) -> None:
    """A LoRA reward-model run on ``base_dir`` with random (non-zero) adapter and head weights."""
    from crs.config import LoraConfig
    from crs.models.loading import load_sequence_classifier
    from crs.models.lora import add_lora
    from crs.models.saving import save_run_model

    model = add_lora(load_sequence_classifier(str(base_dir)), LoraConfig(r=4, alpha=8, dropout=0.0), "reward_model")
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        if param.requires_grad:
            param.data = torch.randn(param.shape, generator=generator) * 0.5
    save_run_model(model, tokenizer, run_dir, str(base_dir), kind="reward_model")
    (run_dir / "rm_format.json").write_text(
        json.dumps(
            {"max_length": 64, "max_prompt_length": 32, "fallback_template": "{role}: {content}\n", "loss": "pairwise"}
        )
    )


def test_lora_rms_on_one_base_share_it_and_score_like_separate_loads(tiny_rm_dir, smol_tokenizer, tmp_path):
    runs = [tmp_path / "rm_a", tmp_path / "rm_b"]
    for seed, run in enumerate(runs):
        _random_lora_rm_run(tiny_rm_dir, smol_tokenizer, run, seed)
    prompts = [user_prompt("How are you?"), user_prompt("Name a fruit.")]
    replies = ["Fine, thanks.", "An apple."]

    together = load_reward_scorers([str(r) for r in runs], device="cpu")
    assert together[0].model is together[1].model  # one base in memory
    assert together[0].loss_kind == "pairwise" and together[0].fmt.max_length == 64
    # Interleave the two scorers: each call must switch to its own adapter.
    a1, b1, a2 = together[0](prompts, replies), together[1](prompts, replies), together[0](prompts, replies)
    separate = [RewardScorer.from_path(str(r), device="cpu")(prompts, replies) for r in runs]
    assert torch.allclose(a1, separate[0], atol=1e-5) and torch.allclose(b1, separate[1], atol=1e-5)
    assert torch.equal(a1, a2)
    assert not torch.allclose(a1, b1, atol=1e-3)


# --------------------------------------------------------------------------- end to end on MiniLM


@pytest.mark.slow
@pytest.mark.parametrize("subset", ["rm_preference", "rm_absolute"])
def test_subset_end_to_end_on_minilm(subset, tmp_path):
    """rm_train.py's stage on the embedded MiniLM and a tiny demo-format file, reloaded and scored."""
    from crs.cli import run_stage

    overrides = [
        f"run.output_dir={tmp_path}",
        f"data.source={FIXTURES / 'rm_demo.jsonl'}",
        "data.adapter=crs_demo",
        "data.split=rm",
        "data.val_fraction=0.25",
        "data.max_length=96",
        "data.max_prompt_length=48",
        "train.max_steps=3",
        "train.eval_steps=2",
        "train.save_steps=3",
    ]
    argv = ["--config_subset", subset] + [arg for o in overrides for arg in ("--set", o)]
    run_stage(train_reward_model, "test", argv)
    cfg = load_config(subset, overrides=overrides)
    run_dir = cfg.run_dir
    assert json.loads((run_dir / "run_state.json").read_text())["status"] == "finished"

    metrics = json.loads((run_dir / "metrics.json").read_text())
    stats = json.loads((run_dir / "reward_stats.json").read_text())
    val = metrics["val"]
    # The demo format has both views: ranking metrics for both RM kinds, correlations too.
    assert metrics["n_val_rankings"] == 4 and metrics["n_val_absolute"] == 16
    assert 0.0 <= val["pairwise_accuracy"] <= 1.0 and val["n_pairs"] == 4 * 6
    assert -1.0 <= val["spearman"] <= 1.0
    if subset == "rm_absolute":
        assert val["low_n"] + val["high_n"] == 16 and 0.0 <= val["mse"] <= 1.0
    else:
        assert "mse" not in val
    assert metrics["global_step"] == 3
    assert stats["n"] == 16 and stats["std"] > 0
    assert stats["quantiles"]["5"] <= stats["quantiles"]["50"] <= stats["quantiles"]["95"]

    scorer = RewardScorer.from_path(str(run_dir), cfg.model)
    assert scorer.loss_kind == cfg.rm.loss and scorer.stats == stats
    assert scorer.fmt.max_length == 96
    # The reloaded model reproduces the rewards the stats were computed from.
    from crs.data import load_examples

    kind = "ranking" if cfg.rm.loss == "pairwise" else "absolute"
    _, val_examples = load_examples(cfg.data, kind, cfg.run.seed)
    if kind == "ranking":
        rewards = scorer(
            [ex.prompt for ex in val_examples for _ in ex.replies], [r for ex in val_examples for r in ex.replies]
        )
    else:
        rewards = scorer([ex.prompt for ex in val_examples], [ex.reply for ex in val_examples])
    assert rewards.mean().item() == pytest.approx(stats["mean"], abs=0.05 * max(1.0, stats["std"]))
    one = scorer([user_prompt("Why is the sky blue?")], ["Because of Rayleigh scattering."])
    assert one.shape == (1,) and torch.isfinite(one).all()
