"""The benchmarks' own arithmetic (what benchmarks/ppo_floor.py counts is what the models hold) and their input
checks."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from paths import ROOT

from crs.config import LoraConfig
from crs.models.lora import add_lora
from tests.tiny import tiny_llama_config

# benchmarks/ is a folder of scripts, not a package.
ppo_floor = SimpleNamespace(**runpy.run_path(str(ROOT / "benchmarks" / "ppo_floor.py")))


def test_the_floor_counts_the_models_weights_and_its_lora_adapter() -> None:
    from transformers import LlamaForCausalLM

    # Uneven sizes, so a q/k/v or gate/up/down mix-up changes the count.
    config = tiny_llama_config(
        vocab_size=101,
        eos_token_id=0,
        pad_token_id=0,
        hidden_size=48,
        intermediate_size=80,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=12,
        num_hidden_layers=3,
    )
    model = LlamaForCausalLM(config)
    shape = ppo_floor.shape_of(config)
    linears = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    assert shape.linear_weights == linears
    assert shape.head_weights == model.lm_head.weight.numel()
    peft_model = add_lora(model, LoraConfig(r=4, alpha=8, dropout=0.0, target_modules="all-linear"), "causal_lm")
    assert shape.lora_weights(4) == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def test_the_floor_of_each_phase_grows_with_its_work() -> None:
    config = tiny_llama_config(vocab_size=1000, eos_token_id=0, pad_token_id=0)
    shape = ppo_floor.shape_of(config)
    short = ppo_floor.phase_floors(shape, [10, 12], 8, 4, flops=1e9, bandwidth=1e9, bytes_per_weight=2)
    longer = ppo_floor.phase_floors(shape, [10, 12], 16, 4, flops=1e9, bandwidth=1e9, bytes_per_weight=2)
    assert all(longer[phase] > short[phase] > 0 for phase in short)
    # Decoding is bound by weight reads once the bandwidth is the bottleneck.
    starved = ppo_floor.phase_floors(shape, [10, 12], 8, 4, flops=1e9, bandwidth=1e3, bytes_per_weight=2)
    weights = shape.linear_weights + shape.head_weights
    assert starved["generation"] >= 7 * weights * 2 / 1e3


# --------------------------------------------------------------------------- oasst1_strategies: its input file


def _oasst1_error(tmp_path: Path, capsys, path: Path) -> str:
    """The benchmark run on ``path``: exit 2 and one ``error:`` line, no traceback."""
    oasst1 = runpy.run_path(str(ROOT / "benchmarks" / "oasst1_strategies.py"))
    with pytest.raises(SystemExit) as exited:
        oasst1["main"]([str(path), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert exited.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()  # refused before anything was written
    return lines[0]


def test_the_oasst1_benchmark_given_a_missing_file_says_so_in_one_line(tmp_path: Path, capsys) -> None:
    line = _oasst1_error(tmp_path, capsys, tmp_path / "en-validation.jsonl")
    assert line.startswith(f"error: {tmp_path / 'en-validation.jsonl'}: no such file; give oasst1's flat message table")


def test_the_oasst1_benchmark_given_another_schema_names_the_line_and_the_keys(tmp_path: Path, capsys) -> None:
    path = tmp_path / "pairs.jsonl"
    message = {"message_id": "m1", "parent_id": None, "message_tree_id": "m1", "role": "prompter", "text": "Hi?"}
    path.write_text(
        json.dumps(message) + "\n\n" + json.dumps({"prompt": "Hi?", "chosen": "Hello", "rejected": "No"}) + "\n"
    )
    line = _oasst1_error(tmp_path, capsys, path)
    assert line == (
        f"error: {path}, line 3: missing key(s) ['message_id', 'parent_id', 'message_tree_id', 'role', 'text']; "
        "expected oasst1's flat message table, one JSON message per line (message_id, parent_id, message_tree_id, "
        "role, text, rank, labels, ...)"
    )
    path.write_text(json.dumps(message) + "\n" + '{"message_id": "m2", "text": \n')
    assert _oasst1_error(tmp_path, capsys, path).startswith(f"error: {path}, line 2: not valid JSON (")


def test_the_oasst1_report_shows_how_much_of_each_scorers_accuracy_is_length() -> None:
    from crs.eval.ranked_groups import RankedGroup, cluster_bootstrap, length_aware, summarize

    oasst1 = runpy.run_path(str(ROOT / "benchmarks" / "oasst1_strategies.py"))
    groups = [RankedGroup(f"t{k}", ["a" * (k + 2), "b" * (9 - k), "c" * 5], [1.0, 0.5, 0.0]) for k in range(6)]
    scores = {"ranking": [[3.0, 1.0, 2.0]] * 6, oasst1["LENGTH_SCORER"]: [[len(r) for r in g.replies] for g in groups]}
    results = {
        "n_boot": 50,
        "heldout": {"trees": 6, "groups": 6, "pairs": 18, "labelled_replies": 18},
        "runs": {"ranking": {"steps": 1, "seconds": 1.0}},
        "table": summarize(cluster_bootstrap(groups, scores, 50, 0), baseline=oasst1["LENGTH_SCORER"]),
        "length_aware": length_aware(groups, scores, 50, 0, cluster_kind="trees"),
    }
    report = oasst1["format_report"](results)
    assert "| scorer | accuracy % (n=18) | shorter preferred % (n=" in report
    assert "| ranking |" in report and "| length (characters) |" in report and "over 6 trees" in report
    del results["length_aware"]  # results saved before the length table still render
    assert "shorter preferred" not in oasst1["format_report"](results)


def test_the_oasst1_length_sums_add_the_weighted_z_scores_of_the_rm_and_of_length() -> None:
    from crs.eval.ranked_groups import RankedGroup

    oasst1 = runpy.run_path(str(ROOT / "benchmarks" / "oasst1_strategies.py"))
    groups = [RankedGroup("t0", ["ab", "abcdef"], [1.0, 0.0]), RankedGroup("t1", ["abcd"], [0.5])]
    scores = {"ranking": [[1.0, 3.0], [5.0]], "untrained": [[0.0, 0.0], [0.0]]}
    sums = oasst1["length_sums"](groups, scores, {"ranking": {"mean": 3.0, "std": 2.0}})
    assert set(sums) == {f"ranking + {w:g} x length" for w in oasst1["LENGTH_WEIGHTS"]}  # only the single-loss RMs
    # Lengths 2, 6, 4: mean 4, std sqrt(8/3). w = 2: (r - 3) / 2 + 2 (n - 4) / sqrt(8/3).
    z = 2.0 / (8.0 / 3.0) ** 0.5
    expected = [[-1.0 - 2 * z, 0.0 + 2 * z], [1.0 + 0.0]]
    for got, want in zip(sums["ranking + 2 x length"], expected):
        assert got.tolist() == pytest.approx(want)


# --------------------------------------------------------------------------- reread_seed_interval: 2-seed intervals

reread = runpy.run_path(str(ROOT / "benchmarks" / "reread_seed_interval.py"))["reread"]


def test_a_reread_with_agreeing_seeds_keeps_the_published_prompt_interval() -> None:
    # Seeds with the same rate: no seed level, and the old bootstrap gave the seeds nothing either.
    low, high = reread(70.0, (62.0, 78.0), [70.0, 70.0], draws=200_000)
    assert (low, high) == pytest.approx((62.0, 78.0), abs=0.2)


def test_a_reread_widens_by_the_t_level_of_two_seeds() -> None:
    # Seeds 3.5 points apart, no prompt spread left: the exact t interval, 75.8 +- 12.706 x 1.75.
    low, high = reread(75.8, (75.8 - 1.96 * 1.75 / 2**0.5, 75.8 + 1.96 * 1.75 / 2**0.5), [74.05, 77.55], draws=400_000)
    assert (low, high) == pytest.approx((75.8 - 12.706 * 1.75, 75.8 + 12.706 * 1.75), abs=0.6)
    assert reread(55.5, (42.5, 68.5), [48.5, 62.5]) == (0.0, 100.0)  # 14 points apart: the whole scale
    with pytest.raises(SystemExit, match="at least 2 seeds"):
        reread(60.0, (50.0, 70.0), [60.0])
