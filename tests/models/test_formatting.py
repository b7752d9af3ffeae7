"""The one prompt+reply tokenization path: chat template and text-pair variants."""

from __future__ import annotations

from crs.data.schema import user_prompt
from crs.models.formatting import encode_prompt, encode_prompt_reply, pad_batch


def test_chat_template_reply_mask_covers_reply_and_end_of_turn(smol_tokenizer) -> None:
    prompt = user_prompt("Name a fruit.")
    enc = encode_prompt_reply(smol_tokenizer, prompt, "An apple.")
    prompt_ids = encode_prompt(smol_tokenizer, prompt)
    assert enc.input_ids[: len(prompt_ids)] == prompt_ids  # generation sees the same prefix
    reply_ids = [t for t, m in zip(enc.input_ids, enc.reply_mask) if m]
    assert smol_tokenizer.decode(reply_ids) == "An apple.<|im_end|>"
    assert enc.labels[: len(prompt_ids)] == [-100] * len(prompt_ids)


def test_truncation_keeps_prompt_end_and_reply_start(smol_tokenizer) -> None:
    prompt = user_prompt("word " * 300 + "QUESTION?")
    enc = encode_prompt_reply(smol_tokenizer, prompt, "reply " * 300, max_length=100, max_prompt_length=40)
    assert len(enc.input_ids) == 100
    assert sum(enc.reply_mask) == 60
    text = smol_tokenizer.decode(enc.input_ids)
    assert "QUESTION?" in text and text.endswith("<|im_end|>")


def test_text_pair_path_for_encoders(minilm_tokenizer) -> None:
    enc = encode_prompt_reply(minilm_tokenizer, user_prompt("Name a fruit."), "An apple.")
    tokens = minilm_tokenizer.convert_ids_to_tokens(enc.input_ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    reply = [t for t, m in zip(tokens, enc.reply_mask) if m]
    assert reply == ["an", "apple", "."]


def test_pad_batch_sides() -> None:
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0, side="left")
    assert ids == [[1, 2, 3], [0, 0, 4]] and mask == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0)
    assert ids == [[1, 2, 3], [4, 0, 0]] and mask == [[1, 1, 1], [1, 0, 0]]
