"""Regenerate the embedded demo dataset (crs/demo_data/crs_demo.jsonl.gz) from its seeds.

    python scripts/make_demo_dataset.py            # ~20-30 min on a 2-core CPU

1. Prompts come from templates (crs/demo_prompts.py), split by prompt into sft/rm/rl/eval.
2. Each prompt gets REPLIES_PER_PROMPT replies from the embedded SmolLM2, each with a
   decoding "style" (system prompt, temperature, length budget) drawn per prompt, so
   quality truly varies: short, long, rambling, truncated, off-topic.
3. The simulated annotator (crs/annotator.py) ranks each prompt's replies (noisy
   Plackett-Luce) and one annotator of its panel gives each reply a Likert score.

Every random choice is seeded, and each generation batch re-seeds torch from its own
index, so the file is reproduced exactly on the same software and machine kind.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crs import annotator  # noqa: E402
from crs.data import demo_dataset_path  # noqa: E402
from crs.data.schema import user_prompt  # noqa: E402
from crs.demo_prompts import assign_splits, build_prompts  # noqa: E402
from crs.generation import GenerationSettings, generate_replies  # noqa: E402
from crs.models import load_causal_lm, load_tokenizer  # noqa: E402

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
        # Plain temperature sampling: top-p would sort the 49k-token vocabulary at every step.
        settings = GenerationSettings(max_new_tokens=max_new, do_sample=True, temperature=temperature)
        for batch_index, start in enumerate(range(0, len(jobs), batch_size)):
            chunk = jobs[start : start + batch_size]
            messages = [user_prompt(prompts[plan[j][0]].text, system=plan[j][2]) for j in chunk]
            outputs = generate_replies(
                model, tokenizer, messages, settings, batch_size=batch_size,
                seed=SEED + 1000 * style_index + batch_index, desc=None,
            )
            for j, out in zip(chunk, outputs):
                replies[j] = {
                    "text": out.text,
                    "gen": {"style": style, "temperature": temperature, "max_new_tokens": max_new,
                            "system": plan[j][2], "ended_with_eos": out.ended_with_eos},
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
        rows.append({
            "prompt_id": prompt.id, "split": split_of[prompt.id], "category": prompt.category,
            "topic": prompt.topic, "prompt": prompt.text, "spec": prompt.spec,
            "replies": [{k: r[k] for k in ("text", "rank", "likert", "score", "annotator", "gold_utility", "gen")} for r in siblings],
        })
    return rows


def main() -> None:
    """Build, label and write the dataset."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(demo_dataset_path()))
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts (a quick trial)")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
