"""Tests of the template-generated demo prompt set and its splits (crs/demo/prompt_set.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from crs.demo.prompt_set import DEFAULT_SPLIT_SIZES, DemoPrompt, assign_splits, build_prompts
from crs.demo.prompt_specs import CATEGORIES, infer_spec


@pytest.fixture(scope="module")
def prompts() -> list[DemoPrompt]:
    return build_prompts(seed=0)


def test_many_distinct_prompts_in_every_category(prompts: list[DemoPrompt]) -> None:
    texts = [p.text for p in prompts]
    assert len(set(texts)) == len(texts) >= 1000
    assert len({p.id for p in prompts}) == len(prompts)
    counts = Counter(p.category for p in prompts)
    assert set(counts) == set(CATEGORIES) and len(counts) >= 8
    assert min(counts.values()) >= 80
    assert len({p.topic for p in prompts}) >= 30
    assert all(p.id.startswith(p.category + "-") and p.id[-4:].isdigit() for p in prompts)


def test_infer_spec_recovers_every_generated_spec(prompts: list[DemoPrompt]) -> None:
    mismatches = [(p.id, p.spec, infer_spec(p.text)) for p in prompts if infer_spec(p.text) != p.spec]
    assert mismatches == []
    assert all(p.spec["category"] == p.category for p in prompts)


def test_specs_hold_what_the_prompt_asks_for(prompts: list[DemoPrompt]) -> None:
    for p in prompts:
        if p.category == "list":
            assert 2 <= p.spec["n_items"] <= 5
        if p.category == "arithmetic":
            assert isinstance(p.spec["answer"], int) and p.spec["answer"] >= 0
        if p.category == "summarize":
            assert p.spec["one_sentence"] is True and len(p.spec["key_terms"]) >= 5
        if p.category == "yes_no":
            assert p.spec["yes_no"] is True
        if p.category not in ("arithmetic",):
            assert p.spec["key_terms"], p.text
    # Both number styles and both one-sentence/briefly define variants are generated.
    list_texts = [p.text for p in prompts if p.category == "list"]
    assert any(t.split()[1].isdigit() for t in list_texts) and any(t.split()[1].isalpha() for t in list_texts)
    define_specs = [p.spec for p in prompts if p.category == "define"]
    assert {bool(s.get("one_sentence")) for s in define_specs} == {True, False}


def test_to_example_is_a_single_user_turn(prompts: list[DemoPrompt]) -> None:
    ex = prompts[0].to_example()
    assert ex.id == prompts[0].id
    assert ex.prompt == [{"role": "user", "content": prompts[0].text}]
    assert ex.meta["spec"] == prompts[0].spec and ex.meta["category"] == prompts[0].category


def test_build_prompts_is_deterministic_per_seed(prompts: list[DemoPrompt]) -> None:
    assert build_prompts(seed=0) == prompts
    other = build_prompts(seed=1)
    assert [p.text for p in other] != [p.text for p in prompts]
    assert len(other) == len(prompts)


def test_default_splits_are_disjoint_and_stratified(prompts: list[DemoPrompt]) -> None:
    splits = assign_splits(prompts, seed=0)
    assert list(splits) == list(DEFAULT_SPLIT_SIZES)
    assert {name: len(ps) for name, ps in splits.items()} == DEFAULT_SPLIT_SIZES
    assert len(splits["eval"]) == 100
    assert len(splits["rm"]) == max(len(ps) for ps in splits.values())
    ids = [p.id for ps in splits.values() for p in ps]
    assert len(ids) == len(set(ids))
    texts = [p.text for ps in splits.values() for p in ps]
    assert len(texts) == len(set(texts))
    share = Counter(p.category for p in prompts)
    for name, ps in splits.items():
        counts = Counter(p.category for p in ps)
        for category in CATEGORIES:
            expected = len(ps) * share[category] / len(prompts)
            assert abs(counts[category] - expected) <= 2, (name, category, counts[category], expected)


def test_splits_are_reproducible_and_eval_is_stable(prompts: list[DemoPrompt]) -> None:
    a = assign_splits(prompts, seed=3)
    b = assign_splits(list(reversed(prompts)), seed=3)  # input order does not matter
    assert {k: [p.id for p in v] for k, v in a.items()} == {k: [p.id for p in v] for k, v in b.items()}
    c = assign_splits(prompts, seed=4)
    assert [p.id for p in c["eval"]] != [p.id for p in a["eval"]]
    smaller = assign_splits(prompts, sizes={"sft": 100, "rm": 200, "rl": 50, "eval": 100}, seed=3)
    assert [p.id for p in smaller["eval"]] == [p.id for p in a["eval"]]
    assert sum(len(v) for v in smaller.values()) == 450


def test_assign_splits_rejects_impossible_sizes(prompts: list[DemoPrompt]) -> None:
    with pytest.raises(ValueError, match="add up"):
        assign_splits(prompts, sizes={"sft": 1000, "eval": 100})
    with pytest.raises(ValueError, match="non-negative"):
        assign_splits(prompts, sizes={"sft": -1, "eval": 100})
