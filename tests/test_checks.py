"""Rule details that the rule catalogue's examples do not pin down."""

from __future__ import annotations

from pathlib import Path

from pytest_mlproject import checks


def problems(directory: Path, descriptor: str, **files: str) -> list[tuple[str, int]]:
    (directory / "MLproject").write_text(descriptor, encoding="utf-8")
    (directory / "train.py").write_text("", encoding="utf-8")
    for name, text in files.items():
        (directory / name.replace("__", ".")).write_text(text, encoding="utf-8")
    return [(p.code, p.line) for p in checks.check(directory)]


MAIN = "entry_points:\n  main:\n    command: python train.py\n"


def test_python_env_with_empty_lists_is_what_mlflow_accepts(tmp_path: Path) -> None:
    env = 'python: "3.10"\nbuild_dependencies:\ndependencies:\n'
    assert problems(tmp_path, "python_env: env.yaml\n" + MAIN, env__yaml=env) == []


def test_python_version_is_quoted_as_written(tmp_path: Path) -> None:
    (tmp_path / "python_env.yaml").write_text("python: 3.10\n")
    (tmp_path / "MLproject").write_text(MAIN)
    (tmp_path / "train.py").write_text("")
    [problem] = checks.check(tmp_path)
    assert problem.code == "MLP308"
    assert 'quote it: `python: "3.10"`' in problem.message
    assert "the float 3.1" in problem.message


def test_numeric_format_spec_is_an_error_and_padding_a_warning(tmp_path: Path) -> None:
    descriptor = (
        "entry_points:\n  main:\n    parameters:\n      a: {type: float, default: 1}\n"
        "    command: python train.py {a:.2f} {a:>10}\n"
    )
    assert problems(tmp_path, descriptor) == [("MLP502", 5), ("MLP503", 5)]


def test_a_broken_entry_point_gets_no_misleading_placeholder_problem(tmp_path: Path) -> None:
    descriptor = (
        "entry_points:\n  main:\n    parameters:\n      alpha: 0.5\n"
        "    command: python train.py --alpha {alpha}\n"
    )
    assert problems(tmp_path, descriptor) == [("MLP208", 4)]


def test_entry_points_as_a_list_is_one_problem(tmp_path: Path) -> None:
    assert problems(tmp_path, "entry_points:\n  - main\n") == [("MLP203", 1)]


def test_documentation_keys_are_fine_everywhere(tmp_path: Path) -> None:
    descriptor = (
        "description: trains the model\nentry_points:\n  main:\n    description: x\n"
        "    parameters:\n      a: {type: string, default: x, help: y}\n"
        "    command: python train.py {a}\n"
    )
    assert problems(tmp_path, descriptor) == []
