"""pyproject's declared ranges are the ones the suite runs on, and the shipped files are packaged."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, pin = line.partition("==")
            pins[canonicalize_name(name)] = Version(pin)
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in project["dependencies"] + extras]


def test_every_declared_range_starts_at_the_tested_pin():
    pins = _pins()
    for req in _declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared but constraints.txt pins no version of it"
        lower = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert lower == [pins[name]], (
            f"{req}: the lower bound must be the tested version {pins[name]} (constraints.txt)"
        )
        assert req.specifier.contains(pins[name])
        assert req.specifier.contains(version(req.name)), f"installed {req.name} is outside {req}"


def test_the_pin_check_can_fail():
    req = Requirement("transformers>=4.45")  # wave one's range: the embedded tokenizer needs 5.x
    assert [Version(s.version) for s in req.specifier] != [_pins()["transformers"]]


def test_shipped_data_is_declared_as_package_data():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["*"]
    assert {"data/*", "data/**/*"} <= set(patterns)
    package = ROOT / "gemma_scope_ext"
    shipped = [p for p in package.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert shipped
    for path in shipped:
        owner = next(d for d in path.parents if (d / "__init__.py").exists())
        assert path.relative_to(owner).parts[0] == "data", f"{path} is outside a data/ folder"
