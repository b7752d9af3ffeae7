"""rl.vllm: GRPO's and RLOO's replies sampled by vLLM through TRL: the keys' rules, the TRL config crs builds, and
the one-line error where vLLM is missing. No vLLM is run (CPU only): TRL's own integration is what samples."""

from __future__ import annotations

import logging
import re

import pytest
import torch
import yaml
from stage_runs import run_cli, write_config

from crs.config import ConfigError, CRSConfig, RLConfig, load_config
from crs.rl import vllm_sampling

pytest.importorskip("trl")

TRL_EXTRAS = [
    "accelerate>=1.4.0",
    'vllm<=0.31.0,>=0.22.0; extra == "vllm"',
    'aiohttp>=3.13.3; extra == "vllm"',
    'deepspeed>=0.14.4; extra == "deepspeed"',
]


def load_rl(tmp_path, **rl) -> RLConfig:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"default": {}, "s": {"rl": {"batch_size": 8, "group_size": 4, **rl}}}))
    return load_config("s", path).rl


# --------------------------------------------------------------------------- the keys' rules


def test_vllm_is_off_by_default_and_each_mode_takes_its_own_keys(tmp_path):
    assert load_rl(tmp_path).vllm == "none"
    assert load_rl(tmp_path, algorithm="grpo").vllm_gpu_memory_utilization is None
    colocated = load_rl(tmp_path, algorithm="grpo", vllm="colocate", vllm_gpu_memory_utilization=0.5)
    assert (colocated.vllm, colocated.vllm_gpu_memory_utilization) == ("colocate", 0.5)
    served = load_rl(tmp_path, algorithm="rloo", vllm="server", vllm_server_url="http://gpu-node:8001")
    assert (served.vllm, served.vllm_server_url) == ("server", "http://gpu-node:8001")
    assert load_rl(tmp_path, algorithm="rloo", vllm="server").vllm_server_url is None  # TRL's default address


@pytest.mark.parametrize(
    ("rl", "refused"),
    [
        (
            {"algorithm": "ppo", "vllm": "colocate"},
            "rl.vllm='colocate': must be none unless rl.algorithm is grpo or rloo",
        ),
        ({"algorithm": "dpo", "vllm": "server"}, "rl.vllm='server': must be none unless rl.algorithm is grpo or rloo"),
        ({"algorithm": "grpo", "vllm": "sglang"}, "rl.vllm"),
        (
            {"algorithm": "grpo", "vllm": "colocate", "vllm_server_url": "http://h:8000"},
            "rl.vllm_server_url='http://h:8000': must be null, or an http:// or https:// URL with rl.vllm: server",
        ),
        ({"algorithm": "grpo", "vllm_server_url": "http://h:8000"}, "with rl.vllm: server"),
        ({"algorithm": "grpo", "vllm": "server", "vllm_server_url": "h:8000"}, "an http:// or https:// URL"),
        (
            {"algorithm": "grpo", "vllm": "server", "vllm_gpu_memory_utilization": 0.5},
            "rl.vllm_gpu_memory_utilization=0.5: must be null, or in (0, 1] with rl.vllm: colocate "
            "(a server sets its own",
        ),
        ({"algorithm": "rloo", "vllm": "colocate", "vllm_gpu_memory_utilization": 0}, "in (0, 1]"),
        ({"algorithm": "rloo", "vllm": "colocate", "vllm_gpu_memory_utilization": 1.5}, "in (0, 1]"),
    ],
)
def test_a_bad_vllm_combination_is_refused_naming_the_key(tmp_path, rl, refused):
    with pytest.raises(ConfigError, match=re.escape(refused)):
        load_rl(tmp_path, **rl)


# --------------------------------------------------------------------------- the TRL config crs builds


