"""Tests of reading a demo prompt's spec from its wording (crs/demo/prompt_specs.py)."""

from __future__ import annotations

import pytest

from crs.demo.prompt_specs import infer_spec, key_terms, stem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("List 3 tips for sleeping better.", {"category": "list", "n_items": 3}),
        ("Give four tips for saving money.", {"category": "list", "n_items": 4}),
        ("What is 17 + 25?", {"category": "arithmetic", "answer": 42}),
        ("What is 9 times 7?", {"category": "arithmetic", "answer": 63}),
        ("What is 50 minus 8?", {"category": "arithmetic", "answer": 42}),
        ("Tom has 12 apples and buys 7 more. How many apples does Tom have now?", {"answer": 19}),
        ("Sara had 20 stamps and gave away 8. How many stamps are left?", {"answer": 12}),
        ("A box holds 6 eggs. How many eggs are in 4 boxes?", {"answer": 24}),
        ("Define yeast in one sentence.", {"category": "define", "one_sentence": True}),
        ("Compare tea and coffee.", {"category": "compare", "compare": ["tea", "coffee"]}),
        (
            "Should I skip breakfast? Answer yes or no and give one reason.",
            {"category": "yes_no", "yes_no": True},
        ),
        ("Rewrite this more politely: 'Stop touching my pillow.'", {"category": "rewrite_polite"}),
    ],
)
def test_infer_spec_on_hand_written_text(text: str, expected: dict) -> None:
    spec = infer_spec(text)
    assert {k: spec.get(k) for k in expected} == expected


def test_infer_spec_falls_back_to_open_prompts() -> None:
    spec = infer_spec("Tell me something   interesting about volcanoes in one sentence.")
    assert spec["category"] == "open"
    assert spec["one_sentence"] is True
    assert spec["key_terms"] == ["tell", "interesting", "volcanoes"]
    # Whitespace differences do not change the spec.
    assert infer_spec("List 3 tips\nfor  sleeping better.") == infer_spec("List 3 tips for sleeping better.")


def test_key_terms_drop_function_and_instruction_words() -> None:
    assert key_terms("List 3 tips for sleeping better.") == ["sleeping"]
    assert key_terms("Compare dogs and a dog.") == ["dogs"]  # one entry per stem
    assert stem("sleeping") == stem("sleep") and stem("dogs") == stem("dog")
    assert stem("bicycles") == stem("bicycle") and stem("saving") == stem("save")
