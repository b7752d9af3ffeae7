"""Combination strategies (crs/rl/combine.py): sum, sum_per_prompt and conservative against hand
computation, through CombinedReward's public API, in the config (one-line refusals), across a
simulated two-process TRL batch, and in one GRPO / RLOO step on a tiny model."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from crs.config import ConfigError, load_config
from crs.data.schema import user_prompt
from crs.rl.combine import (
    MIN_STD,
    CombineError,
    combine_normalized,
    conservative,
    has_spread,
    standardize,
    standardize_within_groups,
    zscore_stats,
)
from crs.rl.combined_reward import CombinedReward
from crs.rl.reward_sources import RewardSource
from crs.rl.trl_reward import trl_reward_func

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

SQRT_3_2 = math.sqrt(1.5)  # (3 - 2) / sqrt(2/3): the ends of 1, 2, 3 standardised


# --------------------------------------------------------------------------- the arithmetic


def test_standardize_within_groups_by_hand() -> None:
    # Group 7: 1, 2, 3 (mean 2, population std sqrt(2/3)); group 0: 5, 7 (mean 6, std 1), its
    # members not adjacent; group 3: three equal scores (a tie says nothing: 0, not +-1 from rounding).
    scores = torch.tensor([1.0, 5.0, 2.0, 0.1, 0.1, 7.0, 3.0, 0.1])
    groups = [7, 0, 7, 3, 3, 0, 7, 3]
    out = standardize_within_groups(scores, groups, "pref")
    assert out.tolist() == pytest.approx([-SQRT_3_2, -1.0, 0.0, 0.0, 0.0, 1.0, SQRT_3_2, 0.0], abs=1e-6)
    assert standardize_within_groups(torch.tensor([2.0, 2.0]), [0, 0]).tolist() == [0.0, 0.0]


def test_a_group_of_one_reply_is_an_error_naming_the_source() -> None:
    with pytest.raises(CombineError, match=r"reward source 'absolute': 1 group\(s\) of one reply") as caught:
        standardize_within_groups(torch.tensor([1.0, 2.0, 3.0]), [0, 0, 1], "absolute")
    assert "\n" not in str(caught.value)


def test_sum_per_prompt_combination_by_hand() -> None:
    # Two prompts, 3 and 2 replies. a: 1, 2, 3 | 10, 20 -> -1.2247, 0, 1.2247 | -1, 1
    #                               b: 4, 4, 1 | 3, 3   -> 0.7071, 0.7071, -1.4142 | 0, 0 (tied)
    a, b = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0]), torch.tensor([4.0, 4.0, 1.0, 3.0, 3.0])
    groups = [0, 0, 0, 1, 1]
    combined, terms = combine_normalized({"a": a, "b": b}, {"a": 1.0, "b": 0.5}, "sum_per_prompt", groups)
    s2 = math.sqrt(0.5)
    expected = [-SQRT_3_2 + 0.5 * s2, 0.5 * s2, SQRT_3_2 - 0.5 * 2 * s2, -1.0, 1.0]
    assert combined.tolist() == pytest.approx(expected, abs=1e-6)
    assert terms["b"].tolist() == pytest.approx([s2, s2, -2 * s2, 0.0, 0.0], abs=1e-6)
    # A weight of 0 drops the source before anything is computed (its group of one would be an error).
    alone, terms = combine_normalized(
        {"a": a, "c": torch.ones(5)}, {"a": 2.0, "c": 0.0}, "sum_per_prompt", [0, 0, 0, 1, 1]
    )
    assert list(terms) == ["a"] and alone.tolist() == pytest.approx(
        [2 * x for x in (-SQRT_3_2, 0.0, SQRT_3_2, -1.0, 1.0)], abs=1e-6
    )


def test_conservative_by_hand() -> None:
    # Three sources (rows) x four items; item 3 ties at 0 on every source; item 2 ties 1 vs 1 on two.
    z = torch.tensor([[1.0, -2.0, 1.0, 0.0], [2.0, 0.0, 1.0, 0.0], [4.0, 1.0, -1.0, 0.0]])
    assert conservative(z, "min").tolist() == [1.0, -2.0, -1.0, 0.0]
    # mean - k * population std across sources, item 0: mean 7/3, var ((4/3)^2 + (1/3)^2 + (5/3)^2) / 3 = 42/27
    mean0, std0 = 7 / 3, math.sqrt(42 / 27)
    mean1, std1 = -1 / 3, math.sqrt(((5 / 3) ** 2 + (1 / 3) ** 2 + (4 / 3) ** 2) / 3)
    mean2, std2 = 1 / 3, math.sqrt(((2 / 3) ** 2 * 2 + (4 / 3) ** 2) / 3)
    out = conservative(z, "mean_std", k=0.5)
    assert out.tolist() == pytest.approx([mean0 - 0.5 * std0, mean1 - 0.5 * std1, mean2 - 0.5 * std2, 0.0], abs=1e-6)
    # Two sources, k = 1: mean - |a - b| / 2 is the minimum.
    two = torch.tensor([[0.3, -1.0, 2.0], [1.5, -1.0, -0.5]])
    assert conservative(two, "mean_std", 1.0).tolist() == pytest.approx(conservative(two, "min").tolist(), abs=1e-6)
    with pytest.raises(CombineError, match="at least 2 sources"):
        conservative(z[:1], "min")


# --------------------------------------------------------------------------- the one z-score


def test_zscore_stats_are_the_population_mean_and_std_of_the_finite_values() -> None:
    # 1, 2, 4, 7, 3: mean 3.4, squared deviations 5.76 + 1.96 + 0.36 + 12.96 + 0.16 = 21.2; / 5 (population, not / 4)
    values = [1.0, 2.0, 4.0, 7.0, 3.0]
    assert zscore_stats(values) == pytest.approx({"mean": 3.4, "std": math.sqrt(21.2 / 5)}, abs=1e-12)
    # Any shape and type; non-finite values are left out, not turned into a NaN scale.
    nan, inf = float("nan"), float("inf")
    assert zscore_stats(np.array([[1.0, 2.0, nan, 4.0], [7.0, -inf, 3.0, inf]])) == pytest.approx(
        {"mean": 3.4, "std": math.sqrt(21.2 / 5)}, abs=1e-12
    )
    assert zscore_stats(torch.tensor(values, dtype=torch.float32)) == pytest.approx(
        {"mean": 3.4, "std": math.sqrt(21.2 / 5)}, abs=1e-6
    )
    assert zscore_stats([5.0]) == {"mean": 5.0, "std": 0.0}
    with pytest.raises(CombineError, match="no finite score"):
        zscore_stats([float("nan")])


def test_standardize_by_hand_on_tensors_and_arrays() -> None:
    stats = {"mean": 2.0, "std": 0.5, "quantiles": {}}  # reward_stats.json carries more keys: ignored
    out = standardize(torch.tensor([1.0, 2.0, 3.5]), stats)
    assert out.dtype == torch.float32 and out.tolist() == [-2.0, 0.0, 3.0]
    array = standardize(np.array([[1.0, 2.0], [3.5, 2.5]]), stats)
    assert isinstance(array, np.ndarray) and array.tolist() == [[-2.0, 0.0], [3.0, 1.0]]


def test_a_near_constant_source_is_centred_not_blown_up() -> None:
    # float32 noise around 1000 (one ulp, 2**-14): std 4.3e-5, under MIN_STD * 1000 = 1e-3, so no spread.
    ulp = 2.0**-14
    noisy = torch.tensor([1000.0, 1000.0 + ulp, 1000.0 - ulp, 1000.0], dtype=torch.float32)
    stats = zscore_stats(noisy)
    assert stats["std"] == pytest.approx(ulp * math.sqrt(0.5)) and not has_spread(stats)
    assert standardize(noisy, stats).abs().max() <= ulp  # centred: the noise stays noise (a plain z-score: +-1.41)
    # Saved statistics of a source that was constant on its validation set, then varies: raw
    # deviations, never deviations / 1e-8 (the old bon.zscore's max(std, 1e-6) gave 1e5 here).
    assert standardize(np.array([0.5, 0.6]), {"mean": 0.5, "std": 1e-8}) == pytest.approx([0.0, 0.1])
    # The bound is relative to the scale: the same std is spread at mean 0, noise at mean 10.
    assert has_spread({"mean": 0.0, "std": 2e-6}) and not has_spread({"mean": 10.0, "std": 2e-6})
    assert has_spread({"mean": -2e3, "std": 2.1e-3}) and not has_spread({"mean": -2e3, "std": 1.9e-3})
    assert MIN_STD == 1e-6
    # Within groups, the same guard: a near-tie (float noise) is centred, not standardised to +-1.
    near = standardize_within_groups(torch.tensor([1.0, 1.0 + 1e-12, 5.0, 7.0], dtype=torch.float64), [0, 0, 1, 1])
    assert near[:2].abs().max() < 1e-11 and near[2:].tolist() == [-1.0, 1.0]


# --------------------------------------------------------------------------- CombinedReward, each strategy


def _length(prompts, replies):
    return [float(len(r)) for r in replies]


def _vowels(prompts, replies):
    return [float(sum(c in "aeiou" for c in r)) for r in replies]


def _reward(strategy: str, **kw) -> CombinedReward:
    sources = [
        RewardSource("len", _length, 1.0, "zscore", {"mean": 4.0, "std": 2.0}),
        RewardSource("vowels", _vowels, kw.pop("vowel_weight", 0.5), "zscore", {"mean": 1.0, "std": 1.0}),
    ]
    return CombinedReward(sources, strategy=strategy, **kw)


PROMPTS = [user_prompt("p")] * 3 + [user_prompt("q")] * 2
REPLIES = ["aa", "bbbb", "aaaaaa", "xyz", "xyzae"]  # len 2, 4, 6 | 3, 5; vowels 2, 0, 6 | 0, 2


def test_sum_is_todays_formula() -> None:
    out = _reward("sum", reward_clip=2.0)(PROMPTS, REPLIES)
    z_len, z_vow = [(x - 4) / 2 for x in (2, 4, 6, 3, 5)], [x - 1.0 for x in (2, 0, 6, 0, 2)]
    expected = [max(-2.0, min(2.0, a + 0.5 * b)) for a, b in zip(z_len, z_vow)]
    assert out.combined.tolist() == pytest.approx(expected)
    assert out.weighted_sum.tolist() == pytest.approx([a + 0.5 * b for a, b in zip(z_len, z_vow)])


def test_sum_per_prompt_through_the_public_api() -> None:
    reward = _reward("sum_per_prompt", reward_clip=1.0, missing_eos_penalty=-2.0)
    reward.sources[0].stats = None  # no statistics: sum_per_prompt fits none (its scale is each group's)
    out = reward(PROMPTS, REPLIES, [True, True, True, False, True])
    # len  p: 2, 4, 6 -> -1.2247, 0, 1.2247 | q: 3, 5 -> -1, 1
    # vow  p: 2, 0, 6 -> mean 8/3, std sqrt(((2/3)^2 + (8/3)^2 + (10/3)^2) / 3) | q: 0, 2 -> -1, 1
    mean, std = 8 / 3, math.sqrt(((2 / 3) ** 2 + (8 / 3) ** 2 + (10 / 3) ** 2) / 3)
    vow = [(x - mean) / std for x in (2, 0, 6)] + [-1.0, 1.0]
    sums = [a + 0.5 * b for a, b in zip([-SQRT_3_2, 0.0, SQRT_3_2, -1.0, 1.0], vow)]
    assert out.weighted_sum.tolist() == pytest.approx(sums, abs=1e-6)
    # clip after combining, then the missing-EOS penalty (reply 3 did not end)
    shaped = [max(-1.0, min(1.0, s)) + (-2.0 if i == 3 else 0.0) for i, s in enumerate(sums)]
    assert out.combined.tolist() == pytest.approx(shaped, abs=1e-6)
    assert reward.sources[0].stats is None and out.normalized["vowels"].tolist() == pytest.approx(vow, abs=1e-6)
    metrics = out.metrics()
    assert {"reward/len/raw", "reward/len/normalized", "reward/vowels/raw", "reward/combined"} <= metrics.keys()
    assert all(d["combine"] == "sum_per_prompt" for d in reward.describe())
    with pytest.raises(CombineError, match="reward source 'len': 1 group"):  # a prompt answered once: no group
        reward(PROMPTS[:4], REPLIES[:4])


def test_conservative_through_the_public_api_ignores_weights_but_zero() -> None:
    z_len, z_vow = [(x - 4) / 2 for x in (2, 4, 6, 3, 5)], [x - 1.0 for x in (2, 0, 6, 0, 2)]
    low = _reward("conservative", vowel_weight=7.0, reward_clip=1.5)(PROMPTS, REPLIES)  # weight 7: ignored
    assert low.weighted_sum.tolist() == pytest.approx([min(a, b) for a, b in zip(z_len, z_vow)])
    assert low.combined.tolist() == pytest.approx([max(-1.5, min(1.5, min(a, b))) for a, b in zip(z_len, z_vow)])
    spread = _reward("conservative", method="mean_std", k=2.0)(PROMPTS, REPLIES)
    assert spread.combined.tolist() == pytest.approx([(a + b) / 2 - 2.0 * abs(a - b) / 2 for a, b in zip(z_len, z_vow)])
    assert {"reward/len/normalized", "reward/vowels/normalized"} <= spread.metrics().keys()
    assert _reward("conservative", method="mean_std", k=2.0).describe()[0]["combine"] == "conservative (mean - 2 x std)"
    with pytest.raises(ConfigError, match="conservative needs at least 2 reward sources") as caught:
        _reward("conservative", vowel_weight=0.0)  # a weight of 0 still drops a source: one left
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- config


def test_the_new_keys_are_validated_in_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("sft", overrides=["rl.combine=sum_per_prompt"])  # rl.algorithm: ppo (the default)
    message = str(caught.value)
    assert (
        message.startswith("rl.combine='sum_per_prompt': must be sum; sum_per_prompt with rl.algorithm grpo or rloo")
        and "\n" not in message
    )
    assert "use sum or conservative" in message
    assert (
        load_config("sft", overrides=["rl={algorithm: grpo, combine: sum_per_prompt}"]).rl.combine == "sum_per_prompt"
    )
    assert (
        load_config("sft", overrides=["rl={algorithm: rloo, combine: sum_per_prompt}"]).rl.combine == "sum_per_prompt"
    )
    one = "rl.rewards=[{name: a, path: gold, weight: 1}, {name: b, path: gold, weight: 0}]"
    with pytest.raises(ConfigError, match=r"^rl.combine='conservative': must be"):
        load_config("sft", overrides=[one, "rl.combine=conservative"])
    two = "rl.rewards=[{name: a, path: gold, weight: 1}, {name: b, path: gold, weight: 0.2}]"
    cfg = load_config(
        "sft", overrides=[two, "rl.combine=conservative", "rl.conservative=mean_std", "rl.conservative_k=0.5"]
    )
    assert (cfg.rl.combine, cfg.rl.conservative, cfg.rl.conservative_k) == ("conservative", "mean_std", 0.5)
    with pytest.raises(ConfigError, match=r"^rl.combine='sum_per_prompt': must be"):
        load_config("sft", overrides=["rl={algorithm: grpo, reward_normalization: trl, combine: sum_per_prompt}"])
    with pytest.raises(ConfigError, match=r"^rl.conservative_k=-1.0: must be a finite number >= 0"):
        load_config("sft", overrides=["rl.conservative_k=-1"])
    with pytest.raises(ConfigError, match=r"rl.conservative: expected one of 'min' \| 'mean_std'"):
        load_config("sft", overrides=["rl.conservative=max"])
    with pytest.raises(
        ConfigError,
        match=r"^bon.strategies=\['conservative'\]: must be a list of distinct strategies that includes sum",
    ):
        load_config("sft", overrides=["bon.strategies=[conservative]"])


# --------------------------------------------------------------------------- TRL: groups across processes


class FakeAllGather:
    """``accelerator.gather`` of ``world`` processes simulated by threads: each gets every rank's tensor, in rank
    order."""

    def __init__(self, world: int) -> None:
        self.slots: list[torch.Tensor | None] = [None] * world
        self.barrier = threading.Barrier(world, timeout=30)

    def for_rank(self, rank: int):
        def gather(tensor: torch.Tensor) -> torch.Tensor:
            self.slots[rank] = tensor
            self.barrier.wait()
            out = torch.cat([t for t in self.slots if t is not None])
            self.barrier.wait()  # nobody overwrites a slot before everyone has read it
            return out

        return gather


def _trl_batch(texts: list[tuple[str, str]]) -> tuple[list, list]:
    prompts = [[{"role": "user", "content": p}] for p, _ in texts]
    return prompts, [[{"role": "assistant", "content": r}] for _, r in texts]


def test_sum_per_prompt_on_trl_gathers_groups_split_between_processes() -> None:
    # TRL's layout, group_size 2 over 2 processes of 3 replies: prompt q's group is split between them.
    batch = [("p", "aa"), ("p", "bbbb"), ("q", "xyz"), ("q", "a"), ("r", "ee"), ("r", "eeee")]
    fake, results = FakeAllGather(2), {}

    def process(rank: int) -> None:
        reward = _reward("sum_per_prompt", missing_eos_penalty=-1.0)
        reward.gather, reward.process_index = fake.for_rank(rank), rank
        prompts, completions = _trl_batch(batch[3 * rank : 3 * rank + 3])
        ids = [[5, 2]] * 3 if rank == 0 else [[5], [5, 2], [5, 2]]  # rank 1's first reply (q's "a") did not end
        results[rank] = trl_reward_func(reward, eos_token_ids=[2], group_size=2)(
            prompts, completions, completion_ids=ids
        )

    threads = [threading.Thread(target=process, args=(rank,)) for rank in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # By hand: in a group of two, a source standardises to -1 / +1 (0 when tied). len: aa<bbbb, xyz>a, ee<eeee;
    # vowels (weight 0.5): 2>0, 0<1, 2<4.
    expected = [-1 + 0.5, 1 - 0.5, 1 - 0.5, -1 + 0.5 - 1.0, -1 - 0.5, 1 + 0.5]
    assert results[0] + results[1] == pytest.approx(expected)
    # A batch not laid out as groups (q's replies not adjacent) is refused, not standardised across prompts.
    prompts, completions = _trl_batch([("p", "aa"), ("q", "b"), ("p", "c"), ("q", "d")])
    with pytest.raises(RuntimeError, match="not laid out as groups of rl.group_size=2"):
        trl_reward_func(_reward("sum_per_prompt"), group_size=2)(prompts, completions)


# --------------------------------------------------------------------------- GRPO / RLOO, one step


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_one_grpo_rloo_step_optimises_sum_per_prompt(
    tmp_path, tiny_model_dir, smol_tokenizer, monkeypatch, algorithm
) -> None:
    pytest.importorskip("trl")
    from stage_runs import capture_trl_rewards, check_run_outputs, run_cli, write_config

    seen = capture_trl_rewards(monkeypatch, algorithm)
    run_dir = run_cli(
        write_config(tmp_path, tiny_model_dir, algorithm=algorithm, steps=1, save_steps=0, combine="sum_per_prompt")
    )
    state = check_run_outputs(run_dir, algorithm, 1)
    assert all(s["combine"] == "sum_per_prompt" and s["stats"] is None for s in state["summary"]["rewards"])
    ((prompts, completions, ids, trl_rewards),) = seen
    # write_config: group_size 2, sources chars (length, weight 1) and vowels (weight 0.5), clip 4, EOS penalty -1.
    # In a group of two a source standardises to -1 / +1, or 0 when both replies tie on it.
    replies = [c[-1]["content"] for c in completions]
    vowels = [sum(ch in "aeiou" for ch in r.lower()) for r in replies]

    def sign(x: float) -> float:
        return float(x > 0) - float(x < 0)

    for i in range(0, len(replies), 2):
        assert prompts[i] == prompts[i + 1]
        for a, b in ((i, i + 1), (i + 1, i)):
            ended = bool(ids[a]) and ids[a][-1] == smol_tokenizer.eos_token_id
            expected = (
                sign(len(replies[a]) - len(replies[b])) + 0.5 * sign(vowels[a] - vowels[b]) + (0.0 if ended else -1.0)
            )
            assert trl_rewards[a] == pytest.approx(expected, abs=1e-5)
