"""Iterated online RLHF: ``crs online --config_subset rl_online_crs``.

Round 0 is an ordinary RL run of ``online.base_subset`` on the original reward models. Each
later round N

1. samples K replies per prompt from round N-1's policy for M fresh prompts (never labelled
   before), with the RL stage's sampling settings (``round_N/to_label.jsonl``);
2. has them labelled, rankings and 1-5 scores, by crs's simulated annotator or by you
   (``online.labeller: file``: you write ``round_N/labels/rankings.jsonl`` and ``scores.jsonl``);
3. continues training both reward models from round N-1's on the new labels plus a replayed
   sample of earlier ones (``round_N/rm_data/``, ``round_N/rm_preference``, ``rm_absolute``);
   each RM run recomputes its reward statistics, so the combined reward's z-scores follow;
4. continues RL from round N-1's policy (its LoRA adapter keeps training; KL stays measured
   against the SFT policy) on the refreshed reward models (``round_N/rl``).

Every step writes its result atomically, or is a crs run that resumes, and is skipped once
done: an interrupted loop continues at the step where it stopped. The fair baseline
(``online.baseline``) spends the same number of labels from the original distribution up
front, then runs RL once for the loop's total steps. The report (``results.json``,
``report.md``, ``online_rounds.png``) shows per round each RM's accuracy against the judge on
the current policy's replies and on the original held-out data, win rates against the
reference and round 0 with intervals, proxy reward and judge score, KL and labels spent;
``online_overoptimization.png`` overlays the rounds' proxy and judge curves against KL (PPO).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from crs.config import CRSConfig, EvalModelConfig, RewardSourceConfig, load_config
from crs.data import load_examples
from crs.data.schema import AbsoluteExample, DataError, PromptExample, RankingExample, last_user_text
from crs.demo.annotator import ANNOTATORS, likert, likert_to_unit, rank_replies
from crs.demo.gold import check_gold_applies
from crs.eval import length_control, win_rates
from crs.eval.overoptimization_figures import plot_overoptimization
from crs.eval.predict import load_generator, predict_models
from crs.eval.score import judge_replies, study_judge
from crs.io import iter_jsonl, read_jsonl, write_json_atomic, write_jsonl_atomic, write_text_atomic
from crs.models.decoding import SamplingSettings, generate_replies
from crs.rl.reward_sources import build_sources
from crs.rm.metrics import Pair, pair_agreement, ranking_pairs
from crs.rm.training_data import cap_replies
from crs.runs import RunError, is_finished, mark_finished
from crs.study.online_report import plot_rounds, render_online_report
from crs.study.stage_commands import run_logged, stage_command

logger = logging.getLogger(__name__)

RANKINGS_FILE, SCORES_FILE = "rankings.jsonl", "scores.jsonl"
RM_KINDS = ("preference", "absolute")


class WaitingForLabels(RunError):
    """The ``file`` labeller's labels are not there yet (the loop stops, saying what to write)."""


@dataclass(frozen=True)
class Loop:
    """Where the loop's pieces live and the subsets it runs."""

    cfg: CRSConfig
    run_dir: Path

    @property
    def online(self) -> Any:
        return self.cfg.online

    def round_dir(self, n: int) -> Path:
        return self.run_dir / f"round_{n}"

    def rl_run(self, n: int) -> Path:
        return self.round_dir(n) / "rl"

    def rm_run(self, n: int, kind: str) -> Path:
        """Round ``n``'s reward model of ``kind`` (``preference`` / ``absolute``); round 0's are the base subset's."""
        if n == 0:
            return Path(self.original_rm_paths()[kind])
        return self.round_dir(n) / f"rm_{kind}"

    def rms(self, n: int) -> dict[str, Path]:
        """Round ``n``'s reward models by kind."""
        return {kind: self.rm_run(n, kind) for kind in RM_KINDS}

    def original_rm_paths(self) -> dict[str, str]:
        base = load_config(self.online.base_subset, self.cfg.config_path)
        paths = {r.name: r.path for r in base.rl.rewards}
        wanted = {"preference": self.online.preference_source, "absolute": self.online.absolute_source}
        missing = [name for name in wanted.values() if name not in paths]
        if missing:
            raise RunError(
                f"online: {missing} not among the reward sources of {self.online.base_subset} "
                f"(its rl.rewards: {sorted(paths)})"
            )
        return {kind: paths[name] for kind, name in wanted.items()}


