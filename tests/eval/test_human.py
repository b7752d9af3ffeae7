"""Human rankings: ballot files with ties and groups, Borda points under both tie rules.

tests/fixtures/human_ballots.csv and .jsonl hold the same 11 ballots (3 with ties), as an
annotation tool exports them: a rank per response slot and the slot -> model map (p1: A
rl_crs, B base, C sft; p2: A base, B sft, C rl_crs). In models (best first; = a tie):

    group g1, p1: sft>rl>base, sft>rl>base, rl>sft>base, rl>base>sft
    group g1, p2: rl>(sft=base), rl>sft>base, sft>rl>base, (rl=sft)>base
    group g2, p1: base>(sft=rl)                       (one ballot: used as it is)
    group g2, p2: sft>base>rl, base>sft>rl

Tallies and orderings, worked by hand (candidate order: sft, rl_crs, base):

    g1 p1: sft-rl 2:2 (margin 0), sft-base 3:1, rl-base 4:0.
           support: sft-rl stays unlocked; total support rl 2+4=6 > sft 2+3=5 -> rl, sft, base
           candidate_order: sft-rl locked for sft (listed first) -> sft, rl, base
    g1 p2: rl-sft 2:1, rl-base 4:0, sft-base 3:0 -> rl, sft, base under both rules
    g2 p1: the single ballot, tie kept: base 1, sft and rl (2/3 + 1/3) / 2 = 1/2
    g2 p2: sft-base 1:1 (margin 0), sft-rl 2:0, base-rl 2:0.
           support: totals sft 1+2 = base 1+2 -> name order: base, sft, rl
           candidate_order: sft-base locked for sft -> sft, base, rl

Borda points (1, 2/3, 1/3), mean over each group's prompts:

    support:          g1 rl 1, sft 2/3, base 1/3        g2 base 1, sft 7/12, rl 5/12
    candidate_order:  g1 sft 5/6, rl 5/6, base 1/3     g2 base 5/6, sft 3/4, rl 5/12

All annotators pooled: p1 sft-rl 2:2, sft-base 3:2, rl-base 4:1 (support: rl 6 > sft 5 ->
rl, sft, base; candidate_order: sft, rl, base); p2 sft-rl 3:2, rl-base 4:2, sft-base 4:1 ->
sft, rl, base under both.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from paths import FIXTURES

from crs.cli import run_stage
from crs.data.schema import DataError
from crs.eval.human import human_rankings, load_ballots
from crs.runs import run_state

ORDER = ["sft", "rl_crs", "base"]

EXPECTED = {
    "support": {
        "groups": {
            "g1": {"rl_crs": 1.0, "sft": 2 / 3, "base": 1 / 3},
            "g2": {"base": 1.0, "sft": 7 / 12, "rl_crs": 5 / 12},
        },
        "overall": {"rl_crs": 5 / 6, "sft": 5 / 6, "base": 1 / 3},
        "across": {"rl_crs": (17 / 24, 7 / 24), "sft": (15 / 24, 1 / 24), "base": (2 / 3, 1 / 3)},
    },
    "candidate_order": {
        "groups": {
            "g1": {"sft": 5 / 6, "rl_crs": 5 / 6, "base": 1 / 3},
            "g2": {"base": 5 / 6, "sft": 3 / 4, "rl_crs": 5 / 12},
        },
        "overall": {"sft": 1.0, "rl_crs": 2 / 3, "base": 1 / 3},
        "across": {"sft": (19 / 24, 1 / 24), "rl_crs": (15 / 24, 5 / 24), "base": (7 / 12, 1 / 4)},
    },
}


@pytest.mark.parametrize("name", ["human_ballots.csv", "human_ballots.jsonl"])
@pytest.mark.parametrize("tie_break", ["support", "candidate_order"])
def test_ballots_with_ties_and_groups_give_hand_computed_borda_points(name: str, tie_break: str) -> None:
    ballots = load_ballots(FIXTURES / name)
    assert ballots.n_ballots == 11 and ballots.n_with_ties == 3 and sorted(ballots.by_group) == ["g1", "g2"]
    result = human_rankings(ballots, tie_break, ORDER)
    expected = EXPECTED[tie_break]
    for group, points in expected["groups"].items():
        assert {m: result["groups"][group][m]["mean"] for m in points} == pytest.approx(points)
    assert {m: result["overall"][m]["mean"] for m in ORDER} == pytest.approx(expected["overall"])
    for model, (mean, std) in expected["across"].items():
        assert (result["across_groups"][model]["mean"], result["across_groups"][model]["std"]) == pytest.approx(
            (mean, std)
        )
    assert result["n_prompts"] == 2 and result["group_prompts"] == {"g1": 2, "g2": 2} and result["n_annotators"] == 6


def test_the_json_mapping_takes_ties_as_inner_lists(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    path.write_text(
        json.dumps({"p1": [["base", ["sft", "rl_crs"]]], "p2": [["sft", "base", "rl_crs"], ["base", "sft", "rl_crs"]]})
    )
    result = human_rankings(load_ballots(path), "candidate_order", ORDER)  # group g2 of the fixture, alone
    assert {m: v["mean"] for m, v in result["overall"].items()} == pytest.approx(
        {"base": 5 / 6, "sft": 3 / 4, "rl_crs": 5 / 12}
    )
    assert result["n_annotators"] is None and list(result["groups"]) == ["all"]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("b.json", {"p1": [["a", "b", "c"]], "p7": [["a", "c"]]}, "prompt 'p7', ballot 1: the ballot does not rank b"),
        (
            "b.jsonl",
            [{"prompt_id": "p1", "annotator": "x", "ranks": {"A": 1, "B": 2}, "slots": {"A": "a", "B": "b", "C": "c"}}],
            r"line 1 \(prompt 'p1', annotator 'x'\): slot\(s\) \['C'\] \(c\) have no rank",
        ),
        (
            "b.jsonl",
            [{"prompt_id": "p1", "annotator": "x", "ranks": {"A": 1, "B": 0}, "slots": {"A": "a", "B": "b"}}],
            "rank 0 must be a whole number >= 1",
        ),
        (
            "b.jsonl",
            [{"prompt_id": "p1", "annotator": "x", "ranks": {"A": 1, "B": 2}, "slots": {"A": "a", "B": "a"}}],
            r"model\(s\) \['a'\] fill more than one slot",
        ),
        (
            "b.csv",
            "prompt_id,annotator,model,rank\np1,x,a,1\np1,x,b,2\np1,y,a,1\np1,y,b,2\np1,x,b,2\n",
            "slot 'b' ranked twice",
        ),
        ("b.csv", "prompt_id,annotator,model\np1,x,a\n", r"missing column\(s\) \['rank'\]"),
    ],
)
def test_a_malformed_ballot_is_one_line_naming_the_prompt(tmp_path: Path, name: str, text, message: str) -> None:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps(row) for row in text) + "\n")
    else:
        path.write_text(text if isinstance(text, str) else json.dumps(text))
    with pytest.raises(DataError, match=message) as caught:
        load_ballots(path)
    assert "\n" not in str(caught.value)


def test_a_second_ballot_by_one_annotator_on_a_prompt_is_refused(tmp_path: Path) -> None:
    row = {"prompt_id": "p1", "annotator": "x", "ranks": {"A": 1, "B": 2}, "slots": {"A": "a", "B": "b"}}
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"line 2 .*a second ballot by this annotator on this prompt \(first: .*line 1"):
        load_ballots(path)


def test_a_malformed_ballot_stops_the_stage_before_scoring_and_marks_it_failed(tmp_path: Path, capsys) -> None:
    """The bug: a ballot missing a model raised a ValueError traceback (exit 1) after every reply was
    scored, named no prompt and left run_state.json "running"."""
    from stage_runs import write_prediction_run

    from crs.eval.score import score_predictions

    predictions = write_prediction_run(tmp_path / "pred", {"a": ["p1", "p2"], "b": ["p1", "p2"]})
    ballots = tmp_path / "human.json"
    ballots.write_text(json.dumps({"p1": [["a", "b"], ["b", "a"]], "p2": [["a"]]}))
    with pytest.raises(SystemExit) as caught:
        run_stage(
            score_predictions,
            "test",
            [
                "--config_subset",
                "eval_rewarding",
                "--set",
                f"run.output_dir={tmp_path / 'out'}",
                "--set",
                f"eval_rewarding.predictions_dir={predictions}",
                "--set",
                "eval_rewarding.rewards=[{name: length, path: 'python:tests.reward_fns:reply_length'}]",
                "--set",
                "eval_rewarding.combined=[]",
                "--set",
                "eval_rewarding.judge=none",
                "--set",
                "eval_rewarding.reference_model=a",
                "--set",
                f"eval_rewarding.human_rankings={ballots}",
            ],
        )
    assert caught.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "prompt 'p2'" in line and "does not rank b" in line
    run_dir = tmp_path / "out" / "eval_rewarding"
    assert run_state(run_dir)["status"] == "failed"
    assert not (run_dir / "scores.json").exists()  # stopped before any scoring
