"""The dependency versions crs was tested with, checked when a stage starts.

``pyproject.toml`` (and ``requirements.txt``) pin every dependency to the range the test
suite has passed on; ``constraints.txt`` holds the exact versions of CI's last run, and
``scripts/setup_env.sh`` installs with it. pip keeps an ordinary install inside the ranges;
this module catches what slips past (``--no-deps``, a later ``pip install -U``): a package
outside its range is one warning line when a stage starts, and TRL outside its range stops
the TRL stages (crs overrides private TRL methods, so an untested TRL can change behaviour
silently) unless ``run.allow_untested_versions`` is true.
"""

from __future__ import annotations

import importlib.metadata
import logging
from functools import lru_cache
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from crs.config import ConfigError

logger = logging.getLogger(__name__)

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
OVERRIDE_KEY = "run.allow_untested_versions"


def _declared_requirements() -> list[str]:
    try:
        return importlib.metadata.requires("crs") or []
    except importlib.metadata.PackageNotFoundError:  # a checkout used without `pip install -e .`
        try:
            import tomllib
        except ImportError:  # Python 3.10: nothing to read the ranges with
            return []
        return (
            tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
            if PYPROJECT.is_file()
            else []
        )


@lru_cache(maxsize=1)
def tested_ranges() -> dict[str, SpecifierSet]:
    """Each runtime dependency's tested range, as crs declares it (extras such as ``dev`` left out)."""
    ranges = {}
    for line in _declared_requirements():
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            ranges[requirement.name.lower()] = requirement.specifier
    return ranges


def installed_version(name: str) -> str | None:
    """The installed version of the distribution ``name``, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def outside_tested_range(name: str) -> str | None:
    """A sentence when ``name`` is installed outside its tested range, else None (also when crs declares no range)."""
    spec, version = tested_ranges().get(name), installed_version(name)
    if spec is None or version is None or spec.contains(version, prereleases=True):
        return None
    return f"{name} {version} is outside the range crs was tested with ({name}{spec})"


def warn_untested_versions() -> list[str]:
    """One warning line per installed dependency outside its tested range; returns the lines."""
    lines = [line for name in tested_ranges() if (line := outside_tested_range(name))]
    for line in lines:
        logger.warning(
            "%s: results may differ from the tested setup; pip install -c constraints.txt -r requirements.txt", line
        )
    return lines


def require_tested(name: str, why: str, allow: bool) -> None:
    """A ConfigError when ``name`` is outside its tested range (``why`` says what depends on it), unless ``allow``."""
    problem = outside_tested_range(name)
    if problem is None:
        return
    if not allow:
        spec = tested_ranges()[name]
        raise ConfigError(f"{problem}; {why}: pip install '{name}{spec}', or set {OVERRIDE_KEY}: true to try it anyway")
    logger.warning("%s; trying it anyway (%s: true)", problem, OVERRIDE_KEY)
