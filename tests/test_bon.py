"""The best-of-n instrument end to end: a pool made (and resumed) on a tiny model, pools made
elsewhere, and the study's numbers against hand computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny import tiny_causal_lm

from crs.cli import run_stage
from crs.data.schema import DataError
from crs.eval.bon import run_bon_study
from crs.eval.pool import make_pool, read_pool, sample_path

ROOT = Path(__file__).resolve().parent.parent


def write_config(folder: Path, policy: Path | None = None, pool: Path | None = None, **bon) -> Path:
    config = {
        "default": {"run": {"output_dir": str(folder / "out")}, "model": {"dtype": "fp32"}},
        "pool": {
            "run": {"name": "pool"},
            "data": {"source": str(ROOT / "examples" / "sft_example.jsonl"), "split": "sft", "max_prompt_length": 32},
            "eval_pred": {"max_new_tokens": 6},
            "bon": {"policy": str(policy), "samples": 4, "splits": [], "batch_size": 4},
        },
        "bon": {
            "run": {"name": "bon"},
            "bon": {"pool": str(pool or folder / "out" / "pool"), "judge": "python:tests.reward_fns:vowel_share", "n_boot": 200,
                    "rewards": [{"name": "preference", "path": "python:tests.reward_fns:reply_length"},
                                {"name": "absolute", "path": "python:tests.reward_fns:count_vowels"}],
                    "weights": [0.0, 0.5, 1.0], **bon},
        },
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def stage(fn, path: Path, subset: str, *extra: str) -> None:
    run_stage(fn, subset, ["--config", str(path), "--config_subset", subset, *extra])


def test_a_pool_is_made_once_and_a_resumed_pool_makes_only_what_is_missing(tmp_path, smol_tokenizer) -> None:
    policy = tmp_path / "policy"
    tiny_causal_lm(smol_tokenizer).save_pretrained(policy)
    smol_tokenizer.save_pretrained(policy)
    config = write_config(tmp_path, policy)
    stage(make_pool, config, "pool")
    run_dir = tmp_path / "out" / "pool"
    pool = read_pool(run_dir)
    assert pool.shape == (10, 4) and len({tuple(row) for row in pool.replies}) > 1
    assert all(len(set(row)) > 1 for row in pool.replies[:3])  # the samples differ: sampled, each with its own seed
    kept = {k: sample_path(run_dir, k).read_text() for k in range(4)}
    sample_path(run_dir, 2).unlink()  # a run stopped before its third sample
    state = json.loads((run_dir / "run_state.json").read_text())
    state["status"] = "failed"
    (run_dir / "run_state.json").write_text(json.dumps(state))
    stage(make_pool, config, "pool", "--resume")
    after = json.loads((run_dir / "run_state.json").read_text())
    assert after["status"] == "finished" and after["summary"]["replies_made"] == 10  # one sample of 10 prompts, no more
    assert {k: sample_path(run_dir, k).read_text() for k in range(4)} == kept  # the same replies: sample k's seed is run.seed + k


def _alpaca_pool(folder: Path) -> dict[str, list[str]]:
    """A 3-prompt pool of 4 samples in AlpacaEval's outputs format (no prompt_id, no run)."""
    replies = {
        "Say hi.": ["hi", "hello there", "aaaa", "xyz"],
        "Name a fruit.": ["apple", "kiwi", "banana", "fig"],
        "Count to two.": ["one two", "1 2", "uno dos", "one, two"],
    }
    folder.mkdir(parents=True)
    for k in range(4):
        rows = [{"instruction": q, "output": r[k], "generator": "them"} for q, r in replies.items()]
        (folder / f"sample_{k}.json").write_text(json.dumps(rows))
    return replies


def _vowel_share(text: str) -> float:
    return sum(ch in "aeiou" for ch in text) / max(sum(ch.isalpha() for ch in text), 1)


