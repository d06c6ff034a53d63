"""The example projects in fixtures/: the good ones pass strictly, the broken ones show their
problems. They are what README's first command runs and what docs/ quotes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

BROKEN = {
    "yaml-error": ["spec: MLP101"],
    "typos": [
        "spec: MLP209",
        "main::check: MLP401",
        "main::check: MLP401",
        "main::check: MLP401",
        "main::check: MLP401",
        "main::check: MLP209",
    ],
    "missing-env": ["spec: MLP302"],
    "bad-command": [
        "main::check: MLP404",
        "main::check: MLP501",
        "main::check: MLP501",
        "main::check: MLP504",
        "report::check: MLP501",
    ],
    "docker-string": ["spec: MLP304"],
}


def test_good_examples_pass_strictly(pytester: pytest.Pytester) -> None:
    shutil.copytree(FIXTURES / "good", pytester.path / "good")
    result = pytester.runpytest("--mlproject", "--mlproject-strict", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert "MLP" not in result.stdout.str()


def test_every_broken_example_is_listed() -> None:
    assert sorted(p.name for p in (FIXTURES / "broken").iterdir()) == sorted(BROKEN)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_examples_show_their_problems(pytester: pytest.Pytester, name: str) -> None:
    shutil.copytree(FIXTURES / "broken" / name, pytester.path / name)
    result = pytester.runpytest("--mlproject", "--mlproject-strict", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    found = []
    item = ""
    for line in result.outlines:
        if "short test summary info" in line:
            break  # under CI (the CI variable set) pytest repeats whole messages there
        header = re.match(rf"_+ {name}/MLproject::(\S+) _+$", line)
        if header:
            item = header.group(1)
        problem = re.match(rf"{name}/MLproject:\d+: (MLP\d+) ", line)
        if problem:
            found.append(f"{item}: {problem.group(1)}")
    assert sorted(found) == sorted(BROKEN[name])
