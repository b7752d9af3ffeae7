"""`crs serve-reward` over real HTTP on 127.0.0.1: the rewards `crs score` gives, refusals that leave it serving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from reward_servers import get, post, reward_server, write_config
from stage_runs import frozen_rl_run, trained_tiny_rm

from crs.cli import run_stage
from crs.config import ConfigError
from crs.data.schema import user_prompt
from crs.eval.score import score_predictions

pytestmark = pytest.mark.usefixtures("one_thread")

EOS = "<|im_end|>"
PREDICTIONS = [  # (instruction, output, ended with EOS)
    ("Name a fruit.", "Kiwi.", True),
    ("Name a fruit.", "apple river stone cloud excellent", True),
    ("Describe a garden.", "A garden of light and music, with a table by the window", False),
    ("Say hello.", "hello", True),
    ("Describe a river.", "stone", False),
]


def _rl_block(rm_run: Path) -> dict:
    return {
        "rewards": [
            {"name": "rm", "path": str(rm_run), "weight": 0.75},
            {"name": "len", "path": "length", "weight": -0.25},
        ],
        "reward_clip": 1.5,
        "missing_eos_penalty": -0.5,
    }


def _fake_rl_run(folder: Path, rm_run: Path, rl: dict) -> Path:
    """An RL run as `crs score` reads one: its config and a sealed checkpoint with the scale it froze."""
    saved = json.loads((rm_run / "reward_stats.json").read_text())
    frozen = {
        "rm": {"stats": {"mean": saved["mean"], "std": saved["std"]}, "origin": "saved"},
        "len": {"stats": {"mean": 30.0, "std": 12.0}, "origin": "first batch"},
    }
    return frozen_rl_run(folder, rl, frozen)


def _predictions(folder: Path, rl_run: Path) -> Path:
    """AlpacaEval-format predictions of two models, the RL run's listed with its path (its own reward scores it)."""
    preds = folder / "preds"
    (preds / "predictions").mkdir(parents=True)
    for model, outputs in (("rl", PREDICTIONS), ("sft", PREDICTIONS[::-1])):
        rows = [
            {"instruction": q, "output": o, "ended_with_eos": e, "generator": model, "prompt_id": str(i), "run": 0}
            for i, (q, o, e) in enumerate(outputs)
        ]
        (preds / "predictions" / f"{model}.json").write_text(json.dumps(rows))
    models = [{"name": "sft", "path": "outputs/sft"}, {"name": "rl", "path": str(rl_run)}]
    (preds / "config.resolved.yaml").write_text(yaml.safe_dump({"eval_pred": {"eval_pred": {"models": models}}}))
    return preds


@pytest.fixture(scope="module")
def tiny_setup(tiny_rm_dir, tiny_model_dir, tmp_path_factory):
    """A trained tiny RM beside the length source, as an RL subset; an RL run that froze their scale; its
    predictions scored by `crs score`."""
    folder = tmp_path_factory.mktemp("serve")
    rm_run = trained_tiny_rm(tiny_rm_dir, folder)
    rl = _rl_block(rm_run)
    rl_run = _fake_rl_run(folder, rm_run, rl)
    model = {"name": str(tiny_model_dir), "dtype": "fp32"}
    config = write_config(
        folder / "cfg.yaml",
        rl_tiny={"model": model, "rl": rl, "serve": {"batch_size": 2, "reward_state": str(rl_run)}},
        score_tiny={
            "run": {"name": "score", "output_dir": str(folder / "out")},
            "model": model,
            "eval_rewarding": {
                "predictions_dir": str(_predictions(folder, rl_run)),
                "rewards": [{"name": "rm", "path": str(rm_run)}, {"name": "len", "path": "length"}],
                "combined": [],
                "judge": "none",
                "reference_model": "sft",
            },
        },
    )
    run_stage(score_predictions, "score", ["--config", str(config), "--config_subset", "score_tiny"])
    scored = json.loads((folder / "out" / "score" / "scores.json").read_text())
    by_output = {row["output"]: row["reward of rl"] for row in scored if row["model"] == "rl"}
    return config, by_output


def test_served_rewards_are_crs_scores_reward_of_the_run(tiny_setup, smol_tokenizer) -> None:
    config, expected = tiny_setup
    chat = smol_tokenizer.apply_chat_template(user_prompt("Name a fruit."), add_generation_prompt=True, tokenize=False)
    prompts = [q for q, _, _ in PREDICTIONS] + [chat]  # the last: as OpenRLHF sends a chat-templated prompt
    replies = [(o, e) for _, o, e in PREDICTIONS] + [PREDICTIONS[0][1:]]
    body = {
        "query": [p + o + (EOS if e else "") for p, (o, e) in zip(prompts, replies)],
        "prompts": prompts,
        "labels": [None] * len(prompts),
    }
    with reward_server(config, "rl_tiny") as (url, _):
        status, answer = post(url, body)
    assert status == 200 and answer["scores"] == answer["rewards"]
    wanted = [expected[o] for o, _ in replies]
    assert answer["rewards"] == pytest.approx(wanted, abs=1e-5)
    assert len({round(r, 4) for r in wanted}) >= 4  # a reward that varies, not a constant
    assert len({round(z, 4) for z in answer["extra_logs"]["crs/rm"]}) >= 4  # and the reward model's part of it
    assert answer["extra_logs"]["crs/ended_with_eos"] == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert min(wanted) >= -1.5 - 0.5 and max(wanted) <= 1.5  # clip, then the EOS penalty


