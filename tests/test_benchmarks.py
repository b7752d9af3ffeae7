"""The benchmarks' own arithmetic (what benchmarks/ppo_floor.py counts is what the models hold) and their input
checks."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import runpy
import subprocess
import sys
import zipfile
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


# --------------------------------------------------------------------------- gpu_check: its pieces, and its dry run

GPU_CHECK = ROOT / "benchmarks" / "gpu_check.py"
gpu_check = runpy.run_path(str(GPU_CHECK))
gpu_wheels = runpy.run_path(str(ROOT / "benchmarks" / "gpu_check_wheels.py"))


def test_the_gpu_check_measures_a_reload_against_what_the_adapter_moved() -> None:
    base = torch.zeros(1, 2, 3)
    in_memory = base + torch.tensor([1.0, -3.0, 2.0])  # the adapter moved each logit by 2 on average
    faithful = gpu_check["logit_agreement"](in_memory.clone(), in_memory, base)
    assert faithful["gap_to_effect"] == 0.0 and faithful["same_argmax"] == 1.0 and faithful["adapter_effect"] == 2.0
    off = gpu_check["logit_agreement"](in_memory + torch.tensor([0.5, 0.0, 0.1]), in_memory, base)
    assert off["mean_abs_gap"] == pytest.approx(0.2) and off["max_abs_gap"] == 0.5
    assert off["gap_to_effect"] == pytest.approx(0.1)
    lost = gpu_check["logit_agreement"](base.clone(), in_memory, base)  # a reload without the adapter: the base
    assert lost["gap_to_effect"] == 1.0 and lost["same_argmax"] == 0.0
    untrained = gpu_check["logit_agreement"](base.clone(), base, base)
    assert untrained["gap_to_effect"] == float("inf")  # no effect to measure a reload against


def test_the_gpu_check_bounds_name_every_value_outside_them() -> None:
    within, failed = gpu_check["within"], gpu_check["CheckFailed"]
    measured = {"ratio": 1.004, "kl": 0.0}
    assert within(measured, [("ratio", 0.99, 1.01), ("kl", 0.0, 0.0)]) is measured
    with pytest.raises(failed) as outside:
        within({"ratio": 1.2, "kl": None}, [("ratio", 0.99, 1.01), ("kl", 0.0, 1e-3)])
    assert str(outside.value) == "ratio = 1.2 outside [0.99, 1.01]; kl = None outside [0, 0.001]"
    assert outside.value.measured == {"ratio": 1.2, "kl": None}


def test_the_gpu_check_wheels_are_crs_tested_versions() -> None:
    pins = gpu_wheels["pinned_versions"](ROOT / "constraints.txt", gpu_wheels["PINNED"])
    constraints = (ROOT / "constraints.txt").read_text()
    assert [pin.split("==")[0] for pin in pins] == list(gpu_wheels["PINNED"])
    assert all(f"\n{pin}\n" in constraints for pin in pins)
    # pip's spelling of a name may differ from the constraints file's.
    assert gpu_wheels["pinned_versions"](ROOT / "constraints.txt", ("Pydantic-Core",))[0].startswith("Pydantic-Core==")
    with pytest.raises(SystemExit, match="pins no version of vllm"):
        gpu_wheels["pinned_versions"](ROOT / "constraints.txt", ("trl", "vllm"))


def test_the_bitsandbytes_wheel_keeps_only_the_cuda_13_libraries_with_a_record_to_match(tmp_path: Path) -> None:
    wheel = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    files = {
        "bitsandbytes/__init__.py": b"x = 1\n",
        "bitsandbytes/libbitsandbytes_cpu.so": b"c" * 100,
        "bitsandbytes/libbitsandbytes_cuda118.so": b"o" * 5000,
        "bitsandbytes/libbitsandbytes_cuda130.so": b"n" * 300,
        "bitsandbytes/libbitsandbytes_cuda132.so": b"m" * 300,
        "bitsandbytes/libbitsandbytes_rocm64.so": b"r" * 5000,
    }
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("bitsandbytes-0.50.2.dist-info/RECORD", "stale\n")
    assert gpu_wheels["slim_bitsandbytes"](wheel) > 9000
    with zipfile.ZipFile(wheel) as archive:
        kept = {name: archive.read(name) for name in archive.namelist()}
    record = kept.pop("bitsandbytes-0.50.2.dist-info/RECORD").decode().splitlines()
    gone = ("bitsandbytes/libbitsandbytes_cuda118.so", "bitsandbytes/libbitsandbytes_rocm64.so")
    assert set(kept) == set(files) - set(gone)
    for name, data in kept.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert f"{name},sha256={digest},{len(data)}" in record
    assert len(record) == len(kept) + 1 and record[-1] == "bitsandbytes-0.50.2.dist-info/RECORD,,"


# What the CPU can show: every check but those CUDA alone runs (4-bit weights, DeepSpeed) and FSDP, which
# accelerate applies only on GPUs. PPO with gradient checkpointing runs but fails on the CPU today: the
# checkpointed layers recompute with other tensors than their forward saved (issue 33, section 1); once fixed,
# it belongs here.
PASS_ON_CPU = {
    "sft_bf16",
    "rm_ranking",
    "rm_absolute",
    "ppo_bf16",
    "ppo_full_checkpointing",
    "predict_seeded",
    "grpo",
    "dpo",
}
CUDA_ONLY = {"sft_4bit", "ppo_4bit_checkpointing", "sft_zero3", "sft_zero2"}


@pytest.mark.slow
def test_the_gpu_check_dry_runs_every_check_on_the_cpu_and_reports_each(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, str(GPU_CHECK), "--dry-run", "--out", str(out), "--workdir", str(tmp_path / "work")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.is_file(), done.stderr[-3000:]
    report = json.loads(out.read_text())
    checks = {check["name"]: check for check in report["checks"]}
    assert list(checks) == [check.name for check in gpu_check["CHECKS"]]
    assert report["format"] == 1 and report["mode"] == "dry-run" and report["scale"]["name"] == "tiny"
    assert report["environment"]["device"] == {"type": "cpu"} and report["environment"]["versions"]["torch"]
    assert report["counts"] == {s: sum(c["status"] == s for c in checks.values()) for s in ("pass", "fail", "skipped")}
    assert done.returncode == (1 if report["counts"]["fail"] else 0)
    for name, check in checks.items():
        assert check["status"] in ("pass", "fail", "skipped") and check["meaning"]
        assert bool(check["reason"]) == (check["status"] != "pass"), name
        assert check["peak_gpu_memory_mib"] is None and isinstance(check["step_times_s"], list)
        assert name in done.stdout  # the table
    assert {name for name, check in checks.items() if check["status"] == "pass"} >= PASS_ON_CPU
    assert all(checks[name]["status"] == "skipped" and "CUDA" in checks[name]["reason"] for name in CUDA_ONLY)
    assert checks["sft_fsdp2"]["status"] != "fail", checks["sft_fsdp2"]["reason"]
    # What the passes measured, as the GPU run will.
    assert checks["sft_bf16"]["measured"]["adapter/gap_to_effect"] <= 0.05 and checks["sft_bf16"]["steps"] == 2
    assert checks["ppo_bf16"]["measured"]["policy/ratio"] == pytest.approx(1.0, abs=0.01)
    assert checks["ppo_bf16"]["measured"]["reward_sources"] == ["rm_ranking", "rm_absolute"]  # the combined reward
    assert len(checks["ppo_bf16"]["step_times_s"]) == 2 and checks["ppo_bf16"]["mean_step_s"] > 0
    assert checks["rm_ranking"]["measured"]["device"] == "cpu" and checks["rm_ranking"]["measured"]["finite"]
    assert checks["predict_seeded"]["measured"]["differing"] == 0
    assert checks["grpo"]["measured"]["adapter"]["zero_size"] == [] and checks["dpo"]["measured"]["adapter"]["tensors"]