def test_a_pool_made_elsewhere_gives_the_best_of_n_numbers_computed_by_hand(tmp_path) -> None:
    replies = _alpaca_pool(tmp_path / "theirs")
    config = write_config(tmp_path, pool=tmp_path / "theirs")
    stage(run_bon_study, config, "bon")
    results = json.loads((tmp_path / "out" / "bon" / "results.json").read_text())
    assert results["ns"] == [1, 2, 4] and results["pool"]["prompts"] == 3
    # By hand, the scorer `preference` (reply length), n = 4: the longest reply of each prompt; n = 1: the pool mean.
    longest = [max(r, key=len) for r in replies.values()]
    by_hand_n4 = np.mean([_vowel_share(t) for t in longest])
    by_hand_n1 = np.mean([np.mean([_vowel_share(t) for t in r]) for r in replies.values()])
    gold = results["scorers"]["preference"]["gold"]
    assert gold[2]["mean"] == pytest.approx(by_hand_n4) and gold[0]["mean"] == pytest.approx(by_hand_n1)
    # n = 2 by hand for "Name a fruit." alone is in the module's brute-force tests; here the judge is the ceiling:
    judge = results["scorers"]["judge"]
    assert judge["gold"][2]["mean"] == pytest.approx(np.mean([max(_vowel_share(t) for t in r) for r in replies.values()]))
    assert all(judge["gold"][i]["mean"] >= s["gold"][i]["mean"] - 1e-12 for s in results["scorers"].values() for i in range(3))
    assert all(s["win_rate"][0]["mean"] == pytest.approx(0.5) for s in results["scorers"].values())  # n = 1: a random reply
    assert judge["pairwise_accuracy"]["mean"] == pytest.approx(1.0)
    assert set(results["weights"]["grid"]) == {0.0, 0.5, 1.0} and "tell apart differences of" in results["verdict"]
    report = (tmp_path / "out" / "bon" / "report.md").read_text()
    assert "## The weight grid" in report and "smallest difference detectable at 80% power" in report
    assert (tmp_path / "out" / "bon" / "bon_curves.png").stat().st_size > 0 and (tmp_path / "out" / "bon" / "weight_curve.png").is_file()


def test_one_file_of_candidates_is_a_pool_too(tmp_path) -> None:
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"instruction": q, "outputs": ["a", "bb", "ccc"]}) + "\n" for q in ("x?", "y?")))
    pool = read_pool(path)
    assert pool.shape == (2, 3) and pool.prompt_ids[0].startswith("p-") and pool.lengths().tolist() == [[1, 2, 3], [1, 2, 3]]
    path.write_text(json.dumps({"instruction": "x?", "outputs": ["a", "b"]}) + "\n" + json.dumps({"instruction": "y?", "outputs": ["a"]}) + "\n")
    with pytest.raises(DataError, match="pool.jsonl, line 2 has 1 replies, line 1 has 2"):
        read_pool(path)


def test_a_scorer_added_to_a_finished_study_is_the_only_one_scored(tmp_path) -> None:
    _alpaca_pool(tmp_path / "theirs")
    config = write_config(tmp_path, pool=tmp_path / "theirs")
    stage(run_bon_study, config, "bon")
    scores = tmp_path / "out" / "bon" / "scores"
    before = {p.name: p.stat().st_mtime_ns for p in scores.iterdir()}
    assert set(before) == {"judge.json", "preference.json", "absolute.json"}
    rewards = ("bon.rewards=[{name: preference, path: 'python:tests.reward_fns:reply_length'}, "
               "{name: absolute, path: 'python:tests.reward_fns:count_vowels'}, {name: share, path: 'python:tests.reward_fns:vowel_share'}]")
    stage(run_bon_study, config, "bon", "--resume", "--set", rewards)
    after = {p.name: p.stat().st_mtime_ns for p in scores.iterdir()}
    assert {k: after[k] for k in before} == before and set(after) - set(before) == {"share.json"}  # only the new source scored
    results = json.loads((tmp_path / "out" / "bon" / "results.json").read_text())
    share, judge = results["scorers"]["share"], results["scorers"]["judge"]
    assert share["gold"] == judge["gold"]  # the new scorer is the judge's own function: it reaches the ceiling


