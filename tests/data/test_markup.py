"""Bring-your-own eval prompts: chat markup parsed into messages, dataset/category carried through."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from crs.config import load_config
from crs.data.markup import MarkupError, parse_chat_markup, render_chatml

HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.mark.parametrize(
    "text, messages",
    [
        ("<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n", HELLO),
        ("<|im_start|>user Hello there <|im_end|><|im_start|>assistant", HELLO),  # the one-line form
        (
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHey!<|im_end|>\n"
            "<|im_start|>user\nHello there<|im_end|>\n",
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hey!"},
                *HELLO,
            ],
        ),
        ("[INST] Hello there [/INST]", HELLO),
        (
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hey! </s><s>[INST] Hello there [/INST]",
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hey!"},
                *HELLO,
            ],
        ),
        ("\n\nHuman: Hello there\n\nAssistant:", HELLO),
        (
            "Human: Hi\n\nAssistant: Hey!\n\nHuman: Hello there\n\nAssistant:",
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey!"}, *HELLO],
        ),
        ("Hello there", None),  # plain text: left to the chat template
        ("Explain what <|im_start|> means in ChatML.", None),  # markup not at the start: plain text
    ],
)
def test_chat_markup_is_parsed_into_messages(text: str, messages) -> None:
    assert parse_chat_markup(text) == messages


@pytest.mark.parametrize(
    "text, message",
    [
        ("<|im_start|>user\nHello there", r"turn 1 \(user\) is not closed by <\|im_end\|>"),
        ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nThe answer", "ends inside an assistant reply"),
        ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHey<|im_end|>", "ends on an assistant turn"),
        ("<|im_start|>bot\nHi<|im_end|>", "role 'bot'"),
        ("[INST] Hello there", r"not closed by \[/INST\]"),
        ("[INST] Hello there [/INST] Sure, here", r"a reply after the last \[/INST\]"),
        ("\n\nHuman: Hi\n\nAssistant: Hey", "ends with an Assistant turn that has text"),
        ("\n\nHuman: \n\nAssistant:", "empty user turn"),
    ],
)
def test_broken_markup_is_refused_saying_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(MarkupError, match=message):
        parse_chat_markup(text)


def test_chatml_rendered_reads_back_as_the_same_turns() -> None:
    dialogue = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hey!\n\nTwo lines."},
        *HELLO,
    ]
    text = render_chatml(dialogue)
    assert text.endswith("<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n")
    assert parse_chat_markup(text) == dialogue
    with pytest.raises(MarkupError, match=r"turn 1 \(user\) holds a ChatML marker"):
        render_chatml([{"role": "user", "content": "say <|im_end|>"}])


def _prompt_file(tmp_path: Path) -> Path:
    # The reference study's layout: {instruction, dataset}, instructions already in ChatML.
    rows = [
        {
            "instruction": "<|im_start|>user\nHow do I boil an egg?<|im_end|>\n<|im_start|>assistant\n",
            "dataset": "helpful_base",
        },
        {
            "instruction": "<|im_start|>user\nWrite a haiku about rain.<|im_end|>\n<|im_start|>assistant\n",
            "dataset": "koala",
        },
        {"instruction": "[INST] Name a prime above 10. [/INST]", "dataset": "vicuna", "category": "math"},
    ]
    path = tmp_path / "eval_prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path: Path, *overrides: str):
    return load_config(
        "eval_pred",
        overrides=[
            f"run.output_dir={tmp_path / 'out'}",
            f"data.source={_prompt_file(tmp_path)}",
            "data.columns={prompt: instruction}",
            "eval_pred.models=[{name: m0, path: tiny}, {name: m1, path: tiny}]",
            *overrides,
        ],
    )


def test_a_prompt_file_in_chat_markup_keeps_its_dataset_and_category(tmp_path: Path) -> None:
    from crs.eval.predict import load_eval_prompts

    prompts = load_eval_prompts(_config(tmp_path))
    assert [p.prompt for p in prompts] == [
        [{"role": "user", "content": "How do I boil an egg?"}],
        [{"role": "user", "content": "Write a haiku about rain."}],
        [{"role": "user", "content": "Name a prime above 10."}],
    ]
    assert [(p.meta.get("dataset"), p.meta.get("category")) for p in prompts] == [
        ("helpful_base", None),
        ("koala", None),
        ("vicuna", "math"),
    ]


def test_a_broken_markup_prompt_names_file_and_line(tmp_path: Path) -> None:
    from crs.data import load_examples
    from crs.data.schema import DataError

    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": "<|im_start|>user\nunclosed"}) + "\n")
    cfg = load_config("eval_pred", overrides=[f"data.source={path}", "data.val_fraction=0"]).data
    with pytest.raises(DataError, match=r"p.jsonl, line 2: prompt: ChatML turn 1 \(user\) is not closed"):
        load_examples(cfg, "prompts", 0)


def test_predictions_carry_the_files_dataset_and_category_into_every_table(tmp_path: Path, monkeypatch) -> None:
    from crs.eval import predict as eval_predict
    from crs.eval import score as eval_score
    from crs.eval.prediction_files import read_predictions
    from crs.runs import prepare_run_dir

    seen = []

    def fake_generate(model, tokenizer, prompts, generation, batch_size, max_prompt_length, seed, desc):
        seen.append(prompts)
        return [SimpleNamespace(text=f"{desc} reply {'x' * i}", ended_with_eos=True) for i in range(len(prompts))]

    monkeypatch.setattr(eval_predict, "load_causal_lm", lambda *a, **k: object())
    monkeypatch.setattr(eval_predict, "place_on_device", lambda model, device: model)
    monkeypatch.setattr(eval_predict, "load_tokenizer", lambda *a, **k: object())
    monkeypatch.setattr(eval_predict, "generate_on_every_process", fake_generate)
    cfg = _config(tmp_path)
    run_dir = prepare_run_dir(cfg, resume=False, overwrite=False)
    eval_predict.predict(cfg, run_dir, resume=False)
    assert seen[0][0] == [{"role": "user", "content": "How do I boil an egg?"}]  # messages, not markup in a user turn
    rows = read_predictions(run_dir / "predictions" / "m0.json")
    assert [(r["instruction"], r["dataset"], r["category"]) for r in rows] == [
        ("How do I boil an egg?", "helpful_base", ""),
        ("Write a haiku about rain.", "koala", ""),
        ("Name a prime above 10.", "vicuna", "math"),
    ]

    score = load_config(
        "eval_rewarding",
        overrides=[
            f"run.output_dir={tmp_path / 'out'}",
            f"eval_rewarding.predictions_dir={run_dir}",
            "eval_rewarding.judge=none",
            "eval_rewarding.rewards=[{name: length, path: 'python:tests.reward_fns:reply_length'}, "
            "{name: vowels, path: 'python:tests.reward_fns:count_vowels'}]",
            "eval_rewarding.combined=[]",
            "eval_rewarding.reference_model=m0",
            "eval_rewarding.n_boot=20",
            "eval_rewarding.group_by=dataset",
        ],
    )
    results = eval_score.score_predictions(score, prepare_run_dir(score, resume=False, overwrite=False), resume=False)
    assert sorted(results["agreement"]["vowels"]["by_category"]) == ["helpful_base", "koala", "vicuna"]
    assert sorted(results["win_rates_by_category"]["m1"]) == ["helpful_base", "koala", "vicuna"]
    assert eval_score.prompt_groups(rows, "auto") == ["all", "all", "math"]  # a category where any row has one
    per_item = json.loads((score.run_dir / "scores.json").read_text())
    assert {(r["prompt_id"], r["dataset"]) for r in per_item} == {(r["prompt_id"], r["dataset"]) for r in rows}
