"""The rm stage's validation metrics (crs/rm/rm_evaluation.py): how much of a reward model's ranking accuracy is
length, by hand, beside the keys it always had."""

from __future__ import annotations

import pytest
import torch

from crs.config import RewardModelConfig
from crs.data.schema import RankingExample
from crs.rm.length_metrics import information_beyond_length
from crs.rm.metrics import spearman
from crs.rm.rm_evaluation import (
    BEYOND_LENGTH_KEYS,
    evaluate_reward_model,
    length_only_metrics,
    ranking_preferences,
    view_metrics,
)
from crs.rm.training_data import ValidationViews

PROMPT = [{"role": "user", "content": "q"}]
RANKINGS = [
    RankingExample(PROMPT, ["aaaa", "bb", "cccccc"]),  # lengths 4, 2, 6; best first
    RankingExample(PROMPT, ["dd", "eeee"], scores=[1.0, 1.0]),  # the data tie them: no preference
    RankingExample(PROMPT, ["fff", "gggggg", "h"], scores=[0.9, 0.5, 0.1]),  # lengths 3, 6, 1
    RankingExample(PROMPT, ["iiiii", "jjjjj"]),  # equal lengths: the only length-matched pair
]
REWARDS = [1.0, 2.0, 0.0, 0.0, 0.0, 3.0, 1.0, 1.0, 0.5, 1.0]
# Credits: ranking 0: (0,1) 0, (0,2) 1, (1,2) 1; ranking 2: (0,1) 1, (0,2) 1, (1,2) a reward tie 0.5; ranking 3: 0.
# The shorter reply is preferred in (0,2) and (1,2) of ranking 0 and (0,1) of ranking 2: all three right.


def test_the_rankings_pairs_are_preferences_with_the_datas_ties_left_out() -> None:
    prefs = ranking_preferences(RANKINGS)
    assert prefs.n_pairs == 7 and prefs.n_judge_ties == 1 and prefs.n_clusters == 4
    assert prefs.first.tolist() == [0, 0, 1, 5, 5, 6, 8] and prefs.second.tolist() == [1, 2, 2, 6, 7, 7, 9]
    assert prefs.first_preferred.all() and prefs.lengths.tolist() == [4, 2, 6, 2, 4, 3, 6, 1, 5, 5]


def test_validation_metrics_add_the_length_aware_ones_by_hand_and_keep_the_old() -> None:
    views = ValidationViews(RANKINGS, [])
    metrics = view_metrics(views, torch.tensor(REWARDS), torch.zeros(0))
    assert metrics["pairwise_accuracy"] == pytest.approx(4.5 / 7) and metrics["n_pairs"] == 7  # as before
    assert metrics["shorter_preferred_accuracy"] == 1.0 and metrics["n_shorter_preferred"] == 3
    assert metrics["length_matched_accuracy"] == 0.0 and metrics["n_length_matched"] == 1
    assert metrics["length_spearman"] == pytest.approx(spearman(REWARDS, [4, 2, 6, 2, 4, 3, 6, 1, 5, 5]))
    beyond = information_beyond_length(ranking_preferences(RANKINGS), REWARDS)
    assert {key: metrics[key] for key in BEYOND_LENGTH_KEYS} == {
        key: getattr(beyond, field) for key, field in BEYOND_LENGTH_KEYS.items()
    }
    assert metrics["beyond_length_lr"] is not None and set(BEYOND_LENGTH_KEYS) <= set(metrics)
    prefixed = view_metrics(views, torch.tensor(REWARDS), torch.zeros(0), prefix="preference_head_")
    assert prefixed["preference_head_shorter_preferred_accuracy"] == 1.0
    # A diverged reward gives no numbers, not an error in the middle of training.
    broken = view_metrics(views, torch.tensor([float("nan")] * 10), torch.zeros(0))
    assert broken["shorter_preferred_accuracy"] is None and broken["beyond_length_p_robust"] is None


def test_the_length_only_scorer_sits_beside_the_reward_model() -> None:
    views = ValidationViews(RANKINGS, [])
    # Length: right on (0,1) of ranking 0 and (0,2), (1,2) of ranking 2, wrong on the three shorter-preferred
    # pairs, a tie on the equal lengths.
    assert length_only_metrics(views) == {
        "length_only_pairwise_accuracy": pytest.approx(3.5 / 7),
        "length_only_length_matched_accuracy": 0.5,
    }
    assert length_only_metrics(ValidationViews([], [])) == {}

    def scorer(prompts: list, replies: list[str]) -> torch.Tensor:
        return torch.tensor(REWARDS[: len(replies)])

    metrics, _ = evaluate_reward_model(scorer, views, RewardModelConfig(loss="pairwise"))
    assert metrics["length_only_pairwise_accuracy"] == pytest.approx(0.5) and "loss" in metrics
