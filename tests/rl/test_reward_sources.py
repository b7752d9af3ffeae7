"""Reward sources: loading from the config (weight 0, saved statistics, gold, python:), user-code errors."""

from __future__ import annotations

import pytest
import torch
from reward_fns import reply_length

from crs.config import ConfigError, RewardSourceConfig
from crs.data.schema import last_user_text, user_prompt
from crs.rl.combined_reward import CombinedReward
from crs.rl.reward_sources import RewardSource, RewardSourceError, build_sources

PROMPTS = [user_prompt(f"question {i}") for i in range(4)]
REPLIES = ["a", "bb", "ccc", "dddd"]


def test_weight_zero_is_not_loaded(monkeypatch):
    calls = []

    def fake_loader(paths, model_cfg=None):
        calls.append(list(paths))

        class Scorer:
            stats = {"mean": 1.0, "std": 2.0, "quantiles": {}}

            def score(self, prompts, replies):
                return torch.tensor([3.0] * len(replies))

        return [Scorer() for _ in paths]

    import crs.rl.reward_sources

    monkeypatch.setattr(crs.rl.reward_sources, "load_reward_scorers", fake_loader)
    configs = [
        RewardSourceConfig(name="pref", path="/no/such/rm_a", weight=1.0, normalize="zscore"),
        RewardSourceConfig(name="abs", path="/no/such/rm_b", weight=0.0),
    ]
    reward = CombinedReward.from_config(configs)
    assert calls == [["/no/such/rm_a"]]  # one call, weight-0 path never touched
    assert reward.names == ["pref"]
    out = reward(PROMPTS, REPLIES)
    assert torch.allclose(out.normalized["pref"], torch.full((4,), 1.0))  # (3 - 1) / 2 with the RM's saved stats
    assert reward.describe()[0]["stats_origin"] == "saved"


@pytest.mark.parametrize(
    ("saved", "origin"), [({"mean": 1000.0, "std": 5e-4}, "first batch"), ({"mean": 0.0, "std": 5e-4}, "saved")]
)
def test_saved_stats_without_spread_are_measured_on_the_first_batch_instead(monkeypatch, saved, origin):
    # The same relative bound as the z-score's guard: 5e-4 is no spread at a mean of 1000 (bound 1e-3), a spread at 0.
    class Scorer:
        stats = saved

        def score(self, prompts, replies):
            return torch.tensor([float(len(r)) for r in replies])

    import crs.rl.reward_sources

    monkeypatch.setattr(
        crs.rl.reward_sources, "load_reward_scorers", lambda paths, model_cfg=None: [Scorer() for _ in paths]
    )
    reward = CombinedReward.from_config([RewardSourceConfig(name="rm", path="/no/such/rm", normalize="zscore")])
    out = reward(PROMPTS, REPLIES)
    assert reward.describe()[0]["stats_origin"] == origin
    if origin == "first batch":
        assert out.normalized["rm"].std(unbiased=False) == pytest.approx(1.0, abs=1e-5)


def test_all_weights_zero_is_a_config_error():
    with pytest.raises(ConfigError, match="non-zero weight"):
        build_sources([RewardSourceConfig(name="a", path="gold", weight=0.0)])


def test_callable_never_called_when_weight_zero():
    def boom(prompts, replies):
        raise AssertionError("weight-0 source was scored")

    reward = CombinedReward.from_config(
        [
            RewardSourceConfig(name="len", path="", weight=1.0, normalize="none"),
            RewardSourceConfig(name="boom", path="", weight=0.0),
        ],
        callables={"len": reply_length, "boom": boom},
    )
    assert reward(PROMPTS, REPLIES).combined.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_gold_and_python_sources():
    reward = CombinedReward.from_config(
        [
            RewardSourceConfig(name="gold", path="gold", weight=1.0, normalize="none"),
            RewardSourceConfig(name="len", path="python:tests.reward_fns:reply_length", weight=0.0),
        ]
    )
    prompt = [user_prompt("List three fruits.")]
    good, bad = reward(prompt * 2, ["1. Apple\n2. Banana\n3. Cherry", "no"]).raw["gold"].tolist()
    assert 0.0 <= bad < good <= 1.0
    imported = CombinedReward.from_config(
        [RewardSourceConfig(name="len", path="python:tests.reward_fns:reply_length", normalize="none")]
    )
    assert imported(PROMPTS, REPLIES).combined.tolist() == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ConfigError):
        CombinedReward.from_config([RewardSourceConfig(name="x", path="python:no_such_module:f")])


def test_last_user_text():
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "q2"},
    ]
    assert last_user_text(messages) == "q2"


def test_wrong_number_of_scores_is_an_error():
    reward = CombinedReward([RewardSource("bad", lambda p, r: [1.0], normalize="none")])
    with pytest.raises(RewardSourceError, match="returned 1 scores"):
        reward(PROMPTS, REPLIES)


def test_rl_reward_models_load_unquantized_whatever_the_policys_quantization(monkeypatch) -> None:
    from types import SimpleNamespace

    import crs.rl.reward_sources as reward_sources
    from crs.config import load_config

    loaded = []

    def fake_load(paths, model_cfg):
        loaded.append(model_cfg)
        return [SimpleNamespace(score=lambda p, r: [0.0] * len(r), stats=None) for _ in paths]

    monkeypatch.setattr(reward_sources, "load_reward_scorers", fake_load)
    cfg = load_config("rl_crs", overrides=["model.quantization=4bit"])  # a QLoRA policy
    CombinedReward.for_rl(cfg)
    assert (
        loaded[-1].quantization == "none" and loaded[-1].dtype == cfg.model.dtype
    )  # the RMs: compute dtype, not 4-bit
    CombinedReward.for_rl(
        load_config("rl_crs", overrides=["model.quantization=4bit", "rl.reward_model_quantization=8bit"])
    )
    assert loaded[-1].quantization == "8bit"  # the key decides
