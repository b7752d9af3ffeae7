"""Tests for crs.eval.score_report: numbers in the Markdown match hand-computed values; plots are PNGs."""

from __future__ import annotations

import json
import math
import struct

import pytest
from paths import FIXTURES

from crs.eval.score_figures import plot_mean_scores, plot_win_rate_heatmap
from crs.eval.score_report import (
    build_results,
    leaderboard_csv,
    main_table,
    render_report,
)
from crs.io import write_json_atomic, write_text_atomic

MODELS = ["base", "sft", "ppo"]
SCORES = {
    # listed second on purpose: the judge must still come first everywhere
    "rm": {
        "base": [0.1, 0.2, 0.3, 0.4],
        "sft": [0.2, 0.1, 0.3, 0.5],
        "ppo": [0.5, 0.5, 0.5, 0.5],
    },
    "judge": {
        "base": [1, 1, 1, 1],
        "sft": [2, 0, 1, 3],
        "ppo": [3, 3, 0, 3],
    },
}
OUTPUTS = {"base": ["aa"] * 4, "sft": ["abcd", "ab", "abcdef", "ab"], "ppo": ["x" * 10] * 4}
CATEGORIES = ["math", "chat", "math", "chat"]

# Row beats column, % of prompts, ties = 1/2 (worked out per prompt by hand):
JUDGE_MATRIX = {
    ("sft", "base"): 62.5,  # win, loss, tie, win
    ("ppo", "base"): 75.0,  # win, win, loss, win
    ("ppo", "sft"): 62.5,  # win, win, loss, tie
    ("base", "sft"): 37.5,
    ("base", "ppo"): 25.0,
    ("sft", "ppo"): 37.5,
}
RM_MATRIX = {
    ("sft", "base"): 62.5,  # win, loss, tie, win
    ("ppo", "base"): 100.0,
    ("ppo", "sft"): 87.5,  # win, win, win, tie
    ("base", "sft"): 37.5,
    ("base", "ppo"): 0.0,
    ("sft", "ppo"): 12.5,
}


@pytest.fixture(scope="module")
def results():
    return build_results(
        SCORES,
        OUTPUTS,
        judge="judge",
        prompt_ids=["p0", "p1", "p2", "p3"],
        categories=CATEGORIES,
        reference="base",
        models=MODELS,
        n_boot=200,
        seed=0,
    )