@pytest.fixture(scope="module")
def light_config(tmp_path_factory) -> Path:
    """A subset of two python: sources that need no scale: one NaN for "kiwi", one raising for "boom"."""
    rewards = [
        {"name": "len", "path": "python:tests.reward_fns:nan_for_kiwi", "weight": 1.0, "normalize": "none"},
        {"name": "words", "path": "python:tests.reward_fns:fails_on_boom", "weight": 0.5, "normalize": "none"},
    ]
    rl = {"rewards": rewards, "missing_eos_penalty": -1.0}
    serve = {"eos_texts": ["</s>"], "max_items": 4, "max_request_mb": 0.002}
    return write_config(tmp_path_factory.mktemp("light") / "cfg.yaml", light={"rl": rl, "serve": serve})


GOOD = {"query": ["Q? one two</s>", "Q? three"], "prompts": ["Q?", "Q?"]}
GOOD_REWARDS = [9.0, 5.5]  # " one two" ended: 8 + 0.5 x 2 words; " three" did not: 6 + 0.5 x 1 - 1
BAD = [  # (the body as JSON, or raw bytes; the status; what the answer says)
    (b"{not json", 400, "the body is not JSON"),
    (b"\xff\xfe{}", 400, "the body is not JSON"),
    ([1, 2], 400, "must be a JSON object"),
    ({"query": ["Q? a"]}, 400, "prompts is missing"),
    ({"query": ["Q? a", 1], "prompts": ["Q?", "Q?"]}, 400, r"query\[1\] is a number"),
    ({"query": ["Q? a"], "prompts": ["Q?", "Q?"]}, 400, "prompts has 2 items and query 1"),
    ({"query": ["R? a"], "prompts": ["Q?"]}, 400, r"query\[0\] does not begin with prompts\[0\]"),
    ({"query": ["Q? a"] * 5, "prompts": ["Q?"] * 5}, 413, r"at most 4 \(serve.max_items\)"),
    ({"query": ["Q? " + "a" * 3000], "prompts": ["Q?"]}, 413, r"over serve.max_request_mb \(0.002 MiB\)"),
    ({"query": ["Q?kiwi"], "prompts": ["Q?"]}, 500, r"non-finite reward for item\(s\) \[0\] \(from len\)"),
    ({"query": ["Q?boom"], "prompts": ["Q?"]}, 500, r"source 'words' .* raised ValueError .*cannot score 'boom'"),
]


def test_each_bad_request_is_answered_with_its_reason_and_the_next_good_one_is_scored(light_config: Path) -> None:
    import re

    with reward_server(light_config, "light") as (url, _):
        for body, status, says in BAD:
            code, answer = post(url, raw=body) if isinstance(body, bytes) else post(url, body)
            assert (code, answer["status"]) == (status, status) and re.search(says, answer["error"]), (body, answer)
            good_code, good = post(url, GOOD)
            assert good_code == 200 and good["rewards"] == GOOD_REWARDS, body


def test_health_and_a_good_request(light_config: Path) -> None:
    with reward_server(light_config, "light") as (url, _):
        status, health = get(url)
        code, answer = post(url, GOOD)
        empty = post(url, {"query": [], "prompts": []})
    assert status == 200 and health["status"] == "ok" and health["subset"] == "light"
    assert [s["name"] for s in health["sources"]] == ["len", "words"] and health["eos_texts"] == ["</s>"]
    assert (health["max_items"], health["combine"], health["missing_eos_penalty"]) == (4, "sum", -1.0)
    assert code == 200 and answer["rewards"] == GOOD_REWARDS and answer["extra_logs"]["crs/len"] == [8.0, 6.0]
    assert empty == (200, {"rewards": [], "scores": [], "extra_logs": {}})


def test_a_source_without_a_scale_is_refused_before_serving_or_fitted_on_the_first_request(tmp_path: Path) -> None:
    rl = {"rewards": [{"name": "len", "path": "length"}, {"name": "v", "path": "python:tests.reward_fns:count_vowels"}]}
    config = write_config(tmp_path / "cfg.yaml", z={"rl": rl, "serve": {"eos_texts": ["</s>"]}})
    with pytest.raises(ConfigError, match="len, v z-score.* without saved statistics.*serve.reward_state"):
        with reward_server(config, "z"):
            pass
    first = {"query": ["Q?a", "Q?abc", "Q?aeiou!"], "prompts": ["Q?"] * 3}
    with reward_server(config, "z", "serve.fit_stats_on_first_request=true") as (url, served):
        fitted = post(url, first)[1]["rewards"]
        again = post(url, first)[1]["rewards"]
        alone = post(url, {"query": ["Q?abc"], "prompts": ["Q?"]})[1]["rewards"]
    assert fitted == again and alone == [fitted[1]]  # frozen after the first request: one reply scores alike alone
    assert served.reward.sources[0].stats["mean"] == pytest.approx(10 / 3)  # the lengths 1, 3, 6 of that request
