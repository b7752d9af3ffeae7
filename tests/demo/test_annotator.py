"""Tests for the simulated annotator: criteria, noisy rankings, Likert panel, gold judge."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from crs.demo.annotator import (
    ANNOTATORS,
    WEIGHTS,
    Annotator,
    gold_judge,
    gold_score,
    likert,
    likert_to_unit,
    rank_replies,
    sample_ranking,
    utility,
    utility_breakdown,
)
from crs.demo.prompt_set import build_prompts

SLEEP_LIST = "List 3 tips for sleeping better."
THREE_TIPS = (
    "1. Go to bed at the same time every night.\n"
    "2. Keep your bedroom dark and cool.\n"
    "3. Avoid screens an hour before sleep."
)
FIVE_TIPS = THREE_TIPS + "\n4. Do not drink coffee late in the day.\n5. Get some sunlight in the morning."
WHY_SLEEP = "Explain why people need sleep."
GOOD_WHY = "Sleep lets the body and brain rest and repair, so people feel alert and calm the next day."


def better(prompt: str, good: str, bad: str) -> bool:
    return utility(prompt, good) > utility(prompt, bad)


# --------------------------------------------------------------------------------------
# Each criterion moves the utility the right way
# --------------------------------------------------------------------------------------


def test_list_with_the_asked_number_of_items_wins() -> None:
    assert better(SLEEP_LIST, THREE_TIPS, FIVE_TIPS)
    assert better(SLEEP_LIST, THREE_TIPS, THREE_TIPS.replace("\n", " ").replace("1. ", ""))
    bulleted = THREE_TIPS.replace("1.", "-").replace("2.", "-").replace("3.", "*")
    assert utility_breakdown(SLEEP_LIST, bulleted)["instructions"] == 1.0
    assert utility(SLEEP_LIST, THREE_TIPS) == pytest.approx(1.0)


def test_right_sum_beats_wrong_sum() -> None:
    prompt = "What is 17 + 25?"
    assert better(prompt, "17 + 25 = 42.", "17 + 25 = 43.")
    assert better(prompt, "The answer is 42.", "The answer is 42, or maybe 41.")
    assert utility_breakdown(prompt, "17 + 25 = 43.")["correctness"] == 0.0
    word_problem = "Tom has 12 apples and buys 7 more. How many apples does Tom have now?"
    assert better(word_problem, "Tom has 19 apples now.", "Tom has 18 apples now.")
    assert better(word_problem, "Tom has nineteen apples now.", "Tom has 12 apples now.")


def test_truncated_reply_loses_to_complete_one() -> None:
    cut = "Sleep lets the body and brain rest and repair, so people feel alert and"
    assert better(WHY_SLEEP, GOOD_WHY, cut)
    assert utility_breakdown(WHY_SLEEP, cut)["completeness"] == 0.0


def test_refusal_loses() -> None:
    refusal = "As an AI language model, I cannot explain why people need sleep."
    assert better(WHY_SLEEP, GOOD_WHY, refusal)
    assert utility_breakdown(WHY_SLEEP, refusal)["no_refusal"] == 0.0
    assert better(SLEEP_LIST, FIVE_TIPS, "I'm sorry, but I can't give tips for sleeping better.")


def test_repetition_loop_loses() -> None:
    loop = "Sleep is good for you. " * 6
    assert better(WHY_SLEEP, GOOD_WHY, loop)
    assert utility_breakdown(WHY_SLEEP, loop)["repetition"] == 0.0
    repeated_lines = "1. Go to bed early.\n2. Go to bed early.\n3. Go to bed early."
    assert better(SLEEP_LIST, THREE_TIPS, repeated_lines)


def test_off_topic_reply_loses() -> None:
    off_topic = "Bananas are yellow fruit that grow in warm countries and taste sweet."
    assert better(WHY_SLEEP, GOOD_WHY, off_topic)
    assert utility_breakdown(WHY_SLEEP, off_topic)["relevance"] == 0.0


def test_overlong_reply_loses_on_length() -> None:
    prompt = "Define yeast briefly."
    short = "Yeast is a tiny fungus that makes bread dough rise."
    long = short + " " + " ".join(f"Also, fact number {i} about yeast is worth knowing." for i in range(12))
    assert utility_breakdown(prompt, short)["length"] == 1.0
    assert utility_breakdown(prompt, long)["length"] < 0.5
    assert better(prompt, short, long)
    assert better(prompt, short, "Yeast.")  # too short to be a definition


def test_one_sentence_requirement() -> None:
    prompt = "Define yeast in one sentence."
    one = "Yeast is a tiny fungus that makes bread dough rise."
    three = "Yeast is a fungus. It is tiny. It makes bread dough rise."
    assert better(prompt, one, three)
    assert utility_breakdown(prompt, three)["instructions"] == pytest.approx(1 / 3)


def test_yes_no_answer_first_with_a_reason() -> None:
    prompt = "Is it a good idea to drink coffee right before bed? Answer yes or no and give one reason."
    direct = "No, because the caffeine in coffee keeps you awake at night."
    hedged = "The caffeine in coffee keeps you awake at night, so it is not wise."
    bare = "No."
    assert better(prompt, direct, hedged)
    assert better(prompt, direct, bare)


def test_polite_rewrite_beats_copy() -> None:
    prompt = "Rewrite this more politely: 'Give me the coffee mug now.'"
    polite = "Could you please pass me the coffee mug when you have a moment?"
    assert better(prompt, polite, "Give me the coffee mug now.")
    assert better(prompt, polite, "Hand over the coffee mug.")


def test_compare_names_both_sides() -> None:
    prompt = "Compare exercising in the morning and exercising in the evening."
    both = "Exercising in the morning wakes you up, while exercising in the evening helps you unwind."
    one = "Exercising in the morning wakes you up and gives you energy for the whole day."
    assert utility_breakdown(prompt, both)["instructions"] == 1.0
    assert utility_breakdown(prompt, one)["instructions"] == 0.5
    assert better(prompt, both, one)


def test_empty_reply_scores_zero_and_breakdown_matches_utility() -> None:
    assert utility(WHY_SLEEP, "") == 0.0
    assert utility(WHY_SLEEP, "  \n ...") == 0.0
    parts = utility_breakdown(SLEEP_LIST, FIVE_TIPS)
    assert parts["total"] == utility(SLEEP_LIST, FIVE_TIPS)
    weighted = sum(WEIGHTS[k] * v for k, v in parts.items() if k != "total")
    assert parts["total"] == pytest.approx(weighted / sum(WEIGHTS[k] for k in parts if k != "total"))
    assert "correctness" not in parts  # only arithmetic is checked for a right number
    assert "relevance" not in utility_breakdown("What is 2 + 3?", "5.")


# --------------------------------------------------------------------------------------
# Synthetic reply sets for the statistical tests
# --------------------------------------------------------------------------------------

_FILLER = "the it helps often very good makes your a and time people can with each every day".split()


def _random_reply(prompt_terms: list[str], rng: np.random.Generator) -> str:
    """A random reply of varying quality: random words, sometimes listed, cut, looped or refused."""
    vocab = _FILLER + prompt_terms * 2 + ["bananas", "rocket", "purple"]
    sentences = []
    for _ in range(int(rng.integers(1, 6))):
        words = [str(w) for w in rng.choice(vocab, size=int(rng.integers(3, 14)))]
        sentences.append(" ".join(words).capitalize() + ".")
    if rng.random() < 0.3:
        text = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(sentences))
    else:
        text = " ".join(sentences)
    if rng.random() < 0.2:
        text = text[: int(rng.integers(5, max(6, len(text))))]
    if rng.random() < 0.15:
        text = (sentences[0] + " ") * 5
    if rng.random() < 0.1:
        text = "As an AI, I cannot help with that. " + text
    return text


ReplySets = list[tuple[str, list[str], list[float]]]  # (prompt, replies, their utilities)


@pytest.fixture(scope="module")
def reply_sets() -> ReplySets:
    rng = np.random.default_rng(123)
    prompts = build_prompts(seed=0)
    picked = [prompts[int(i)] for i in rng.choice(len(prompts), size=300, replace=False)]
    sets = []
    for p in picked:
        replies = [_random_reply(p.spec["key_terms"], rng) for _ in range(4)]
        sets.append((p.text, replies, [utility(p.text, r) for r in replies]))
    return sets


def test_utilities_are_in_range_and_spread(reply_sets: ReplySets) -> None:
    values = np.array([u for _, _, us in reply_sets for u in us])
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert values.std() > 0.1  # replies differ, not all 0 or 1
    assert len(np.unique(np.round(values, 3))) > 50


def _pair_agreement(reply_sets: ReplySets, noise: float, seed: int) -> float:
    """Fraction of reply pairs with different utility that the sampled ranking orders correctly."""
    rng = np.random.default_rng(seed)
    agree = total = 0
    for prompt, replies, us in reply_sets:
        order = rank_replies(prompt, replies, noise, rng)
        position = {idx: pos for pos, idx in enumerate(order)}
        for i, j in combinations(range(len(replies)), 2):
            if abs(us[i] - us[j]) < 1e-9:
                continue
            total += 1
            agree += (us[i] > us[j]) == (position[i] < position[j])
    return agree / total


def test_rankings_follow_utility_more_as_noise_falls(reply_sets: ReplySets) -> None:
    assert _pair_agreement(reply_sets, 0.0, seed=0) == 1.0
    low, mid, high = (_pair_agreement(reply_sets, noise, seed=0) for noise in (0.01, 0.1, 1.0))
    assert low > mid > high
    assert low >= 0.95
    assert high < 0.75  # heavy noise is close to chance (0.5)


def test_sample_ranking_basics() -> None:
    rng = np.random.default_rng(0)
    assert sample_ranking([0.2, 0.9, 0.5], 0.0, rng) == [1, 2, 0]
    assert sample_ranking([0.5, 0.5], 0.0, rng) == [0, 1]  # ties keep input order
    assert sorted(sample_ranking([0.1] * 6, 1.0, rng)) == list(range(6))
    with pytest.raises(ValueError):
        sample_ranking([0.1, 0.2], -1.0, rng)


def test_rankings_and_likert_reproducible_from_seed(reply_sets: ReplySets) -> None:
    def run(seed: int) -> tuple[list[list[int]], list[int]]:
        rng = np.random.default_rng(seed)
        ranks = [rank_replies(p, rs, 0.1, rng) for p, rs, _ in reply_sets[:50]]
        scores = [likert(p, r, a, rng) for p, rs, _ in reply_sets[:50] for r in rs for a in ANNOTATORS]
        return ranks, scores

    assert run(7) == run(7)
    assert run(7) != run(8)


# --------------------------------------------------------------------------------------
# Absolute scores
# --------------------------------------------------------------------------------------


def test_annotator_biases_show_in_likert_scores(reply_sets: ReplySets) -> None:
    rng = np.random.default_rng(0)
    panel = {a.id: a for a in ANNOTATORS}
    assert len(panel) >= 5
    pairs = [(p, r) for p, rs, _ in reply_sets for r in rs]
    scores = {name: np.array([likert(p, r, a, rng) for p, r in pairs]) for name, a in panel.items()}
    for s in scores.values():
        assert s.min() >= 1 and s.max() <= 5
    assert scores["lenient"].mean() > scores["careful"].mean() > scores["harsh"].mean()
    assert scores["middling"].std() < scores["careful"].std()
    # The careful rater tracks the utility closely, the noisy one less so.
    us = np.array([utility(p, r) for p, r in pairs])
    corr = {name: np.corrcoef(us, s)[0, 1] for name, s in scores.items()}
    assert corr["careful"] > 0.9 and corr["careful"] > corr["noisy"]


def test_noise_free_annotator_maps_utility_to_nearest_point() -> None:
    exact = Annotator("exact", bias=0.0, noise=0.0, scale=1.0)
    rng = np.random.default_rng(0)
    assert likert(SLEEP_LIST, THREE_TIPS, exact, rng) == 5
    assert likert(WHY_SLEEP, "", exact, rng) == 1
    assert [likert_to_unit(s) for s in range(1, 6)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError):
        likert_to_unit(0)


# --------------------------------------------------------------------------------------
# Gold judge
# --------------------------------------------------------------------------------------


def test_gold_judge() -> None:
    assert gold_score(SLEEP_LIST, THREE_TIPS) == utility(SLEEP_LIST, THREE_TIPS)
    assert gold_judge(SLEEP_LIST, THREE_TIPS, FIVE_TIPS) == 1.0
    assert gold_judge(SLEEP_LIST, FIVE_TIPS, THREE_TIPS) == 0.0
    assert gold_judge(SLEEP_LIST, THREE_TIPS, THREE_TIPS) == 0.5
    # Replies equal up to tie_eps are a tie.
    assert gold_judge(SLEEP_LIST, THREE_TIPS, FIVE_TIPS, tie_eps=1.0) == 0.5