# --------------------------------------------------------------------------- prompts and replies


def fresh_prompts(loop: Loop) -> list[PromptExample]:
    """The base subset's RL prompts in a seeded order; round N takes chunk N-1 (M to label, then the probe's)."""
    base = load_config(loop.online.base_subset, loop.cfg.config_path)
    train, _ = load_examples(base.data, "prompts", base.run.seed)
    order = np.random.default_rng(loop.cfg.run.seed).permutation(len(train))
    return [train[i] for i in order]


def round_prompts(loop: Loop, n: int) -> tuple[list[PromptExample], list[PromptExample]]:
    """Round ``n``'s prompts to label and its probe prompts; none of them seen by an earlier round."""
    online = loop.online
    per_round = online.prompts_per_round + online.probe_prompts
    prompts = fresh_prompts(loop)
    needed = (online.rounds - 1) * per_round
    if len(prompts) < needed:
        raise RunError(
            f"online: {online.rounds - 1} rounds x ({online.prompts_per_round} + {online.probe_prompts} probe) "
            f"fresh prompts need {needed}, "
            f"the RL data has {len(prompts)}: lower online.rounds, online.prompts_per_round or online.probe_prompts"
        )
    chunk = prompts[(n - 1) * per_round : n * per_round]
    return chunk[: online.prompts_per_round], chunk[online.prompts_per_round :]


def sample_from_policy(loop: Loop, policy: Path, prompts: list[PromptExample], seed: int) -> list[dict[str, Any]]:
    """K sampled replies per prompt from ``policy`` on this process's accelerator, with the RL stage's sampling
    settings."""
    base = load_config(loop.online.base_subset, loop.cfg.config_path)
    rl = base.rl
    settings = SamplingSettings(
        rl.max_new_tokens, do_sample=True, temperature=rl.temperature, top_p=rl.top_p, top_k=rl.top_k
    )
    model, tokenizer = load_generator(str(policy), base)
    k = loop.online.replies_per_prompt
    repeated = [p.prompt for p in prompts for _ in range(k)]
    replies = generate_replies(
        model, tokenizer, repeated, settings, 32, base.data.max_prompt_length, seed=seed, desc="sampling replies"
    )
    return [
        {"prompt_id": p.id, "messages": p.prompt, "replies": [g.text for g in replies[i * k : (i + 1) * k]]}
        for i, p in enumerate(prompts)
    ]


# --------------------------------------------------------------------------- labels


