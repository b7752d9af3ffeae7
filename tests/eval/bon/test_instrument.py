"""The best-of-n instrument end to end: a pool made (and resumed) on a tiny model, pools made
elsewhere, and the study's numbers against hand computation."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from length_cases import vowel_calibration
from paths import ROOT
from tiny import tiny_causal_lm

from crs.cli import run_stage
from crs.config import ConfigError
from crs.data.schema import DataError
from crs.eval.bon.instrument import run_bon_study
from crs.eval.bon.pool import make_pool, read_pool, sample_path


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
            "bon": {
                "pool": str(pool or folder / "out" / "pool"),
                "judge": "python:tests.reward_fns:vowel_share",
                "n_boot": 200,
                "rewards": [
                    {"name": "preference", "path": "python:tests.reward_fns:reply_length"},
                    {"name": "absolute", "path": "python:tests.reward_fns:count_vowels"},
                ],
                "weights": [0.0, 0.5, 1.0],
                **bon,
            },
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
    assert {
        k: sample_path(run_dir, k).read_text() for k in range(4)
    } == kept  # the same replies: sample k's seed is run.seed + k


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
    assert judge["gold"][2]["mean"] == pytest.approx(
        np.mean([max(_vowel_share(t) for t in r) for r in replies.values()])
    )
    assert all(
        judge["gold"][i]["mean"] >= s["gold"][i]["mean"] - 1e-12 for s in results["scorers"].values() for i in range(3)
    )
    assert all(
        s["win_rate"][0]["mean"] == pytest.approx(0.5) for s in results["scorers"].values()
    )  # n = 1: a random reply
    assert judge["pairwise_accuracy"]["mean"] == pytest.approx(1.0)
    assert set(results["weights"]["grid"]) == {0.0, 0.5, 1.0} and "tell apart differences of" in results["verdict"]
    # How much agreement is length: the same pooled agreement and, drawn with the same seed, the same interval;
    # `preference` is the reply's length, so it never differs from the length-only row.
    length = results["length_aware"]
    assert "judge" not in length["scorers"] and length["n_clusters"] == 3 and length["n_replies"] == 12
    preference = length["scorers"]["preference"]
    accuracy = {key: preference["accuracy"][key] for key in ("mean", "ci_low", "ci_high")}
    assert accuracy == pytest.approx(results["scorers"]["preference"]["pairwise_accuracy"])
    assert preference["accuracy"]["vs_length"] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert preference["shorter_preferred_accuracy"]["mean"] == 0.0
    report = (tmp_path / "out" / "bon" / "report.md").read_text()
    assert "## The weight grid" in report and "smallest difference detectable at 80% power" in report
    assert "## Agreement and length" in report and "| length (characters) |" in report
    assert (tmp_path / "out" / "bon" / "bon_curves.png").stat().st_size > 0 and (
        tmp_path / "out" / "bon" / "weight_curve.png"
    ).is_file()


def test_the_pools_preferences_are_every_within_prompt_pair_the_judge_decided() -> None:
    from crs.eval.bon.instrument import pool_preferences

    judge = np.array([[0.0, 1.0, 1.0 + 1e-12], [2.0, 1.0, 0.0]])  # prompt 0: replies 1 and 2 tie (within TIE_EPS)
    lengths = np.array([[5.0, 6.0, 7.0], [1.0, 2.0, 3.0]])
    prefs = pool_preferences(judge, lengths)
    assert prefs.n_judge_ties == 1 and prefs.n_clusters == 2
    assert list(zip(prefs.first.tolist(), prefs.second.tolist())) == [(0, 1), (0, 2), (3, 4), (3, 5), (4, 5)]
    assert prefs.first_preferred.tolist() == [False, False, True, True, True]
    assert prefs.lengths.tolist() == [5, 6, 7, 1, 2, 3] and prefs.reply_cluster.tolist() == [0, 0, 0, 1, 1, 1]


def test_one_file_of_candidates_is_a_pool_too(tmp_path) -> None:
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"instruction": q, "outputs": ["a", "bb", "ccc"]}) + "\n" for q in ("x?", "y?")))
    pool = read_pool(path)
    assert (
        pool.shape == (2, 3)
        and pool.prompt_ids[0].startswith("p-")
        and pool.lengths().tolist() == [[1, 2, 3], [1, 2, 3]]
    )
    path.write_text(
        json.dumps({"instruction": "x?", "outputs": ["a", "b"]})
        + "\n"
        + json.dumps({"instruction": "y?", "outputs": ["a"]})
        + "\n"
    )
    with pytest.raises(DataError, match="pool.jsonl, line 2 has 1 replies, line 1 has 2"):
        read_pool(path)


def test_a_scorer_added_to_a_finished_study_is_the_only_one_scored(tmp_path) -> None:
    _alpaca_pool(tmp_path / "theirs")
    config = write_config(tmp_path, pool=tmp_path / "theirs")
    stage(run_bon_study, config, "bon")
    scores = tmp_path / "out" / "bon" / "scores"
    before = {p.name: p.stat().st_mtime_ns for p in scores.iterdir()}
    assert set(before) == {"judge.json", "preference.json", "absolute.json"}
    rewards = (
        "bon.rewards=[{name: preference, path: 'python:tests.reward_fns:reply_length'}, "
        "{name: absolute, path: 'python:tests.reward_fns:count_vowels'}, "
        "{name: share, path: 'python:tests.reward_fns:vowel_share'}]"
    )
    stage(run_bon_study, config, "bon", "--resume", "--set", rewards)
    after = {p.name: p.stat().st_mtime_ns for p in scores.iterdir()}
    assert {k: after[k] for k in before} == before and set(after) - set(before) == {
        "share.json"
    }  # only the new source scored
    results = json.loads((tmp_path / "out" / "bon" / "results.json").read_text())
    share, judge = results["scorers"]["share"], results["scorers"]["judge"]
    assert share["gold"] == judge["gold"]  # the new scorer is the judge's own function: it reaches the ceiling


def test_the_length_scorer_and_a_calibrated_source_are_curves_beside_the_others(tmp_path) -> None:
    """`path: length` is the length scorer (its pick the longest reply), a calibrated source scores with its length
    trend removed (a refitted calibration rescores it), and w > 1 with the length source second is RM minus length."""
    from crs.rm.length_calibration import fit_length_calibration, write_length_calibration

    replies = _alpaca_pool(tmp_path / "theirs")
    every = [r for row in replies.values() for r in row]
    lengths, vowels, calibration = vowel_calibration(every, tmp_path / "cal.json", "the pool")
    rewards = [
        {"name": "preference", "path": "python:tests.reward_fns:reply_length"},
        {"name": "absolute", "path": "python:tests.reward_fns:count_vowels"},
        {"name": "length", "path": "length"},
        {
            "name": "calibrated",
            "path": "python:tests.reward_fns:count_vowels",
            "length_calibration": str(tmp_path / "cal.json"),
        },
    ]
    config = write_config(
        tmp_path,
        pool=tmp_path / "theirs",
        rewards=rewards,
        preference_source="absolute",
        absolute_source="length",
        weights=[1.0, 1.5],
        strategies=["sum"],
    )
    stage(run_bon_study, config, "bon")
    out = tmp_path / "out" / "bon"
    scorers = json.loads((out / "results.json").read_text())["scorers"]
    length, by_function = scorers["length"], scorers["preference"]  # the built-in source and a python reply length
    assert (length["gold"], length["length"]) == (by_function["gold"], by_function["length"])
    assert length["length"][2]["mean"] == pytest.approx(np.mean([max(len(r) for r in row) for row in replies.values()]))
    cached = json.loads((out / "scores" / "calibrated.json").read_text())
    assert cached["variant"] == {"length_calibration": str(tmp_path / "cal.json"), "calibration": calibration.digest}
    calibrated = vowels - calibration.trend_at(lengths)
    assert np.ravel(cached["scores"]) == pytest.approx(calibrated, abs=1e-5)
    assert cached["stats"] == {"mean": calibration.stats["mean"], "std": calibration.stats["std"]}
    # w = 1.5: 1.5 z(vowels) - 0.5 z(length), each z-scored over the pool; best of 4: each prompt's top reply.
    z = {name: (v - v.mean()) / v.std() for name, v in (("v", vowels), ("l", lengths))}
    minus = (1.5 * z["v"] - 0.5 * z["l"]).reshape(3, 4)
    # A tie at the top ("one two" and "uno dos": the same vowels and length) is broken at random: their mean.
    top = [
        np.mean([_vowel_share(r) for r, v in zip(row, m) if np.isclose(v, m.max())])
        for row, m in zip(replies.values(), minus)
    ]
    assert scorers["w=1.5"]["gold"][2]["mean"] == pytest.approx(np.mean(top))

    refitted = fit_length_calibration(lengths[:6], vowels[:6], "half the pool", "vowels", iterations=0)
    write_length_calibration(tmp_path / "cal.json", refitted)
    stage(run_bon_study, config, "bon", "--resume")
    rescored = json.loads((out / "scores" / "calibrated.json").read_text())
    assert rescored["variant"]["calibration"] == refitted.digest != calibration.digest
    assert np.ravel(rescored["scores"]) == pytest.approx(vowels - refitted.trend_at(lengths), abs=1e-5)


def test_an_external_judges_annotations_judge_the_pool_as_computed_by_hand(tmp_path) -> None:
    """AlpacaEval annotations, each pool reply against a reference reply (either side, ties and
    weighted verdicts): the judged best-of-n numbers, by hand on the 3-prompt fixture."""
    replies = _alpaca_pool(tmp_path / "theirs")
    verdict = {  # the judge's view of each pool reply against the reference "REF": 1 better, 0 worse, 0.5 tie
        "Say hi.": [0.0, 0.5, 1.0, 0.0],
        "Name a fruit.": [1.0, 0.0, 0.25, 1.0],
        "Count to two.": [0.5, 0.5, 1.0, 0.0],
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
    assert (
        gold[2]["mean"] == pytest.approx(np.mean([verdict[q][k] for q, k in longest.items()])) == pytest.approx(0.25)
    )  # the longest reply
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
    from crs.eval.bon.instrument import build_strategy_scorers

    cfg = CRSConfig()
    cfg.bon.weights, cfg.rl.conservative_k = [0.0, 0.5, 1.0], 0.5
    raw = {
        "preference": np.array([[1.0, 2.0, 3.0], [4.0, 4.0, 10.0]]),
        "absolute": np.array([[3.0, 0.0, 0.0], [1.0, 2.0, 3.0]]),
    }
    scorers = build_strategy_scorers(
        cfg, raw, {"preference": None, "absolute": None}
    )  # no saved statistics: the pool's
    assert set(scorers) == {"per_prompt w=0", "per_prompt w=0.5", "per_prompt w=1", "min", "mean-0.5std"}
    # sum_per_prompt: each source standardised within each prompt's 3 replies. By hand, prompt 0: preference 1, 2, 3 ->
    # -1.2247, 0, 1.2247; absolute 3, 0, 0 -> 1.4142, -0.7071, -0.7071. Prompt 1: 4, 4, 10 -> -0.7071, -0.7071, 1.4142;
    # 1, 2, 3.
    pref = [_standardized(r) for r in raw["preference"].tolist()]
    absolute = [_standardized(r) for r in raw["absolute"].tolist()]
    assert pref[0] == pytest.approx([-1.2247449, 0.0, 1.2247449]) and absolute[0] == pytest.approx(
        [1.4142136, -0.7071068, -0.7071068]
    )
    for w in (0.0, 0.5, 1.0):
        by_hand = [[w * p + (1 - w) * a for p, a in zip(pr, ar)] for pr, ar in zip(pref, absolute)]
        assert scorers[f"per_prompt w={w:g}"].tolist() == [pytest.approx(row) for row in by_hand]
    # conservative: z-scores over the whole pool (preference: mean 4, std sqrt(50/6); absolute: mean 1.5, std
    # sqrt(9.5/6)).
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
    assert strategies["reference"] == reference and rows[reference]["vs_sum"] == {
        "mean": 0.0,
        "ci_low": 0.0,
        "ci_high": 0.0,
    }
    assert rows[reference]["win_rate"]["mean"] == pytest.approx(results["scorers"][reference]["win_rate"][-1]["mean"])
    assert set(results["scorers"]) == {
        "w=0",
        "w=0.5",
        "w=1",
        "preference",
        "absolute",
        "judge",
    }  # the sum scorers, unchanged
    # By hand, the `min` scorer: z-score length and vowel count over the pool, keep the lower, pick each prompt's
    # highest (no ties here); its best-of-3 win rate is how often the judge (vowel share) prefers the pick to a
    # random pool reply.
    lengths = np.array([[len(t) for t in r] for r in pool.values()], dtype=float)
    vowels = np.array([[sum(c in "aeiou" for c in t) for t in r] for r in pool.values()], dtype=float)
    low = np.minimum((lengths - lengths.mean()) / lengths.std(), (vowels - vowels.mean()) / vowels.std())
    share = np.array([[_vowel_share(t) for t in r] for r in pool.values()])
    picks = low.argmax(axis=1)
    assert all(sorted(row)[-1] > sorted(row)[-2] for row in low)
    wins = [
        np.mean([1.0 if share[p, k] > s else 0.5 if share[p, k] == s else 0.0 for s in share[p]])
        for p, k in enumerate(picks)
    ]
    assert rows["min"]["win_rate"]["mean"] == pytest.approx(np.mean(wins))
    assert rows["min"]["vs_sum"]["mean"] == pytest.approx(np.mean(wins) - rows[reference]["win_rate"]["mean"])
    per_prompt = next(row for row in strategies["rows"] if row["strategy"] == "sum_per_prompt")
    assert per_prompt["weight"] in (0.0, 0.5, 1.0) and per_prompt["scorer"] == f"per_prompt w={per_prompt['weight']:g}"
    assert {"min", "mean-1std", per_prompt["scorer"]} <= set(strategies["scorers"])
    report = (tmp_path / "out" / "bon" / "report.md").read_text()
    assert "## Combination strategies" in report and "| conservative | `min` |" in report


# ---------------------------------------------------------------------- one convention: z-score, weight grid, agreement

RAW = {
    "preference": np.array([[1.0, 2.0, 3.0], [4.0, 4.0, 10.0]]),
    "absolute": np.array([[3.0, 0.0, 0.0], [1.0, 2.0, 3.0]]),
}


def test_the_weight_grid_is_combine_normalizeds_sum_of_the_z_scores() -> None:
    import torch

    from crs.config import CRSConfig
    from crs.eval.bon.instrument import build_scorers
    from crs.rl.combine import combine_normalized

    cfg = CRSConfig()
    cfg.bon.weights = [0.0, 0.25, 1.0]
    # preference: its saved statistics; absolute: none saved, so the pool's (mean 1.5, population std sqrt(9.5 / 6)).
    scorers = build_scorers(cfg, RAW, {"preference": {"mean": 2.0, "std": 4.0}, "absolute": None}, np.zeros((2, 3)))
    z_pref, z_abs = (RAW["preference"] - 2.0) / 4.0, (RAW["absolute"] - 1.5) / (9.5 / 6) ** 0.5
    z = {"preference": torch.from_numpy(z_pref.reshape(-1)), "absolute": torch.from_numpy(z_abs.reshape(-1))}
    for w in cfg.bon.weights:
        assert scorers[f"w={w:g}"] == pytest.approx(w * z_pref + (1 - w) * z_abs)
        via, _ = combine_normalized(z, {"preference": w, "absolute": 1 - w}, "sum")
        np.testing.assert_array_equal(
            scorers[f"w={w:g}"], via.numpy().reshape(2, 3)
        )  # the same arithmetic, bit for bit
    assert scorers["preference"] is RAW["preference"] and set(scorers) == {
        "w=0",
        "w=0.25",
        "w=1",
        "preference",
        "absolute",
        "judge",
    }
    cfg.bon.absolute_source = "preference"
    with pytest.raises(ConfigError, match="both name 'preference'"):
        build_scorers(cfg, RAW, {"preference": None, "absolute": None}, np.zeros((2, 3)))


def test_a_near_constant_source_does_not_explode_in_the_studys_scorers() -> None:
    from crs.config import CRSConfig
    from crs.eval.bon.instrument import build_scorers, build_strategy_scorers

    cfg = CRSConfig()
    cfg.bon.weights, cfg.bon.strategies = [0.5], ["sum", "conservative"]
    ulp = 2.0**-14
    # preference: float32 noise around 1000 (the pool's std 4e-5 is no spread there); absolute: saved
    # statistics of a source constant on its validation set (std 1e-8) that varies on the pool.
    raw = {
        "preference": 1000.0 + ulp * np.array([[0.0, 1.0, -1.0], [1.0, 0.0, 0.0]]),
        "absolute": np.array([[0.5, 0.6, 0.4], [0.5, 0.5, 0.7]]),
    }
    stats = {"preference": None, "absolute": {"mean": 0.5, "std": 1e-8}}
    scorers = {**build_scorers(cfg, raw, stats, np.zeros((2, 3))), **build_strategy_scorers(cfg, raw, stats)}
    # Centred, not scaled: w=0.5 is half of each source's deviation (before: 1.4 from noise, 1e5 from the absolute
    # source).
    assert scorers["w=0.5"] == pytest.approx(
        0.5 * (raw["preference"] - raw["preference"].mean()) + 0.5 * (raw["absolute"] - 0.5)
    )
    assert max(np.abs(scorers[name]).max() for name in ("w=0.5", "min", "mean-1std")) <= 0.2


def test_the_studys_agreement_is_pooled_over_the_judged_pairs_with_its_bootstrap_and_categories() -> None:
    from crs.eval.bon.instrument import per_prompt_metrics, pooled_agreement, summarize_scorers
    from crs.eval.bon.selection import paired_bootstrap_means

    # Prompt 0: 3 judged pairs, all right. Prompt 1: the judge ties (0, 1); of its 2 judged pairs the
    # scorer gets (0, 2) wrong and ties (1, 2): 0.5. Prompt 2: 3 judged pairs, all wrong.
    judge = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    scorer = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    metrics = per_prompt_metrics({"s": scorer}, judge, np.ones_like(judge), [1, 2, 3])
    boot = paired_bootstrap_means(metrics, 50, seed=3)
    agreement = pooled_agreement(metrics, boot, "s")
    assert agreement["mean"] == pytest.approx(
        3.5 / 8
    )  # pooled; the mean of per-prompt fractions would be (1 + 0.25 + 0) / 3
    # Every bootstrap round is the pooled agreement of its own resampled prompts (the draws paired_bootstrap_means
    # makes).
    draws = np.random.default_rng(3).integers(0, 3, size=(50, 3))
    credit, pairs = np.array([3.0, 0.5, 0.0]), np.array([3.0, 2.0, 3.0])
    low, high = np.quantile(credit[draws].sum(axis=1) / pairs[draws].sum(axis=1), [0.025, 0.975])
    assert (agreement["ci_low"], agreement["ci_high"]) == pytest.approx((low, high))
    summary = summarize_scorers(metrics, boot, ["s"], [1, 2, 3], ["a", "a", "b"])["s"]
    assert summary["pairwise_accuracy"] == agreement
    assert summary["pairwise_accuracy_by_category"] == pytest.approx({"a": 3.5 / 5, "b": 0.0})


# ------------------------------------------------------------- real pools: repeated replies, generator names, bad input

# Deterministic short answers repeat: "Paris." twice, "4" three times (samples 0, 2 and 3).
REPEATS = {"Capital of France?": ["Paris.", "Paris.", "It is Paris, a city.", "Lyon"], "2+2?": ["4", "four", "4", "4"]}


def _repeats_pool(folder: Path) -> Path:
    path = folder / "pool.jsonl"
    path.write_text("".join(json.dumps({"instruction": q, "outputs": r}) + "\n" for q, r in REPEATS.items()))
    return path


def _annotation(question: str, reply: str, generator: str, value: float, pool_first: bool) -> dict:
    """An AlpacaEval annotation of ``reply`` against the reference "REF"; ``value``: 1 the reply is better, 0 worse."""
    if pool_first:
        return {
            "instruction": question,
            "output_1": reply,
            "generator_1": generator,
            "output_2": "REF",
            "generator_2": "gpt4_turbo",
            "preference": 2 - value,
        }
    return {
        "instruction": question,
        "output_1": "REF",
        "generator_1": "gpt4_turbo",
        "output_2": reply,
        "generator_2": generator,
        "preference": 1 + value,
    }


def _best_of_two(scores: list[float], values: list[float]) -> float:
    """By brute force: over every pair of replies, the judge's value of the higher-scored one (a tie: a fair coin)."""
    pairs = list(itertools.combinations(range(len(scores)), 2))
    pick = {
        (i, j): values[i]
        if scores[i] > scores[j]
        else values[j]
        if scores[j] > scores[i]
        else (values[i] + values[j]) / 2
        for i, j in pairs
    }
    return sum(pick.values()) / len(pairs)


