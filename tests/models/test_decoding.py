"""The one decoding loop: greedy equals transformers' generate; sampling respects top-k/top-p."""

from __future__ import annotations

import torch

from crs.data.schema import user_prompt
from crs.models.decoding import SamplingSettings, generate_replies, pick_tokens
from crs.models.formatting import encode_prompt, pad_batch


def test_greedy_matches_transformers_generate(tiny_lm, smol_tokenizer) -> None:
    prompts = [user_prompt("Hi"), user_prompt("Tell me a long story about cats and dogs, please.")]
    ours = generate_replies(tiny_lm, smol_tokenizer, prompts, SamplingSettings(max_new_tokens=10), desc=None)
    ids, mask = pad_batch([encode_prompt(smol_tokenizer, p) for p in prompts], smol_tokenizer.pad_token_id, side="left")
    reference = tiny_lm.generate(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        max_new_tokens=10,
        do_sample=False,
        pad_token_id=smol_tokenizer.pad_token_id,
        eos_token_id=smol_tokenizer.eos_token_id,
    )
    for row, generation in enumerate(ours):
        expected = reference[row, len(ids[0]) :].tolist()
        if smol_tokenizer.eos_token_id in expected:
            expected = expected[: expected.index(smol_tokenizer.eos_token_id)]
        assert generation.token_ids == expected


def test_sampling_draws_from_the_filtered_distribution() -> None:
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(20000, 1)
    top2 = pick_tokens(logits, SamplingSettings(do_sample=True, top_k=2))
    assert set(top2.tolist()) == {0, 1}
    share = (top2 == 0).float().mean().item()
    assert abs(share - 0.5 / 0.8) < 0.02  # renormalised over the top 2
    nucleus = pick_tokens(logits, SamplingSettings(do_sample=True, top_k=0, top_p=0.7))
    assert set(nucleus.tolist()) == {0, 1}  # 0.5 < 0.7, so token 1 stays; 0.8 >= 0.7 drops the rest
    full = pick_tokens(logits, SamplingSettings(do_sample=True, top_k=0))
    assert abs((full == 3).float().mean().item() - 0.05) < 0.01
    greedy = pick_tokens(logits[:3], SamplingSettings(do_sample=False))
    assert greedy.tolist() == [0, 0, 0]


def test_results_keep_input_order_and_flag_eos(tiny_lm, smol_tokenizer) -> None:
    prompts = [user_prompt("a " * n) for n in (9, 1, 5)]
    settings = SamplingSettings(max_new_tokens=5, do_sample=True)
    batched = generate_replies(tiny_lm, smol_tokenizer, prompts, settings, batch_size=2, seed=3, desc=None)
    assert len(batched) == 3 and all(len(g.token_ids) <= 5 for g in batched)
    # A reply shorter than the budget must have stopped at EOS (which is cut from the text).
    assert all(g.ended_with_eos or len(g.token_ids) == 5 for g in batched)
    assert all(smol_tokenizer.eos_token_id not in g.token_ids for g in batched)
    again = generate_replies(tiny_lm, smol_tokenizer, prompts, settings, batch_size=2, seed=3, desc=None)
    assert [g.text for g in again] == [g.text for g in batched]  # seeded


def test_shards_split_the_batches_and_sample_what_one_process_samples(tiny_lm, left_tokenizer) -> None:
    from crs.models.decoding import generate_reply_shard

    prompts = [user_prompt("word " * (i % 5) + f"question {i}") for i in range(7)]
    sampling = SamplingSettings(max_new_tokens=6, do_sample=True, temperature=1.0)
    whole = generate_replies(tiny_lm, left_tokenizer, prompts, sampling, batch_size=2, seed=3, desc=None)
    shards = [
        generate_reply_shard(tiny_lm, left_tokenizer, prompts, sampling, 2, seed=3, desc=None, shard=(rank, 3))
        for rank in range(3)
    ]
    assert sorted(i for shard in shards for i in shard) == list(range(7))  # each prompt answered by exactly one process
    assert [len(s) for s in shards] == [3, 2, 2]  # batches of 2, 2, 2, 1 dealt round: the first and the last to rank 0
    merged = {i: g for shard in shards for i, g in shard.items()}
    assert [merged[i].token_ids for i in range(7)] == [g.token_ids for g in whole]  # seeded per batch: the same samples
    again = generate_replies(tiny_lm, left_tokenizer, prompts, sampling, batch_size=2, seed=4, desc=None)
    assert [g.token_ids for g in again] != [g.token_ids for g in whole]  # and the seed matters
