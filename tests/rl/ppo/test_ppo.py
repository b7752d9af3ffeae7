"""PPO: the maths against hand-computed values, rollouts and masking, learning, resume, 2 processes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from paths import ROOT
from stage_runs import run_rl_under_torchrun, write_rl_config

from crs.config import ConfigError, LoraConfig, RLConfig
from crs.data.schema import user_prompt
from crs.models.decoding import SamplingSettings, gather_logprobs, sample_next_token
from crs.rl.combined_reward import CombinedReward
from crs.rl.ppo.losses import (
    AdaptiveKLController,
    FixedKLController,
    compute_gae,
    last_token_index,
    masked_mean,
    masked_whiten,
    per_token_rewards,
    ppo_losses,
)
from crs.rl.ppo.policy import PolicyValueModel, sample_replies
from crs.rl.ppo.trainer import PPOTrainer
from crs.rl.reward_sources import RewardSource

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# --------------------------------------------------------------------------- maths


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.5, 2.0, 0.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3, 9.0], [1.0, -1.0, 7.0, 7.0]])  # padding values must be ignored
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    gamma, lam = 0.9, 0.5
    adv, ret = compute_gae(rewards, values, mask, gamma, lam)
    # Row 0: deltas d2 = 1 - 0.3, d1 = 0 + 0.9*0.3 - 0.2, d0 = 0 + 0.9*0.2 - 0.1
    d2, d1, d0 = 0.7, 0.07, 0.08
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    # Row 1: d1 = 2 - (-1) = 3 (next state terminal), d0 = 0.5 + 0.9*(-1) - 1
    b1 = 3.0
    b0 = (0.5 - 0.9 - 1.0) + gamma * lam * b1
    expected = torch.tensor([[a0, a1, a2, 0.0], [b0, b1, 0.0, 0.0]])
    assert torch.allclose(adv, expected, atol=1e-6)
    assert torch.allclose(ret, (expected + values) * mask, atol=1e-6)


def test_gae_gamma_lam_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 0.25, 0.0]])
    adv, ret = compute_gae(rewards, values, torch.ones(1, 3), 1.0, 1.0)
    assert torch.allclose(ret, torch.tensor([[6.0, 5.0, 3.0]]))
    assert torch.allclose(adv, ret - values)


def test_kl_penalty_and_score_on_last_reply_token():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, 0.0], [-1.0, -1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, -3.0], [-2.0, -2.0, -2.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    score = torch.tensor([10.0, -4.0])
    rewards, kl = per_token_rewards(score, logprobs, ref, mask, kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
    expected = torch.tensor([[-0.05, 0.1, 10.0, 0.0], [-0.1, -0.1, -0.1, -0.1 - 4.0]])
    assert torch.allclose(rewards, expected)
    assert last_token_index(mask).tolist() == [2, 3]


def test_fixed_kl_controller_never_moves():
    ctl = FixedKLController(0.05)
    ctl.update(100.0, 64)
    assert ctl.value == 0.05


def test_adaptive_kl_controller_follows_ziegler():
    ctl = AdaptiveKLController(0.1, target_kl=6.0, horizon=100)
    ctl.update(9.0, 10)  # error 0.5 clipped to 0.2 -> x (1 + 0.2 * 10/100)
    assert ctl.value == pytest.approx(0.1 * 1.02)
    ctl.update(5.4, 10)  # error -0.1 -> x (1 - 0.1 * 0.1)
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.99)
    ctl.update(0.0, 50)  # error -1 clipped to -0.2 -> x 0.9
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.99 * 0.9)
    state = ctl.state_dict()
    other = AdaptiveKLController(1.0, 6.0, 100)
    other.load_state_dict(state)
    assert other.value == ctl.value


def test_masked_whiten_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -50.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    out = masked_whiten(x, mask)
    real = out[mask.bool()]
    assert real.mean().abs() < 1e-6
    assert real.std(unbiased=False) == pytest.approx(1.0, abs=1e-4)
    assert torch.all(out[~mask.bool()] == 0)
    assert masked_mean(x, mask).item() == pytest.approx(3.0)


def test_ppo_losses_clip_policy_and_value():
    mask = torch.ones(1, 2)
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.75, 0.25]]))  # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0, -1.0]])
    # ratio 1.5 with A=1: clipped to 1.2 -> -1.2; ratio 0.5 with A=-1: clip 0.8 -> 0.8 (max of 0.5, 0.8)
    values, old_values, returns = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    pg, vf, stats = ppo_losses(new, old, adv, values, old_values, returns, mask, 0.2, 0.2)
    assert pg.item() == pytest.approx((-1.2 + 0.8) / 2)
    # value 1.0 clipped to 0.2: max((1-2)^2, (0.2-2)^2) = 3.24; second token 0
    assert vf.item() == pytest.approx(0.5 * (3.24 + 0.0) / 2)
    assert stats["policy/clipfrac"].item() == pytest.approx(1.0)
    assert stats["value/clipfrac"].item() == pytest.approx(0.5)


def test_policy_gradient_points_toward_advantage():
    logits = torch.zeros(1, 1, 4, requires_grad=True)
    token = torch.tensor([[2]])
    logprobs = gather_logprobs(logits, token)
    pg, _, _ = ppo_losses(
        logprobs,
        logprobs.detach(),
        torch.ones(1, 1),
        torch.zeros(1, 1),
        torch.zeros(1, 1),
        torch.zeros(1, 1),
        torch.ones(1, 1),
        0.2,
        0.2,
    )
    pg.backward()
    assert logits.grad[0, 0, 2] < 0  # descending the loss raises the rewarded token's logit


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.06, 0.04]])).repeat(2000, 1)
    torch.manual_seed(0)
    tokens = sample_next_token(logits, top_p=0.8)
    assert set(tokens.tolist()) == {0, 1}
    share = (tokens == 0).float().mean().item()
    assert share == pytest.approx(0.6 / 0.9, abs=0.05)


# --------------------------------------------------------------------------- rollouts on a tiny model


def _prompts(n: int) -> list:
    return [user_prompt(f"Say something about topic {i}" + " please" * (i % 3)) for i in range(n)]


def _trainer(lm, tok, reward_fn, **rl_kwargs) -> PPOTrainer:
    cfg = RLConfig(**{"batch_size": 4, "mini_batch_size": 4, "max_new_tokens": 6, "temperature": 1.0, **rl_kwargs})
    reward = CombinedReward([RewardSource("r", reward_fn, normalize="none")])
    return PPOTrainer(cfg, PolicyValueModel(lm), tok, reward)


def test_sampling_masks_everything_after_eos(tiny_lm, left_tokenizer):
    eos = left_tokenizer.eos_token_id
    model = PolicyValueModel(tiny_lm).eval()
    head = model.lm_head
    biased = torch.nn.Linear(head.weight.shape[1], head.weight.shape[0])
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[eos] = 9.0  # EOS gets ~15% a step, so replies stop at different lengths
    model.lm_head = biased
    trainer = _trainer(tiny_lm, left_tokenizer, lambda p, r: [0.0] * len(r))
    ids, mask = trainer.encode_prompts(_prompts(8))
    assert (mask[:, 0] == 0).any() and (mask[:, -1] == 1).all()  # left padding
    torch.manual_seed(0)
    s = sample_replies(
        model, ids, mask, SamplingSettings(12, do_sample=True, temperature=1.0), eos, left_tokenizer.pad_token_id
    )
    assert s.ended_with_eos.any() and (s.reply_mask.sum(1) > 1).any()
    for row in range(8):
        n = int(s.reply_mask[row].sum())
        assert s.reply_mask[row, :n].all() and not s.reply_mask[row, n:].any()  # one contiguous block
        if s.ended_with_eos[row]:
            assert s.reply_ids[row, n - 1] == eos and (s.reply_ids[row, : n - 1] != eos).all()
            assert (s.reply_ids[row, n:] == left_tokenizer.pad_token_id).all()
        assert (s.logprobs[row, n:] == 0).all()


def test_forward_logprobs_match_sampling_and_ignore_left_padding(tiny_lm, left_tokenizer):
    """The rollout forward sees the tokens exactly as sampling did (positions from the mask)."""
    model = PolicyValueModel(tiny_lm).eval()
    torch.nn.init.normal_(model.value_head.weight)
    trainer = _trainer(tiny_lm, left_tokenizer, lambda p, r: [0.0] * len(r))
    prompts = _prompts(3)
    ids, mask = trainer.encode_prompts(prompts)
    torch.manual_seed(1)
    s = sample_replies(
        model,
        ids,
        mask,
        SamplingSettings(5, do_sample=True, temperature=0.7),
        left_tokenizer.eos_token_id,
        left_tokenizer.pad_token_id,
    )
    full_ids, full_mask = torch.cat([ids, s.reply_ids], 1), torch.cat([mask, s.reply_mask], 1)
    with torch.no_grad():
        logits, values = model(full_ids, full_mask, s.reply_ids.shape[1], temperature=0.7)
    logprobs = gather_logprobs(logits, s.reply_ids) * s.reply_mask
    assert torch.allclose(logprobs, s.logprobs, atol=1e-4)
    assert torch.allclose(values * s.reply_mask, s.values, atol=1e-4)
    # The shortest prompt alone (no padding) gives the same log-probs as in the padded batch.
    row = int(mask.sum(1).argmin())
    alone = torch.cat([ids[row : row + 1, mask[row].bool()], s.reply_ids[row : row + 1]], 1)
    with torch.no_grad():
        logits_alone, _ = model(alone, torch.ones_like(alone), s.reply_ids.shape[1], temperature=0.7)
    assert torch.allclose(gather_logprobs(logits_alone, s.reply_ids[row : row + 1])[0], logprobs[row], atol=1e-4)


def test_reference_is_the_base_model_with_the_adapter_off(tiny_lm, left_tokenizer):
    from crs.models.lora import add_lora

    base_copy = __import__("copy").deepcopy(tiny_lm).eval()
    lora = add_lora(tiny_lm, LoraConfig(r=4, alpha=8, dropout=0.0), "causal_lm")
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained adapter: the policy now differs from the base
    trainer = _trainer(lora, left_tokenizer, lambda p, r: [0.0] * len(r))
    assert trainer.reference is None  # no second copy of the model
    ids, mask = trainer.encode_prompts(_prompts(3))
    reply = torch.randint(100, 1000, (3, 4))
    full_ids, full_mask = torch.cat([ids, reply], 1), torch.cat([mask, torch.ones_like(reply)], 1)
    ref = trainer.reference_logprobs(full_ids, full_mask, reply)
    with torch.no_grad():
        base_logits = base_copy(
            full_ids, attention_mask=full_mask, position_ids=(full_mask.cumsum(1) - 1).clamp(min=0)
        ).logits
    expected = gather_logprobs(base_logits[:, -5:-1] / trainer.cfg.temperature, reply)
    assert torch.allclose(ref, expected, atol=1e-4)
    with torch.no_grad():
        policy_logits, _ = trainer.unwrapped(full_ids, full_mask, 4, trainer.cfg.temperature)
    assert not torch.allclose(gather_logprobs(policy_logits, reply), ref, atol=1e-2)  # the adapter is back on


def test_full_finetuning_gets_a_frozen_reference(tiny_lm, left_tokenizer):
    trainer = _trainer(tiny_lm, left_tokenizer, lambda p, r: [float(len(x)) for x in r])
    assert trainer.reference is not None and not any(p.requires_grad for p in trainer.reference.parameters())
    metrics = trainer.step(_prompts(4))
    assert metrics["kl/sequence"] == pytest.approx(0.0, abs=1e-4)  # first rollout: policy == reference
    assert metrics["ppo/optimizer_steps"] == 4
    for key in (
        "reward/combined",
        "reward/r/raw",
        "loss/policy",
        "loss/value",
        "policy/clipfrac",
        "policy/approx_kl",
        "policy/entropy",
        "kl/coef",
        "reply/length",
        "time/generation",
        "time/update",
        "tokens_per_second",
    ):
        assert key in metrics
    assert trainer.step(_prompts(4))["kl/sequence"] != 0.0  # the policy moved


def test_nonfinite_reward_skips_update_then_stops(tiny_lm, left_tokenizer):
    trainer = _trainer(tiny_lm, left_tokenizer, lambda p, r: [float("nan")] * len(r), max_nonfinite_in_row=2)
    before = {k: v.clone() for k, v in trainer.unwrapped.trainable_state_dict().items()}
    metrics = trainer.step(_prompts(4))
    assert metrics["ppo/skipped"] == 1.0 and trainer.nonfinite_in_row == 1
    after = trainer.unwrapped.trainable_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no update happened
    with pytest.raises(FloatingPointError, match="in a row"):
        trainer.step(_prompts(4))


def test_early_stop_on_approx_kl(tiny_lm, left_tokenizer):
    trainer = _trainer(
        tiny_lm,
        left_tokenizer,
        lambda p, r: [float(len(x)) for x in r],
        mini_batch_size=2,
        early_stop_kl=0.0,
        learning_rate=1e-2,
    )
    metrics = trainer.step(_prompts(4))
    assert metrics["ppo/early_stopped"] == 1.0
    # Of 4 epochs x 2 mini-batches: the first is measured before any update (approx KL 0),
    # the second sees the policy moved and stops the step.
    assert metrics["ppo/optimizer_steps"] == 2


def test_gradient_accumulation_matches_one_big_batch(smol_tokenizer, left_tokenizer):
    """Two micro-batches of 2 with accumulation give the same update as one batch of 4."""
    from tiny import tiny_causal_lm

    results = []
    for accumulation in (1, 2):
        lm = tiny_causal_lm(smol_tokenizer, seed=3)
        trainer = _trainer(
            lm,
            left_tokenizer,
            lambda p, r: [float(len(x)) for x in r],
            ppo_epochs=1,
            gradient_accumulation_steps=accumulation,
        )
        torch.manual_seed(0)
        result = trainer.rollout(_prompts(4))
        trainer.update(result.batch)
        results.append(trainer.unwrapped.trainable_state_dict())
    diffs = [(results[0][k] - results[1][k]).abs().max().item() for k in results[0]]
    assert max(diffs) < 1e-5


def test_old_logprobs_from_the_first_update_forward_are_exact(smol_tokenizer, left_tokenizer):
    """Skipping the rollout's policy forward (one mini-batch) changes nothing: same batch, same update."""
    from tiny import tiny_causal_lm

    runs = []
    for reuse in (False, True):
        lm = tiny_causal_lm(smol_tokenizer, seed=3)
        trainer = _trainer(
            lm, left_tokenizer, lambda p, r: [float(len(x)) for x in r], ppo_epochs=2, old_logprobs_from_update=reuse
        )
        assert trainer.old_logprobs_from_update is reuse
        torch.manual_seed(0)
        result = trainer.rollout(_prompts(4))
        assert result.batch.complete is not reuse  # the reused path leaves it to the update
        stats = trainer.update(result.batch)
        assert result.batch.complete
        runs.append((result.batch, stats, trainer.unwrapped.trainable_state_dict()))
    (a, stats_a, weights_a), (b, stats_b, weights_b) = runs
    for field in ("logprobs", "values", "rewards", "advantages", "returns"):
        assert torch.allclose(getattr(a, field), getattr(b, field), atol=1e-6), field
    assert stats_b["policy/ratio"] == pytest.approx(stats_a["policy/ratio"], abs=1e-6)
    assert max((weights_a[k] - weights_b[k]).abs().max().item() for k in weights_a) < 1e-5