def simulated_labels(
    rows: list[dict[str, Any]], noise: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rankings (best first) and 1-5 scores (as [0, 1]) from crs's annotator, as canonical rows."""
    rng = np.random.default_rng(seed)
    rankings, scores = [], []
    for row in rows:
        text = last_user_text(row["messages"])
        order = rank_replies(text, row["replies"], noise, rng)
        rankings.append(
            {"id": row["prompt_id"], "messages": row["messages"], "replies": [row["replies"][i] for i in order]}
        )
        for reply in row["replies"]:
            rater = ANNOTATORS[int(rng.integers(len(ANNOTATORS)))]
            scores.append(
                {
                    "id": row["prompt_id"],
                    "messages": row["messages"],
                    "reply": reply,
                    "score": likert_to_unit(likert(text, reply, rater, rng)),
                    "rater": rater.id,
                }
            )
    return rankings, scores


def check_label_files(label_dir: Path, asked: list[dict[str, Any]], data_cfg: Any) -> None:
    """Refuse label files that do not parse as canonical rankings / scores, or label prompts never asked
    (file and line)."""
    asked_prompts = {_prompt_key(row["messages"]) for row in asked}
    for name, kind in ((RANKINGS_FILE, "ranking"), (SCORES_FILE, "absolute")):
        path = label_dir / name
        # Parsed exactly as training will read it: a bad row stops here, naming file and line.
        load_examples(
            replace(
                data_cfg,
                source=str(path),
                adapter="canonical",
                val_fraction=0.0,
                val_source=None,
                val_split=None,
                train_source=None,
                max_examples=None,
            ),
            kind,
            0,
        )
        for line, row in iter_jsonl(path):
            messages = row.get("messages") or [{"role": "user", "content": row.get("prompt")}]
            if _prompt_key(messages) not in asked_prompts:
                raise DataError(
                    f"{path}:{line}: this prompt was not among the ones to label in "
                    f"{label_dir.parent / 'to_label.jsonl'}"
                )


def labels(loop: Loop, n: int, asked: list[dict[str, Any]]) -> Path:
    """Round ``n``'s label folder, written by the simulated annotator or checked when you wrote it."""
    label_dir = loop.round_dir(n) / "labels"
    paths = [label_dir / RANKINGS_FILE, label_dir / SCORES_FILE]
    online = loop.online
    if online.labeller == "simulated":
        if not all(p.is_file() for p in paths):
            rankings, scores = simulated_labels(asked, online.ranking_noise, loop.cfg.run.seed + 1000 * n)
            write_jsonl_atomic(paths[1], scores)
            write_jsonl_atomic(paths[0], rankings)
        return label_dir
    deadline = time.time() + 60 * online.label_wait_minutes
    while not all(p.is_file() for p in paths):
        if time.time() >= deadline:
            raise WaitingForLabels(
                f"online round {n}: waiting for labels of {loop.round_dir(n) / 'to_label.jsonl'}: write {paths[0]} "
                f"(rows {{messages, replies: [best, ..., worst]}}) and {paths[1]} "
                "(rows {messages, reply, score in [0, 1]}), "
                "then run the same command again with --resume"
            )
        time.sleep(10)
    base = load_config(online.preference_rm_subset, loop.cfg.config_path)
    check_label_files(label_dir, asked, base.data)
    return label_dir


# --------------------------------------------------------------------------- reward-model training data


def _canonical(example: RankingExample | AbsoluteExample) -> dict[str, Any]:
    if isinstance(example, RankingExample):
        return {"messages": example.prompt, "replies": list(example.replies)}
    return {"messages": example.prompt, "reply": example.reply, "score": example.score}


def original_training_examples(loop: Loop, kind: str) -> list[Any]:
    """The training side of the RM subset's own data (its held-out prompts stay out)."""
    subset = loop.online.preference_rm_subset if kind == "ranking" else loop.online.absolute_rm_subset
    rm_cfg = load_config(subset, loop.cfg.config_path)
    return load_examples(rm_cfg.data, kind, rm_cfg.run.seed)[0]


def replayed(pool: Sequence[Any], count: int, seed: int) -> list[Any]:
    """A seeded draw of ``count`` earlier examples (all of them when there are fewer)."""
    if count >= len(pool):
        return list(pool)
    return [pool[i] for i in sorted(np.random.default_rng(seed).choice(len(pool), size=count, replace=False))]


def rm_training_data(
    loop: Loop, out_dir: Path, new: dict[str, list[dict[str, Any]]], earlier: dict[str, list[dict[str, Any]]], seed: int
) -> dict[str, Path]:
    """New labels plus ``online.replay_ratio`` replayed earlier ones per new one, as canonical files."""
    paths = {}
    for kind, name in (("ranking", RANKINGS_FILE), ("absolute", SCORES_FILE)):
        path = out_dir / name
        if not path.is_file():
            count = round(loop.online.replay_ratio * len(new[kind]))
            write_jsonl_atomic(path, new[kind] + replayed(earlier[kind], count, seed))
        paths[kind] = path
    return paths


def earlier_labels(loop: Loop, n: int) -> dict[str, list[dict[str, Any]]]:
    """Every label the RMs of round ``n - 1`` could have seen: the original training data and rounds 1..n-1's labels."""
    pool = {kind: [_canonical(ex) for ex in original_training_examples(loop, kind)] for kind in ("ranking", "absolute")}
    for m in range(1, n):
        pool["ranking"] += read_jsonl(loop.round_dir(m) / "labels" / RANKINGS_FILE)
        pool["absolute"] += read_jsonl(loop.round_dir(m) / "labels" / SCORES_FILE)
    return pool


# --------------------------------------------------------------------------- running stages


def run_step(loop: Loop, command: list[str], name: str) -> None:
    """Run one crs stage in its own process, its output in ``logs/<name>.log``; a failure names the log."""
    log_path = loop.run_dir / "logs" / f"{name}.log"
    logger.info("online: %s (log: %s)", name, log_path)
    code = run_logged(command, log_path)
    if code != 0:
        raise RunError(
            f"online: {name} failed (exit {code}); see {log_path}; "
            "run the same command again to continue once it is fixed"
        )


def train_rm(loop: Loop, run_dir: Path, kind: str, start_from: Path, data: Path, name: str) -> None:
    """Continue training the reward model ``start_from`` on ``data`` into ``run_dir`` (a crs rm run)."""
    if is_finished(run_dir):
        return
    subset = loop.online.preference_rm_subset if kind == "preference" else loop.online.absolute_rm_subset
    overrides = {
        "model.name": str(start_from),  # its adapter merged in, a fresh one on top: training continues from it
        "data.train_source": str(data),
        "train.num_epochs": loop.online.rm_epochs,
        "train.max_steps": -1,
        "rm.init_bias_to_mean": False,  # the head is trained already
    }
    run_step(loop, stage_command("rm", loop.cfg.config_path, subset, run_dir, overrides), name)


def rewards_for(loop: Loop, rms: dict[str, Path]) -> list[dict[str, Any]]:
    """The base subset's reward sources, the preference and absolute ones pointing at ``rms[kind]``."""
    base = load_config(loop.online.base_subset, loop.cfg.config_path)
    paths = {loop.online.preference_source: rms["preference"], loop.online.absolute_source: rms["absolute"]}
    return [{**vars(r), "path": str(paths.get(r.name, r.path))} for r in base.rl.rewards]


def train_rl(
    loop: Loop,
    run_dir: Path,
    rms: dict[str, Path],
    rankings: Path | None,
    steps: int,
    seed: int,
    continue_from: Path | None,
    name: str,
) -> None:
    """One RL run of the base subset into ``run_dir`` (a crs rl run) on the reward models ``rms``,
    continuing ``continue_from``'s adapter if given. DPO optimises no reward: it trains on ``rankings`` instead."""
    if is_finished(run_dir):
        return
    overrides: dict[str, Any] = {"rl.steps": steps, "run.seed": seed}
    if load_config(loop.online.base_subset, loop.cfg.config_path).rl.algorithm == "dpo":
        if rankings is not None:
            overrides["data.train_source"] = str(rankings)
    else:
        overrides["rl.rewards"] = rewards_for(loop, rms)
    if continue_from is not None:
        overrides["rl.init_adapter"] = str(continue_from)
    run_step(loop, stage_command("rl", loop.cfg.config_path, loop.online.base_subset, run_dir, overrides), name)


# --------------------------------------------------------------------------- one round


def run_round(loop: Loop, n: int) -> None:
    """Round ``n``: RL on the original RMs (n = 0), else sample, label, refresh both RMs, continue RL."""
    seed = loop.cfg.run.seed + n
    if n == 0:
        train_rl(loop, loop.rl_run(0), loop.rms(0), None, loop.online.rl_steps, seed, None, "round_0_rl")
        return
    round_dir = loop.round_dir(n)
    to_label, probe = round_prompts(loop, n)
    asked_path, probe_path = round_dir / "to_label.jsonl", round_dir / "probe.jsonl"
    if not asked_path.is_file():
        write_jsonl_atomic(asked_path, sample_from_policy(loop, loop.rl_run(n - 1), to_label, seed))
    if probe and not probe_path.is_file():
        write_jsonl_atomic(probe_path, sample_from_policy(loop, loop.rl_run(n - 1), probe, seed + 500))
    label_dir = labels(loop, n, read_jsonl(asked_path))
    new = {"ranking": read_jsonl(label_dir / RANKINGS_FILE), "absolute": read_jsonl(label_dir / SCORES_FILE)}
    data = rm_training_data(loop, round_dir / "rm_data", new, earlier_labels(loop, n), seed)
    for kind, data_kind in (("preference", "ranking"), ("absolute", "absolute")):
        train_rm(loop, loop.rm_run(n, kind), kind, loop.rm_run(n - 1, kind), data[data_kind], f"round_{n}_rm_{kind}")
    train_rl(
        loop,
        loop.rl_run(n),
        loop.rms(n),
        data["ranking"],
        loop.online.rl_steps,
        seed,
        loop.rl_run(n - 1),
        f"round_{n}_rl",
    )


def run_baseline(loop: Loop) -> dict[str, int]:
    """The fair baseline: the loop's labels spent on the original distribution up front, then one RL run.

    Both RMs continue from round 0's on as many labels of ``online.baseline_split`` (a seeded
    draw: M x (rounds - 1) rankings of K replies, K times as many scores) as the loop spent,
    plus the same replay; RL starts from the SFT policy and runs the loop's total steps.
    """
    online = loop.online
    base_dir = loop.run_dir / "baseline"
    n_prompts, k = (online.rounds - 1) * online.prompts_per_round, online.replies_per_prompt
    new, seen = {}, {}
    for kind, subset, count in (
        ("ranking", online.preference_rm_subset, n_prompts),
        ("absolute", online.absolute_rm_subset, n_prompts * k),
    ):
        rm_cfg = load_config(subset, loop.cfg.config_path)
        split_cfg = replace(
            rm_cfg.data, split=online.baseline_split, val_fraction=0.0, train_source=None, max_examples=None
        )
        pool = replayed(load_examples(split_cfg, kind, rm_cfg.run.seed)[0], count, loop.cfg.run.seed)
        if kind == "ranking":  # K replies of each prompt, spread over its ranking like the RM's own training
            pool = [cap_replies(ex, k, rm_cfg.rm.reply_selection) for ex in pool]
        new[kind] = [_canonical(ex) for ex in pool]
        # A local file is one split: its "baseline split" is then the RMs' own training data.
        trained = {_prompt_key(ex.prompt) for ex in original_training_examples(loop, kind)}
        seen[kind] = sum(_prompt_key(ex.prompt) in trained for ex in pool)
        if seen[kind]:
            logger.warning(
                "online baseline: %d of its %d %s examples are on prompts round 0's RM already trained on "
                "(online.baseline_split=%r of %s): the baseline is not fair; "
                "give the RM subset a source with a split the RMs never saw",
                seen[kind],
                len(pool),
                kind,
                online.baseline_split,
                rm_cfg.data.source,
            )
    data = rm_training_data(loop, base_dir / "rm_data", new, earlier_labels(loop, 1), loop.cfg.run.seed)
    for kind, data_kind in (("preference", "ranking"), ("absolute", "absolute")):
        train_rm(loop, base_dir / f"rm_{kind}", kind, loop.rm_run(0, kind), data[data_kind], f"baseline_rm_{kind}")
    rms = {kind: base_dir / f"rm_{kind}" for kind in RM_KINDS}
    train_rl(
        loop,
        base_dir / "rl",
        rms,
        data["ranking"],
        online.rounds * online.rl_steps,
        loop.cfg.run.seed,
        None,
        "baseline_rl",
    )
    return {
        "rankings": len(new["ranking"]),
        "scores": len(new["absolute"]),
        "rankings_seen": seen["ranking"],
        "scores_seen": seen["absolute"],
    }


def _prompt_key(prompt: list[dict[str, str]]) -> str:
    """One string per distinct prompt (its messages, keys sorted)."""
    return json.dumps(prompt, sort_keys=True)


# --------------------------------------------------------------------------- measuring


def separated_pairs(pairs: list[Pair], judge: Any) -> list[Pair]:
    """The pairs whose two replies the judge scores differently (a tie says nothing about an RM's order)."""
    if not pairs:
        return []
    prompts = [p for p, _, _ in pairs]
    diff = judge.score(prompts, [a for _, a, _ in pairs]) - judge.score(prompts, [b for _, _, b in pairs])
    return [pair for pair, d in zip(pairs, diff.tolist()) if abs(d) > 1e-9]


def rm_accuracies(loop: Loop, judge: Any) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, int]]:
    """Pairwise accuracy against the judge of every round's RMs, on pairs the judge separates:
    the original held-out rankings' and each round's probe's; and the number of such pairs in each set."""
    rm_cfg = load_config(loop.online.preference_rm_subset, loop.cfg.config_path)
    held_out = separated_pairs(ranking_pairs(load_examples(rm_cfg.data, "ranking", rm_cfg.run.seed)[1]), judge)
    probes = {}
    for n in range(1, loop.online.rounds):
        path = loop.round_dir(n) / "probe.jsonl"
        if path.is_file():
            probes[n] = separated_pairs(
                ranking_pairs([RankingExample(r["messages"], r["replies"], None, {}) for r in read_jsonl(path)]), judge
            )
    out: dict[str, dict[str, dict[str, float]]] = {}
    for kind in RM_KINDS:
        for n in range(loop.online.rounds):
            rm = build_sources([RewardSourceConfig(name=kind, path=str(loop.rm_run(n, kind)))], rm_cfg.model)[0]
            entry = {"held_out": pair_agreement(rm.score, judge.score, held_out)} if held_out else {}
            # This round's RM on the replies of the policy it will train (round n + 1's probe),
            # and on the replies of the policy it was refreshed on (round n's probe).
            for label, m in (("next_policy", n + 1), ("own_policy", n)):
                if probes.get(m):
                    entry[label] = pair_agreement(rm.score, judge.score, probes[m])
            out.setdefault(kind, {})[str(n)] = entry
    return out, {"held_out": len(held_out), **{f"round {n} probe": len(pairs) for n, pairs in probes.items()}}


