"""verl's custom reward function: crs's reward in process, and the same numbers through `crs serve-reward`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from reward_servers import reward_server, write_config

from crs.config import ConfigError
from crs.data.schema import DataError
from crs.runs import RunError
from crs.serve import verl_reward
from crs.serve.verl_reward import compute_score, compute_score_batch

DIALOGUE = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a fruit."},
    {"role": "assistant", "content": "Kiwi."},
    {"role": "user", "content": "Another one, please."},
]
ROWS = [  # (extra_info, reply): a text prompt, verl's example key, a dialogue (as parquet gives it back), ChatML text
    ({"prompt": "Name a fruit.", "index": 0}, "Kiwi is green"),
    ({"question": "Say hello.", "split": "train"}, "hello"),
    ({"prompt": np.array(DIALOGUE, dtype=object)}, "Apple."),
    ({"prompt": "<|im_start|>user\nName two fruits.<|im_end|>\n<|im_start|>assistant\n"}, "Kiwi and apple"),
]
EXPECTED = [10 * 4 + 3, 10 * 3 + 1, 10 * (3 + 4 + 2 + 4) + 1, 10 * 4 + 3]  # prompt_words, by hand


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    rewards = [{"name": "words", "path": "python:tests.reward_fns:prompt_words", "normalize": "none"}]
    subset = {"rl": {"rewards": rewards, "missing_eos_penalty": -1.0}, "serve": {"eos_texts": ["</s>"]}}
    return write_config(tmp_path_factory.mktemp("verl") / "cfg.yaml", verl_tiny=subset)


def _batch(**settings: str) -> list[float]:
    infos = [info for info, _ in ROWS]
    return compute_score_batch(["demo"] * len(ROWS), [r for _, r in ROWS], [None] * len(ROWS), infos, **settings)


def test_in_process_and_through_the_server_the_rewards_are_the_same(config: Path, monkeypatch) -> None:
    here = _batch(crs_config_subset="verl_tiny", crs_config=str(config))
    assert here == EXPECTED  # no missing-EOS penalty: verl's replies carry no EOS to tell
    one = compute_score("demo", ROWS[0][1], None, ROWS[0][0], crs_config_subset="verl_tiny", crs_config=str(config))
    assert one == EXPECTED[0]
    with reward_server(config, "verl_tiny") as (url, _):
        assert _batch(crs_url=url + "/get_reward") == here
        monkeypatch.setenv(verl_reward.URL_VARIABLE, url + "/get_reward")  # the environment, as Ray workers get it
        assert compute_score("demo", ROWS[2][1], None, ROWS[2][0]) == EXPECTED[2]


def test_the_subset_comes_from_the_environment_too(config: Path, monkeypatch) -> None:
    monkeypatch.setenv(verl_reward.SUBSET_VARIABLE, "verl_tiny")
    monkeypatch.setenv(verl_reward.CONFIG_VARIABLE, str(config))
    assert _batch() == EXPECTED


def test_what_crs_cannot_score_is_one_line_saying_what_to_do(config: Path, monkeypatch) -> None:
    for name in (verl_reward.URL_VARIABLE, verl_reward.SUBSET_VARIABLE, verl_reward.CONFIG_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DataError, match="verl row 0: no prompt in extra_info .keys prompt, question."):
        compute_score("demo", "Kiwi", None, {"index": 3}, crs_config_subset="verl_tiny", crs_config=str(config))
    with pytest.raises(DataError, match="verl row 1: extra_info prompt: messages must end on a user turn"):
        compute_score_batch([None] * 2, ["a", "b"], [None] * 2, [{"prompt": "Q"}, {"prompt": DIALOGUE[:3]}])
    with pytest.raises(ConfigError, match="needs CRS_REWARD_URL .* or CRS_REWARD_SUBSET"):
        compute_score("demo", "Kiwi", None, {"prompt": "Q"})
    with pytest.raises(RunError, match="cannot be reached .* is crs serve-reward running"):
        compute_score("demo", "Kiwi", None, {"prompt": "Q"}, crs_url="http://127.0.0.1:9/get_reward")