def test_every_copy_of_a_repeated_reply_gets_the_verdict_on_its_own_sample(tmp_path) -> None:
    """AlpacaEval names sample k of a best-of-n pool `<model>.<k>` (here with a slash, `org/model`): each copy of a
    repeated reply gets the judge's verdict on that sample, even where the judge judged two copies differently."""
    verdicts = {"Capital of France?": [1.0, 0.5, 0.0, 0.0], "2+2?": [1.0, 0.0, 0.5, 1.0]}
    for k in range(4):  # one annotations file per sample, as AlpacaEval writes them
        rows = [
            _annotation(q, REPEATS[q][k], f"allenai/tulu-2-dpo-13b.{k}", verdicts[q][k], pool_first=k % 2 == 0)
            for q in REPEATS
        ]
        (tmp_path / f"annotations_{k}.json").write_text(json.dumps(rows))
    config = write_config(tmp_path, pool=_repeats_pool(tmp_path), judge=str(tmp_path / "annotations_*.json"))
    stage(run_bon_study, config, "bon")
    results = json.loads((tmp_path / "out" / "bon" / "results.json").read_text())
    gold = results["scorers"]["preference"]["gold"]  # the scorer: reply length, so the copies tie
    # By hand, n = 2, France: lengths 6, 6, 20, 4; of the 6 pairs {0, 1} ties ((1 + .5) / 2), {0, 3} picks 1,
    # {1, 3} .5, the other three the long reply (0): 2.25 / 6. 2+2: lengths 1, 4, 1, 1; {0, 2} ties ((1 + .5) / 2),
    # {0, 3} ties (1), {2, 3} ties ((.5 + 1) / 2), the other three "four" (0): 2.5 / 6.
    lengths = {q: [float(len(r)) for r in replies] for q, replies in REPEATS.items()}
    assert _best_of_two(lengths["Capital of France?"], verdicts["Capital of France?"]) == pytest.approx(2.25 / 6)
    assert _best_of_two(lengths["2+2?"], verdicts["2+2?"]) == pytest.approx(2.5 / 6)
    assert results["ns"] == [1, 2, 4] and gold[1]["mean"] == pytest.approx((2.25 / 6 + 2.5 / 6) / 2)
    assert gold[0]["mean"] == pytest.approx((0.375 + 0.625) / 2)  # n = 1: each prompt's mean verdict
    assert gold[2]["mean"] == pytest.approx(0.0)  # n = 4: the longest reply, judged worse than the reference on both
    assert results["scorers"]["judge"]["gold"][2]["mean"] == pytest.approx(1.0)


