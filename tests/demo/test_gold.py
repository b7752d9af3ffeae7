"""Tests of where the gold judge means something (crs/demo/gold.py): the demo's prompts, refused elsewhere."""

from __future__ import annotations

import logging

import pytest

from crs.config import ConfigError
from crs.demo.dataset import demo_dataset_path
from crs.demo.gold import check_gold_applies, demo_prompt_texts, prompts_outside_demo, resolve_judge

pytestmark = pytest.mark.skipif(not demo_dataset_path().is_file(), reason="demo dataset not generated yet")

OTHER = "Write a sonnet about the sea."


def demo_prompt() -> str:
    return sorted(demo_prompt_texts())[0]


def test_demo_prompts_are_known_whatever_their_spacing() -> None:
    spaced = "  " + demo_prompt().replace(" ", "\n ", 1) + " "
    assert prompts_outside_demo([demo_prompt(), spaced, OTHER]) == [OTHER]


def test_auto_is_gold_on_the_demo_and_none_elsewhere(caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_judge("auto", [demo_prompt()], "k", allow=False) == "gold"
    with caplog.at_level(logging.WARNING):
        assert resolve_judge("auto", [demo_prompt(), OTHER], "k", allow=False, instead="no judge") == "none"
    assert "k auto -> none: 1 of 2 prompts are not the demo dataset's" in caplog.text


def test_gold_elsewhere_is_refused_unless_allowed(caplog: pytest.LogCaptureFixture) -> None:
    check_gold_applies([demo_prompt()], "k", allow=False)
    with pytest.raises(ConfigError, match=r"k: gold is the demo annotator's rule set.*allow_gold_outside_demo"):
        resolve_judge("gold", [OTHER], "k", allow=False)
    with caplog.at_level(logging.WARNING):
        assert resolve_judge("gold", [OTHER], "k", allow=True) == "gold"
    assert "gold on prompts it was not built for" in caplog.text
    assert resolve_judge("python:m:f", [OTHER], "k", allow=False) == "python:m:f"
