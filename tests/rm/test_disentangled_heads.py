"""The disentangled RM (``rm.loss: disentangled``): a quality head and a length head whose sum meets the
preferences, the quality head saved alone as the reward.

Tiny models built from a config (tests/tiny.py) on tiny synthetic rankings whose labels are length plus
a content marker; the three runs the tests compare are trained once per module (seconds each).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from crs.config import ConfigError, CRSConfig, RewardModelConfig, load_config
from crs.data.schema import RankingExample, user_prompt
from crs.rm.disentangled_heads import keep_quality_head
from crs.rm.length_metrics import reply_lengths
from crs.rm.metrics import pearson
from crs.rm.rm_evaluation import evaluate_reward_model
from crs.rm.scorer import RewardScorer
from crs.rm.training import train_reward_model
from crs.rm.training_data import ValidationViews, training_data

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

FILLER = "apple river stone cloud music table paper light".split()  # five letters each
MARKER, NEUTRAL = "great", "plain"  # the content: as long as each other, so it adds no length
MARKER_WORTH = 2.5  # a reply's score: its words + 2.5 if it carries the marker
MAX_WORDS, MATCHED_BAND = 16, 2  # length-matched pairs: at most 2 words apart (< MARKER_WORTH: the marker decides)


def reply(rng: random.Random, words: int, marked: bool) -> str:
    return " ".join(rng.choice(FILLER) for _ in range(words)) + " " + (MARKER if marked else NEUTRAL)


def length_and_marker_rows(n: int, seed: int) -> list[dict]:
    """Pairs ranked by ``words + 2.5 x marker``; in a quarter of them one reply carries the marker, so length
    decides most labels (as in human data, where the longer reply usually wins)."""
    rng = random.Random(seed)
    rows: list[dict] = []
    while len(rows) < n:
        words = rng.randint(1, MAX_WORDS), rng.randint(1, MAX_WORDS)
        first_marked = rng.random() < 0.5
        marked = (first_marked, not first_marked) if rng.random() < 0.25 else (first_marked, first_marked)
        scores = [w + MARKER_WORTH * m for w, m in zip(words, marked)]
        if scores[0] == scores[1]:
            continue
        replies = [reply(rng, w, m) for w, m in zip(words, marked)]
        better = 0 if scores[0] > scores[1] else 1
        rows.append({"prompt": f"Question {len(rows)}?", "replies": [replies[better], replies[1 - better]]})
    return rows


def length_matched_pairs(n: int, seed: int) -> list[RankingExample]:
    """Held-out pairs 1-2 words apart, one reply marked (the better one by the labels' rule, listed first);
    the marked reply is the shorter in half of them."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        short = rng.randint(1, MAX_WORDS - MATCHED_BAND)
        long = short + rng.randint(1, MATCHED_BAND)
        marked_short = rng.random() < 0.5
        marked, unmarked = (short, long) if marked_short else (long, short)
        pairs.append(
            RankingExample(
                user_prompt(f"Question {5000 + i}?"), [reply(rng, marked, True), reply(rng, unmarked, False)]
            )
        )
    return pairs


def fresh_replies(n: int, seed: int) -> list[RankingExample]:
    """Held-out replies from the training distribution (1-16 words, half of them marked), two per prompt."""
    rng = random.Random(seed)
    return [
        RankingExample(
            user_prompt(f"Question {9000 + i}?"),
            [reply(rng, rng.randint(1, MAX_WORDS), rng.random() < 0.5) for _ in range(2)],
        )
        for i in range(n)
    ]


def config(model: Path, data: Path, loss: str, terms_on: bool = True, steps: int = 60) -> CRSConfig:
    """The tiny model in fp32, fully fine-tuned, a quarter of the prompts held out."""
    cfg = CRSConfig()
    cfg.model.name, cfg.model.dtype, cfg.model.lora.enabled = str(model), "fp32", False
    cfg.data.source, cfg.data.val_fraction, cfg.data.max_length = str(data), 0.25, 96
    cfg.rm.loss = loss
    if not terms_on:  # the control: the sum's ranking loss alone
        cfg.rm.disentangled_length_weight = cfg.rm.disentangled_quality_weight = 0.0
        cfg.rm.disentangled_orthogonality_weight = 0.0
    cfg.train.learning_rate, cfg.train.max_steps, cfg.train.batch_size, cfg.train.warmup_ratio = 3e-3, steps, 32, 0.0
    cfg.train.eval_steps, cfg.train.save_steps, cfg.run.logging_steps = 0, 1000, 10
    return cfg


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("length_marker") / "rankings.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in length_and_marker_rows(320, seed=0)))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_rm_dir, data_file) -> dict[str, Path]:
    """The disentangled RM, its control (the same with every length term and orthogonality off) and a
    pairwise RM, on the same data, steps and seed."""
    out = tmp_path_factory.mktemp("disentangled_runs")
    settings = {
        "disentangled": config(tiny_rm_dir, data_file, "disentangled"),
        "control": config(tiny_rm_dir, data_file, "disentangled", terms_on=False),
        "pairwise": config(tiny_rm_dir, data_file, "pairwise"),
    }
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: the one_thread fixture is not active yet
    try:
        for name, cfg in settings.items():
            train_reward_model(cfg, out / name)
    finally:
        torch.set_num_threads(before)
    return {name: out / name for name in settings}


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def accuracy(scorer: RewardScorer, pairs: list[RankingExample]) -> float:
    return evaluate_reward_model(scorer, ValidationViews(pairs, []), RewardModelConfig(loss="pairwise"))[0][
        "pairwise_accuracy"
    ]


def length_correlation(scorer: RewardScorer, pairs: list[RankingExample]) -> float:
    prompts = [ex.prompt for ex in pairs for _ in ex.replies]
    replies = [r for ex in pairs for r in ex.replies]
    return pearson(scorer(prompts, replies).tolist(), reply_lengths(replies).tolist())


# --------------------------------------------------------------------------- what training does


def test_the_quality_head_drops_length_and_wins_on_length_matched_pairs(runs):
    """The saved reward (the quality head) does not follow length; a pairwise RM on the same data does, and on
    length-matched pairs, where the marker decides, the length it follows costs it pairs the quality head gets."""
    scorers = {name: RewardScorer.from_path(str(path), device="cpu") for name, path in runs.items()}
    quality, fresh = metrics_of(runs["disentangled"])["val"], fresh_replies(200, seed=11)
    assert abs(quality["length_pearson"]) < 0.2  # validation replies
    assert abs(length_correlation(scorers["disentangled"], fresh)) < 0.2  # held-out replies
    assert length_correlation(scorers["pairwise"], fresh) > 0.8
    matched = length_matched_pairs(200, seed=5)
    matched_accuracy = {name: accuracy(scorer, matched) for name, scorer in scorers.items()}
    assert matched_accuracy["disentangled"] >= 0.95
    assert matched_accuracy["disentangled"] > matched_accuracy["pairwise"] + 0.03
    # the length went to the length head, and the sum still ranks as the labels do
    assert quality["length_head_length_pearson"] > 0.9 and quality["sum_pairwise_accuracy"] >= 0.9


def test_the_control_without_length_terms_keeps_length_in_the_quality_head(runs):
    """With the length, decorrelation and orthogonality weights at 0 the two heads get the same gradient:
    the quality head follows length as much as the pairwise RM does."""
    control = metrics_of(runs["control"])["val"]
    assert control["length_pearson"] > 0.8
    fresh = fresh_replies(200, seed=11)
    assert length_correlation(RewardScorer.from_path(str(runs["control"]), device="cpu"), fresh) > 0.8


def test_metrics_name_every_head_and_term(runs):
    metrics = metrics_of(runs["disentangled"])
    val = metrics["val"]
    for prefix in ("", "length_head_", "sum_"):
        assert {f"{prefix}{key}" for key in ("pairwise_accuracy", "best_vs_worst_accuracy", "length_pearson")} <= set(
            val
        )
    terms = ("loss_ranking", "loss_length_correlation", "loss_quality_covariance", "loss_orthogonality")
    assert set(terms) <= set(val) and "loss" in val
    rm = CRSConfig().rm
    assert val["loss"] == pytest.approx(
        val["loss_ranking"]
        - rm.disentangled_length_weight * val["loss_length_correlation"]
        + rm.disentangled_quality_weight * val["loss_quality_covariance"]
        + rm.disentangled_orthogonality_weight * val["loss_orthogonality"],
        rel=1e-5,
    )
    assert set(terms) <= set(metrics["val_before_training"])
    assert metrics["loss_kind"] == "disentangled"


# --------------------------------------------------------------------------- what the run saves


def test_the_run_saves_the_quality_head_as_a_one_output_rm(runs, tiny_rm_dir, data_file):
    run = runs["disentangled"]
    manifest = json.loads((run / "crs_model.json").read_text())
    assert "num_labels" not in manifest  # one output, as every one-head RM
    assert json.loads((run / "adapter" / "config.json").read_text())["id2label"] == {"0": "quality"}
    assert json.loads((run / "rm_format.json").read_text())["loss"] == "disentangled"
    scorer = RewardScorer.from_path(str(run), device="cpu")
    assert scorer.loss_kind == "disentangled" and scorer.joint is None
    # Reloaded, it scores the validation replies as the quality head did at the end of training.
    views = training_data(config(tiny_rm_dir, data_file, "disentangled")).views
    reloaded, rewards = evaluate_reward_model(scorer, views, RewardModelConfig(loss="pairwise"))
    val = metrics_of(run)["val"]
    assert reloaded["pairwise_accuracy"] == pytest.approx(val["pairwise_accuracy"])
    assert reloaded["mean_margin"] == pytest.approx(val["mean_margin"], rel=1e-4)
    assert reloaded["mean_margin"] != pytest.approx(val["length_head_mean_margin"], rel=1e-2)
    stats = json.loads((run / "reward_stats.json").read_text())
    assert stats["mean"] == pytest.approx(float(rewards.mean()), abs=1e-4)
    assert stats["std"] == pytest.approx(float(rewards.std(unbiased=False)), rel=1e-4)


def test_a_finished_run_extends_from_its_two_head_checkpoint(tiny_rm_dir, data_file, tmp_path):
    """The checkpoints keep both heads (the run saves the quality head alone at the end), so ``--resume`` with
    more steps continues the two-head model and saves its quality head again."""
    cfg = config(tiny_rm_dir, data_file, "disentangled", steps=2)
    cfg.train.save_steps = 2
    first = train_reward_model(cfg, tmp_path / "run")
    cfg.train.max_steps = 3
    train_reward_model(cfg, tmp_path / "run", resume=True)
    metrics = metrics_of(tmp_path / "run")
    assert metrics["global_step"] == 3 and metrics["val_at_resume"]["step"] == 2
    assert metrics["val_at_resume"]["loss"] == pytest.approx(first["loss"], rel=1e-5)
    assert RewardScorer.from_path(str(tmp_path / "run"), device="cpu").model.config.num_labels == 1


def test_keep_quality_head_cuts_the_head_to_its_first_output(smol_tokenizer):
    from tiny import tiny_sequence_classifier

    model = tiny_sequence_classifier(smol_tokenizer, num_labels=2)
    head = model.score
    ids = torch.tensor([[1, 17, 400, 23, 9], [2, 88, 14, 600, 31]])
    with torch.no_grad():
        both = model(ids).logits
    keep_quality_head(model, head)
    with torch.no_grad():
        kept = model(ids).logits
    assert kept.shape == (2, 1) and torch.equal(kept[:, 0], both[:, 0])
    assert model.config.num_labels == 1 and model.config.id2label == {0: "quality"}


def test_a_zero3_disentangled_rm_saves_its_quality_head_from_the_gathered_weights(
    tiny_rm_dir, smol_tokenizer, tmp_path
):
    from crs.config import LoraConfig
    from crs.models.loading import load_sequence_classifier
    from crs.models.lora import add_lora
    from crs.models.saving import save_run_model
    from crs.rm.training import trainable_head

    torch.manual_seed(0)
    model = add_lora(load_sequence_classifier(str(tiny_rm_dir), num_labels=2), LoraConfig(r=4, alpha=8), "reward_model")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    ids = torch.tensor([[1, 17, 400, 23, 9], [2, 88, 14, 600, 31]])
    with torch.no_grad():
        both = model.eval()(ids).logits
    head, whole = trainable_head(model), {k: v.clone() for k, v in model.state_dict().items()}
    for param in model.parameters():  # what ZeRO-3 leaves on each process; ``whole`` is what it gathers
        param.data = torch.empty(0, dtype=param.dtype)
    keep_quality_head(model, head, whole)
    save_run_model(model, smol_tokenizer, tmp_path, str(tiny_rm_dir), "reward_model", merge=True, state_dict=whole)
    for folder in (tmp_path, tmp_path / "merged"):
        with torch.no_grad():
            kept = load_sequence_classifier(str(folder)).eval()(ids).logits
        assert kept.shape == (2, 1) and torch.allclose(kept[:, 0], both[:, 0], atol=1e-5), folder


# --------------------------------------------------------------------------- refused in one line


def test_disentangled_needs_rankings(tiny_rm_dir, tmp_path):
    rows = [{"prompt": f"Q{i}?", "reply": f"reply {i}", "score": 0.5} for i in range(8)]
    data = tmp_path / "scores.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(ConfigError) as caught:
        train_reward_model(config(tiny_rm_dir, data, "disentangled", steps=1), tmp_path / "run")
    message = str(caught.value)
    assert message.startswith("rm.loss=disentangled trains on rankings") and "no ranking examples" in message
    assert "\n" not in message and not (tmp_path / "run" / "crs_model.json").exists()


def test_disentangled_starts_fresh(tiny_rm_dir, data_file, tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config("rm_disentangled", overrides=["rm.init_from=outputs/rm_preference"])
    assert "rm.init_from='outputs/rm_preference': must be \"\" with rm.loss=disentangled" in str(caught.value)
    cfg = config(tiny_rm_dir, data_file, "disentangled", steps=1)
    cfg.rm.init_from = str(tmp_path)  # a config built in code skips load_config's check: the stage refuses too
    with pytest.raises(ConfigError, match=r"^rm.init_from=.*rm.loss=disentangled starts its two heads fresh; set rm"):
        train_reward_model(cfg, tmp_path / "run")


@pytest.mark.parametrize("key", ["length", "quality", "orthogonality"])
def test_negative_term_weights_are_refused(key):
    with pytest.raises(ConfigError) as caught:
        load_config("rm_disentangled", overrides=[f"rm.disentangled_{key}_weight=-1"])
    assert f"rm.disentangled_{key}_weight=-1.0: must be a finite number >= 0" in str(caught.value)


def test_the_rm_disentangled_subset_is_the_preference_rm_with_the_new_loss():
    disentangled, preference = load_config("rm_disentangled"), load_config("rm_preference")
    assert disentangled.rm.loss == "disentangled" and disentangled.run.name == "rm_disentangled"
    assert disentangled.data == preference.data and disentangled.model == preference.model
    assert (
        disentangled.rm.disentangled_length_weight,
        disentangled.rm.disentangled_quality_weight,
        disentangled.rm.disentangled_orthogonality_weight,
    ) == (1.0, 1.0, 1.0)
