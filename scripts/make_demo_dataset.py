"""Regenerate the embedded demo dataset (crs/demo/data/crs_demo.jsonl.gz) from its seeds.

    python scripts/make_demo_dataset.py            # slow on CPU: docs/demo_dataset.md gives the time

1. Prompts come from templates (crs/demo/prompt_set.py), split by prompt into sft/rm/rl/eval.
2. Each prompt gets REPLIES_PER_PROMPT replies from the embedded SmolLM2, each with a
   decoding "style" (system prompt, temperature, length budget) drawn per prompt, so
   quality truly varies: short, long, rambling, truncated, off-topic.
3. The simulated annotator (crs/demo/annotator.py) ranks each prompt's replies (noisy
   Plackett-Luce) and one annotator of its panel gives each reply a Likert score.

Every random choice is seeded, and each generation batch re-seeds torch from its own
index, so the file is reproduced exactly on the same software and machine kind.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from crs.data.schema import user_prompt
from crs.demo import annotator
from crs.demo.dataset import demo_dataset_path
from crs.demo.prompt_set import assign_splits, build_prompts
from crs.models.decoding import SamplingSettings, generate_replies
from crs.models.loading import load_causal_lm, load_tokenizer

SEED = 1234
REPLIES_PER_PROMPT = 4
RANKING_NOISE = 0.05
PROMPTS_PER_CATEGORY = 100  # x 9 categories = 900 prompts
SPLIT_SIZES = {"eval": 100, "sft": 200, "rm": 450, "rl": 150}
MODEL = "embedded:smollm2-135m-instruct"

# Decoding styles: (system prompt or None for the model's default, temperature, max_new_tokens).
STYLES: dict[str, tuple[str | None, float, int]] = {
    "plain": (None, 0.7, 80),
    "concise": ("You are a helpful assistant. Answer briefly and directly.", 0.7, 56),
    "detailed": ("You are a helpful assistant. Give a thorough, detailed answer.", 0.8, 96),
    "hot": (None, 1.4, 64),  # high temperature: drifts, rambles
    "cut": (None, 0.8, 20),  # tiny budget: often cut off mid-sentence
    "offtopic": ("You love talking about {other}. Always steer the answer towards {other}.", 0.9, 64),
}


def plan_replies(prompts: list, rng: np.random.Generator) -> list[tuple[int, str, str | None]]:
    """(prompt index, style, system prompt) for every reply to generate."""
    topics = sorted({p.topic for p in prompts})
    plan = []
    for i, prompt in enumerate(prompts):
        styles = rng.choice(list(STYLES), size=REPLIES_PER_PROMPT, replace=False)
        for style in styles:
            system = STYLES[style][0]
            if system and "{other}" in system:
                other = rng.choice([t for t in topics if t != prompt.topic])
                system = system.format(other=other)
            plan.append((i, str(style), system))
    return plan


def generate_all(prompts: list, plan: list, batch_size: int) -> list[dict]:
    """Generate every planned reply, grouped by style so a batch shares its settings."""
    tokenizer = load_tokenizer(MODEL, padding_side="left")
    model = load_causal_lm(MODEL, dtype=torch.bfloat16)
    replies: list[dict | None] = [None] * len(plan)
    for style_index, style in enumerate(STYLES):
        _, temperature, max_new = STYLES[style]
        jobs = [j for j, (_, s, _) in enumerate(plan) if s == style]
        # Temperature sampling among the 50 likeliest tokens (as the shipped data was made);
        # top-p would sort the 49k-token vocabulary at every step.
        settings = SamplingSettings(max_new_tokens=max_new, do_sample=True, temperature=temperature, top_k=50)
        for batch_index, start in enumerate(range(0, len(jobs), batch_size)):
            chunk = jobs[start : start + batch_size]
            messages = [user_prompt(prompts[plan[j][0]].text, system=plan[j][2]) for j in chunk]
            outputs = generate_replies(
                model,
                tokenizer,
                messages,
                settings,
                batch_size=batch_size,
                seed=SEED + 1000 * style_index + batch_index,
                desc=None,
            )
            for j, out in zip(chunk, outputs):
                replies[j] = {
                    "text": out.text,
                    "gen": {
                        "style": style,
                        "temperature": temperature,
                        "max_new_tokens": max_new,
                        "system": plan[j][2],
                        "ended_with_eos": out.ended_with_eos,
                    },
                }
            done = sum(r is not None for r in replies)
            print(f"  {style:9s} {done:5d}/{len(plan)} replies", flush=True)
    return [r for r in replies if r is not None]


def label(prompts: list, plan: list, replies: list[dict], splits: dict, rng: np.random.Generator) -> list[dict]:
    """Attach ranks, Likert scores and the gold utility; build one tree row per prompt."""
    split_of = {p.id: name for name, members in splits.items() for p in members}
    by_prompt: dict[int, list[dict]] = {}
    for (i, _, _), reply in zip(plan, replies):
        by_prompt.setdefault(i, []).append(reply)
    rows = []
    for i, prompt in enumerate(prompts):
        siblings = by_prompt[i]
        texts = [r["text"] for r in siblings]
        order = annotator.rank_replies(prompt.text, texts, noise=RANKING_NOISE, rng=rng)
        for rank, k in enumerate(order):
            siblings[k]["rank"] = rank
        for reply in siblings:
            rater = annotator.ANNOTATORS[int(rng.integers(len(annotator.ANNOTATORS)))]
            likert = annotator.likert(prompt.text, reply["text"], rater, rng)
            reply.update(
                likert=int(likert),
                score=float(annotator.likert_to_unit(likert)),
                annotator=rater.id,
                gold_utility=round(float(annotator.utility(prompt.text, reply["text"])), 6),
            )
        siblings.sort(key=lambda r: r["rank"])
        rows.append(
            {
                "prompt_id": prompt.id,
                "split": split_of[prompt.id],
                "category": prompt.category,
                "topic": prompt.topic,
                "prompt": prompt.text,
                "spec": prompt.spec,
                "replies": [
                    {k: r[k] for k in ("text", "rank", "likert", "score", "annotator", "gold_utility", "gen")}
                    for r in siblings
                ],
            }
        )
    return rows


def main() -> None:
    """Build, label and write the dataset."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(demo_dataset_path()))
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts (a quick trial)")
    parser.add_argument("--datasheet_only", action="store_true", help="rewrite DATASHEET.md from an existing file")
    args = parser.parse_args()
    if args.datasheet_only:
        with gzip.open(args.out, "rt", encoding="utf-8") as handle:
            write_datasheet([json.loads(line) for line in handle], Path(args.out))
        return
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    started = time.time()
    prompts = build_prompts(seed=SEED, per_category=PROMPTS_PER_CATEGORY)
    splits = assign_splits(prompts, sizes=SPLIT_SIZES, seed=SEED)
    if args.limit:
        prompts = prompts[: args.limit]
    rng = np.random.default_rng(SEED)
    plan = plan_replies(prompts, rng)
    print(f"{len(prompts)} prompts, {len(plan)} replies to generate", flush=True)
    replies = generate_all(prompts, plan, args.batch_size)
    rows = label(prompts, plan, replies, splits, rng)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    # mtime=0 keeps the gzip header, and so the file's bytes, reproducible.
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as handle:
        for row in rows:
            handle.write((json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
    tmp.replace(out)
    counts = Counter(r["split"] for r in rows)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {dict(counts)} in {time.time() - started:.0f} s")
    write_datasheet(rows, out)


def write_datasheet(rows: list[dict], data_file: Path) -> None:
    """DATASHEET.md beside the data file: how it was made, fields, label statistics."""
    datasheet = data_file.parent / "DATASHEET.md"
    datasheet.write_text(
        DATASHEET.format(
            statistics=statistics_markdown(rows),
            seed=SEED,
            noise=RANKING_NOISE,
            styles=styles_markdown(),
            size_mb=data_file.stat().st_size / 1e6,
        )
    )
    print(f"wrote {datasheet}")


def statistics_markdown(rows: list[dict]) -> str:
    """Label statistics of the dataset as Markdown tables (for the datasheet)."""
    replies = [r for row in rows for r in row["replies"]]
    lines = ["| split | prompts | replies |", "|---|---|---|"]
    for split in ("sft", "rm", "rl", "eval"):
        members = [row for row in rows if row["split"] == split]
        lines.append(f"| {split} | {len(members)} | {sum(len(m['replies']) for m in members)} |")
    lines += ["", "| category | prompts | mean gold utility |", "|---|---|---|"]
    for category in sorted({row["category"] for row in rows}):
        members = [r for row in rows if row["category"] == category for r in row["replies"]]
        lines.append(
            f"| {category} | {sum(row['category'] == category for row in rows)} | "
            f"{np.mean([r['gold_utility'] for r in members]):.3f} |"
        )
    words = [len(r["text"].split()) for r in replies]
    utilities = np.array([r["gold_utility"] for r in replies])
    spread = [np.std([r["gold_utility"] for r in row["replies"]]) for row in rows]
    agree, total = 0, 0
    for row in rows:  # pairs the noisy ranking orders the same way as the gold utility
        for i, a in enumerate(row["replies"]):
            for b in row["replies"][i + 1 :]:
                if a["gold_utility"] != b["gold_utility"]:
                    total += 1
                    agree += a["gold_utility"] > b["gold_utility"]  # a is ranked above b
    likert = Counter(r["likert"] for r in replies)
    lines += [
        "",
        f"- replies: {len(replies)}; words per reply: mean {np.mean(words):.1f}, median {np.median(words):.0f}; "
        f"ended with EOS: {np.mean([r['gen']['ended_with_eos'] for r in replies]):.1%}",
        f"- gold utility: mean {utilities.mean():.3f}, std {utilities.std():.3f}; "
        f"mean within-prompt std {np.mean(spread):.3f}",
        f"- rankings agree with the gold utility on {agree / max(total, 1):.1%} of reply pairs (noise {RANKING_NOISE})",
        "- Likert scores: " + ", ".join(f"{k}: {likert[k]}" for k in range(1, 6)),
        "- mean Likert per annotator: "
        + ", ".join(
            f"{a}: {np.mean([r['likert'] for r in replies if r['annotator'] == a]):.2f}"
            for a in sorted({r["annotator"] for r in replies})
        ),
    ]
    return "\n".join(lines)


def styles_markdown() -> str:
    """The decoding styles as a Markdown table."""
    rows = ["| style | system prompt | temperature | max new tokens |", "|---|---|---|---|"]
    rows += [f"| {name} | {system or '(model default)'} | {t} | {n} |" for name, (system, t, n) in STYLES.items()]
    return "\n".join(rows)


DATASHEET = """# Datasheet: the crs demo dataset (`crs_demo.jsonl.gz`)

Written by `scripts/make_demo_dataset.py` (seed {seed}); do not edit by hand.

## What it is
A small RLHF benchmark with a known ground truth, made entirely by this project: prompts
written from templates (`crs/demo/prompt_set.py`), replies generated by the embedded
SmolLM2-135M-Instruct, labels from a simulated annotator (`crs/demo/annotator.py`). It is the
default data of every crs stage and, through the annotator's noise-free utility, the judge
of the demo's evaluation. No text comes from a public dataset.

## How it was made
1. Prompts: 9 instruction types (explain, list N tips, define, compare, summarize in one
   sentence, arithmetic, rewrite politely, yes/no with a reason, advice) x everyday topics,
   split by prompt into `sft`, `rm`, `rl` and `eval` (100 prompts), stratified by type.
2. Replies: 4 per prompt, each with a decoding style drawn per prompt without repetition,
   so quality truly varies (top-k 50 sampling, bf16, batches of 150, seeded per batch):

{styles}

3. Labels: the replies of a prompt are ranked by the annotator's utility plus Gumbel noise
   (Plackett-Luce, noise {noise}), like OpenAssistant's ranked sibling replies; each reply
   also gets a 1-5 Likert score from one of five simulated annotators with different
   leniency and noise (`likert`, and `score` = (likert - 1) / 4), so absolute labels are
   miscalibrated across annotators as human ratings are.

## Fields (one JSON object per line, one line per prompt)
- `prompt_id`, `split` (sft | rm | rl | eval), `category`, `topic`, `prompt` (text),
  `spec` (what a good reply must do: list size, one sentence, the right number, ...)
- `replies`: best first, each with `text`, `rank` (0 = best of its siblings, noisy),
  `likert` (1-5), `score` (likert in [0, 1]), `annotator`, `gold_utility` (the noise-free
  utility; for analysis and judging only: the data views never pass it to a model), and
  `gen` (style, system prompt, temperature, max_new_tokens, ended_with_eos).

## Statistics ({size_mb:.2f} MB compressed)

{statistics}

## Views
`crs.data.load_examples` derives from this one file: SFT pairs (the rank-0 reply),
rankings (replies by rank, for the pairwise RM), absolute rows (reply, score), and prompts
(for RL and evaluation), selected by `data.split`.
"""


if __name__ == "__main__":
    main()