def test_without_sample_names_every_copy_gets_the_verdict_on_its_text(tmp_path) -> None:
    """Annotations that name the model, not its samples (one verdict per distinct reply, as AlpacaEval caches them):
    every copy of a reply gets its text's verdict."""
    verdict = {
        ("Capital of France?", "Paris."): 1.0,
        ("Capital of France?", "It is Paris, a city."): 0.0,
        ("Capital of France?", "Lyon"): 0.5,
        ("2+2?", "4"): 1.0,
        ("2+2?", "four"): 0.0,
    }
    rows = [
        _annotation(q, reply, "allenai/tulu-2-dpo-13b", value, pool_first=i % 2 == 0)
        for i, ((q, reply), value) in enumerate(verdict.items())
    ]
    (tmp_path / "annotations.json").write_text(json.dumps(rows))
    config = write_config(tmp_path, pool=_repeats_pool(tmp_path), judge=str(tmp_path / "annotations.json"))
    stage(run_bon_study, config, "bon")
    results = json.loads((tmp_path / "out" / "bon" / "results.json").read_text())
    values = {q: [verdict[(q, r)] for r in replies] for q, replies in REPEATS.items()}
    assert values == {"Capital of France?": [1.0, 1.0, 0.0, 0.5], "2+2?": [1.0, 0.0, 1.0, 1.0]}
    # By hand, n = 2: France: {0, 1} ties (1), {0, 3} and {1, 3} pick "Paris." (1), the other three the long reply (0):
    # 3 / 6.
    # 2+2: {0, 2}, {0, 3}, {2, 3} tie between copies of "4" (1), the other three pick "four" (0): 3 / 6.
    assert [_best_of_two([float(len(r)) for r in REPEATS[q]], values[q]) for q in REPEATS] == [0.5, 0.5]
    assert results["scorers"]["preference"]["gold"][1]["mean"] == pytest.approx(0.5)
    assert results["scorers"]["preference"]["gold"][0]["mean"] == pytest.approx((2.5 / 4 + 3 / 4) / 2)