def trl_config(algorithm: str, tmp_path, **rl):
    from crs.rl.grpo_rloo import grpo_rloo_config

    cfg = CRSConfig()
    cfg.data.max_prompt_length = 48
    cfg.rl = RLConfig(algorithm=algorithm, batch_size=8, group_size=4, max_new_tokens=16, **rl)
    return grpo_rloo_config(cfg, tmp_path, torch.float32, [1.0])


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_the_trl_config_carries_each_vllm_setting(tmp_path, algorithm):
    off = trl_config(algorithm, tmp_path)
    trl_defaults = {k: f.default for k, f in type(off).__dataclass_fields__.items() if k.startswith("vllm_")}
    assert off.use_vllm is False  # the default: the policy samples, through transformers
    assert {k: getattr(off, k) for k in trl_defaults} == trl_defaults  # nothing else of TRL's vLLM settings moved

    colocated = trl_config(algorithm, tmp_path, vllm="colocate", vllm_gpu_memory_utilization=0.45)
    assert (colocated.use_vllm, colocated.vllm_mode, colocated.vllm_gpu_memory_utilization) == (True, "colocate", 0.45)
    assert colocated.vllm_max_model_length == 48 + 16  # the longest sequence crs samples: prompt + reply budget
    assert colocated.vllm_server_base_url is None
    assert trl_config(algorithm, tmp_path, vllm="colocate").vllm_gpu_memory_utilization == 0.3  # TRL's default

    served = trl_config(algorithm, tmp_path, vllm="server", vllm_server_url="https://gpu-node:8001")
    assert (served.use_vllm, served.vllm_mode, served.vllm_server_base_url) == (True, "server", "https://gpu-node:8001")
    assert served.vllm_max_model_length is None  # the server's own (trl vllm-serve --max_model_len)
    assert trl_config(algorithm, tmp_path, vllm="server").vllm_server_base_url is None  # TRL's host and port


# --------------------------------------------------------------------------- vLLM installed or not


def test_the_supported_range_is_read_from_trls_vllm_extra(monkeypatch):
    monkeypatch.setattr(vllm_sampling.importlib.metadata, "requires", lambda name: TRL_EXTRAS)
    assert vllm_sampling.trl_vllm_range() == ">=0.22.0,<=0.31.0"
    assert vllm_sampling.vllm_install_hint() == "pip install 'vllm>=0.22.0,<=0.31.0'"
    monkeypatch.setattr(vllm_sampling.importlib.metadata, "requires", lambda name: TRL_EXTRAS[:1])
    assert vllm_sampling.vllm_install_hint() == "pip install 'trl[vllm]'"  # a TRL that declares no range


def test_the_installed_trl_declares_a_vllm_range():
    assert vllm_sampling.trl_vllm_range().startswith(">=")


def fake_vllm(monkeypatch, version: str | None) -> None:
    real = vllm_sampling.installed_version
    monkeypatch.setattr(vllm_sampling, "installed_version", lambda name: version if name == "vllm" else real(name))
    monkeypatch.setattr(vllm_sampling.importlib.metadata, "requires", lambda name: TRL_EXTRAS)


def test_missing_vllm_is_one_line_naming_the_install(monkeypatch):
    fake_vllm(monkeypatch, None)
    cfg = CRSConfig()
    cfg.rl = RLConfig(algorithm="grpo", vllm="server")
    with pytest.raises(ConfigError) as refused:
        vllm_sampling.require_vllm(cfg)
    assert str(refused.value) == (
        "rl.vllm=server samples with vLLM, which is not installed: pip install 'vllm>=0.22.0,<=0.31.0' "
        "(the versions TRL supports), or set rl.vllm: none"
    )
    cfg.rl.vllm = "none"
    vllm_sampling.require_vllm(cfg)  # off: vLLM is not needed


@pytest.mark.parametrize(("version", "warned"), [("0.24.0+cu129", False), ("0.31.0", False), ("0.10.2", True)])
def test_a_vllm_outside_trls_range_is_a_warning(monkeypatch, caplog, version, warned):
    fake_vllm(monkeypatch, version)
    cfg = CRSConfig()
    cfg.rl = RLConfig(algorithm="rloo", vllm="colocate")
    with caplog.at_level(logging.WARNING, logger="crs.rl.vllm_sampling"):
        vllm_sampling.require_vllm(cfg)
    assert ("outside the range TRL" in caplog.text) is warned


def test_missing_vllm_stops_a_grpo_run_in_one_line_before_any_model_loads(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    fake_vllm(monkeypatch, None)

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the vLLM check")

    monkeypatch.setattr("crs.rl.grpo_rloo.load_policy", no_load)
    with pytest.raises(SystemExit) as stopped:
        run_cli(write_config(tmp_path, tiny_model_dir, algorithm="grpo", steps=1, vllm="colocate"))
    assert stopped.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: rl.vllm=colocate samples with vLLM, which is not installed: pip install 'vllm>=")
