"""The combined reward: weighting, normalisation, shaping."""

from __future__ import annotations

import pytest
import torch

from crs.config import ConfigError
from crs.data.schema import user_prompt
from crs.rl.combine import zscore_stats
from crs.rl.combined_reward import CombinedReward
from crs.rl.reward_sources import RewardSource

PROMPTS = [user_prompt(f"question {i}") for i in range(4)]
REPLIES = ["a", "bb", "ccc", "dddd"]


def length_reward(prompts, replies):
    """Reply length in characters (a programmatic source)."""
    return [float(len(r)) for r in replies]


def constant_reward(prompts, replies):
    """Always 2."""
    return torch.full((len(replies),), 2.0)


def test_weighted_sum_without_normalisation():
    reward = CombinedReward(
        [
            RewardSource("len", length_reward, weight=0.5, normalize="none"),
            RewardSource("const", constant_reward, weight=2.0, normalize="none"),
        ]
    )
    out = reward(PROMPTS, REPLIES)
    assert torch.allclose(out.combined, torch.tensor([1, 2, 3, 4.0]) * 0.5 + 4.0)
    assert torch.equal(out.raw["len"], torch.tensor([1, 2, 3, 4.0]))
    assert torch.equal(out.normalized["len"], out.raw["len"])
    assert out.metrics()["reward/len/raw"] == pytest.approx(2.5)


def test_zscore_with_saved_stats():
    source = RewardSource("len", length_reward, normalize="zscore", stats={"mean": 2.0, "std": 0.5})
    out = CombinedReward([source])(PROMPTS, REPLIES)
    assert torch.allclose(out.normalized["len"], torch.tensor([-2.0, 0.0, 2.0, 4.0]))
    assert torch.allclose(out.combined, out.normalized["len"])


def test_zscore_fits_first_batch_then_freezes():
    source = RewardSource("len", length_reward, normalize="zscore")
    reward = CombinedReward([source])
    first = reward(PROMPTS, REPLIES)
    assert first.normalized["len"].mean().abs() < 1e-6
    assert first.normalized["len"].std(unbiased=False) == pytest.approx(1.0, abs=1e-5)
    assert source.stats_origin == "first batch"
    frozen = dict(source.stats)
    # A later batch of longer replies is not re-centred: the scale stays fixed.
    second = reward(PROMPTS, ["x" * 10] * 4)
    assert source.stats == frozen
    assert (second.normalized["len"] > 3).all()


def test_zscore_first_batch_uses_gather():
    seen = []

    def gather(t):
        seen.append(t.clone())
        return torch.cat([t, t + 100])  # as if a second process scored much longer replies

    source = RewardSource("len", length_reward, normalize="zscore")
    CombinedReward([source], gather=gather)(PROMPTS, REPLIES)
    assert len(seen) == 1
    assert source.stats["mean"] == pytest.approx(52.5)


def test_constant_source_is_centred_not_blown_up():
    source = RewardSource("const", constant_reward, normalize="zscore")
    out = CombinedReward([source])(PROMPTS, REPLIES)
    assert torch.equal(out.normalized["const"], torch.zeros(4))


def test_a_near_constant_first_batch_is_centred_not_blown_up():
    ulp = 2.0**-14  # one float32 step at 1000: rounding noise, not a spread

    def noisy(prompts, replies):
        return torch.tensor([1000.0 + ulp * (i % 3 - 1) for i in range(len(replies))])

    source = RewardSource("noisy", noisy, normalize="zscore")
    out = CombinedReward([source])(PROMPTS, REPLIES)
    assert out.normalized["noisy"].abs().max() <= ulp  # a plain (x - mean) / std would give about +-1.4
    assert source.stats == pytest.approx(zscore_stats(noisy(PROMPTS, REPLIES)))  # the std measured, kept as it is


def test_a_state_saved_by_an_earlier_version_normalises_as_before():
    # Earlier versions froze a constant source's std as 1.0; now the measured 0.0 is kept. Same scale.
    later = ["a", "bbb", "bb", "bbbb"]
    old, new = (RewardSource("len", length_reward, normalize="zscore") for _ in range(2))
    old_reward, new_reward = CombinedReward([old]), CombinedReward([new])
    old_reward.load_state_dict({"len": {"stats": {"mean": 2.0, "std": 1.0}, "origin": "first batch"}})
    new_reward.load_state_dict({"len": {"stats": {"mean": 2.0, "std": 0.0}, "origin": "first batch"}})
    assert (
        old_reward(PROMPTS, later).normalized["len"].tolist()
        == new_reward(PROMPTS, later).normalized["len"].tolist()
        == [-1.0, 1.0, 0.0, 2.0]
    )


def test_clip_then_missing_eos_penalty():
    reward = CombinedReward(
        [RewardSource("len", length_reward, normalize="none")], reward_clip=2.5, missing_eos_penalty=-1.0
    )
    out = reward(PROMPTS, REPLIES, ended_with_eos=[True, False, True, False])
    assert out.combined.tolist() == [1.0, 1.0, 2.5, 1.5]
    assert out.weighted_sum.tolist() == [1.0, 2.0, 3.0, 4.0]  # before shaping
    assert out.metrics()["reward/ended_with_eos"] == 0.5


def test_state_dict_round_trip():
    a = RewardSource("len", length_reward, normalize="zscore")
    reward = CombinedReward([a])
    reward(PROMPTS, REPLIES)
    b = RewardSource("len", length_reward, normalize="zscore")
    restored = CombinedReward([b])
    restored.load_state_dict(reward.state_dict())
    assert b.stats == a.stats and b.stats_origin == "first batch"
    assert torch.equal(restored(PROMPTS, REPLIES).combined, reward(PROMPTS, REPLIES).combined)


def test_sources_built_in_code_with_every_weight_zero_are_refused() -> None:
    zero = [
        RewardSource("a", lambda p, r: [1.0] * len(r), weight=0.0),
        RewardSource("b", lambda p, r: [2.0] * len(r), weight=0.0),
    ]
    with pytest.raises(ConfigError, match="non-zero weight; got a \\(weight 0.0\\), b \\(weight 0.0\\)"):
        CombinedReward(zero)
    assert CombinedReward([*zero, RewardSource("c", lambda p, r: [3.0] * len(r), weight=0.5)]).names == ["c"]


def test_an_infinite_score_is_counted_and_not_hidden_by_the_clip(caplog) -> None:
    source = RewardSource("rm", lambda p, r: [1.0, float("inf"), 0.5], normalize="none")
    scores = CombinedReward([source], reward_clip=4.0)([user_prompt("q")] * 3, ["a", "b", "c"])
    assert torch.isfinite(scores.combined).all()  # the clip turned inf into 4.0 ...
    assert not scores.is_finite()  # ... but the batch still counts as broken
    assert scores.nonfinite == {"rm": 1} and scores.metrics()["reward/rm/nonfinite"] == 1.0
    assert "reward source 'rm' returned 1 non-finite score(s) of 3" in caplog.text
