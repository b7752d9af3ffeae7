"""The package as the ecosystem sees it: one-way imports, consistent dependencies, the crs command."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from paths import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PACKAGE = ROOT / "crs"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def crs_imports(path: Path, module_level_only: bool) -> set[str]:
    """The crs modules a file imports (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("crs"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from crs import evaluation`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("crs"))
    return found


def import_graph(module_level_only: bool) -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in crs_imports(path, module_level_only) if m in modules and m != name}
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return None


@pytest.mark.parametrize("module_level_only", [True, False], ids=["module-level", "including-function-level"])
def test_no_import_cycle_in_crs(module_level_only: bool) -> None:
    graph = import_graph(module_level_only)
    assert (
        "crs.rl.ppo.stage" in graph and "crs.rl.ppo.trainer" in graph["crs.rl.ppo.stage"]
    )  # the graph is really built
    assert find_cycle(graph) is None, find_cycle(graph)


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = import_graph(True)
    graph["crs.rl.ppo.trainer"] = graph["crs.rl.ppo.trainer"] | {"crs.rl.ppo.stage"}  # the cycle this project once had
    assert find_cycle(graph) is not None


def test_the_algorithm_never_imports_its_stage() -> None:
    graph = import_graph(False)
    stages = {
        "crs.rl.ppo.stage",
        "crs.rl.dispatch",
        "crs.rl.trl_common",
        "crs.rl.grpo_rloo",
        "crs.rl.dpo",
        "crs.sft.fine_tuning",
        "crs.eval.predict",
        "crs.eval.score",
        "crs.cli",
        "crs.study.demo",
    }
    for algorithm in (
        "crs.rl.ppo.trainer",
        "crs.rm.reward_losses",
        "crs.rl.ppo.losses",
        "crs.rl.ppo.policy",
        "crs.models.decoding",
        "crs.rl.ppo.rollout",
        "crs.rl.combined_reward",
        "crs.rl.reward_sources",
        "crs.rl.trl_reward",
        "crs.rm.scorer",
    ):
        assert not graph[algorithm] & stages, algorithm


# The house's floors (docs/layout.md): a package imports only from its own floor's foundation
# or lower. cli -> study -> eval -> rl -> rm / sft -> models -> demo -> config / data / io / runs.
FLOORS: dict[str, int] = {
    "crs.io": 0,
    "crs.config": 0,
    "crs.dependencies": 0,
    "crs.runs": 0,
    "crs.processes": 0,
    "crs.data": 0,
    "crs": 0,
    "crs.demo": 1,
    "crs.models": 2,
    "crs.rm": 3,
    "crs.sft": 3,
    "crs.rl": 4,
    "crs.eval": 5,
    "crs.serve": 5,  # the combined reward served to other engines: crs.rl's reward, no evaluation
    "crs.study": 6,
    "crs.cli": 7,
    "crs.__main__": 8,
}


def package_of(module: str) -> str:
    """The subpackage (``crs.rl``) or top-level module (``crs.cli``) a module belongs to."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def floor_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes up a floor, or sideways between two packages above the foundation."""
    found = []
    for importer, imported in ((a, b) for a, targets in graph.items() for b in targets):
        here, there = package_of(importer), package_of(imported)
        if here == there:
            continue
        if FLOORS[there] > FLOORS[here] or (FLOORS[there] == FLOORS[here] and FLOORS[here] > 0):
            found.append(f"{importer} -> {imported}")
    return sorted(found)


def test_imports_flow_down_the_floors_of_the_house() -> None:
    graph = import_graph(module_level_only=False)
    assert {package_of(m) for m in graph} <= set(FLOORS), "a new subpackage needs its floor in FLOORS"
    assert floor_violations(graph) == []


def test_the_floor_check_finds_a_planted_upward_import() -> None:
    graph = import_graph(module_level_only=False)
    # training drawing its own figures
    graph["crs.rl.ppo.stage"] = graph["crs.rl.ppo.stage"] | {"crs.eval.overoptimization_figures"}
    graph["crs.rm.training"] = graph["crs.rm.training"] | {"crs.sft.fine_tuning"}  # sideways between two stages
    assert floor_violations(graph) == [
        "crs.rl.ppo.stage -> crs.eval.overoptimization_figures",
        "crs.rm.training -> crs.sft.fine_tuning",
    ]


def imports_between(graph: dict[str, set[str]], importer: str, imported: str) -> list[str]:
    """Every import from package ``importer`` (``crs.data``) of package ``imported`` (``crs.demo``)."""
    return sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if package_of(a) == importer and package_of(b) == imported
    )


def test_the_data_layer_never_imports_the_demo() -> None:
    # The demo plugs in by name (crs/data/registry.py's "module:attribute" strings), not by import.
    graph = import_graph(module_level_only=False)
    assert any(package_of(b) == "crs.data" for a in graph if package_of(a) == "crs.demo" for b in graph[a])
    assert imports_between(graph, "crs.data", "crs.demo") == []


def test_the_data_to_demo_check_finds_a_planted_function_level_import(tmp_path: Path) -> None:
    planted = tmp_path / "adapters.py"
    planted.write_text(
        "def relabel(row):\n    from crs.demo.facets import relabel_rows\n    return relabel_rows([row])\n"
    )
    graph = import_graph(module_level_only=False)
    found = {m for m in crs_imports(planted, module_level_only=False) if m in graph}  # as import_graph reads it
    graph["crs.data.adapters"] = graph["crs.data.adapters"] | found
    assert imports_between(graph, "crs.data", "crs.demo") == ["crs.data.adapters -> crs.demo.facets"]


def repeated_module_names(paths: list[Path]) -> dict[str, list[str]]:
    """Module file names (``losses.py``) that more than one folder uses, with the folders."""
    folders: dict[str, list[str]] = {}
    for path in paths:
        if path.name != "__init__.py":
            folders.setdefault(path.name, []).append(str(path.parent.relative_to(ROOT)))
    return {name: sorted(places) for name, places in folders.items() if len(places) > 1}


def test_no_two_modules_share_a_name() -> None:
    # One name per thing: `stage.py` in two folders made a reader ask which stage.
    assert repeated_module_names(list(PACKAGE.rglob("*.py"))) == {}


def test_the_name_check_finds_a_planted_repeat() -> None:
    planted = [PACKAGE / "rm" / "losses.py", PACKAGE / "rl" / "ppo" / "losses.py", PACKAGE / "io.py"]
    assert repeated_module_names(planted) == {"losses.py": ["crs/rl/ppo", "crs/rm"]}


def test_training_and_models_never_import_the_report_or_matplotlib() -> None:
    for package in ("rl", "rm", "models", "sft"):
        for path in (PACKAGE / package).rglob("*.py"):
            source = path.read_text(encoding="utf-8")
            assert not re.search(r"^\s*(import|from) (matplotlib|crs\.eval)\b", source, re.M), path


def requirement_names(lines: list[str]) -> set[str]:
    return {
        re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0].lower()
        for line in lines
        if line.strip() and not line.startswith("#")
    }


def test_requirements_and_pyproject_agree() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = requirement_names(project["dependencies"])
    requirements = requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    extras = set().union(*(requirement_names(group) for group in project["optional-dependencies"].values()))
    assert requirements - extras == declared - {"torch"}  # torch: installed first by scripts/setup_env.sh
    assert extras <= requirements  # the test tools and the optional extras: `make test` tests them all


def test_every_runtime_dependency_is_imported_somewhere() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    import_names = {"pyyaml": "yaml", "bitsandbytes": "bitsandbytes", "safetensors": "safetensors"}
    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    # Loaded by transformers on crs's behalf (quantization, GGUF, weights), not imported by crs itself.
    indirect = {"bitsandbytes", "gguf", "safetensors"}
    for name in requirement_names(project["dependencies"]) - indirect:
        module = import_names.get(name, name)
        assert re.search(rf"^\s*(import|from) {module}\b", source, re.M), f"{name} is declared but never imported"


def test_no_sys_path_hacks() -> None:
    files = [
        *ROOT.glob("*.py"),
        *(ROOT / "scripts").glob("*.py"),
        *(ROOT / "benchmarks").glob("*.py"),
        *(ROOT / "tests").rglob("*.py"),
        *PACKAGE.rglob("*.py"),
    ]
    # The one deliberate entry: a `python:module:function` reward imports from the current directory
    # (docs/config.md's rule for relative paths), which the `crs` console script leaves off sys.path.
    allowed = {"crs/rl/reward_sources.py": "sys.path.insert(0, os.getcwd())"}
    offenders = [
        str(p.relative_to(ROOT))
        for p in files
        if p.read_text().count("sys.path.insert")
        > (1 if allowed.get(str(p.relative_to(ROOT)), "-") in p.read_text() else 0)
        and p.name != "test_packaging.py"
    ]
    assert not offenders


def test_crs_command_lists_its_stages_and_rejects_unknown_ones() -> None:
    crs = Path(sys.executable).parent / "crs"
    command = [str(crs)] if crs.exists() else [sys.executable, "-m", "crs"]
    shown = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0
    for name in ("sft", "rm", "rl", "predict", "score", "demo", "serve-reward"):
        assert re.search(rf"^  {name} ", shown.stdout, re.M), name
    unknown = subprocess.run([*command, "train"], capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "usage: crs" in unknown.stderr


def test_stage_subcommand_and_script_take_the_same_options() -> None:
    sub = subprocess.run(
        [sys.executable, "-m", "crs", "rl", "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    script = subprocess.run(
        [sys.executable, "rl_train.py", "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert sub.returncode == script.returncode == 0
    options = [line.split()[0] for line in sub.stdout.splitlines() if line.strip().startswith("--")]
    assert {"--config_subset", "--name_suffix", "--resume", "--overwrite", "--set"} <= set(options)
    assert options == [line.split()[0] for line in script.stdout.splitlines() if line.strip().startswith("--")]


_HELP_WITHOUT_TORCH = """
import runpy, sys
argv = sys.argv[1:]
sys.argv = [argv[0], *argv[1:]]
try:
    if argv[0].endswith(".py"):
        runpy.run_path(argv[0], run_name="__main__")
    else:
        from crs.cli import main
        main(argv[1:])
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
heavy = sorted(m for m in ("torch", "transformers", "numpy", "trl", "peft") if m in sys.modules)
print("HEAVY:", ",".join(heavy))
"""


@pytest.mark.parametrize(
    "command",
    [
        ["crs", "--help"],
        *(
            ["crs", c, "--help"]
            for c in ("sft", "rm", "rl", "predict", "score", "pool", "bon", "sweep", "online", "demo", "serve-reward")
        ),
        *(
            [s, "--help"]
            for s in (
                "sft_train.py",
                "rm_train.py",
                "rl_train.py",
                "rl_eval_pred.py",
                "rl_eval_rewarding.py",
                "rl_online.py",
                "bon_pool.py",
                "bon_study.py",
                "serve_reward.py",
            )
        ),
    ],
)
def test_help_imports_no_torch_and_lists_the_config_subsets(command: list[str]) -> None:
    import yaml

    shown = subprocess.run(
        [sys.executable, "-c", _HELP_WITHOUT_TORCH, *command], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().splitlines()[-1] == "HEAVY:"  # what makes --help slow is never imported
    if command[-2] != "demo":
        subsets = [k for k in yaml.safe_load((ROOT / "config.yaml").read_text()) if k != "default"]
        listed = " ".join(shown.stdout.split())  # argparse wraps the epilog
        assert all(f" {name}," in listed or f" {name} " in listed or listed.endswith(name) for name in subsets)


def test_one_version_string() -> None:
    from importlib.metadata import version

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    import crs

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["dynamic"] == ["version"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "crs.__version__"}
    assert version("crs") == crs.__version__  # the installed metadata: what pip shows


# --------------------------------------------------------------------------- pinned, checked dependencies


def test_every_dependency_has_an_upper_bound_and_constraints_pin_each_inside_its_range() -> None:
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [
        Requirement(line) for line in project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    ]
    for requirement in declared:
        if requirement.name != "packaging":  # a stable API, for the range check itself
            assert any(s.operator in ("<", "<=", "~=", "==") for s in requirement.specifier), (
                f"{requirement} has no upper bound"
            )
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    for requirement in declared:
        if requirement.name == "torch":  # installed first by scripts/setup_env.sh (CPU or CUDA build)
            continue
        assert requirement.name in pins, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pins[requirement.name]), (
            f"constraints.txt: {requirement.name}=={pins[requirement.name]} outside {requirement}"
        )
    assert "torch" not in pins and "crs" not in pins


def test_a_dependency_outside_its_tested_range_is_said_in_one_line(monkeypatch, caplog) -> None:
    from crs import dependencies
    from crs.config import ConfigError

    versions = {"trl": "1.16.0", "torch": "2.13.0+cpu"}
    monkeypatch.setattr(dependencies, "installed_version", lambda name: versions.get(name))
    assert dependencies.outside_tested_range("trl") is None and dependencies.outside_tested_range("torch") is None
    assert dependencies.warn_untested_versions() == []
    for version in ("1.17.0", "1.15.0", "1.0.0"):  # newer, the broken minor, older
        versions["trl"] = version
        assert (
            dependencies.outside_tested_range("trl")
            == f"trl {version} is outside the range crs was tested with (trl!=1.15.*,<1.17,>=1.14.2)"
        )
        with pytest.raises(
            ConfigError,
            match=rf"trl {version} is outside .*; why: pip install 'trl!=1.15.\*,<1.17,>=1.14.2', "
            r"or set run.allow_untested_versions: true",
        ):
            dependencies.require_tested("trl", "why", allow=False)
    with caplog.at_level("WARNING"):
        dependencies.require_tested("trl", "why", allow=True)
        assert dependencies.warn_untested_versions() == [
            "trl 1.0.0 is outside the range crs was tested with (trl!=1.15.*,<1.17,>=1.14.2)"
        ]
    assert "trying it anyway (run.allow_untested_versions: true)" in caplog.text


def test_the_trl_methods_crs_overrides_exist_and_a_missing_one_stops_the_run(monkeypatch) -> None:
    pytest.importorskip("trl")
    from crs.config import ConfigError, CRSConfig
    from crs.rl.trl_common import TRL_OVERRIDES, require_trl

    cfg = CRSConfig()
    for trainer in TRL_OVERRIDES:
        assert require_trl(cfg, trainer)  # the installed TRL has every method with the parameters crs relies on
    monkeypatch.setitem(TRL_OVERRIDES, "DPOTrainer", {"_prepare_dataset": ("dataset", "tokenizer_that_was_renamed")})
    with pytest.raises(
        ConfigError,
        match=r"TRL 1\.\d+\.\d+'s DPOTrainer has no "
        r"_prepare_dataset\(dataset, tokenizer_that_was_renamed\), which crs overrides",
    ):
        require_trl(cfg, "DPOTrainer")
    monkeypatch.setitem(TRL_OVERRIDES, "GRPOTrainer", {"_gone_in_a_later_trl": ("inputs",)})
    with pytest.raises(ConfigError, match="GRPOTrainer has no _gone_in_a_later_trl"):
        require_trl(cfg, "GRPOTrainer")


def test_an_untested_trl_stops_a_grpo_run_in_one_line_before_any_model_loads(
    tmp_path, tiny_model_dir, monkeypatch, capsys
) -> None:
    pytest.importorskip("trl")
    from stage_runs import run_cli, write_config

    from crs import dependencies

    real = dependencies.installed_version
    monkeypatch.setattr(dependencies, "installed_version", lambda name: "1.17.0" if name == "trl" else real(name))
    monkeypatch.setattr("crs.rl.trl_common.installed_version", dependencies.installed_version)
    with pytest.raises(SystemExit) as stopped:
        run_cli(write_config(tmp_path, tiny_model_dir, algorithm="grpo", steps=1))
    assert stopped.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("error: trl 1.17.0 is outside the range crs was tested with")
    )


def test_a_deprecation_raised_from_crs_code_fails_the_suite() -> None:
    import warnings

    # pytest.ini: library-internal deprecations are ignored, those attributed to a crs module are errors.
    warnings.warn_explicit("old API", DeprecationWarning, "transformers/x.py", 1, module="transformers.x")
    for category in (DeprecationWarning, FutureWarning):
        with pytest.raises(category):
            warnings.warn_explicit("old API", category, "crs/models/loading.py", 1, module="crs.models.loading")


def test_a_trl_trainer_without_its_metrics_dict_is_refused_in_one_line() -> None:
    pytest.importorskip("trl")
    from trl import GRPOTrainer

    from crs.config import ConfigError
    from crs.rl.trl_common import require_trl_metrics

    class Renamed(GRPOTrainer):  # built without __init__: as if a TRL release renamed _metrics
        pass

    with pytest.raises(ConfigError, match=r"GRPOTrainer keeps no _metrics: pip install 'trl"):
        require_trl_metrics(Renamed.__new__(Renamed))
    trainer = Renamed.__new__(Renamed)
    trainer._metrics = {"train": {}, "eval": {}}
    require_trl_metrics(trainer)  # TRL 1.16's shape passes


# --------------------------------------------------------------------------- the launch configs crs ships


@pytest.mark.parametrize(
    "name, kind",
    [("multi_gpu", "MULTI_GPU"), ("deepspeed_zero2", "DEEPSPEED"), ("deepspeed_zero3", "DEEPSPEED"), ("fsdp", "FSDP")],
)
def test_the_shipped_accelerate_configs_are_what_accelerate_reads(name: str, kind: str) -> None:
    import inspect

    import yaml
    from accelerate.commands.config import cluster
    from accelerate.commands.config.config_args import ClusterConfig

    path = ROOT / "examples" / "accelerate" / f"{name}.yaml"
    config = ClusterConfig.from_yaml_file(str(path))  # unknown top-level keys raise here
    assert config.distributed_type.value == kind and config.num_processes > 1
    asked = inspect.getsource(cluster)  # the keys `accelerate config` itself writes
    for block in ("deepspeed_config", "fsdp_config"):
        for key in yaml.safe_load(path.read_text()).get(block) or {}:
            assert f'["{key}"]' in asked, f"{path.name}: {block}.{key} is not a key accelerate writes"
    guide = (ROOT / "docs" / "multi_process.md").read_text()  # the multi-process guide names each config
    assert "examples/accelerate/" in guide and f"`{name}.yaml`" in guide
