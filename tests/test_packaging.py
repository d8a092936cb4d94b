"""Dependencies: compatible ranges in pyproject.toml, the exact tested set in constraints.txt, and the two agree."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [Requirement(r) for r in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, pinned = line.split("==")
            pins[canonicalize_name(name)] = pinned
    return pins


def test_runtime_dependencies_are_ranges_not_pins() -> None:
    pinned = [str(r) for r in map(Requirement, PROJECT["dependencies"]) if any(s.operator == "==" for s in r.specifier)]
    assert not pinned, f"pin these in constraints.txt, not in pyproject.toml: {pinned}"


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=[r.name for r in REQUIREMENTS])
def test_constraints_pin_a_version_inside_each_range(requirement: Requirement) -> None:
    pins = _pins()
    name = canonicalize_name(requirement.name)
    assert name in pins, f"constraints.txt does not pin {requirement.name}"
    assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])


def test_this_environment_is_the_constrained_one() -> None:
    """The suite runs with the versions constraints.txt names (torch's +cpu local label aside)."""
    differ = {}
    for name, pinned in _pins().items():
        try:
            installed = version(name).split("+")[0]
        except PackageNotFoundError:
            differ[name] = (pinned, None)
            continue
        if installed != pinned.split("+")[0]:
            differ[name] = (pinned, installed)
    assert not differ, f"constraints.txt and this environment differ: {differ}"
