"""Files that are not descriptors at all, and descriptors past the read limits.

Each gets a failing ``::spec`` item with its own rule code within bounded time and memory, and
the rest of the session is still checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from pytest_mlproject import checks, spec
from pytest_mlproject._yaml import Limits

GOOD = "entry_points:\n  main:\n    command: python train.py\n"


def codes(path: Path) -> list[str]:
    return [p.code for p in checks.check(path)]


def test_too_large(tmp_path: Path) -> None:
    (tmp_path / "MLproject").write_bytes(b"# padding\n" * 200_000)
    assert codes(tmp_path) == ["MLP102"]


def test_limits_are_settable(tmp_path: Path) -> None:
    (tmp_path / "MLproject").write_text(GOOD)
    assert spec.read(tmp_path, Limits(max_bytes=10))[1][0].code == "MLP102"
    assert spec.read(tmp_path, Limits(max_depth=2))[1][0].code == "MLP103"


def test_nul_byte_and_non_utf8(tmp_path: Path) -> None:
    (tmp_path / "MLproject").write_bytes(b"name: a\x00b\n")
    assert codes(tmp_path) == ["MLP105"]
    (tmp_path / "MLproject").write_bytes(b"name: caf\xe9\nentry_points: {}\n")
    [problem] = checks.check(tmp_path)
    assert (problem.code, problem.line) == ("MLP105", 1)
    assert "0xe9" in problem.message


def test_folder_named_mlproject(tmp_path: Path) -> None:
    (tmp_path / "MLproject").mkdir()
    assert codes(tmp_path) == ["MLP106"]


def test_broken_symlink(tmp_path: Path) -> None:
    (tmp_path / "MLproject").symlink_to(tmp_path / "missing")
    assert codes(tmp_path / "MLproject") == ["MLP106"]


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "MLproject")
    assert codes(tmp_path / "MLproject") == ["MLP106"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable(tmp_path: Path) -> None:
    (tmp_path / "MLproject").write_text(GOOD)
    (tmp_path / "MLproject").chmod(0)
    assert codes(tmp_path / "MLproject") == ["MLP106"]


def test_deep_nesting(tmp_path: Path) -> None:
    depth = 40
    (tmp_path / "MLproject").write_text("name: " + "[" * depth + "]" * depth + "\n")
    [problem] = checks.check(tmp_path)
    assert problem.code == "MLP103"


def test_deeper_than_libyaml_allows_is_still_our_problem(tmp_path: Path) -> None:
    text = "name: " + "[" * 5000 + "]" * 5000 + "\n"
    (tmp_path / "MLproject").write_text(text)
    # The libyaml in PyYAML 6.0.1's wheels has no nesting limit: our own depth limit stops
    # the reading instead. Either way it is one problem, never a crash.
    try:
        yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        assert codes(tmp_path) == ["MLP101"]
    else:
        assert codes(tmp_path) == ["MLP103"]


def test_alias_bomb(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (tmp_path / "MLproject").write_text("\n".join(lines) + "\n")
    [problem] = checks.check(tmp_path)
    assert problem.code == "MLP104"
    assert problem.line == 5  # a4: the first value past 100,000 nodes


def test_recursive_anchor(tmp_path: Path) -> None:
    (tmp_path / "MLproject").write_text("name: &x [a, *x]\n")
    assert codes(tmp_path) == ["MLP104"]


def test_a_few_aliases_are_fine(tmp_path: Path) -> None:
    (tmp_path / "MLproject").write_text(
        """\
common: &common
  alpha: {type: float, default: 0.1}
entry_points:
  main:
    parameters: *common
    command: python train.py {alpha}
  other:
    parameters:
      <<: *common
      beta: {type: float, default: 2}
    command: python train.py {alpha} {beta}
"""
    )
    (tmp_path / "train.py").write_text("")
    project = spec.load(tmp_path)
    assert list(project.entry_points["other"].parameters) == ["alpha", "beta"]
    assert codes(tmp_path) == ["MLP209"]  # `common` is not a key MLflow reads


def test_thousands_of_entry_points(tmp_path: Path) -> None:
    body = "".join(
        f"  ep{i}:\n    parameters:\n      p{i}: {{type: float, default: {i}}}\n"
        f"    command: python train.py {{p{i}}}\n"
        for i in range(5000)
    )
    (tmp_path / "MLproject").write_text(
        "entry_points:\n  main:\n    command: python train.py\n" + body
    )
    (tmp_path / "train.py").write_text("")
    project = spec.load(tmp_path)
    assert len(project.entry_points) == 5001
    assert codes(tmp_path) == []


def test_session_goes_on_past_hostile_files(pytester: pytest.Pytester) -> None:
    for name, content in {
        "bomb": "a: &a [1, *a]\n",
        "binary": "\x00\x01",
        "deep": "a: " + "[" * 50 + "]" * 50,
        "good": GOOD,
    }.items():
        (pytester.path / name).mkdir()
        (pytester.path / name / "MLproject").write_text(content)
        (pytester.path / name / "train.py").write_text("")
    os.mkfifo(pytester.path / "good" / "mlproject.fifo")
    result = pytester.runpytest("--mlproject", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines(
        [
            "binary/MLproject:1: MLP105 *",
            "bomb/MLproject:1: MLP104 *",
            "deep/MLproject:1: MLP103 *",
        ]
    )


def test_links_back_into_the_tree_are_not_followed(pytester: pytest.Pytester) -> None:
    (pytester.path / "a").mkdir()
    (pytester.path / "a" / "MLproject").write_text(GOOD)
    (pytester.path / "a" / "train.py").write_text("")
    (pytester.path / "a" / "up").symlink_to("..")
    (pytester.path / "a" / "self").symlink_to("../a")
    result = pytester.runpytest("--mlproject", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_broken_link_named_mlproject_is_a_failing_item(pytester: pytest.Pytester) -> None:
    (pytester.path / "p").mkdir()
    (pytester.path / "p" / "MLproject").symlink_to(pytester.path / "nowhere")
    (pytester.path / "p" / "test_other.py").write_text("def test_other(): pass\n")
    result = pytester.runpytest("--mlproject", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["p/MLproject:1: MLP106 the file does not exist (a broken symbolic link?)*"]
    )


def test_a_link_to_a_file_outside_the_project_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text("token: dapi-leak-me\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "MLproject").symlink_to(secret)
    [problem] = checks.check(project)
    assert problem.code == "MLP106"
    assert "outside the project folder" in problem.message
    assert "dapi" not in problem.message


def test_a_link_inside_the_project_is_read(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "project.yaml").write_text(GOOD)
    (tmp_path / "train.py").write_text("")
    (tmp_path / "MLproject").symlink_to("configs/project.yaml")
    assert codes(tmp_path) == []


def test_an_environment_file_outside_the_project_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "env.yaml").write_text("token: dapi-leak-me\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "MLproject").write_text("python_env: ../env.yaml\n" + GOOD)
    (project / "train.py").write_text("")
    problems = checks.check(project)
    assert [p.code for p in problems] == ["MLP310"]
    assert all("dapi" not in p.message for p in problems)
