"""The per-project settings file, pytest-mlproject.yaml: what it sets, and its problems."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pytest_mlproject import spec
from pytest_mlproject._yaml import Limits
from pytest_mlproject.commands import ParamSpec, parse_param_specs, user_parameters
from pytest_mlproject.problems import RULES
from pytest_mlproject.settings import (
    DEFAULT_SKIP_REASON,
    SETTINGS_FILE,
    Settings,
    check_settings,
    read_settings,
)

MLPROJECT = """\
name: demo
entry_points:
  main:
    parameters:
      alpha: {type: float, default: 0.1}
      data: path
    command: "python train.py {alpha} {data}"
  evaluate:
    parameters:
      data: path
    command: "python evaluate.py {data}"
"""


def write(folder: Path, text: str, name: str = SETTINGS_FILE) -> Settings:
    (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return read_settings(folder)


def codes(settings: Settings) -> list[tuple[int, str]]:
    return [(p.line, p.code) for p in settings.problems]


def test_no_file_means_no_settings(tmp_path: Path) -> None:
    settings = read_settings(tmp_path)
    assert settings == Settings(tmp_path)
    assert settings.skip_reason("main") is None
    assert settings.timeout("main") is None
    assert settings.cluster_spec("main") is None
    assert settings.databricks_skip_reason("main") is None


def test_an_empty_file_means_no_settings(tmp_path: Path) -> None:
    settings = write(tmp_path, "# nothing yet\n")
    assert settings.path == tmp_path / SETTINGS_FILE
    assert settings.problems == ()
    assert settings.parameters == ()


def test_a_full_settings_file(tmp_path: Path) -> None:
    settings = write(
        tmp_path,
        """\
        parameters:
          data: tests/small.csv
          alpha: 0.5
          flag: true
        entry_points:
          main:
            parameters:
              alpha: "0.10"
              extra: x y
            timeout: 300
            skip: false
            databricks:
              cluster_spec: {spark_version: 15.4.x-scala2.12, num_workers: 0}
          evaluate:
            skip: needs a GPU
            databricks:
              skip: true
          other:
            databricks: {skip: false}
        databricks:
          cluster_spec: cluster.json
          skip: not on pull requests
        """,
    )
    assert settings.problems == ()
    origin = f"{tmp_path / SETTINGS_FILE}"
    assert settings.parameters == (
        ParamSpec("data", "tests/small.csv", None, f"{origin}:2"),
        ParamSpec("alpha", "0.5", None, f"{origin}:3"),
        ParamSpec("flag", "true", None, f"{origin}:4"),
        ParamSpec("alpha", "0.10", "main", f"{origin}:8"),
        ParamSpec("extra", "x y", "main", f"{origin}:9"),
    )
    assert settings.timeout("main") == 300.0
    assert settings.timeout("evaluate") is None
    assert settings.skip_reason("main") is None
    assert settings.skip_reason("evaluate") == "needs a GPU"
    assert settings.skip_reason("other") is None
    assert settings.databricks_skip_reason("main") == "not on pull requests"
    assert settings.databricks_skip_reason("evaluate") == DEFAULT_SKIP_REASON
    assert settings.databricks_skip_reason("other") is None
    assert settings.cluster_spec("main") == {"spark_version": "15.4.x-scala2.12", "num_workers": 0}
    assert settings.cluster_spec("evaluate") == "cluster.json"
    assert settings.directory == tmp_path


def test_settings_are_one_layer_below_the_command_line_and_the_ini(tmp_path: Path) -> None:
    (tmp_path / "MLproject").write_text(MLPROJECT)
    settings = write(
        tmp_path,
        """\
        parameters: {data: small.csv, alpha: "0.2"}
        entry_points:
          main: {parameters: {alpha: "0.3", extra: "1"}}
        """,
    )
    project = spec.load(tmp_path)
    main, evaluate = project.entry_points["main"], project.entry_points["evaluate"]
    assert user_parameters(main, settings.parameters) == {
        "alpha": "0.3",
        "extra": "1",
        "data": "small.csv",
    }
    assert user_parameters(evaluate, settings.parameters) == {"data": "small.csv"}
    cli = parse_param_specs(["data=cli.csv"])
    ini = parse_param_specs(["alpha=0.9"], "ini mlproject_params")
    assert user_parameters(main, cli, ini, settings.parameters) == {
        "data": "cli.csv",
        "alpha": "0.9",
        "extra": "1",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("parameters: [a, b]\n", [(1, "MLP803")]),
        ("parameters:\n  a: [1, 2]\n", [(2, "MLP803")]),
        ("parameters:\n  a: null\n", [(2, "MLP803")]),
        ("parameters:\n  yes: 1\n", [(2, "MLP803")]),
        ("entry_points: main\n", [(1, "MLP803")]),
        ("entry_points:\n  main: [x]\n", [(2, "MLP803")]),
        ("entry_points:\n  main:\n    timeout: -1\n", [(3, "MLP803")]),
        ("entry_points:\n  main:\n    timeout: '10'\n", [(3, "MLP803")]),
        ("entry_points:\n  main:\n    timeout: .inf\n", [(3, "MLP803")]),
        ("entry_points:\n  main:\n    skip: 3\n", [(3, "MLP803")]),
        ("entry_points:\n  main:\n    skip: ''\n", [(3, "MLP803")]),
        ("databricks: true\n", [(1, "MLP803")]),
        ("databricks:\n  cluster_spec: 3\n", [(2, "MLP803")]),
        ("paramters:\n  a: 1\n", [(1, "MLP802")]),
        ("entry_points:\n  main:\n    tiemout: 3\n", [(3, "MLP802")]),
        ("databricks:\n  cluster: x\n", [(2, "MLP802")]),
        ("parameters:\n  a: 1\n  a: 2\n", [(3, "MLP210")]),
        ("- a\n", [(1, "MLP801")]),
        ("parameters: {a: 1\n", [(2, "MLP801")]),
        ("a: *nope\n", [(1, "MLP801")]),
    ],
)
def test_problems(tmp_path: Path, text: str, expected: list[tuple[int, str]]) -> None:
    settings = write(tmp_path, text)
    assert codes(settings) == expected
    for problem in settings.problems:
        assert problem.path == tmp_path / SETTINGS_FILE
        assert problem.entry_point is None
        assert problem.code in RULES


def test_unknown_keys_get_a_suggestion(tmp_path: Path) -> None:
    (problem,) = write(tmp_path, "paramters: {}\n").problems
    assert "did you mean 'parameters'?" in problem.message
    assert problem.severity.value == "warning"


def test_what_can_be_read_still_applies_next_to_a_problem(tmp_path: Path) -> None:
    settings = write(tmp_path, "parameters:\n  a: [1]\n  b: 2\nentry_points:\n  e: {skip: 3}\n")
    assert [spec.name for spec in settings.parameters] == ["b"]
    assert settings.skip_reason("e") is None
    assert "e" in settings.entry_points


def test_a_file_that_is_not_utf8_or_too_large(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_bytes(b"parameters:\n  a: \xff\n")
    assert codes(read_settings(tmp_path)) == [(2, "MLP801")]
    (tmp_path / SETTINGS_FILE).write_text("parameters: {}\n" * 10)
    settings = read_settings(tmp_path, Limits(max_bytes=20))
    assert codes(settings) == [(1, "MLP801")]


def test_a_folder_in_place_of_the_file_is_not_read(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).mkdir()
    assert read_settings(tmp_path) == Settings(tmp_path)


@pytest.mark.parametrize("name", [".pytest-mlproject.yaml", "pytest-mlproject.yml"])
def test_a_misnamed_file_is_reported(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("parameters: {a: 1}\n")
    settings = read_settings(tmp_path)
    assert settings.parameters == ()
    (problem,) = settings.problems
    assert (problem.path, problem.code) == (tmp_path / name, "MLP806")
    assert SETTINGS_FILE in problem.message


def test_check_settings_against_the_project(tmp_path: Path) -> None:
    (tmp_path / "MLproject").write_text(MLPROJECT)
    settings = write(
        tmp_path,
        """\
        parameters:
          data: x
          dtaa: y
        entry_points:
          mian: {}
          train.py: {}
          evaluate:
            parameters: {anything: goes}
        """,
    )
    problems = check_settings(settings, spec.load(tmp_path))
    assert [(p.line, p.code) for p in problems] == [(5, "MLP804"), (3, "MLP805")]
    assert "did you mean 'main'?" in problems[0].message
    assert "--dtaa VALUE" in problems[1].message
    assert check_settings(read_settings(tmp_path / "nowhere"), spec.load(tmp_path)) == []
