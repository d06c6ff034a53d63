"""The reader's model: MLflow's semantics, with the line of everything."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mlproject import spec
from pytest_mlproject.problems import MLprojectError


def write(directory: Path, text: str, name: str = "MLproject") -> Path:
    (directory / name).write_text(text, encoding="utf-8")
    return directory


def test_short_and_long_parameter_forms(tmp_path: Path) -> None:
    project = spec.load(
        write(
            tmp_path,
            """\
entry_points:
  main:
    parameters:
      data: path
      alpha: {type: float, default: 0.1}
      label: {default: ""}
      flag: {type: int, default: 0}
    command: python train.py {data} {alpha} {label} {flag}
""",
        )
    )
    params = project.entry_points["main"].parameters
    assert [(p.name, p.type, p.default, p.line) for p in params.values()] == [
        ("data", "path", None, 4),
        ("alpha", "float", 0.1, 5),
        ("label", "string", "", 6),
        ("flag", "int", 0, 7),
    ]
    assert project.entry_points["main"].required_parameters == ["data"]


def test_name_defaults_to_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "churn-model"
    folder.mkdir()
    assert spec.load(write(folder, "entry_points: {}\n")).name == "churn-model"
    assert spec.load(write(folder, "name: churn\n")).name == "churn"


@pytest.mark.parametrize("name", ["MLproject", "MLProject", "mlproject", "MLPROJECT"])
def test_descriptor_name_is_case_insensitive(tmp_path: Path, name: str) -> None:
    project = spec.load(write(tmp_path, "name: x\n", name=name))
    assert project.descriptor == tmp_path / name


def test_folder_without_descriptor_is_a_plain_project(tmp_path: Path) -> None:
    project = spec.load(tmp_path)
    assert project.descriptor is None
    assert project.entry_points == {}
    assert project.env_type == "python_env"


@pytest.mark.parametrize(
    ("files", "descriptor", "env_type", "env_file"),
    [
        ([], "", "python_env", None),
        (["conda.yaml"], "", "conda_env", "conda.yaml"),
        (["python_env.yaml", "conda.yaml"], "", "python_env", "python_env.yaml"),
        (["env.yml"], "conda_env: env.yml\n", "conda_env", "env.yml"),
        (["conda.yaml"], "python_env: py.yaml\n", "python_env", "py.yaml"),
        (["conda.yaml"], "conda_env: ''\n", "conda_env", "conda.yaml"),
        ([], "docker_env: {image: x}\n", "docker_env", None),
    ],
)
def test_environment_selection_order(
    tmp_path: Path, files: list[str], descriptor: str, env_type: str, env_file: str | None
) -> None:
    for name in files:
        (tmp_path / name).write_text("{}\n")
    project = spec.load(write(tmp_path, descriptor + "entry_points: {}\n"))
    assert project.env_type == env_type
    assert project.env_file == (tmp_path / env_file if env_file else None)


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("train.py", "python train.py"),
        ("run me.sh", "bash 'run me.sh'"),
        ("model.R", "Rscript -e \"mlflow::mlflow_source('model.R')\" --args"),
    ],
)
def test_implicit_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, command: str
) -> None:
    monkeypatch.delenv("SHELL", raising=False)
    project = spec.load(write(tmp_path, "entry_points: {}\n"))
    entry = project.entry_point(name)
    assert (entry.command, entry.implicit, dict(entry.parameters)) == (command, True, {})


def test_unknown_entry_point_has_mlflows_message(tmp_path: Path) -> None:
    project = spec.load(write(tmp_path, "entry_points:\n  main:\n    command: x\n"))
    with pytest.raises(MLprojectError) as info:
        project.entry_point("train")
    assert str(info.value) == (
        "Could not find train among entry points ['main'] or interpret train as a runnable "
        "script. Supported script file extensions: ['.py', '.sh']"
    )


def test_load_raises_with_problems_when_nothing_can_be_read(tmp_path: Path) -> None:
    write(tmp_path, "entry_points: [\n")
    with pytest.raises(MLprojectError) as info:
        spec.load(tmp_path)
    [problem] = info.value.problems
    assert (problem.code, problem.path, problem.line) == ("MLP101", tmp_path / "MLproject", 2)
    assert "MLP101" in str(info.value)


def test_broken_entry_points_stay_in_the_model(tmp_path: Path) -> None:
    project, problems = spec.read(
        write(
            tmp_path,
            """\
entry_points:
  empty:
  nocommand:
    parameters: {a: string}
  badparams:
    parameters:
    command: x
  ok:
    command: x
""",
        )
    )
    assert project is not None
    assert {name: ep.broken for name, ep in project.entry_points.items()} == {
        "empty": True,
        "nocommand": True,
        "badparams": True,
        "ok": False,
    }
    assert [(p.code, p.line, p.entry_point) for p in problems] == [
        ("MLP204", 2, "empty"),
        ("MLP205", 3, "nocommand"),
        ("MLP207", 6, "badparams"),
    ]


def test_duplicate_keys_keep_the_last_and_are_routed_to_their_entry_point(tmp_path: Path) -> None:
    project, problems = spec.read(
        write(
            tmp_path,
            """\
name: a
entry_points:
  main:
    command: first
    command: second
name: b
""",
        )
    )
    assert project is not None
    assert project.name == "b"
    assert project.entry_points["main"].command == "second"
    assert [(p.code, p.line, p.entry_point) for p in problems] == [
        ("MLP210", 5, "main"),
        ("MLP210", 6, None),
    ]


def test_line_of_key_paths(tmp_path: Path) -> None:
    project = spec.load(
        write(tmp_path, "name: x\nentry_points:\n  main:\n    command: |\n      python a.py\n")
    )
    assert project.line_of("entry_points", "main", "command") == 4
    assert project.line_of("entry_points", "missing") == 2


def test_public_api_is_importable_without_pytest_and_lazily() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pytest_mlproject as m\n"
        "assert 'pytest_mlproject.spec' not in sys.modules\n"
        "assert callable(m.load) and callable(m.check) and callable(m.read)\n"
        "assert 'pytest' not in sys.modules and '_pytest' not in sys.modules\n"
        "assert set(m.__all__) <= set(dir(m)) | set(m._EXPORTS)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