def test_copies_judged_apart_under_names_that_are_no_samples_share_the_mean_and_extra_verdicts_are_refused(
    tmp_path,
) -> None:
    from crs.eval.bon.pool_verdicts import judge_from_annotations

    pool = read_pool(_repeats_pool(tmp_path))
    rows = [
        _annotation(q, r, "bot", 1.0 if k == 0 else 0.0, pool_first=True)
        for q, replies in REPEATS.items()
        for k, r in enumerate(replies)
    ]
    (tmp_path / "annotations.json").write_text(json.dumps(rows))
    values = judge_from_annotations(pool, str(tmp_path / "annotations.json"))
    # "Paris." judged 1 (sample 0) and 0 (sample 1): both copies get .5; "4": 1, 0, 0 over three copies: 1/3 each.
    assert values.tolist() == [
        [0.5, 0.5, 0.0, 0.0],
        [pytest.approx(1 / 3), 0.0, pytest.approx(1 / 3), pytest.approx(1 / 3)],
    ]
    (tmp_path / "annotations.json").write_text(
        json.dumps([*rows, rows[0]])
    )  # a third verdict on the two copies of "Paris."
    with pytest.raises(
        DataError, match=r"annotations.json, annotation 8: 3 verdicts on a reply that prompt \S+ holds 2 time\(s\)"
    ):
        judge_from_annotations(pool, str(tmp_path / "annotations.json"))


