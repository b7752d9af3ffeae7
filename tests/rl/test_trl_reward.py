"""The combined reward as TRL takes it: one function (the very formula), or one per source."""

from __future__ import annotations

import pytest

from crs.data.schema import user_prompt
from crs.rl.combined_reward import CombinedReward
from crs.rl.reward_sources import RewardSource
from crs.rl.trl_reward import trl_reward_func, trl_reward_funcs_per_source


def length_reward(prompts, replies):
    return [float(len(r)) for r in replies]


def vowel_reward(prompts, replies):
    return [float(sum(c in "aeiou" for c in r)) for r in replies]


def test_trl_reward_functions_are_the_combined_reward():
    reward = CombinedReward(
        [
            RewardSource("len", length_reward, 1.0, "zscore", {"mean": 3.0, "std": 2.0}),
            RewardSource("vowels", vowel_reward, 0.5, "zscore", {"mean": 1.0, "std": 1.0}),
        ],
        reward_clip=1.0,
        missing_eos_penalty=-2.0,
    )
    prompts = [[{"role": "user", "content": "p"}]] * 3
    completions = [[{"role": "assistant", "content": t}] for t in ("aaaa", "x", "hello there")]
    ids = [[5, 6, 2], [7], [8, 2]]  # 2 is EOS: the second reply was cut off
    logged = {}
    combined = trl_reward_func(reward, eos_token_ids=[2])(
        prompts, completions, completion_ids=ids, log_metric=logged.__setitem__
    )
    expected = reward([user_prompt("p")] * 3, ["aaaa", "x", "hello there"], [True, False, True]).combined
    assert combined == pytest.approx(expected.tolist())
    assert combined[1] == pytest.approx(-1.0 - 2.0)  # clipped at -1, then the EOS penalty
    assert (
        logged["reward/ended_with_eos"] == pytest.approx(2 / 3)
        and "reward/len/raw" in logged
        and "reward/vowels/normalized" in logged
    )

    funcs, weights = trl_reward_funcs_per_source(reward, eos_token_ids=[2])
    assert [f.__name__ for f in funcs] == ["len", "vowels", "missing_eos"] and weights == [1.0, 0.5, 1.0]
    assert funcs[0](prompts, completions, completion_ids=ids) == [4.0, 1.0, 11.0]  # raw: TRL normalises them
    assert funcs[1](prompts, completions, completion_ids=ids) == [4.0, 0.0, 4.0]
    assert funcs[2](prompts, completions, completion_ids=ids) == [0.0, -2.0, 0.0]


def test_trl_reward_func_plain_and_conversational():
    reward = CombinedReward([RewardSource("len", length_reward, normalize="none")], missing_eos_penalty=-5.0)
    fn = trl_reward_func(reward)
    assert fn(["p1", "p2"], ["ab", "abcd"]) == [2.0, 4.0]
    convo = fn([[{"role": "user", "content": "p"}]], [[{"role": "assistant", "content": "xyz"}]], completion_ids=[[1]])
    assert convo == [3.0]