def _parse_matrix(markdown: str) -> dict[tuple[str, str], str]:
    """Cells of a Markdown matrix table keyed by (row, column)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")][1:]
    cells = {}
    for line in lines[2:]:  # skip header and separator
        row, *values = [cell.strip() for cell in line.strip("|").split("|")]
        cells.update({(row, col): value for col, value in zip(header, values)})
    return cells


@pytest.mark.parametrize("scorer, expected", [("judge", JUDGE_MATRIX), ("rm", RM_MATRIX)])
def test_main_table_matches_hand_computed_win_rates(results, scorer, expected):
    table = main_table(results, scorer)
    assert "n = 4 prompts" in table
    cells = _parse_matrix(table)
    assert len(cells) == 9
    for model in MODELS:
        assert cells[(model, model)] == "–"
    for pair, value in expected.items():
        assert float(cells[pair]) == pytest.approx(value), pair


def test_results_numbers(results):
    assert results["scorers"] == ["judge", "rm"]
    assert results["models"] == MODELS
    cell = results["win_rates"]["judge"]["sft"]["base"]
    assert (cell["n_wins"], cell["n_wins_base"], cell["n_draws"], cell["n_total"]) == (2, 1, 1, 4)

    assert [row["model"] for row in results["leaderboard"]] == ["ppo", "sft", "base"]
    assert [row["win_rate"] for row in results["leaderboard"]] == pytest.approx([75.0, 62.5, 50.0])

    stats = results["model_stats"]["sft"]
    assert stats["scores"]["judge"]["mean"] == pytest.approx(1.5)
    assert stats["length"]["mean"] == pytest.approx(3.5)  # (4 + 2 + 6 + 2) / 4

    # 3 model pairs x 4 prompts = 12 comparisons; the rm disagrees with the judge on
    # p2 for (base, ppo) and (sft, ppo) only, both "math" prompts.
    rm = results["agreement"]["rm"]
    assert rm["n"] == 12
    assert rm["overall"] == pytest.approx(10 / 12)
    assert rm["by_category"]["math"] == {"agreement": pytest.approx(4 / 6), "n": 6}
    assert rm["by_category"]["chat"] == {"agreement": 1.0, "n": 6}
    assert "judge" not in results["agreement"]

    # Judge ballots: p0 ppo>sft>base, p1 ppo>base>sft, p2 base=sft>ppo (name order),
    # p3 ppo=sft>base -> ppo gets 1, 1, 1/3, 1: mean 5/6, population std sqrt(1/12).
    ppo = results["rankings"]["per_scorer"]["judge"]["ppo"]
    assert ppo["mean"] == pytest.approx(5 / 6)
    assert ppo["std"] == pytest.approx(math.sqrt(1 / 12))


def test_length_aware_agreement_by_hand(results):
    # Judge verdicts on (base, sft), (base, ppo), (sft, ppo) x 4 prompts: ties on (base, sft) p2 and (sft, ppo) p3.
    length = results["length_aware"]
    counts = ("n_pairs", "n_judge_ties", "n_shorter_preferred", "n_length_matched", "n_clusters")
    assert tuple(length[k] for k in counts) == (10, 2, 2, 2, 4)
    rm = length["scorers"]["rm"]
    assert rm["accuracy"]["mean"] == pytest.approx(8 / 10)  # wrong only where the judge prefers a reply to ppo's on p2
    # The shorter reply wins only on p2 (base's 2 and sft's 6 characters over ppo's 10); the rm prefers ppo's there.
    assert rm["shorter_preferred_accuracy"]["mean"] == 0.0
    assert rm["length_matched_accuracy"]["mean"] == 1.0  # (base, sft) on p1 and p3, both 2 characters
    assert length["scorers"]["length (characters)"]["length_matched_accuracy"]["mean"] == 0.5  # equal: ties
    assert "judge" not in length["scorers"]
    assert "### How much of the agreement is length" in render_report(results)
    older = {key: value for key, value in results.items() if key != "length_aware"}  # results saved before it
    assert "How much of the agreement is length" not in render_report(older)


def test_render_report_sections_and_values(results):
    report = render_report(results)
    for heading in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5."):
        assert heading in report
    # the judge's matrix comes before the reward model's
    assert report.index("**judge**") < report.index("**rm**")
    assert "83.3% (n=12)" in report  # rm agreement overall
    assert "66.7% (n=6)" in report  # rm agreement on math
    assert "| ppo | 75.00 |" in report  # leaderboard row
    assert "1.500 ± 1.118" in report  # sft judge mean ± std: [2, 0, 1, 3]


def test_results_survive_json_round_trip(results, tmp_path):
    path = tmp_path / "eval" / "results.json"
    write_json_atomic(path, results)
    loaded = json.loads(path.read_text())
    assert loaded == results
    assert render_report(loaded) == render_report(results)


def test_build_results_rejects_misaligned_scores():
    bad = {"judge": {"a": [1, 2], "b": [1]}}
    with pytest.raises(ValueError, match="'b'"):
        build_results(bad, {"a": ["x", "y"], "b": ["x", "y"]}, judge="judge")
    with pytest.raises(KeyError):
        build_results(SCORES, OUTPUTS, judge="nobody")


def test_atomic_writers_replace_and_leave_no_temp(tmp_path):
    path = tmp_path / "notes.md"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new ✓")
    assert path.read_text(encoding="utf-8") == "new ✓"
    # An unserialisable object fails before anything is written.
    with pytest.raises(TypeError):
        write_json_atomic(path, {"x": object()})
    assert path.read_text(encoding="utf-8") == "new ✓"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.md"]


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plots_are_real_pngs(results, tmp_path):
    heatmap = tmp_path / "plots" / "heatmap_judge.png"
    bars = tmp_path / "plots" / "mean_scores.png"
    plot_win_rate_heatmap(results, "judge", heatmap)
    plot_mean_scores(results, bars)
    for path in (heatmap, bars):
        width, height = _png_size(path)
        assert width >= 200 and height >= 200, (path, width, height)
        assert path.stat().st_size > 5_000
    assert sorted(p.name for p in heatmap.parent.iterdir()) == ["heatmap_judge.png", "mean_scores.png"]


def test_leaderboard_csv_is_alpaca_evals_layout(results):
    lines = leaderboard_csv(results).splitlines()
    assert lines[0] == ",win_rate,standard_error,n_wins,n_wins_base,n_draws,n_total,mode,avg_length,discrete_win_rate"
    # ppo vs base: win, win, loss, win; outputs 10 chars each
    assert lines[1].startswith("ppo,75.0,25.0,3,1,0,4,community,10,")
    single = {"leaderboard": [{**results["leaderboard"][0], "standard_error": None}]}
    assert ",75.0,,3," in leaderboard_csv(single)  # undefined (one verdict): empty, as pandas writes NaN


def test_human_rankings_appear_in_the_report(results):

    from crs.eval.human import human_rankings, load_ballots

    ballots = load_ballots(FIXTURES / "human_ballots.csv")
    report = render_report(
        {**results, "human_rankings": human_rankings(ballots, "candidate_order", ["sft", "rl_crs", "base"])}
    )
    section = report[report.index("## 6. Human rankings") :]
    assert "11 ballots by 6 annotators on 2 prompts (3 with tied replies)" in section
    assert "| sft | **1.000** ± 0.000 | 0.833 | 0.750 | 0.792 ± 0.042 (0.750–0.833) |" in section
    assert report.index("## 5. Rank aggregation") < report.index("## 6. Human rankings")


def test_the_judges_main_table_carries_length_controlled_rates(results):
    text = main_table(results, "judge")
    line = next(line for line in text.splitlines() if line.startswith("Length-controlled"))
    for row in results["leaderboard"]:
        if row["model"] != "base":
            assert f"{row['model']} {row['lc_win_rate']:.1f} (" in line
    assert "Length-controlled" not in main_table(results, "rm")


# --------------------------------------------------------------------------------------
# Length control in the report: the unreliable flag and the length-matched rate (issue 30 §2)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def brevity_results():
    """The issue's case: `short` is shorter than `ref` by 100-200 characters on 88% of 200
    prompts and longer by 5-20 on the rest; `blind` is as long as `ref` give or take; the judge
    scores brevity alone for `short` and nothing about length for `blind`."""
    import numpy as np
    from length_cases import shorter_on_most

    rng = np.random.default_rng(0)
    n = 200
    ref = rng.integers(300, 700, n)
    short = shorter_on_most(ref, rng)
    blind = ref + rng.integers(-60, 61, n)
    outputs = {"ref": ["r" * k for k in ref], "short": ["s" * k for k in short], "blind": ["b" * k for k in blind]}
    judge = {
        "ref": [0.0] * n,
        "short": [1.0 if s < r else -1.0 for s, r in zip(short, ref)],
        "blind": rng.choice([-1.0, 1.0], n).tolist(),
    }
    return build_results(
        {"judge": judge}, outputs, judge="judge", reference="ref", n_boot=200, seed=0, judge_role="gold judge"
    )


def test_a_model_that_length_separates_is_flagged_in_the_leaderboard_and_warned_about(brevity_results):
    rows = {row["model"]: row for row in brevity_results["leaderboard"]}
    assert rows["short"]["win_rate"] == pytest.approx(88.0) and rows["short"]["lc_win_rate"] < 5.0
    assert rows["short"]["lc_reliable"] is False and rows["blind"]["lc_reliable"] is True
    assert rows["short"]["n_length_matched"] == 24 and rows["short"]["length_matched_win_rate"] == 0.0
    assert rows["short"]["lc_separation"]["near_equal_shorter"] == 0
    report = render_report(brevity_results)
    section = report[report.index("## 3. Leaderboard") : report.index("## 4.")]
    line = next(line for line in section.splitlines() if line.startswith("| short "))
    assert f"| {rows['short']['lc_win_rate']:.2f}* |" in line and "| 0.0 (0.0–0.0), n=24 |" in line
    blind = next(line for line in section.splitlines() if line.startswith("| blind "))
    assert f"| {rows['blind']['lc_win_rate']:.2f} |" in blind
    warning = section[section.index("**\\* LC unreliable** for `short`:") :]
    assert "`blind`" not in warning
    assert "- `short`: Length alone nearly separates the verdicts (the shorter reply wins 200 of 200" in warning
    assert "only 0 prompts with the model shorter and 24 with it longer lie within 10% of equal length" in warning
    lc_line = next(
        line for line in main_table(brevity_results, "judge").splitlines() if line.startswith("Length-controlled")
    )
    short = rows["short"]
    assert (
        f"short {short['lc_win_rate']:.1f} ({short['lc_ci_low']:.1f}–{short['lc_ci_high']:.1f}; unreliable: length "
        "alone" in lc_line
    )
    assert "blind" in lc_line and "unreliable" not in lc_line.split("blind ")[1]


def test_few_length_matched_prompts_say_cannot_tell(results):
    sft = next(row for row in results["leaderboard"] if row["model"] == "sft")
    assert sft["length_matched_win_rate"] is None and sft["n_length_matched"] == 2  # "ab" vs "aa", twice: under 20
    assert "| cannot tell (n=2) |" in render_report(results)


def test_leaderboard_csv_keeps_alpaca_evals_columns_with_the_length_columns(brevity_results):
    header = leaderboard_csv(brevity_results).splitlines()[0]
    assert header == ",win_rate,standard_error,n_wins,n_wins_base,n_draws,n_total,mode,avg_length,discrete_win_rate"


def test_a_reference_scorer_is_not_called_a_gold_judge(monkeypatch, tmp_path):
    import crs.eval.score_figures

    results = build_results(
        {"mine": SCORES["judge"], "rm": SCORES["rm"]},
        OUTPUTS,
        judge="mine",
        reference="base",
        models=MODELS,
        n_boot=50,
        judge_role="reference scorer",
    )
    report = render_report(results)
    assert "Gold judge" not in report and "gold judge)" not in report
    assert "Reference scorer: **mine**" in report and "**mine** (reference scorer)" in report
    assert "not what a gold judge does" in report
    assert (
        "(judged by the reference scorer mine)" in report
        and "## 4. Agreement with the reference scorer (mine)" in report
    )
    titles = []
    monkeypatch.setattr(
        crs.eval.score_figures, "save_figure_atomic", lambda fig, path: titles.extend(ax.get_title() for ax in fig.axes)
    )
    plot_mean_scores(results, tmp_path / "bars.png")
    assert titles == ["mine (reference scorer)", "rm"]
    gold = build_results(
        SCORES, OUTPUTS, judge="judge", reference="base", models=MODELS, n_boot=50, judge_role="gold judge"
    )
    assert "Gold judge: **judge**" in render_report(gold)
    saved = {k: v for k, v in gold.items() if k != "judge_role"}  # results written before the role was recorded
    assert "Gold judge: **judge**" in render_report(saved)
