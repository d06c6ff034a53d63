"""``::run`` items in the environment each project declares (``--mlproject-env-manager``), as a
user sees them: outcomes, messages, JUnit properties. uv installs from the test wheelhouse
only (``conftest.wheelhouse``)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from helpers import junit

REPO = Path(__file__).resolve().parents[1]

THREE = """\
name: three
python_env: python_env.yaml
entry_points:
  main:
    command: python -c 'import demo_pkg; print(demo_pkg.__version__)'
  script:
    command: demo
  check:
    command: python -c 'import demo_pkg; assert demo_pkg.__version__ == "1.0"'
"""


def write(folder: Path, **files: str) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def built(env_dir: Path) -> list[str]:
    return sorted(p.name for p in env_dir.iterdir() if p.is_dir()) if env_dir.exists() else []


def test_the_tutorial_shaped_project_runs_as_declared_and_not_with_pytests_interpreter(
    pytester: pytest.Pytester,
) -> None:
    # What the project needs must be missing here, or a run with pytest's interpreter passes.
    assert importlib.util.find_spec("texttable") is None, "the test environment has texttable"
    shutil.copytree(REPO / "fixtures" / "tutorial", pytester.path / "tutorial")
    env_dir = pytester.path / "envs"
    result = pytester.runpytest(
        "--mlproject-run", "--mlproject-env-dir", str(env_dir), "-p", "no:randomly"
    )
    result.assert_outcomes(passed=3, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "pytest-mlproject: building environment for leaderboard (conda.yaml, Python *): "
            "2 packages ...",
            "pytest-mlproject: done in * s",
            "*conda.yaml:1: MLprojectWarning: conda.yaml does not include a python version "
            "specification. Using the current python version *",
        ]
    )
    assert len(built(env_dir)) == 1
    here = pytester.runpytest("--mlproject-run", "--mlproject-env-manager", "local")
    here.assert_outcomes(passed=2, failed=1)
    here.stdout.fnmatch_lines(
        [
            "*ran in: * with the current interpreter, * conda.yaml was not installed "
            "(env manager local)",
            "ModuleNotFoundError: No module named 'texttable'",
        ]
    )


def test_three_entry_points_and_two_workers_share_one_build(pytester: pytest.Pytester) -> None:
    write(
        pytester.path / "three",
        MLproject=THREE,
        **{"python_env.yaml": "dependencies:\n  - demo_pkg==1.0\n"},
    )
    env_dir = pytester.path / "envs"
    report = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        "--mlproject-run",
        "-n",
        "2",
        f"--junitxml={report}",
        "-o",
        f"mlproject_env_dir={env_dir}",
    )
    result.assert_outcomes(passed=7)
    [name] = built(env_dir)
    runs = {k: v for k, v in junit(report).items() if k.endswith("::run")}
    assert len(runs) == 3
    for properties in runs.values():
        assert properties["env_manager"] == "uv"
        assert properties["environment"].startswith(f"the uv environment {env_dir / name} ")


def test_a_failed_build_fails_its_run_items_only_and_is_rebuilt_once_fixed(
    pytester: pytest.Pytester,
) -> None:
    write(
        pytester.path / "broken",
        MLproject=THREE.replace("name: three", "name: broken"),
        **{"python_env.yaml": "dependencies:\n  - demo_pkg==9.9\n"},
    )
    write(
        pytester.path / "fine",
        MLproject="entry_points:\n  main:\n    command: python -c 'import demo_pkg'\n",
        **{"python_env.yaml": "dependencies:\n  - demo_pkg==2.0\n"},
    )
    env_dir = pytester.path / "envs"
    args = ["--mlproject-run", "--mlproject-env-dir", str(env_dir), "-p", "no:randomly"]
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=7, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*broken/MLproject:4: entry point 'main' did not run: its environment could not "
            "be built (--mlproject-env-manager uv)",
            "*broken/python_env.yaml: uv failed installing demo_pkg==9.9 (exit code 1 after *",
            "uv reports: Because there is no version of demo-pkg==9.9 *",
            "--- last * lines of uv's output ---",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert len(built(env_dir)) == 1  # fine's
    (pytester.path / "broken" / "python_env.yaml").write_text("dependencies: [demo_pkg==1.0]\n")
    pytester.runpytest(*args).assert_outcomes(passed=10)
    assert len(built(env_dir)) == 2


def test_a_missing_python_version_fails_the_run_naming_it_and_the_ways_out(
    pytester: pytest.Pytester,
) -> None:
    write(
        pytester.path / "old",
        MLproject="entry_points:\n  main:\n    command: python -V\n",
        **{"python_env.yaml": 'python: "3.99"\n'},
    )
    result = pytester.runpytest("--mlproject-run", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "Python 3.99 was not found on this machine, and pytest-mlproject never downloads "
            "one unless told to. Ways out: install Python 3.99 (any patch level); or let uv "
            "download it (UV_PYTHON_DOWNLOADS=automatic); or run with the current "
            "interpreter: --mlproject-env-manager local",
        ]
    )
    pytester.runpytest("--mlproject-run", "--mlproject-env-manager", "local").assert_outcomes(
        passed=3
    )


def test_the_project_setting_wins_and_a_project_without_environment_runs_locally(
    pytester: pytest.Pytester,
) -> None:
    write(
        pytester.path / "pinned",
        MLproject="entry_points:\n  main:\n    command: python -c 'import yaml'\n",
        **{
            "python_env.yaml": "dependencies: []\n",
            "pytest-mlproject.yaml": "env_manager: local\n",
        },
    )
    write(
        pytester.path / "bare",
        MLproject="entry_points:\n  main:\n    command: python -c 'import yaml'\n",
    )
    report = pytester.path / "junit.xml"
    result = pytester.runpytest(
        "--mlproject-run", "--mlproject-env-manager", "uv", f"--junitxml={report}"
    )
    result.assert_outcomes(passed=6)
    properties = {
        name.split("::")[0].split(".")[0]: p
        for name, p in junit(report).items()
        if name.endswith("::run")
    }
    assert properties["pinned"]["env_manager"] == "local"
    bare = properties["bare"]
    assert bare["env_manager"] == "uv"
    assert bare["environment"].endswith("; the project declares no environment")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("conda", "conda is not supported: use `uv`, which builds conda.yaml projects as"),
        (
            "docker",
            "Invalid value for `env_manager`: docker. Must be one of ['uv', 'virtualenv', 'local']",
        ),
    ],
)
def test_an_env_manager_we_do_not_build_with_is_a_usage_error(
    pytester: pytest.Pytester, value: str, message: str
) -> None:
    result = pytester.runpytest("--mlproject-run", "--mlproject-env-manager", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--mlproject-env-manager / mlproject_env_manager: {message}" in result.stderr.str()


def test_a_bad_env_manager_in_the_settings_file_is_reported(pytester: pytest.Pytester) -> None:
    write(
        pytester.path / "p",
        MLproject="entry_points:\n  main:\n    command: 'true'\n",
        **{"pytest-mlproject.yaml": "env_manager: conda\n"},
    )
    result = pytester.runpytest("--mlproject")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*pytest-mlproject.yaml:1: MLP803 `env_manager` is 'conda'; give `uv` (build the "
            "environment the project declares), `virtualenv` (build it with venv and pip) or "
            "`local` (use the interpreter running pytest) (MLflow runs conda projects under "
            "uv too)"
        ]
    )
