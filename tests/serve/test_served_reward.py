"""An RL subset's reward loaded once: scored in batches as on the whole, its scale fixed, its EOS text, gold refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from reward_servers import write_config

from crs.config import ConfigError, load_config
from crs.data.schema import user_prompt
from crs.rl.combined_reward import CombinedReward
from crs.serve.served_reward import ScoringError, ScoringItems, ServedReward, policy_eos_text

VOWELS = {"name": "v", "path": "python:tests.reward_fns:count_vowels", "weight": 0.5}
LENGTH = {"name": "len", "path": "length", "weight": 1.0}
REPLIES = ["a", "banana", "kiwi", "an apple a day", "oo", "queue", "x"]
PROMPTS = [user_prompt(q) for q in ("Q1", "Q1", "Q2", "Q2", "Q2", "Q3", "Q3")]


def _cfg(tmp_path: Path, **rl) -> object:
    config = write_config(tmp_path / "cfg.yaml", s={"rl": rl, "serve": {"eos_texts": ["</s>"]}})
    return load_config("s", config)


@pytest.mark.parametrize("combine", ["sum", "sum_per_prompt", "conservative"])
def test_any_batch_size_scores_as_the_rl_stage_on_the_whole_request(tmp_path: Path, combine: str) -> None:
    state = {"v": {"stats": {"mean": 2.0, "std": 1.5}}, "len": {"stats": {"mean": 5.0, "std": 3.0}}}
    (tmp_path / "state.json").write_text(json.dumps(state))  # no origin: a reward state written by hand
    rl = {"rewards": [VOWELS, LENGTH], "combine": combine, "reward_clip": 1.0, "missing_eos_penalty": -0.5}
    if combine == "sum_per_prompt":
        rl["algorithm"] = "grpo"  # whose groups of replies to one prompt it standardises within
    cfg = _cfg(tmp_path, **rl)
    cfg.serve.reward_state = str(tmp_path / "state.json")
    ended = [True, False, True, True, False, True, True]
    reference = CombinedReward.for_rl(cfg)
    reference.load_state_dict({name: {**entry, "origin": "the file"} for name, entry in state.items()})
    expected = reference(PROMPTS, REPLIES, torch.tensor(ended)).combined  # groups: the replies to one prompt
    for size in (1, 3, 7):
        cfg.serve.batch_size = size
        scores = ServedReward.from_config(cfg)(ScoringItems(PROMPTS, REPLIES, ended))
        assert scores.combined.tolist() == pytest.approx(expected.tolist(), abs=1e-6), size
    assert len(set(expected.tolist())) >= 3


def test_a_scale_is_required_unless_the_first_request_fits_it_or_groups_need_none(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rl.rewards: v, len z-score\(s\) without saved statistics"):
        ServedReward.from_config(_cfg(tmp_path, rewards=[VOWELS, LENGTH]))
    ServedReward.from_config(_cfg(tmp_path, rewards=[VOWELS, LENGTH], combine="sum_per_prompt", algorithm="grpo"))
    ServedReward.from_config(_cfg(tmp_path, rewards=[{**VOWELS, "normalize": "none"}]))
    cfg = _cfg(tmp_path, rewards=[VOWELS, LENGTH])
    cfg.serve.fit_stats_on_first_request = True
    served = ServedReward.from_config(cfg)
    served(ScoringItems(PROMPTS, REPLIES))
    assert served.reward.sources[1].stats["mean"] == pytest.approx(sum(map(len, REPLIES)) / len(REPLIES))


def test_the_eos_text_is_the_policy_tokenizers_and_gold_keeps_to_the_demos_prompts(tmp_path, tiny_model_dir) -> None:
    cfg = _cfg(tmp_path, rewards=[{"name": "gold", "path": "gold", "normalize": "none"}])
    cfg.model.name = str(tiny_model_dir)
    assert policy_eos_text(cfg) == "<|im_end|>"  # SmolLM2's, which the tiny policy keeps
    with pytest.raises(ConfigError, match="rl.rewards"):
        ServedReward.from_config(cfg)(ScoringItems([user_prompt("Not a demo prompt at all?")], ["No."]))
    cfg.run.allow_gold_outside_demo = True
    assert len(ServedReward.from_config(cfg)(ScoringItems([user_prompt("Not a demo prompt?")], ["No."])).combined) == 1


def test_an_infinite_source_score_is_refused_though_the_clip_made_the_reward_finite(tmp_path: Path) -> None:
    """As PPO skips such a batch (RewardBreakdown.is_finite), the server does not hand out a clipped reward."""
    broken = {"name": "inf", "path": "python:tests.reward_fns:inf_for_kiwi", "weight": 1.0, "normalize": "none"}
    served = ServedReward.from_config(_cfg(tmp_path, rewards=[broken], reward_clip=4.0))
    assert served(ScoringItems(PROMPTS[:2], REPLIES[:2])).combined.tolist() == [1.0, 4.0]  # clipped, finite sources
    with pytest.raises(ScoringError, match=r"non-finite reward for item\(s\) \[2\] \(from inf\)"):
        served(ScoringItems(PROMPTS, REPLIES))
