"""Every rule has a page in docs/rules.md, and its examples do what the page says.

Each rule's section holds a bad and a fixed example as fenced blocks whose first line names
the file, ``# bad: MLproject`` or ``# fixed: python_env.yaml``. The bad example must raise
the rule (failing the item for an error, warning for a warning); the fixed one must pass
with no problem at all. The examples are real projects run through pytest as a user runs it.

Two names are special: ``cluster.json`` is also given as ``--databricks-cluster-spec`` (the
Databricks rules apply whenever a cluster spec is configured), and ``environment`` holds
``NAME=VALUE`` lines set in the environment of that run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_mlproject.problems import RULES, Severity

DOC = Path(__file__).resolve().parents[1] / "docs" / "rules.md"
#: Rules whose bad example cannot be written in Markdown (binary content, huge files,
#: folders); tests/test_limits.py covers each of them.
NOT_WRITABLE_IN_MARKDOWN = {"MLP102", "MLP105", "MLP106"}

_SECTION = re.compile(r"^## (MLP\d{3}) ([a-z-]+)", re.MULTILINE)
_BLOCK = re.compile(r"^```[^\n]*\n# (bad|fixed): (\S+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass
class Section:
    code: str
    name: str
    text: str
    bad: dict[str, str] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)


def sections() -> dict[str, Section]:
    text = DOC.read_text(encoding="utf-8")
    found: dict[str, Section] = {}
    starts = list(_SECTION.finditer(text))
    for match, following in zip(starts, [*starts[1:], None], strict=True):
        end = following.start() if following else len(text)
        body = text[match.end() : end]
        section = Section(match.group(1), match.group(2), body)
        for kind, filename, content in _BLOCK.findall(body):
            getattr(section, kind)[filename] = content
        found[section.code] = section
    return found


def test_every_rule_has_a_section_with_its_name_and_severity() -> None:
    found = sections()
    assert sorted(found) == sorted(RULES)
    for code, rule in RULES.items():
        assert found[code].name == rule.name, code
        assert f"Severity: {rule.severity.value}" in found[code].text, code


@pytest.mark.parametrize("code", sorted(set(RULES) - NOT_WRITABLE_IN_MARKDOWN))
def test_bad_example_raises_the_rule(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    section = sections()[code]
    assert section.bad, f"{code} has no bad example"
    options = _write(pytester.path / "project", section.bad, monkeypatch)
    result = pytester.runpytest("--mlproject", "-p", "no:cacheprovider", "-rA", *options)
    output = result.stdout.str()
    assert f" {code} " in output
    if RULES[code].severity is Severity.ERROR:
        assert result.ret == pytest.ExitCode.TESTS_FAILED
    else:
        assert "MLprojectWarning" in output
        strict = pytester.runpytest(
            "--mlproject", "--mlproject-strict", "-p", "no:cacheprovider", *options
        )
        assert strict.ret == pytest.ExitCode.TESTS_FAILED
        assert f" {code} " in strict.stdout.str()


@pytest.mark.parametrize("code", sorted(RULES))
def test_fixed_example_is_clean(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    section = sections()[code]
    assert section.fixed, f"{code} has no fixed example"
    options = _write(pytester.path / "project", section.fixed, monkeypatch)
    result = pytester.runpytest(
        "--mlproject", "--mlproject-strict", "-p", "no:cacheprovider", *options
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert "MLP" not in result.stdout.str()


def _write(directory: Path, files: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Lay the example out as a project; return the options it needs."""
    directory.mkdir(parents=True, exist_ok=True)
    # Whatever the machine has configured must not leak into the examples.
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(directory / "no-databrickscfg"))
    options = []
    for name, content in files.items():
        if name == "environment":
            for line in content.splitlines():
                key, _, value = line.partition("=")
                monkeypatch.setenv(key.strip(), value.strip())
            continue
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(content, encoding="utf-8")
        if name == "cluster.json":
            options = ["--databricks-cluster-spec", str(directory / name)]
    # A real project has the scripts its commands run; the examples show only the YAML.
    for script in ("train.py", "evaluate.py"):
        if not (directory / script).exists():
            (directory / script).write_text("", encoding="utf-8")
    return options
