"""The documentation stays true: generated config reference, field help, links, named scripts."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import types
import typing

import pytest
from paths import ROOT

from crs.config import CRSConfig, RLConfig, RunConfig

RENDER_SCRIPT = ROOT / "scripts" / "render_config_docs.py"
CONFIG_DOCS = ROOT / "docs" / "config.md"
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _env() -> dict[str, str]:
    """Subprocess environment in which `import crs` finds this checkout, whatever else is installed."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _load_render_module() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("render_config_docs", RENDER_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config_fields(cls: type = CRSConfig, path: str = "") -> list[tuple[str, dataclasses.Field]]:
    """Every field of the config tree, nested sections and list / dict entry dataclasses included."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        out.append((key, f))
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _config_fields(tp, key)
        elif typing.get_origin(tp) in (list, dict) and dataclasses.is_dataclass(typing.get_args(tp)[-1]):
            out += _config_fields(typing.get_args(tp)[-1], f"{key}[]")
    return out


# --------------------------------------------------------------------------- config reference


def test_config_docs_up_to_date():
    result = subprocess.run(
        [sys.executable, str(RENDER_SCRIPT), "--check"],
        check=False,
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"


def test_render_matches_file_and_follows_help_changes(monkeypatch):
    render = _load_render_module().render
    assert render() == CONFIG_DOCS.read_text(encoding="utf-8")
    seed = RunConfig.__dataclass_fields__["seed"]
    monkeypatch.setattr(seed, "metadata", types.MappingProxyType({"help": "A changed help text."}))
    changed = render()
    assert changed != CONFIG_DOCS.read_text(encoding="utf-8")
    assert "| `run.seed` | `int` | `42` | A changed help text. |" in changed


def test_check_fails_on_stale_file(tmp_path):
    module = _load_render_module()
    stale = tmp_path / "config.md"
    stale.write_text(module.render().replace("Adam learning rate.", "Old help."), encoding="utf-8")
    assert module.main(["--check", "--output", str(stale)]) == 1
    assert module.main(["--output", str(stale)]) == 0
    assert module.main(["--check", "--output", str(stale)]) == 0


def test_config_docs_list_every_key_with_its_default():
    text = CONFIG_DOCS.read_text(encoding="utf-8")
    for key, _f in _config_fields():
        assert f"| `{key}` |" in text or f"\n## {key}\n" in text, key
    assert "| `rl.kl_coef` | `float` | `0.05` |" in text
    assert "| `data.languages` | `list[str]` | `[en]` |" in text
    assert "| `rl.rewards[].weight` | `float` | `1.0` |" in text


def test_every_config_field_has_help():
    missing = [key for key, f in _config_fields() if not str(f.metadata.get("help", "")).strip()]
    assert not missing, f"fields without metadata['help']: {missing}"


def test_help_is_metadata_not_a_changed_default():
    # Help lives beside the field; defaults and factories are what they always were.
    assert RLConfig().rewards == [] and RLConfig().kl_coef == 0.05
    assert CRSConfig().data.label_weights == {"quality": 1.0}
    assert CRSConfig().data.languages is not CRSConfig().data.languages


# --------------------------------------------------------------------------- links


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    anchors = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add("".join(c for c in title if c.isalnum() or c in "-_ ").replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    text = doc.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        missing_anchor = (
            file.is_file()
            and anchor
            and file.suffix == ".md"
            and anchor not in _anchors(file.read_text(encoding="utf-8"))
        )
        if not file.exists() or missing_anchor:
            broken.append(target)
    assert not broken, f"{doc.name}: broken links {broken}"


# --------------------------------------------------------------------------- scripts


def _scripts_named_in_readme() -> list[str]:
    """`x.py` at the repository root, `scripts/x.py` and `benchmarks/x.py` as written in README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return sorted(set(re.findall(r"(?<![\w./-])((?:scripts/|benchmarks/)?\w+\.py)\b", text)))


# Runs every script's --help in one interpreter, so torch and transformers are imported once.
HELP_RUNNER = """
import contextlib, io, json, runpy, sys
codes = {}
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(script, run_name="__main__")
        codes[script] = "returned without exiting"
    except SystemExit as stop:
        codes[script] = stop.code or 0
    except BaseException as err:
        codes[script] = f"{type(err).__name__}: {err}"
print(json.dumps(codes))
"""


def test_scripts_named_in_readme_exist_and_parse_help():
    scripts = _scripts_named_in_readme()
    assert "sft_train.py" in scripts and "scripts/render_config_docs.py" in scripts
    missing = [s for s in scripts if not (ROOT / s).is_file()]
    assert not missing, f"README.md names scripts that do not exist: {missing}"
    # Only scripts that parse arguments are asked for --help; one without a parser would just run.
    with_parser = [s for s in scripts if re.search(r"argparse|run_stage\(", (ROOT / s).read_text(encoding="utf-8"))]
    result = subprocess.run(
        [sys.executable, "-c", HELP_RUNNER, *with_parser],
        check=False,
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    codes = json.loads(result.stdout.strip().splitlines()[-1])
    failed = {s: c for s, c in codes.items() if c != 0}
    assert not failed, f"--help failed: {failed}\n{result.stderr[-3000:]}"
