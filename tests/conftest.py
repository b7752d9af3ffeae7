"""Shared fixtures: the embedded tokenizer and tiny models built from a config."""

from __future__ import annotations

import os

import pytest

# Tests never touch the network: a hub lookup must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The embedded SmolLM2 tokenizer (chat template included), right padding."""
    from crs.models.loading import load_tokenizer

    return load_tokenizer("embedded:smollm2-135m-instruct")


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The embedded MiniLM tokenizer (no chat template: the text-pair path)."""
    from crs.models.loading import load_tokenizer

    return load_tokenizer("embedded:minilm-l6")


@pytest.fixture()
def tiny_lm(smol_tokenizer):
    """A fresh tiny causal LM on the SmolLM2 vocabulary."""
    from tiny import tiny_causal_lm

    return tiny_causal_lm(smol_tokenizer)


@pytest.fixture()
def tiny_rm(smol_tokenizer):
    """A fresh tiny one-output sequence classifier on the SmolLM2 vocabulary."""
    from tiny import tiny_sequence_classifier

    return tiny_sequence_classifier(smol_tokenizer)


@pytest.fixture()
def one_thread():
    """One BLAS thread for tiny-model training tests: they are overhead-bound, and on a busy
    2-core machine two OpenMP threads wait on each other at every op (a 25-step tiny run took
    27 s instead of 0.9 s). Modules use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def left_tokenizer(smol_tokenizer):
    """The embedded SmolLM2 tokenizer with left padding (generation, PPO rollouts)."""
    import copy

    tok = copy.copy(smol_tokenizer)
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smol_tokenizer):
    """A tiny causal LM saved as a plain model folder, usable as model.name (the stage tests' policy)."""
    from tiny import tiny_causal_lm

    folder = tmp_path_factory.mktemp("tiny_policy")
    tiny_causal_lm(smol_tokenizer, seed=0).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_rm_dir(tmp_path_factory, smol_tokenizer):
    """A tiny random Llama classifier saved as a plain model folder (a valid model.name)."""
    from tiny import tiny_sequence_classifier

    folder = tmp_path_factory.mktemp("tiny_rm")
    tiny_sequence_classifier(smol_tokenizer).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder
