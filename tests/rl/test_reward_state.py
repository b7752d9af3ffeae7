"""The statistics an RL run's reward froze, read back from its newest checkpoint or from a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crs.config import ConfigError
from crs.rl.combined_reward import REWARD_STATE_FILE
from crs.rl.reward_state import read_reward_state, run_reward_state
from crs.runs import seal_checkpoint

OLD = {"rm": {"stats": {"mean": 1.0, "std": 2.0}, "origin": "saved"}}
NEW = {"rm": {"stats": {"mean": 0.5, "std": 3.0}, "origin": "saved"}, "length": {"stats": None, "origin": "first"}}


def _checkpoint(run: Path, name: str, file: str, content: dict, sealed: bool = True) -> None:
    folder = run / "checkpoints" / name
    folder.mkdir(parents=True)
    (folder / file).write_text(json.dumps(content))
    if sealed:
        seal_checkpoint(folder)


def test_a_ppo_run_gives_its_newest_complete_checkpoints_state(tmp_path: Path) -> None:
    _checkpoint(tmp_path, "step_2", "trainer_state.json", {"step": 2, "reward": OLD})
    _checkpoint(tmp_path, "step_4", "trainer_state.json", {"step": 4, "reward": NEW})
    _checkpoint(tmp_path, "step_6", "trainer_state.json", {"step": 6, "reward": {}}, sealed=False)  # torn: skipped
    assert run_reward_state(tmp_path) == NEW == read_reward_state(tmp_path)


def test_a_trl_run_and_the_files_themselves_give_the_same_state(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "grpo", "checkpoint-3", REWARD_STATE_FILE, NEW)
    assert run_reward_state(tmp_path / "grpo") == NEW
    (tmp_path / "trainer_state.json").write_text(json.dumps({"step": 4, "reward": NEW}))
    assert read_reward_state(tmp_path / "grpo" / "checkpoints" / "checkpoint-3" / REWARD_STATE_FILE) == NEW
    assert read_reward_state(tmp_path / "trainer_state.json") == NEW
    one_source_named_reward = {"reward": {"stats": {"mean": 0.0, "std": 1.0}, "origin": "saved"}}
    (tmp_path / "own.json").write_text(json.dumps(one_source_named_reward))
    assert read_reward_state(tmp_path / "own.json") == one_source_named_reward  # a source, not a wrapper
    (tmp_path / "by_hand.json").write_text(json.dumps({"len": {"stats": {"mean": 9, "std": 3}}}))
    by_hand = {"len": {"stats": {"mean": 9, "std": 3}, "origin": str(tmp_path / "by_hand.json")}}
    assert read_reward_state(tmp_path / "by_hand.json") == by_hand  # the file is where its scale came from


@pytest.mark.parametrize(
    "content, says",
    [
        ([1, 2], "expected a JSON object"),
        ({"rm": {"stats": {"mean": 1.0}}}, "source 'rm': expected"),
        ({"rm": {"stats": {"mean": "1", "std": 2.0}}}, "source 'rm': expected"),
        ({"rm": 3}, "source 'rm': expected"),
        ({"rm": {"origin": "saved"}}, "source 'rm': expected"),
    ],
)
def test_a_misshapen_state_file_is_one_line_naming_it(tmp_path: Path, content, says: str) -> None:
    (tmp_path / "state.json").write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=says) as refused:
        read_reward_state(tmp_path / "state.json")
    assert "state.json" in str(refused.value)


def test_a_run_without_a_checkpoint_or_a_missing_path_is_refused(tmp_path: Path) -> None:
    assert run_reward_state(tmp_path) == {}
    with pytest.raises(ConfigError, match="serve.reward_state: .* has no complete checkpoint with a reward state"):
        read_reward_state(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_reward_state(tmp_path / "nothing.json")
