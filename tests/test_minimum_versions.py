"""ci/minimum-versions.txt pins exactly the lower bounds pyproject.toml declares, so that the
minimum-versions run in .ci/run installs every floor a user is promised."""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli before Python 3.11
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

ROOT = Path(__file__).resolve().parents[1]
# What the run installs: the project's own dependencies and extras, and the test tooling it
# runs with (their floors in the `test` extra).
EXTRAS = ("databricks", "tracking")
TOOLING = ("pytest-xdist", "hypothesis")


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = project["optional-dependencies"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in EXTRAS for r in optional[extra]]
    requirements += [
        Requirement(r)
        for r in optional["test"]
        if canonicalize_name(Requirement(r).name) in TOOLING
    ]
    return requirements


def pinned() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    text = (ROOT / "ci" / "minimum-versions.txt").read_text(encoding="utf-8")
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"ci/minimum-versions.txt: {line!r} is not NAME==VERSION"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_lower_bound_is_pinned_and_every_pin_is_a_lower_bound() -> None:
    pins = pinned()
    floors: dict[str, Version] = {}
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        lower = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        assert len(lower) == 1, f"pyproject.toml: {requirement} needs one `>=` lower bound"
        assert name in pins, f"{requirement}: ci/minimum-versions.txt has no {name}=={lower[0]}"
        assert pins[name] == lower[0], f"{requirement}: ci/minimum-versions.txt pins {pins[name]}"
        # The pin must also be allowed by the rest of the range (`!=`, `<`).
        assert requirement.specifier.contains(pins[name], prereleases=True), str(requirement)
        floors[name] = lower[0]
    assert pins == floors, "ci/minimum-versions.txt pins something pyproject.toml does not declare"
