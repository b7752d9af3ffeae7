"""Model names: embedded models and their cache, names that cannot be had, a run's base that is gone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from crs.models.loading import load_causal_lm
from crs.models.model_error import ModelError
from crs.models.resolution import resolve_model_path


def test_embedded_smollm_is_cached_as_safetensors() -> None:
    path = Path(resolve_model_path("embedded:smollm2-135m-instruct"))
    assert (path / "config.json").is_file() and list(path.glob("*.safetensors"))
    assert "quantization_config" not in (path / "config.json").read_text()
    before = {p.name: p.stat().st_mtime for p in path.iterdir()}
    # A second resolution reuses the cache: nothing is rewritten.
    assert Path(resolve_model_path("embedded:smollm2-135m-instruct")) == path
    assert {p.name: p.stat().st_mtime for p in path.iterdir()} == before


def test_dequantize_writes_a_fresh_cache_atomically(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng_before = torch.get_rng_state()
    path = Path(resolve_model_path("embedded:smollm2-135m-instruct", cache_dir=tmp_path))
    # A seeded stage that dequantizes first draws the same numbers afterwards as one that finds the cache.
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert path.parent == tmp_path / "models"
    # Only the final folder remains: no temporary half-written siblings.
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["smollm2-135m-instruct"]
    model = load_causal_lm("embedded:smollm2-135m-instruct", cache_dir=tmp_path)
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152


@pytest.mark.parametrize(
    "name, message",
    [
        ("embedded:gpt-7", "unknown embedded model 'embedded:gpt-7'; known: embedded:smollm2"),
        ("./no/such/model", "no such directory"),
        ("someone/not-a-real-model-xyz", "could not be loaded from the Hugging Face hub"),
    ],
)
def test_unresolvable_names_fail_with_what_to_do(name: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        resolve_model_path(name)


def test_a_run_whose_base_is_gone_names_its_manifest(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "rl_a"
    (run / "adapter").mkdir(parents=True)
    (run / "crs_model.json").write_text(
        json.dumps({"base": "../gone_base_model", "adapter": "adapter", "kind": "causal_lm"})
    )
    expected = (
        rf"{run / 'crs_model.json'} names its base model '../gone_base_model', which is gone: "
        rf"no folder at {tmp_path / 'runs' / 'gone_base_model'} \(a relative base is relative to the run directory"
    )
    with pytest.raises(ModelError, match=expected):
        load_causal_lm(str(run))