def test_an_external_judges_annotations_judge_the_pool_as_computed_by_hand(tmp_path) -> None:
    """AlpacaEval annotations, each pool reply against a reference reply (either side, ties and
    weighted verdicts): the judged best-of-n numbers, by hand on the 3-prompt fixture."""
    replies = _alpaca_pool(tmp_path / "theirs")
    verdict = {  # the judge's view of each pool reply against the reference "REF": 1 better, 0 worse, 0.5 tie
        "Say hi.": [0.0, 0.5, 1.0, 0.0], "Name a fruit.": [1.0, 0.0, 0.25, 1.0], "Count to two.": [0.5, 0.5, 1.0, 0.0],
    }
    rows = []
    for question, outs in replies.items():
        for k, (out, value) in enumerate(zip(outs, verdict[question])):
            if k % 2:  # pool reply second: preference 2 means it is better
                rows.append({"instruction": question, "output_1": "REF", "output_2": out, "preference": 1 + value})
            else:  # pool reply first: preference 1 means it is better
                rows.append({"instruction": question, "output_1": out, "output_2": "REF", "preference": 2 - value})
    (tmp_path / "annotations.json").write_text(json.dumps(rows))
    config = write_config(tmp_path, pool=tmp_path / "theirs", judge=str(tmp_path / "annotations.json"))
    stage(run_bon_study, config, "bon")
    results = json.loads((tmp_path / "out" / "bon" / "results.json").read_text())
    gold = results["scorers"]["preference"]["gold"]  # scorer: reply length
    longest = {q: max(range(4), key=lambda k, outs=outs: len(outs[k])) for q, outs in replies.items()}
    assert gold[2]["mean"] == pytest.approx(np.mean([verdict[q][k] for q, k in longest.items()])) == pytest.approx(0.25)  # the longest reply
    assert gold[0]["mean"] == pytest.approx(np.mean([np.mean(v) for v in verdict.values()]))  # best of 1: the pool mean
    assert results["scorers"]["judge"]["gold"][2]["mean"] == pytest.approx(np.mean([max(v) for v in verdict.values()]))
    rows.pop()  # a reply without a verdict is no pool to judge
    (tmp_path / "annotations.json").write_text(json.dumps(rows))
    with pytest.raises(SystemExit):
        stage(run_bon_study, config, "bon", "--overwrite")


# --------------------------------------------------------------------------- combination strategies (bon.strategies)


def _standardized(row: list[float]) -> list[float]:
    mean = sum(row) / len(row)
    std = (sum((x - mean) ** 2 for x in row) / len(row)) ** 0.5
    return [0.0 if std == 0 else (x - mean) / std for x in row]


def test_the_strategies_scorers_equal_a_hand_computation_on_two_prompts_of_three_replies() -> None:
    from crs.config import CRSConfig
    from crs.eval.bon import build_strategy_scorers

    cfg = CRSConfig()
    cfg.bon.weights, cfg.rl.conservative_k = [0.0, 0.5, 1.0], 0.5
    raw = {"preference": np.array([[1.0, 2.0, 3.0], [4.0, 4.0, 10.0]]), "absolute": np.array([[3.0, 0.0, 0.0], [1.0, 2.0, 3.0]])}
    scorers = build_strategy_scorers(cfg, raw, {"preference": None, "absolute": None})  # no saved statistics: the pool's
    assert set(scorers) == {"per_prompt w=0", "per_prompt w=0.5", "per_prompt w=1", "min", "mean-0.5std"}
    # sum_per_prompt: each source standardised within each prompt's 3 replies. By hand, prompt 0: preference 1, 2, 3 ->
    # -1.2247, 0, 1.2247; absolute 3, 0, 0 -> 1.4142, -0.7071, -0.7071. Prompt 1: 4, 4, 10 -> -0.7071, -0.7071, 1.4142; 1, 2, 3.
    pref = [_standardized(r) for r in raw["preference"].tolist()]
    absolute = [_standardized(r) for r in raw["absolute"].tolist()]
    assert pref[0] == pytest.approx([-1.2247449, 0.0, 1.2247449]) and absolute[0] == pytest.approx([1.4142136, -0.7071068, -0.7071068])
    for w in (0.0, 0.5, 1.0):
        by_hand = [[w * p + (1 - w) * a for p, a in zip(pr, ar)] for pr, ar in zip(pref, absolute)]
        assert scorers[f"per_prompt w={w:g}"].tolist() == [pytest.approx(row) for row in by_hand]
    # conservative: z-scores over the whole pool (preference: mean 4, std sqrt(50/6); absolute: mean 1.5, std sqrt(9.5/6)).
    z_pref = (raw["preference"] - 4.0) / (50 / 6) ** 0.5
    z_abs = (raw["absolute"] - 1.5) / (9.5 / 6) ** 0.5
    assert scorers["min"] == pytest.approx(np.minimum(z_pref, z_abs))
    # mean - k * std over two sources: (a + b) / 2 - k * |a - b| / 2, k = 0.5
    assert scorers["mean-0.5std"] == pytest.approx((z_pref + z_abs) / 2 - 0.5 * np.abs(z_pref - z_abs) / 2)


def test_the_strategies_table_compares_each_strategy_with_sums_best_weight(tmp_path) -> None:
    pool = {"Say hi.": ["hi", "hello there", "aaaa"], "Name a fruit.": ["apple", "kiwi", "banana"]}
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"instruction": q, "outputs": r}) + "\n" for q, r in pool.items()))
    config = write_config(tmp_path, pool=path)
    stage(run_bon_study, config, "bon")
    results = json.loads((tmp_path / "out" / "bon" / "results.json").read_text())
    strategies = results["strategies"]
    rows = {row["scorer"]: row for row in strategies["rows"]}
    assert [row["strategy"] for row in strategies["rows"]] == ["sum", "sum_per_prompt", "conservative", "conservative"]
    reference = f"w={results['weights']['best']['weight']:g}"
    assert strategies["reference"] == reference and rows[reference]["vs_sum"] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert rows[reference]["win_rate"]["mean"] == pytest.approx(results["scorers"][reference]["win_rate"][-1]["mean"])
    assert set(results["scorers"]) == {"w=0", "w=0.5", "w=1", "preference", "absolute", "judge"}  # the sum scorers, unchanged
    # By hand, the `min` scorer: z-score length and vowel count over the pool, keep the lower, pick each prompt's highest
    # (no ties here); its best-of-3 win rate is how often the judge (vowel share) prefers the pick to a random pool reply.
    lengths = np.array([[len(t) for t in r] for r in pool.values()], dtype=float)
    vowels = np.array([[sum(c in "aeiou" for c in t) for t in r] for r in pool.values()], dtype=float)
    low = np.minimum((lengths - lengths.mean()) / lengths.std(), (vowels - vowels.mean()) / vowels.std())
    share = np.array([[_vowel_share(t) for t in r] for r in pool.values()])
    picks = low.argmax(axis=1)
    assert all(sorted(row)[-1] > sorted(row)[-2] for row in low)
    wins = [np.mean([1.0 if share[p, k] > s else 0.5 if share[p, k] == s else 0.0 for s in share[p]]) for p, k in enumerate(picks)]
    assert rows["min"]["win_rate"]["mean"] == pytest.approx(np.mean(wins))
    assert rows["min"]["vs_sum"]["mean"] == pytest.approx(np.mean(wins) - rows[reference]["win_rate"]["mean"])
    per_prompt = next(row for row in strategies["rows"] if row["strategy"] == "sum_per_prompt")
    assert per_prompt["weight"] in (0.0, 0.5, 1.0) and per_prompt["scorer"] == f"per_prompt w={per_prompt['weight']:g}"
    assert {"min", "mean-1std", per_prompt["scorer"]} <= set(strategies["scorers"])
    report = (tmp_path / "out" / "bon" / "report.md").read_text()
    assert "## Combination strategies" in report and "| conservative | `min` |" in report
