"""Agreement with MLflow on 111 real descriptors, against MLflow's own recorded verdicts.

The corpus lives outside the repository (``MLPROJECT_CORPUS``, set by ``.ci/run``): each
``expected/<case>.json`` is what MLflow 3.17's ``load_project`` made of ``projects/<case>``.
Where MLflow fails, we must fail with an error naming the same problem; where it loads, our
model must equal MLflow's, and we may only fail a project that MLflow itself would fail to
run (its recorded command computation fails with something other than missing values).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_mlproject import checks, spec
from pytest_mlproject.problems import MLprojectError, Problem


def _cases(loaded: bool) -> list[str]:
    """The cases MLflow loads (or fails on), read when the tests are collected."""
    root = Path(os.environ.get("MLPROJECT_CORPUS", "/nonexistent"))
    if not (root / "expected").is_dir():
        return ["(no corpus)"]  # the `corpus` fixture then skips or fails, as it should
    return sorted(
        path.stem
        for path in (root / "expected").glob("*.json")
        if json.loads(path.read_text("utf-8"))["ok"] is loaded
    )


LOADED, FAILED = _cases(loaded=True), _cases(loaded=False)

#: What MLflow's exception says → the rules that name the same problem.
_FAILURE_RULES = {
    "ScannerError": {"MLP101"},
    "ParserError": {"MLP101"},
    "ComposerError": {"MLP101"},
    "AttributeError": {
        "MLP201",
        "MLP202",
        "MLP203",
        "MLP204",
        "MLP205",
        "MLP207",
        "MLP208",
        "MLP304",
    },
}


def _expected(corpus: Path, case: str) -> dict[str, Any]:
    if case == "(no corpus)":
        pytest.fail("the corpus has no expected/ folder")
    data: dict[str, Any] = json.loads((corpus / "expected" / f"{case}.json").read_text("utf-8"))
    return data


def _errors(corpus: Path, case: str) -> list[Problem]:
    return [p for p in checks.check(corpus / "projects" / case) if p.is_error]


@pytest.mark.parametrize("case", FAILED)
def test_where_mlflow_fails_we_fail_naming_the_problem(corpus: Path, case: str) -> None:
    expected = _expected(corpus, case)
    errors = _errors(corpus, case)
    assert errors, f"MLflow fails on {case} ({expected['error']['message']}) but we pass it"
    kind, message = expected["error"]["type"], expected["error"]["message"]
    codes = {p.code for p in errors}
    if kind == "ExecutionException":
        # MLflow's message, with the project path normalised as the corpus records it.
        project = str(corpus / "projects" / case)
        ours = [p.message.replace(project, "<PROJECT>") for p in errors if p.code == "MLP302"]
        assert any(text.startswith(message.rstrip(".")) for text in ours), (message, ours)
    else:
        assert codes & _FAILURE_RULES[kind], (kind, message, codes)


@pytest.mark.parametrize("case", LOADED)
def test_where_mlflow_loads_our_model_is_mlflows(corpus: Path, case: str) -> None:
    expected = _expected(corpus, case)
    project = spec.load(corpus / "projects" / case)
    descriptor = project.descriptor.name if project.descriptor else None
    assert descriptor == expected["mlproject_file_found"]
    assert list(project.entry_points) == expected["entry_point_order"]
    for name, entry in expected["entry_points"].items():
        ours = project.entry_points[name]
        assert ours.command == entry["command"], name
        assert list(ours.parameters) == entry["parameter_order"], name
        assert {
            key: {"type": p.type, "default": p.default} for key, p in ours.parameters.items()
        } == entry["parameters"], name
        assert ours.required_parameters == entry["required_parameters"], name
    assert project.env_type == expected["env_type"]
    env_file = (
        project.env_file.relative_to(corpus / "projects" / case).as_posix()
        if project.env_file
        else None
    )
    expected_env = expected["env_config_path"]
    assert env_file == (Path(expected_env).as_posix() if expected_env else None)
    assert (dict(project.docker_env) if project.docker_env else None) == expected["docker_env"]
    if expected["name"] is not None:
        assert project.name == expected["name"]
    else:  # MLflow leaves it empty; we name the project after its folder
        assert project.name == case
    main = expected["main_entry_point"]
    if main["ok"]:
        assert project.entry_point("main").command == main["command"]
    else:
        with pytest.raises(MLprojectError, match="Could not find main among entry points"):
            project.entry_point("main")


@pytest.mark.parametrize("case", LOADED)
def test_we_only_fail_what_mlflow_would_fail_to_run(corpus: Path, case: str) -> None:
    expected = _expected(corpus, case)
    errors = _errors(corpus, case)
    for problem in errors:
        # The only error we raise on a project MLflow loads is a command MLflow cannot
        # compute even with every parameter given (a KeyError from str.format).
        assert problem.code in {"MLP501", "MLP502"}, problem.format()
        assert problem.entry_point is not None
        record = expected["entry_points"][problem.entry_point]
        computed = record.get(
            "computed_command_required_filled", record["computed_command_defaults"]
        )
        assert not computed["ok"], problem.format()
        assert computed["error"]["type"] in {"KeyError", "IndexError", "ValueError"}