def test_a_folder_pool_whose_files_name_their_samples_is_read_by_sample(tmp_path) -> None:
    from crs.eval.bon.pool_verdicts import judge_from_annotations

    folder = tmp_path / "theirs"
    folder.mkdir()
    names = ["org/bot-greedy", "org/bot-t0.7"]
    for k, name in enumerate(names):
        (folder / f"sample_{k}.json").write_text(
            json.dumps([{"instruction": "2+2?", "output": "4", "generator": name}])
        )
    pool = read_pool(folder)
    assert pool.sample_names == names and pool.replies == [["4", "4"]]
    rows = [
        _annotation("2+2?", "4", names[1], 0.0, pool_first=True),
        _annotation("2+2?", "4", names[0], 1.0, pool_first=False),
    ]
    (tmp_path / "annotations.json").write_text(json.dumps(rows))
    assert judge_from_annotations(pool, str(tmp_path / "annotations.json")).tolist() == [[1.0, 0.0]]
    (tmp_path / "annotations.json").write_text(json.dumps([*rows, rows[0]]))
    with pytest.raises(
        DataError, match=r"annotation 2: a second verdict on sample 1 of prompt \S+ \(the first: .*annotation 0\)"
    ):
        judge_from_annotations(pool, str(tmp_path / "annotations.json"))