# --------------------------------------------------------------------------- learning


def direction_reward_factory(lm, seed: int = 1):
    """A reward the tiny policy can reach: the mean score of its reply tokens under a fixed
    linear token scorer (output embedding . a random direction, standardised over the vocab).
    Raising it means turning the final hidden state toward that direction."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(lm.config.hidden_size, generator=g)
    proj = lm.get_output_embeddings().weight.detach() @ direction
    token_score = (proj - proj.mean()) / proj.std()

    def reward(prompts, replies):
        # Replies here are token ids as text (see ids_as_text), so the reward sees exactly
        # the sampled tokens; re-tokenizing random subwords would scramble them.
        return [sum(float(token_score[int(t)]) for t in r.split()) / max(len(r.split()), 1) for r in replies]

    return reward


def ids_as_text(eos_id):
    """A decode that writes token ids, so the test reward needs no tokenizer round trip."""

    def decode(reply_ids, reply_mask):
        return [
            " ".join(str(t) for t in row[m.bool()].tolist() if t != eos_id) for row, m in zip(reply_ids, reply_mask)
        ]

    return decode


def run_learning(smol_tokenizer, left_tokenizer, steps: int, broken: bool = False, monkeypatch=None) -> list[dict]:
    from tiny import tiny_causal_lm

    from crs.models.lora import add_lora

    # A larger init than the default makes the tiny model's next-token distribution peaked
    # enough (entropy ~7 nats instead of ln 49152) that a reward on its tokens has signal.
    lm = tiny_causal_lm(smol_tokenizer, seed=0, initializer_range=0.5)
    reward = direction_reward_factory(lm)
    lm = add_lora(lm, LoraConfig(r=8, alpha=16, dropout=0.0), "causal_lm")
    if broken:
        import crs.rl.ppo.trainer

        real_gae = crs.rl.ppo.trainer.compute_gae
        monkeypatch.setattr(crs.rl.ppo.trainer, "compute_gae", lambda *a: (-real_gae(*a)[0], real_gae(*a)[1]))
    cfg = RLConfig(
        batch_size=16, mini_batch_size=8, max_new_tokens=8, temperature=1.0, learning_rate=3e-3, kl_coef=0.05
    )
    torch.manual_seed(0)
    trainer = PPOTrainer(
        cfg, PolicyValueModel(lm), left_tokenizer, CombinedReward([RewardSource("direction", reward, normalize="none")])
    )
    trainer.decode = ids_as_text(left_tokenizer.eos_token_id)
    prompts = _prompts(16)
    return [trainer.step(prompts) for _ in range(steps)]


@pytest.mark.slow
@pytest.mark.parametrize("broken", [False, True], ids=["ppo", "advantage-sign-flipped"])
def test_ppo_raises_the_reward_and_keeps_kl_bounded(smol_tokenizer, left_tokenizer, monkeypatch, broken):
    history = run_learning(smol_tokenizer, left_tokenizer, steps=32, broken=broken, monkeypatch=monkeypatch)
    rewards = [round(m["reward/combined"], 3) for m in history]
    start, end = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    if broken:
        # The control: with the advantage sign flipped the same run must not learn.
        assert end < start + 0.1, rewards
        return
    assert end > start + 0.4, rewards  # a reply's reward has sd ~0.35 at the start
    assert max(m["kl/sequence"] for m in history) < 25.0  # the KL penalty keeps the policy near the reference
    assert all(m["ppo/skipped"] == 0 for m in history)


# --------------------------------------------------------------------------- the stage: checkpoints, resume, processes


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_checkpoint_resume_continues_the_same_run(tmp_path, tiny_model_dir):
    from crs.config import load_config
    from crs.models.loading import load_causal_lm
    from crs.rl.ppo.stage import run_ppo_stage
    from crs.runs import is_finished

    def run(name, steps, resume):
        path = write_rl_config(tmp_path / f"{name}.yaml", tiny_model_dir, tmp_path / name, steps=steps)
        cfg = load_config("tiny_rl", path)
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        run_ppo_stage(cfg, cfg.run_dir, resume)
        return cfg.run_dir

    straight = run("straight", 4, resume=False)
    run("resumed", 2, resume=False)  # stops after step 2 (its last checkpoint)
    resumed = run("resumed", 4, resume=True)

    a, b = _metrics(straight), _metrics(resumed)
    assert [m["step"] for m in b] == [1, 2, 3, 4]  # no step logged twice
    for key in ("kl/coef", "reward/combined", "reward/chars/normalized", "loss/policy", "loss/value", "kl/sequence"):
        assert [m[key] for m in a] == pytest.approx([m[key] for m in b], rel=1e-5, abs=1e-6), key
    assert a[3]["kl/coef"] != a[0]["kl/coef"]  # the adaptive coefficient moved, and resumed where it was

    state = json.loads((resumed / "checkpoints" / "step_4" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["prompt_position"] == 16
    assert state["reward"]["chars"]["origin"] == "first batch"
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["step_2", "step_4"]
    optimizer = torch.load(resumed / "checkpoints" / "step_4" / "optimizer.pt", weights_only=False)["optimizer"]
    assert optimizer["state"]  # Adam moments travel with the checkpoint
    assert all(
        int(s["step"]) == 8 for s in optimizer["state"].values()
    )  # 4 steps x 2 epochs, continued across the resume
    for run_dir in (straight, resumed):
        assert is_finished(run_dir)
        assert json.loads((run_dir / "samples" / "step_2.json").read_text())[0].keys() >= {
            "prompt",
            "reply",
            "chars",
            "combined",
        }
    assert not (resumed / "adapter" / "value_head.pt").exists()
    policy = load_causal_lm(str(resumed))  # the eval stage's way in
    assert policy.config.hidden_size == 32


@pytest.mark.slow
def test_two_processes_with_torchrun(tmp_path, tiny_model_dir):
    path = write_rl_config(tmp_path / "cfg.yaml", tiny_model_dir, tmp_path / "out", steps=2, ppo_epochs=1)
    run_rl_under_torchrun(path, "tiny_rl", tmp_path, timeout=240)
    run_dir = tmp_path / "out" / "rl"
    rows = _metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2]  # only the main process writes
    rng_states = torch.load(run_dir / "checkpoints" / "step_2" / "rng_states.pt", weights_only=False)
    assert len(rng_states) == 2  # both ranks took part in the checkpoint
    assert not torch.equal(rng_states[0]["torch"], rng_states[1]["torch"])  # and sampled differently
    state = json.loads((run_dir / "checkpoints" / "step_2" / "trainer_state.json").read_text())
    assert state["prompt_position"] == 8  # 2 steps x 4 prompts, shared out between the ranks
    assert json.loads((run_dir / "run_state.json").read_text())["status"] == "finished"


# --------------------------------------------------------------------------- end to end on SmolLM2


@pytest.mark.slow
def test_rl_train_cli_on_smollm2_with_gold_reward(tmp_path):
    """rl_train.py's path end to end: embedded SmolLM2 + LoRA, the gold judge, bf16, 2 steps."""
    from crs.cli import run_stage
    from crs.models.loading import load_causal_lm
    from crs.rl.ppo.stage import run_ppo_stage

    config = {
        "default": {},
        "smol_rl": {
            "run": {"name": "rl_gold", "output_dir": str(tmp_path / "out")},
            "model": {"name": "embedded:smollm2-135m-instruct", "dtype": "bf16"},
            # The demo's RL prompts: the gold judge is the demo's rules (refused on others).
            "data": {"source": "embedded:crs-demo", "split": "rl", "max_prompt_length": 64, "val_fraction": 0.1},
            "rl": {
                "rewards": [{"name": "gold", "path": "gold", "weight": 1.0, "normalize": "zscore"}],
                "missing_eos_penalty": -1.0,
                "steps": 2,
                "batch_size": 4,
                "mini_batch_size": 4,
                "ppo_epochs": 1,
                "max_new_tokens": 16,
                "save_steps": 2,
                "sample_every": 2,
                "num_sample_prompts": 2,
            },
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    run_stage(run_ppo_stage, "test", ["--config", str(path), "--config_subset", "smol_rl"])
    run_dir = tmp_path / "out" / "rl_gold"
    rows = _metrics(run_dir)
    assert len(rows) == 2 and 0.0 <= rows[0]["reward/gold/raw"] <= 1.0
    assert rows[0]["kl/sequence"] == pytest.approx(0.0, abs=1e-3)  # LoRA starts as the identity: policy == reference
    samples = json.loads((run_dir / "samples" / "step_2.json").read_text())
    assert len(samples) == 2 and {"reply", "gold", "gold_normalized", "combined"} <= samples[0].keys()
    assert json.loads((run_dir / "run_state.json").read_text())["status"] == "finished"
    assert load_causal_lm(str(run_dir)).config.model_type == "llama"


@pytest.mark.slow
def test_rl_crs_subset_on_trained_reward_models(tmp_path):
    """The real demo subset for 2 short steps, once the SFT and both RM runs exist in outputs/."""
    needed = [ROOT / "outputs" / name for name in ("sft", "rm_preference", "rm_absolute")]
    if not all((p / "crs_model.json").is_file() for p in needed):
        pytest.skip("needs outputs/sft, outputs/rm_preference and outputs/rm_absolute (run the earlier stages)")
    from crs.config import load_config
    from crs.rl.ppo.stage import run_ppo_stage

    overrides = [
        f"run.output_dir={tmp_path}",
        "rl.steps=2",
        "rl.batch_size=4",
        "rl.mini_batch_size=4",
        "rl.ppo_epochs=1",
        "rl.max_new_tokens=16",
        "rl.sample_every=2",
        "rl.save_steps=2",
    ]
    cfg = load_config("rl_crs", overrides=overrides)
    cfg.rl.policy = str(ROOT / "outputs" / "sft")
    for source in cfg.rl.rewards:
        source.path = str(ROOT / source.path)
    cfg.run_dir.mkdir(parents=True)
    run_ppo_stage(cfg, cfg.run_dir, resume=False)
    row = _metrics(cfg.run_dir)[-1]
    assert {"reward/preference/raw", "reward/absolute/raw", "reward/combined"} <= row.keys()


def test_separate_critic_and_sampling_logprobs(tiny_lm, tiny_rm, left_tokenizer):
    """rl.value_model = an RM (its own forward) and rl.logprobs_from_sampling both run a full step."""
    from crs.models.lora import add_lora
    from crs.rl.ppo.policy import ValueModel

    policy = add_lora(tiny_lm, LoraConfig(r=4, alpha=8, dropout=0.0), "causal_lm")
    critic = ValueModel(add_lora(tiny_rm, LoraConfig(r=4, alpha=8, dropout=0.0), "reward_model"))
    model = PolicyValueModel(policy, critic)
    assert model.value_head is None
    cfg = RLConfig(
        batch_size=4, mini_batch_size=4, max_new_tokens=5, temperature=1.0, logprobs_from_sampling=True, ppo_epochs=1
    )
    trainer = PPOTrainer(
        cfg,
        model,
        left_tokenizer,
        CombinedReward([RewardSource("r", lambda p, r: [float(len(x)) for x in r], normalize="none")]),
    )
    critic_head = [p for n, p in model.named_parameters() if "value_model" in n and p.requires_grad]
    before = [p.detach().clone() for p in critic_head]
    result = trainer.rollout(_prompts(4))
    with torch.no_grad():
        _, values = model(result.batch.input_ids, result.batch.attention_mask, result.batch.n_reply)
    assert torch.allclose(
        values * result.batch.reply_mask, result.batch.values, atol=1e-5
    )  # V_old came from the critic
    trainer.update(result.batch)
    assert any(not torch.equal(b, p) for b, p in zip(before, critic_head))  # the critic trains


@pytest.mark.parametrize(("pack_for_batch", "fused"), [(None, False), (3, False), (3, True), (None, True)])
def test_merged_sampler_matches_the_adapted_policy(tiny_lm, left_tokenizer, pack_for_batch, fused):
    """Sampling from the merged (packed, fused) copy is sampling from the policy, kept up to date."""
    from crs.models.lora import add_lora
    from crs.models.packed_linear import PackedLinear, packing_supported
    from crs.rl.ppo.policy import MergedSampler

    policy = add_lora(tiny_lm, LoraConfig(r=4, alpha=8, dropout=0.0), "causal_lm")
    model = PolicyValueModel(policy).eval()
    assert MergedSampler.supported(model)
    sampler = MergedSampler(model, pack_for_batch, fused)
    assert (sampler.decoder is not None) == fused
    if pack_for_batch and packing_supported(torch.float32):
        assert isinstance(sampler.lm_head, PackedLinear)
        if not fused:  # else the decoder packs its own fused matrices
            assert all(isinstance(t, PackedLinear) for _, t in sampler.pairs)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # the adapter trained after the copy was made
    trainer = _trainer(policy, left_tokenizer, lambda p, r: [0.0] * len(r))
    ids, mask = trainer.encode_prompts(_prompts(3))
    torch.manual_seed(0)
    merged = sample_replies(
        sampler.refresh(),
        ids,
        mask,
        SamplingSettings(6, do_sample=True),
        left_tokenizer.eos_token_id,
        left_tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    direct = sample_replies(
        model, ids, mask, SamplingSettings(6, do_sample=True), left_tokenizer.eos_token_id, left_tokenizer.pad_token_id
    )
    assert torch.equal(merged.reply_ids, direct.reply_ids)
    assert torch.allclose(merged.logprobs, direct.logprobs, atol=1e-4)
    assert all(not p.requires_grad for p in sampler.body.parameters())


def test_a_run_whose_every_update_was_skipped_does_not_finish(tmp_path, tiny_model_dir):
    from crs.config import load_config
    from crs.rl.ppo.stage import run_ppo_stage
    from crs.runs import NonFiniteError, is_finished, prepare_run_dir

    rewards = [{"name": "broken", "path": "python:tests.reward_fns:not_a_number", "weight": 1.0, "normalize": "none"}]
    path = write_rl_config(
        tmp_path / "cfg.yaml", tiny_model_dir, tmp_path / "out", steps=2, rewards=rewards, max_nonfinite_in_row=10
    )
    cfg = load_config("tiny_rl", path)
    run_dir = prepare_run_dir(cfg)
    with pytest.raises(NonFiniteError, match="every one of the 2 PPO steps was skipped"):
        run_ppo_stage(cfg, run_dir, resume=False)
    assert not is_finished(run_dir) and not (run_dir / "adapter").exists()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["reward/broken/nonfinite"] for r in rows] == [4.0, 4.0]


def test_overoptimization_log_has_the_judge_and_the_kl(tmp_path, tiny_model_dir):
    from crs.cli import train_rl
    from crs.config import load_config
    from crs.runs import run_state

    path = write_rl_config(
        tmp_path / "cfg.yaml",
        tiny_model_dir,
        tmp_path / "out",
        steps=4,
        eval_prompts=8,
        judge="python:tests.reward_fns:count_vowels",
        learning_rate=5e-3,
    )
    cfg = load_config("tiny_rl", path)
    cfg.data.val_fraction = 0.4  # 8 held-out prompts
    cfg.run_dir.mkdir(parents=True)
    train_rl(cfg, cfg.run_dir, resume=False)  # the rl command: PPO, then the figure
    rows = [json.loads(line) for line in (cfg.run_dir / "overoptimization.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 4]
    assert {"kl/sequence", "kl/sqrt", "reward/combined", "reward/chars/raw", "judge/judge"} <= rows[0].keys()
    assert abs(rows[0]["kl/sequence"]) < 1e-3  # before training the policy is its reference
    assert rows[-1]["kl/sequence"] > rows[0]["kl/sequence"] + 1e-3  # training moved it
    assert rows[-1]["kl/sqrt"] == pytest.approx(max(rows[-1]["kl/sequence"], 0) ** 0.5)
    assert (cfg.run_dir / "overoptimization.png").stat().st_size > 1000
    assert run_state(cfg.run_dir)["summary"]["judge_peak"]["step"] in (0, 2, 4)


def test_the_stage_command_ends_a_hopeless_run_in_one_line(tmp_path, tiny_model_dir, capsys):
    from crs.cli import run_stage
    from crs.rl.ppo.stage import run_ppo_stage
    from crs.runs import run_state

    rewards = [{"name": "broken", "path": "python:tests.reward_fns:not_a_number", "weight": 1.0, "normalize": "none"}]
    path = write_rl_config(
        tmp_path / "cfg.yaml", tiny_model_dir, tmp_path / "out", steps=4, rewards=rewards, max_nonfinite_in_row=2
    )
    with pytest.raises(SystemExit) as stopped:
        run_stage(run_ppo_stage, "test", ["--config", str(path), "--config_subset", "tiny_rl"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error: 2 PPO steps in a row had a non-finite reward" in err[-1]  # one line, after the progress bar
    state = run_state(tmp_path / "out" / "rl")
    assert state["status"] == "failed" and "non-finite" in state["error"]


def test_init_adapter_also_continues_the_value_head(tmp_path, tiny_model_dir):
    from crs.config import load_config
    from crs.rl.ppo.stage import VALUE_HEAD_FILE, build_models, run_ppo_stage

    path = write_rl_config(tmp_path / "a.yaml", tiny_model_dir, tmp_path / "a", steps=2)
    cfg = load_config("tiny_rl", path)
    cfg.run_dir.mkdir(parents=True)
    run_ppo_stage(cfg, cfg.run_dir, resume=False)
    saved = torch.load(cfg.run_dir / VALUE_HEAD_FILE)
    assert saved["weight"].abs().sum() > 0  # trained away from its zero start

    continued = load_config(
        "tiny_rl",
        write_rl_config(tmp_path / "b.yaml", tiny_model_dir, tmp_path / "b", steps=2, init_adapter=str(cfg.run_dir)),
    )
    model, *_ = build_models(continued)
    assert torch.equal(model.value_head.weight.detach(), saved["weight"]) and torch.equal(
        model.value_head.bias.detach(), saved["bias"]
    )
    fresh, *_ = build_models(cfg)  # no rl.init_adapter: a zero head
    assert fresh.value_head.weight.abs().sum() == 0


def test_gold_in_rl_is_only_for_the_demos_prompts(tmp_path, tiny_model_dir, capsys):
    from stage_runs import run_cli, write_config

    from crs.config import load_config
    from crs.rl.ppo.stage import build_judge

    gold = [{"name": "gold", "path": "gold", "weight": 1.0, "normalize": "zscore"}]
    path = write_config(tmp_path, tiny_model_dir, algorithm="ppo", rewards=gold, steps=1, mini_batch_size=4)
    with pytest.raises(SystemExit) as stopped:  # its prompts are "topic i": refused before any model loads
        run_cli(path)
    assert stopped.value.code == 2
    assert "rl.rewards: gold is the demo annotator's rule set, and 9 of 9 prompts" in capsys.readouterr().err
    cfg = load_config("tiny", path)
    assert build_judge(cfg, [user_prompt("topic 1")]) is None  # rl.judge auto: no judge here
    assert build_judge(cfg, [user_prompt("Explain why dogs wag their tails.")]).name == "gold"  # a demo prompt
    cfg.rl.judge = "gold"
    with pytest.raises(ConfigError, match="rl.judge: gold is the demo annotator's rule set"):
        build_judge(cfg, [user_prompt("topic 1")])


def test_gradient_checkpointing_recomputes_the_layers_with_the_same_gradients_and_no_dropout(
    smol_tokenizer, left_tokenizer
):
    """model.gradient_checkpointing in crs's PPO: each decoder layer runs again in the backward
    pass (policy and separate critic), the gradients are those without it, and the model stays
    in eval mode (LoRA dropout 0.5 would make two differently seeded passes differ)."""
    from tiny import tiny_causal_lm, tiny_sequence_classifier
    from transformers.modeling_layers import GradientCheckpointingLayer

    from crs.models.lora import add_lora
    from crs.rl.ppo.policy import ValueModel, enable_gradient_checkpointing

    lora = LoraConfig(r=4, alpha=8, dropout=0.5)
    ids = torch.randint(3, 400, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    grads, runs = {}, {}
    for checkpointing in (False, True):
        policy = add_lora(tiny_causal_lm(smol_tokenizer), lora, "causal_lm")
        critic = ValueModel(add_lora(tiny_sequence_classifier(smol_tokenizer), lora, "reward_model"))
        for p in policy.parameters():  # LoRA's B starts at zero: move it, so every LoRA weight gets a gradient
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(p.numel()))
        model = PolicyValueModel(policy, critic)
        if checkpointing:
            enable_gradient_checkpointing(model)
        trainer = PPOTrainer(
            RLConfig(batch_size=2, mini_batch_size=2),
            model,
            left_tokenizer,
            CombinedReward([RewardSource("r", lambda p, r: [0.0] * len(r))]),
        )
        layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
        calls: list[int] = []
        hooks = [
            layer.self_attn.register_forward_hook(lambda *args, _calls=calls: _calls.append(1)) for layer in layers
        ]
        torch.manual_seed(int(checkpointing))  # dropout, were it on, would draw different masks
        logits, values = trainer.model(ids, mask, 6)
        (logits.logsumexp(-1).mean() + values.square().mean()).backward()
        runs[checkpointing] = len(calls) / len(layers)
        grads[checkpointing] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.Dropout))
        for hook in hooks:
            hook.remove()
    assert runs == {False: 1.0, True: 2.0}  # with checkpointing every layer ran again in the backward pass
    assert grads[True].keys() == grads[False].keys() and len(grads[False]) > 4
    for name, grad in grads[False].items():
        torch.testing.assert_close(grads[True][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_ppo_refuses_deepspeed_and_fsdp_where_it_would_train_apart_or_sample_from_shards(
    tiny_lm, left_tokenizer, monkeypatch
):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    import crs.rl.ppo.trainer as ppo_trainer
    from crs.config import ConfigError

    kinds = {
        kind: ppo_trainer.unsupported_distribution(SimpleNamespace(distributed_type=kind)) for kind in DistributedType
    }
    assert kinds[DistributedType.DEEPSPEED] == "DeepSpeed" and kinds[DistributedType.FSDP] == "FSDP"
    assert (
        kinds[DistributedType.MULTI_GPU] is None
        and kinds[DistributedType.MULTI_CPU] is None
        and kinds[DistributedType.NO] is None
    )
    assert _trainer(tiny_lm, left_tokenizer, lambda p, r: [0.0] * len(r)).step_count == 0  # one process: runs
    monkeypatch.setattr(ppo_trainer, "unsupported_distribution", lambda accelerator: "DeepSpeed")
    with pytest.raises(
        ConfigError, match=r"rl.algorithm ppo does not run under DeepSpeed .* use rl.algorithm grpo / rloo"
    ):
        _trainer(tiny_lm, left_tokenizer, lambda p, r: [0.0] * len(r))


# --------------------------------------------------------------------------- GPU paths, seen on the CPU


def test_sampling_under_gradient_checkpointing_keeps_the_cache_and_matches_a_full_forward(
    smol_tokenizer, left_tokenizer
):
    """Full fine-tuning (no merged sampler) with model.gradient_checkpointing: the layers are marked as
    training for checkpointing, yet sampling runs off the checkpointing path (its log-probs equal a
    full forward's on the same tokens, the training forward included) and the marks come back after."""
    from tiny import tiny_causal_lm
    from transformers.modeling_layers import GradientCheckpointingLayer

    from crs.rl.ppo.policy import enable_gradient_checkpointing

    model = PolicyValueModel(tiny_causal_lm(smol_tokenizer, seed=2))
    enable_gradient_checkpointing(model)
    trainer = PPOTrainer(
        RLConfig(batch_size=4, mini_batch_size=4, max_new_tokens=6),
        model,
        left_tokenizer,
        CombinedReward([RewardSource("r", lambda p, r: [0.0] * len(r))]),
    )
    assert trainer.merged is None  # sampling runs on the policy itself
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert layers and all(layer.gradient_checkpointing and layer.training for layer in layers)
    checkpointing_while_sampling: list[bool] = []
    hooks = [
        layer.register_forward_pre_hook(lambda m, args: checkpointing_while_sampling.append(m.training))
        for layer in layers
    ]
    ids, mask = trainer.encode_prompts(_prompts(4))
    torch.manual_seed(0)
    s = sample_replies(trainer.sampler(), ids, mask, trainer.sampling, trainer.eos_id, trainer.pad_id)
    for hook in hooks:
        hook.remove()
    assert checkpointing_while_sampling and not any(checkpointing_while_sampling)
    assert all(layer.training for layer in layers)  # marked again: the update still checkpoints
    full_ids, full_mask = torch.cat([ids, s.reply_ids], 1), torch.cat([mask, s.reply_mask], 1)
    for grad in (False, True):  # the rollout's forward, and the update's (checkpointed) one
        with torch.set_grad_enabled(grad):
            logits, _ = trainer.model(full_ids, full_mask, s.reply_ids.shape[1], trainer.cfg.temperature)
        logprobs = gather_logprobs(logits.detach(), s.reply_ids) * s.reply_mask
        torch.testing.assert_close(logprobs, s.logprobs, atol=1e-4, rtol=0)


def test_an_update_under_gradient_checkpointing_equals_one_without(smol_tokenizer, left_tokenizer):
    """Full fine-tuning in bf16 with model.gradient_checkpointing: the backward recomputes each layer's forward on
    CPU with the forward's own attention kernel (the math one), so the step runs and moves the weights as without."""
    from tiny import tiny_causal_lm

    from crs.rl.ppo.policy import enable_gradient_checkpointing

    cfg = RLConfig(batch_size=4, mini_batch_size=4, max_new_tokens=6, temperature=1.0)
    moved = []
    for checkpointing in (False, True):
        model = PolicyValueModel(tiny_causal_lm(smol_tokenizer, seed=2))
        if checkpointing:
            enable_gradient_checkpointing(model)
        reward = CombinedReward([RewardSource("r", lambda p, r: [float(len(x)) for x in r], normalize="none")])
        trainer = PPOTrainer(cfg, model, left_tokenizer, reward, dtype=torch.bfloat16)
        before = {k: v.clone() for k, v in trainer.unwrapped.trainable_state_dict().items()}
        torch.manual_seed(0)
        metrics = trainer.step(_prompts(4))
        assert metrics["ppo/optimizer_steps"] == 4 and metrics.get("ppo/skipped", 0.0) == 0.0
        after = trainer.unwrapped.trainable_state_dict()
        moved.append({k: after[k] - before[k] for k in before})
    assert any(delta.abs().max() > 0 for delta in moved[1].values())
    for key, delta in moved[0].items():
        torch.testing.assert_close(moved[1][key], delta, atol=1e-5, rtol=1e-3)


class RecordingScaler:
    """A real GradScaler whose scale / unscale_ / step / update calls are written to ``calls``."""

    def __init__(self, scaler: torch.amp.GradScaler, calls: list[str]) -> None:
        self.scaler, self.calls = scaler, calls

    def __getattr__(self, name: str):
        attr = getattr(self.scaler, name)
        if name not in ("scale", "unscale_", "step", "update"):
            return attr

        def recorded(*args, **kwargs):
            self.calls.append(name)
            return attr(*args, **kwargs)

        return recorded


def _fp16_update(smol_tokenizer, left_tokenizer, scaler, monkeypatch) -> tuple[list[str], list[float], dict, bool]:
    """One PPO rollout and update in fp16 (CPU autocast) with ``scaler``: the calls in order, the
    gradient norm each clipping saw, the update's stats, and whether the weights moved."""
    from tiny import tiny_causal_lm

    calls: list[str] = []
    norms: list[float] = []
    clip = torch.nn.utils.clip_grad.clip_grad_norm_  # the real one, also when patched before

    def recorded_clip(params, max_norm):
        calls.append("clip")
        norms.append(float(clip(params, max_norm)))
        return torch.tensor(norms[-1])

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recorded_clip)
    lm = tiny_causal_lm(smol_tokenizer, seed=3)
    cfg = RLConfig(batch_size=4, mini_batch_size=4, max_new_tokens=6, ppo_epochs=1)
    reward = CombinedReward([RewardSource("r", lambda p, r: [float(len(x)) for x in r], normalize="none")])
    trainer = PPOTrainer(cfg, PolicyValueModel(lm), left_tokenizer, reward, dtype=torch.float16)
    assert trainer.scaler.is_enabled()  # fp16 scales the loss (bf16 and fp32 do not: test_precision.py)
    trainer.scaler = RecordingScaler(scaler, calls)
    before = [p.detach().clone() for p in trainer.params]
    torch.manual_seed(0)
    stats = trainer.update(trainer.rollout(_prompts(4)).batch)
    moved = any(not torch.equal(a, b) for a, b in zip(before, trainer.params))
    return calls, norms, stats, moved


def test_fp16_scales_the_loss_and_clips_the_unscaled_gradients(smol_tokenizer, left_tokenizer, monkeypatch):
    """The loss is scaled for the backward pass and the gradients unscaled before clipping: the norm the
    clipping sees is that of the same update without scaling, not 256 times it."""
    scaled = _fp16_update(smol_tokenizer, left_tokenizer, torch.amp.GradScaler("cpu", init_scale=256.0), monkeypatch)
    plain = _fp16_update(smol_tokenizer, left_tokenizer, torch.amp.GradScaler("cpu", enabled=False), monkeypatch)
    calls, norms, stats, moved = scaled
    assert calls == ["scale", "unscale_", "clip", "step", "update"]
    assert norms[0] == pytest.approx(plain[1][0], rel=1e-2) and norms[0] > 1e-3
    assert stats["ppo/optimizer_steps"] == 1 and stats["ppo/loss_scale"] == 256.0 and moved and plain[3]


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # no step was applied
def test_an_fp16_overflow_lowers_the_loss_scale_and_skips_only_that_step(smol_tokenizer, left_tokenizer, monkeypatch):
    """A scale so large that the gradients overflow: the step is not applied and the scale halves, as
    loss scaling does, without counting as a non-finite step (which would end the run)."""
    calls, norms, stats, moved = _fp16_update(
        smol_tokenizer, left_tokenizer, torch.amp.GradScaler("cpu", init_scale=2.0**40), monkeypatch
    )
    assert calls == ["scale", "unscale_", "clip", "step", "update"] and not math.isfinite(norms[0])
    assert not moved and stats["ppo/optimizer_steps"] == 0 and stats["ppo/skipped"] == 0
    assert stats["ppo/loss_scale"] == 2.0**39 and "policy/grad_norm" not in stats


def test_ppo_accelerator_takes_crs_precision_not_the_launch_configs(monkeypatch):
    """``accelerate launch`` with mixed_precision fp16 sets ACCELERATE_MIXED_PRECISION, which a plain
    Accelerator follows (loss scaled behind crs's back, forwards autocast to fp16); PPO's does not."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from crs.rl.ppo.trainer import ppo_accelerator

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    AcceleratorState._reset_state()
    try:
        assert Accelerator(cpu=True).mixed_precision == "fp16"  # the control: the variable is read
        assert ppo_accelerator(cpu=True).mixed_precision == "no"  # also after that state was made
    finally:
        AcceleratorState._reset_state()


def test_held_out_means_weight_each_process_by_its_prompts(tiny_lm, left_tokenizer):
    """Two processes, emulated: one with 3 prompts (mean 2.0), one with 1 (mean 6.0) -> (3*2 + 6) / 4;
    a process with none contributes nothing, not even its stand-in's NaN."""
    trainer = _trainer(tiny_lm, left_tokenizer, lambda p, r: [0.0] * len(r))
    trainer.world_size = 2
    sent: list[torch.Tensor] = []

    def mean_with(other: dict, other_weight: float, mine: dict, weight: float) -> dict:
        trainer.sum_all = lambda t: sent.append(t) or t
        trainer.mean_over_processes(other, weight=other_weight)
        trainer.sum_all = lambda t: t + sent.pop()
        return trainer.mean_over_processes(mine, weight=weight)

    assert mean_with({"a": 6.0}, 1, {"a": 2.0}, 3) == pytest.approx({"a": 3.0})
    assert mean_with({"a": float("nan")}, 0, {"a": 2.0}, 3) == pytest.approx({"a": 2.0})


@pytest.mark.slow
def test_two_processes_with_one_held_out_prompt_both_join_its_evaluation(tmp_path, tiny_model_dir):
    """1 held-out prompt, 2 processes: the one without a prompt of its own joins the evaluation's
    collectives instead of leaving the other waiting in them (a hang, ended here by the timeout)."""
    path = write_rl_config(
        tmp_path / "cfg.yaml",
        tiny_model_dir,
        tmp_path / "out",
        steps=2,
        ppo_epochs=1,
        eval_prompts=1,
        sample_every=1,
        judge="python:tests.reward_fns:count_vowels",
    )
    run_rl_under_torchrun(path, "tiny_rl", tmp_path, timeout=240)
    run_dir = tmp_path / "out" / "rl"
    rows = [json.loads(line) for line in (run_dir / "overoptimization.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert abs(rows[0]["kl/sequence"]) < 1e-3 and "judge/judge" in rows[0]
