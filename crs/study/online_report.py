"""The online loop's report and figure: ``report.md`` and ``online_rounds.png``, drawn from the numbers
of :func:`crs.study.online.loop_results` (``results.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from crs.eval import length_control
from crs.eval.figure_files import save_figure_atomic
from crs.eval.power import power_line, power_of_interval
from crs.eval.tables import DASH, md_table, number, pct, pct_interval
from crs.rm.length_metrics import LENGTH_BAND


def render_online_report(results: dict[str, Any]) -> str:
    """The loop's Markdown report."""
    s = results["settings"]
    lines = [
        "# Iterated online RLHF",
        f"{s['rounds']} rounds of {s['rl_steps']} RL steps; each later round labels {s['prompts_per_round']} "
        f"fresh prompts x {s['replies_per_prompt']} "
        f"replies of the current policy ({s['labeller']} labeller), continues both RMs for {s['rm_epochs']:g} "
        "epochs on them plus "
        f"{s['replay_ratio']:g} replayed earlier labels per new one, then continues RL. "
        f"Judge `{results['judge']}`; {results['n_prompts']} eval prompts; "
        f"This invocation's wall time {results.get('wall_time_s', 0) / 60:.1f} min "
        "(steps finished earlier are skipped). Intervals: 95%, bootstrap over prompts.",
        *_rounds_section(results),
        *_rm_section(results),
        *(_baseline_section(results) if "baseline" in results else []),
    ]
    return "\n".join(lines) + "\n"


def _rounds_section(results: dict[str, Any]) -> list[str]:
    ref = results["reference"]
    header = [
        "round",
        "labels (rankings / scores)",
        f"win rate vs `{ref}` %",
        "LC %",
        "length-matched % (95% CI), n",
        "win rate vs round 0 %",
        "judge mean",
        "proxy reward",
        "KL",
        "mean length",
    ]
    rows = [
        [
            str(r["round"]),
            f"{r['labels']['rankings']} / {r['labels']['scores']}",
            pct_interval(r["win_rate_vs_reference"]),
            pct(r["lc_win_rate_vs_reference"])
            + ("" if r.get("lc_separation", {"reliable": True})["reliable"] else "*"),
            _matched_cell(r),
            pct_interval(r["win_rate_vs_round_0"]) if "win_rate_vs_round_0" in r else DASH,
            f"{r['judge_mean']:.3f}",
            number(r["proxy"], 3),
            number(r["kl"], 3),
            f"{r['mean_length']:.0f}",
        ]
        for r in results["rounds"]
    ]
    flagged = [r for r in results["rounds"] if not r.get("lc_separation", {"reliable": True})["reliable"]]
    return [
        "## Per round",
        md_table(header, rows),
        f"\n`{ref}`'s judge mean: {results['reference_judge_mean']:.3f}. Proxy reward and KL: the round's RL run, "
        "mean over its last quarter of steps (proxy: its own combined reward, z units).",
        "LC: length-controlled (docs/study.md). Length-matched: the raw win rate on the prompts whose two replies "
        "are within "
        f"{LENGTH_BAND:.0%} of each other in length ('cannot tell' below {length_control.MIN_MATCHED}).",
        *(
            [
                f"\n**\\* LC unreliable** in round{'s' if len(flagged) > 1 else ''} "
                f"{', '.join(str(r['round']) for r in flagged)}: {length_control.unreliable_note()}."
            ]
            if flagged
            else []
        ),
        *(f"- round {r['round']}: {r['lc_separation']['reason']}" for r in flagged),
        power_line(_median_power(results["rounds"]), "these eval prompts", f"a round's win rate against `{ref}`"),
    ]


def _matched_cell(row: dict[str, Any]) -> str:
    matched = row.get("length_matched_vs_reference")
    return (
        DASH
        if matched is None
        else length_control.length_matched_cell(
            matched["win_rate"], matched["ci_low"], matched["ci_high"], matched["n_matched"]
        )
    )