def rl_summary(run_dir: Path) -> dict[str, float | None]:
    """Proxy reward and KL over the last quarter of an RL run's steps (``metrics.jsonl``)."""
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl", torn_tail_ok=True) if r.get("reward/combined") is not None]
    if not rows:
        return {"proxy": None, "kl": None, "steps": 0}
    tail = rows[-max(1, len(rows) // 4) :]

    def mean(key: str) -> float | None:
        values = [r[key] for r in tail if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    return {"proxy": mean("reward/combined"), "kl": mean("kl/sequence"), "steps": int(rows[-1].get("step", len(rows)))}


def loop_results(
    loop: Loop,
    scores: dict[str, np.ndarray],
    lengths: dict[str, list[int]],
    accuracies: tuple[dict[str, Any], dict[str, int]],
    baseline_labels: dict[str, int] | None,
) -> dict[str, Any]:
    """Every number of the report, per round."""
    online, reference = loop.online, loop.online.reference.name
    n_boot, seed = online.n_boot, loop.cfg.run.seed
    rounds = []
    for n in range(online.rounds):
        name = f"round_{n}"
        row: dict[str, Any] = {
            "round": n,
            "win_rate_vs_reference": asdict_win(
                win_rates.win_rate(scores[name], scores[reference], n_boot=n_boot, seed=seed)
            ),
            **length_entries(
                win_rates.pairwise_outcomes(scores[name], scores[reference]),
                lengths[name],
                lengths[reference],
                n_boot,
                seed,
            ),
            "judge_mean": float(np.mean(scores[name])),
            "mean_length": float(np.mean(lengths[name])),
            "labels": {
                "rankings": n * online.prompts_per_round,
                "scores": n * online.prompts_per_round * online.replies_per_prompt,
            },
            **rl_summary(loop.rl_run(n)),
        }
        if n > 0:
            row["win_rate_vs_round_0"] = asdict_win(
                win_rates.win_rate(scores[name], scores["round_0"], n_boot=n_boot, seed=seed)
            )
        rounds.append(row)
    results: dict[str, Any] = {
        "reference": reference,
        "judge": online.judge,
        "rounds": rounds,
        "rm_accuracy": accuracies[0],
        "rm_pairs": accuracies[1],
        "reference_judge_mean": float(np.mean(scores[reference])),
        "n_prompts": int(len(scores[reference])),
        "settings": {
            k: getattr(online, k)
            for k in (
                "rounds",
                "rl_steps",
                "prompts_per_round",
                "replies_per_prompt",
                "probe_prompts",
                "labeller",
                "rm_epochs",
                "replay_ratio",
            )
        },
    }
    if baseline_labels is not None and "baseline" in scores:
        last = f"round_{online.rounds - 1}"
        results["baseline"] = {
            "labels": baseline_labels,
            "win_rate_vs_reference": asdict_win(
                win_rates.win_rate(scores["baseline"], scores[reference], n_boot=n_boot, seed=seed)
            ),
            "judge_mean": float(np.mean(scores["baseline"])),
            "mean_length": float(np.mean(lengths["baseline"])),
            "last_round_vs_baseline": asdict_win(
                win_rates.win_rate(scores[last], scores["baseline"], n_boot=n_boot, seed=seed)
            ),
            **rl_summary(loop.run_dir / "baseline" / "rl"),
        }
    return results


def length_entries(
    outcomes: list[float], lengths: list[int], reference_lengths: list[int], n_boot: int, seed: int
) -> dict[str, Any]:
    """A round's length numbers against the reference: ``lc_win_rate_vs_reference`` (the
    length-controlled rate), ``lc_separation`` (:func:`length_control.length_separation`: is
    that LC reliable, and why not) and ``length_matched_vs_reference``
    (:func:`length_control.length_matched_win_rate`)."""
    return {
        "lc_win_rate_vs_reference": length_control.length_controlled_win_rate(
            outcomes, lengths, reference_lengths, n_boot=1
        ).win_rate,
        "lc_separation": length_control.length_separation(outcomes, lengths, reference_lengths).as_dict(),
        "length_matched_vs_reference": length_control.length_matched_win_rate(
            outcomes, lengths, reference_lengths, n_boot=n_boot, seed=seed
        ).as_dict(),
    }


def asdict_win(result: win_rates.WinRate) -> dict[str, float]:
    """A win rate's point and 95% interval."""
    return {"mean": result.win_rate, "ci_low": result.ci_low, "ci_high": result.ci_high, "n": result.n_total}


# --------------------------------------------------------------------------- the stage


def run_online(cfg: CRSConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Every round of ``cfg.online``, the fair baseline, then the report; finished steps are skipped."""
    started = time.time()
    loop = Loop(cfg, Path(run_dir))
    online = cfg.online
    judged = [last_user_text(p.prompt) for p in fresh_prompts(loop)]  # labelled and probe prompts are drawn from these
    judge_path = study_judge(cfg, "online.judge", online.judge, online.eval_subset, [], judged)
    if online.labeller == "simulated":
        check_gold_applies(
            judged,
            "online.labeller simulated (the demo's annotator)",
            cfg.run.allow_gold_outside_demo,
            "Label them yourself (online.labeller: file)",
        )
    if online.rounds > 1:
        round_prompts(loop, 1)  # enough fresh prompts for every round, before anything trains
    for n in range(online.rounds):
        run_round(loop, n)
    baseline_labels = run_baseline(loop) if online.baseline and online.rounds > 1 else None
    models = [online.reference] + [EvalModelConfig(f"round_{n}", str(loop.rl_run(n))) for n in range(online.rounds)]
    if baseline_labels is not None:
        models.append(EvalModelConfig("baseline", str(loop.run_dir / "baseline" / "rl")))
    per_model = predict_models(cfg.config_path, online.eval_subset, cfg.run.seed, models, loop.run_dir / "eval_pred")
    judge = build_sources([RewardSourceConfig(name="judge", path=judge_path)], cfg.model)[0]
    scores = judge_replies(judge, per_model)
    lengths = {m: [len(r["output"]) for r in rows] for m, rows in per_model.items()}
    results = loop_results(loop, scores, lengths, rm_accuracies(loop, judge), baseline_labels)
    results["judge"] = judge_path  # what auto resolved to
    results["wall_time_s"] = time.time() - started
    write_json_atomic(loop.run_dir / "results.json", results)
    report = render_online_report(results)
    write_text_atomic(loop.run_dir / "report.md", report)
    plot_rounds(results, loop.run_dir / "online_rounds.png")
    # Within each round, proxy and judge on held-out prompts against KL (PPO's over-optimisation log).
    curves = {f"round_{n}": loop.rl_run(n) / "overoptimization.jsonl" for n in range(online.rounds)}
    curves = {name: read_jsonl(path, torn_tail_ok=True) for name, path in curves.items() if path.is_file()}
    if curves:
        plot_overoptimization(curves, loop.run_dir / "online_overoptimization.png")
    print(report)
    mark_finished(
        loop.run_dir, {"rounds": online.rounds, "last_round_win_rate": results["rounds"][-1]["win_rate_vs_reference"]}
    )
    return results
