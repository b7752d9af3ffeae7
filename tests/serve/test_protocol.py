"""OpenRLHF's reward request read into (prompt, reply, ended) items, and the answer written back."""

from __future__ import annotations

import pytest
import torch

from crs.data.schema import user_prompt
from crs.rl.combined_reward import RewardBreakdown
from crs.serve.protocol import RequestError, parse_reward_request, reward_response, strip_eos

EOS = ["<|im_end|>"]
CHATML = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName a fruit.<|im_end|>\n<|im_start|>assistant\n"


def test_each_reply_is_the_query_after_its_prompt_and_ends_with_eos_or_not() -> None:
    body = {
        "query": ["Name a fruit.Kiwi.<|im_end|>", CHATML + "Apple, cut short", "Hi there<|im_end|><|im_end|>"],
        "prompts": ["Name a fruit.", CHATML, "Hi "],
        "labels": [None, "apple", None],
    }
    items = parse_reward_request(body, EOS, max_items=3)
    assert items.replies == ["Kiwi.", "Apple, cut short", "there"]  # padding by the EOS token stripped too
    assert items.ended_with_eos == [True, False, True]
    assert items.prompts == [
        user_prompt("Name a fruit."),
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}],  # ChatML read back
        user_prompt("Hi "),  # plain text: one user turn, as it is
    ]


def test_ended_with_eos_when_given_decides_and_eos_texts_are_still_stripped() -> None:
    body = {"query": ["Q?A<|im_end|>", "Q?B"], "prompts": ["Q?", "Q?"], "ended_with_eos": [False, True]}
    items = parse_reward_request(body, EOS, max_items=2)
    assert (items.replies, items.ended_with_eos) == (["A", "B"], [False, True])


def test_strip_eos_takes_every_trailing_eos_text_and_nothing_inside() -> None:
    assert strip_eos("a<|im_end|>b", EOS) == ("a<|im_end|>b", False)
    assert strip_eos("ab</s><|im_end|></s>", ["</s>", "<|im_end|>"]) == ("ab", True)
    assert strip_eos("", EOS) == ("", False)


@pytest.mark.parametrize(
    "body, status, says",
    [
        ([1, 2], 400, "must be a JSON object"),
        ({"prompts": ["Q"]}, 400, "query is missing"),
        ({"query": "Q A", "prompts": ["Q"]}, 400, "query must be a list of texts, got a text"),
        ({"query": ["Q A", 3], "prompts": ["Q", "Q"]}, 400, r"query\[1\] is a number"),
        ({"query": ["Q A"]}, 400, "prompts is missing"),
        ({"query": ["Q A", "Q B"], "prompts": ["Q"]}, 400, "prompts has 1 items and query 2"),
        ({"query": ["Q A"], "prompts": ["Q"], "labels": ["x", "y"]}, 400, "labels has 2 items and query 1"),
        ({"query": ["Q A"], "prompts": ["Q"], "ended_with_eos": [1]}, 400, "one true or false per item"),
        ({"query": ["Q A"], "prompts": ["Q"], "ended_with_eos": True}, 400, "must be a list"),
        ({"query": ["Tell me A"], "prompts": ["Ask me"]}, 400, r"does not begin with prompts\[0\].*agree on 0"),
        ({"query": [" A"], "prompts": [" "]}, 400, r"prompts\[0\] is empty"),
        ({"query": ["<|im_start|>user\nQ A"], "prompts": ["<|im_start|>user\nQ"]}, 400, "not closed by"),
        ({"query": ["Q a", "Q b", "Q c", "Q d"], "prompts": ["Q"] * 4}, 413, "at most 3 .serve.max_items."),
    ],
)
def test_a_malformed_request_is_refused_saying_what_to_change(body, status: int, says: str) -> None:
    with pytest.raises(RequestError, match=says) as refused:
        parse_reward_request(body, EOS, max_items=3)
    assert refused.value.status == status


def test_the_answer_holds_rewards_scores_and_per_item_logs() -> None:
    combined = torch.tensor([0.5, -1.0])
    scores = RewardBreakdown(
        combined=combined,
        raw={"rm": torch.tensor([3.0, 1.0])},
        normalized={"rm": torch.tensor([1.0, -1.0])},
        weighted_sum=combined,
        ended_with_eos=torch.tensor([True, False]),
        nonfinite={"rm": 0},
    )
    assert reward_response(scores) == {
        "rewards": [0.5, -1.0],
        "scores": [0.5, -1.0],
        "extra_logs": {"crs/rm": [1.0, -1.0], "crs/ended_with_eos": [1.0, 0.0]},
    }