def _median_power(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """The rounds' detectable difference against the reference, from their intervals (the median round)."""
    powers = [
        power_of_interval(r["win_rate_vs_reference"]["ci_low"], r["win_rate_vs_reference"]["ci_high"]) for r in rounds
    ]
    return sorted(powers, key=lambda p: p["standard_error"])[len(powers) // 2]


def _rm_section(results: dict[str, Any]) -> list[str]:
    accuracy = results["rm_accuracy"]
    rows = [
        [
            kind,
            str(n),
            number(entry.get("held_out"), 3),
            number(entry.get("own_policy"), 3),
            number(entry.get("next_policy"), 3),
        ]
        for kind, per_round in accuracy.items()
        for n, entry in per_round.items()
    ]
    lines = [
        "\n## Reward models against the judge (pairwise accuracy)",
        "On the pairs the judge separates (its ties left out; pairs: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in results["rm_pairs"].items())
        + "). `held out`: the original data's held-out rankings (forgetting shows here); "
        "`own policy`: replies of the policy the RM was "
        "refreshed on (that round's probe prompts, never labelled); "
        "`next policy`: replies of the policy this RM then trained.",
        md_table(["RM", "round", "held out", "own policy", "next policy"], rows),
    ]
    gains = [
        (kind, n, per_round[str(n - 1)].get("next_policy"), per_round[str(n)].get("own_policy"))
        for kind, per_round in accuracy.items()
        for n in range(1, len(results["rounds"]))
        if str(n) in per_round and str(n - 1) in per_round
    ]
    if any(before is not None and after is not None for _, _, before, after in gains):
        lines += [
            "\nWhat refreshing bought on the policy's replies "
            "(round N's probe: replies of the policy before round N, never labelled):",
            md_table(
                ["RM", "round N", "before refresh (round N-1's RM)", "after refresh (round N's RM)"],
                [[kind, str(n), number(before, 3), number(after, 3)] for kind, n, before, after in gains],
            ),
        ]
    return lines


def _baseline_section(results: dict[str, Any]) -> list[str]:
    s, b, last, ref = results["settings"], results["baseline"], results["rounds"][-1], results["reference"]
    unfair = b["labels"].get("rankings_seen") or b["labels"].get("scores_seen")
    rows = [
        [
            f"loop (round {last['round']})",
            pct_interval(last["win_rate_vs_reference"]),
            f"{last['judge_mean']:.3f}",
            number(last["proxy"], 3),
            number(last["kl"], 3),
            f"{last['mean_length']:.0f}",
        ],
        [
            "baseline",
            pct_interval(b["win_rate_vs_reference"]),
            f"{b['judge_mean']:.3f}",
            number(b["proxy"], 3),
            number(b["kl"], 3),
            f"{b['mean_length']:.0f}",
        ],
    ]
    return [
        "\n## Against the fair baseline",
        "The baseline gave the round-0 reward models the same number of labels up front "
        f"({b['labels']['rankings']} rankings, {b['labels']['scores']} scores, "
        f"from the original distribution), then ran RL once for {s['rounds'] * s['rl_steps']} steps.",
        *(
            [
                f"\n**Not a fair baseline:** {b['labels']['rankings_seen']} of its rankings and "
                f"{b['labels']['scores_seen']} of its scores are on "
                "prompts the round-0 reward models were trained on "
                "(`online.baseline_split` of a source with one split), so it got fewer new labels than the loop."
            ]
            if unfair
            else []
        ),
        md_table(["", f"win rate vs `{ref}` %", "judge mean", "proxy reward", "KL", "mean length"], rows),
        "\nThe loop's last policy against the baseline's, head to head: "
        f"{pct_interval(b['last_round_vs_baseline'])}% ({_verdict(b['last_round_vs_baseline'])}).",
        power_line(
            power_of_interval(b["last_round_vs_baseline"]["ci_low"], b["last_round_vs_baseline"]["ci_high"]),
            "these eval prompts",
            "the head-to-head win rate",
        ),
    ]


def _verdict(entry: dict[str, float]) -> str:
    if entry["ci_low"] > 0.5:
        return "iterating beat spending the labels up front"
    if entry["ci_high"] < 0.5:
        return "spending the labels up front beat iterating"
    return "the interval includes 50%: these runs cannot tell them apart"


def plot_rounds(results: dict[str, Any], path: Path) -> None:
    """Per-round curves: win rate against the reference (baseline dashed), RM agreement with the judge,
    proxy and judge."""
    rounds = [r["round"] for r in results["rounds"]]
    fig = Figure(figsize=(13, 3.6))
    ax_win, ax_rm, ax_reward = fig.subplots(1, 3)
    win = [r["win_rate_vs_reference"] for r in results["rounds"]]
    mean = np.array([100 * w["mean"] for w in win])
    err = np.array(
        [[100 * w["mean"] - 100 * w["ci_low"] for w in win], [100 * w["ci_high"] - 100 * w["mean"] for w in win]]
    )
    ax_win.errorbar(rounds, mean, yerr=err, fmt="o-", capsize=3, label="loop")
    if "baseline" in results:
        ax_win.axhline(
            100 * results["baseline"]["win_rate_vs_reference"]["mean"],
            color="C1",
            linestyle="--",
            label="fair baseline",
        )
    ax_win.axhline(50, color="grey", linewidth=0.8)
    ax_win.set(xlabel="round", ylabel=f"win rate vs {results['reference']} (%)", title="policy, judged")
    ax_win.legend()
    for kind, per_round in results["rm_accuracy"].items():
        for key, style in (("held_out", "-"), ("own_policy", ":")):
            points = [(int(n), e[key]) for n, e in per_round.items() if e.get(key) is not None]
            if points:
                ax_rm.plot(*zip(*points), style, marker="o", label=f"{kind}: {key.replace('_', ' ')}")
    ax_rm.set(xlabel="round", ylabel="accuracy against the judge", title="reward models")
    ax_rm.legend(fontsize=7)
    proxy = [(r["round"], r["proxy"]) for r in results["rounds"] if r["proxy"] is not None]
    if proxy:
        ax_reward.plot(*zip(*proxy), "o-", label="proxy (own reward, z)")
    twin = ax_reward.twinx()
    twin.plot(rounds, [r["judge_mean"] for r in results["rounds"]], "s--", color="C3", label="judge mean")
    ax_reward.set(xlabel="round", ylabel="proxy reward", title="proxy vs judge")
    twin.set_ylabel("judge mean score")
    ax_reward.legend(loc="upper left", fontsize=7)
    twin.legend(loc="lower right", fontsize=7)
    save_figure_atomic(fig, path)