def _bon_error(capsys, config: Path, *extra: str) -> str:
    """`crs bon` on bad input: exit 2 and one `error:` line, no traceback."""
    with pytest.raises(SystemExit) as exited:
        stage(run_bon_study, config, "bon", *extra)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert exited.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


SMALL_POOL = {"Say hi.": ["hi", "hello"], "Name a fruit.": ["apple", "kiwi"], "Count to two.": ["one two", "1 2"]}


@pytest.mark.parametrize(
    "case",
    [
        "a line that is not JSON",
        "a prompt twice",
        "a row of another shape",
        "an outputs file not UTF-8",
        "a NaN score",
        "a judge glob that matches nothing",
        "annotations that are not JSON",
        "a preference source that names none",
    ],
)
def test_bad_input_to_a_best_of_n_study_ends_in_one_line_naming_file_line_and_key(tmp_path, capsys, case: str) -> None:
    path = tmp_path / "pool.jsonl"
    lines = [json.dumps({"instruction": q, "outputs": r}) for q, r in SMALL_POOL.items()]
    bon, extra, pool = {}, [], path
    if case == "a line that is not JSON":
        lines[1] = lines[1][:-1]
        expected = f"error: bon.pool: {path}, line 2: not valid JSON ("
    elif case == "a prompt twice":
        lines.append(json.dumps({"instruction": "Say hi.", "outputs": ["hey", "yo"]}))
        expected = (
            f"error: bon.pool: {path}, line 4 repeats the prompt of line 1 ('Say hi.'): a pool holds each prompt once"
        )
    elif case == "a row of another shape":
        lines[2] = json.dumps({"prompt": "Count to two.", "chosen": "one two", "rejected": "1 2"})
        expected = f"error: bon.pool: {path}, line 3: expected an object {{instruction: text, outputs: [reply texts]}}"
    elif case == "an outputs file not UTF-8":
        pool = tmp_path / "theirs"
        _alpaca_pool(pool)
        (pool / "sample_1.json").write_bytes(
            '[{"instruction": "Say hi.", "output": "café", "generator": "them"}]'.encode("latin-1")
        )
        expected = f"error: bon.pool: {pool / 'sample_1.json'}: not UTF-8 text ("
    elif case == "a NaN score":
        bon["rewards"] = [
            {"name": "preference", "path": "python:tests.reward_fns:nan_for_kiwi"},
            {"name": "absolute", "path": "python:tests.reward_fns:count_vowels"},
        ]
        expected = (
            "error: bon.rewards 'preference' (python:tests.reward_fns:nan_for_kiwi) gave 1 of 6 pool replies a "
            "non-finite score; the first: nan for sample 1 of prompt "
        )
    elif case == "a judge glob that matches nothing":
        bon["judge"] = str(tmp_path / "annotations_*.json")
        expected = f"error: bon.judge: no file matches {bon['judge']!r}; point it at AlpacaEval annotations (.json)"
    elif case == "annotations that are not JSON":
        bon["judge"] = str(tmp_path / "annotations_*.json")
        (tmp_path / "annotations_0.json").write_text('[{"instruction": "Say hi.", ')
        expected = f"error: bon.judge: {tmp_path / 'annotations_0.json'}: not valid JSON ("
    else:
        extra = ["--set", "bon.preference_source=preferense"]
        expected = (
            "error: bon.preference_source='preferense': must be one of the bon.rewards names (preference, absolute)"
        )
    path.write_text("\n".join(lines) + "\n")
    line = _bon_error(capsys, write_config(tmp_path, pool=pool, **bon), *extra)
    assert line.startswith(expected), line
    if case == "a NaN score":
        assert line.endswith("('Name a fruit.' -> 'kiwi'); every reply needs a finite score: fix the scorer"), line
