"""Declared environments: derived as MLflow derives them, built with uv from the test wheelhouse
(``conftest.wheelhouse``; uv never reaches an index here), kept and shared."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import pytest

from pytest_mlproject import envs, local, spec
from pytest_mlproject.databricks import preflight
from pytest_mlproject.problems import MLprojectError, MLprojectWarning

PYTHON = "{}.{}".format(*platform.python_version_tuple()[:2])
#: No machine has it, and nothing may download it.
MISSING_PYTHON = "3.99"


def project(folder: Path, env_line: str | None = None, **files: str) -> spec.Project:
    folder.mkdir(parents=True, exist_ok=True)
    head = f"{env_line}\n" if env_line else ""
    (folder / "MLproject").write_text(
        f"name: {folder.name}\n{head}entry_points:\n  main:\n"
        "    command: python -c 'import demo_pkg; print(demo_pkg.__version__)'\n"
    )
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return spec.load(folder)


# --- deriving -------------------------------------------------------------------------------


def test_python_env_is_read_as_mlflow_reads_it(tmp_path: Path) -> None:
    declared = envs.derive(
        project(
            tmp_path / "p",
            "python_env: python_env.yaml",
            **{
                "python_env.yaml": 'python: "3.10.4"\nbuild_dependencies:\n  - pip\n'
                "dependencies:\n  - demo_pkg==1.0\n  - -r requirements.txt\n"
            },
        )
    )
    assert declared is not None
    assert declared.python == "3.10.4"
    assert declared.python_line == 1
    assert [(r.text, r.line) for r in declared.build_dependencies] == [("pip", 3)]
    assert [(r.text, r.line) for r in declared.dependencies] == [
        ("demo_pkg==1.0", 5),
        ("-r requirements.txt", 6),
    ]
    assert declared.notes() == []


def test_conda_yaml_is_converted_as_mlflow_converts_it(tmp_path: Path) -> None:
    declared = envs.derive(
        project(
            tmp_path / "p",
            **{
                "conda.yaml": "channels: [conda-forge]\ndependencies:\n  - python=3.10.12\n"
                "  - pip=23.1\n  - setuptools\n  - numpy=1.26\n  - conda-forge::libgcc\n"
                "  - pip:\n      - demo_pkg==2.0\n"
            },
        )
    )
    assert declared is not None
    assert declared.kind == "conda_env"
    assert (declared.python, declared.python_line) == ("3.10.12", 3)
    assert [r.text for r in declared.build_dependencies] == ["pip==23.1", "setuptools"]
    assert [(r.text, r.line) for r in declared.dependencies] == [("demo_pkg==2.0", 9)]
    assert [(r.text, r.line) for r in declared.dropped] == [
        ("numpy=1.26", 6),
        ("conda-forge::libgcc", 7),
    ]
    [note] = declared.notes()
    assert note.line == 6
    assert note.message.startswith(
        "The following conda dependencies will not be installed in the resulting environment: "
        "['numpy=1.26', 'conda-forge::libgcc']"
    )


def test_conda_yaml_without_python_uses_the_running_version_with_a_warning(
    tmp_path: Path,
) -> None:
    declared = envs.derive(project(tmp_path / "p", **{"conda.yaml": "dependencies: [pip]\n"}))
    assert declared is not None
    assert declared.python is None
    assert declared.python_version() == platform.python_version()
    [note] = declared.notes()
    assert note.message.startswith(
        f"conda.yaml does not include a python version specification. Using the current "
        f"python version {platform.python_version()}."
    )


@pytest.mark.parametrize(
    ("python", "message"),
    [
        ("python", "Invalid dependency for python: python. It must be pinned"),
        ("python<3.9", "Invalid version comparator for python: '<'."),
    ],
)
def test_a_python_pin_mlflow_refuses_fails_the_build(
    tmp_path: Path, python: str, message: str
) -> None:
    proj = project(tmp_path / "p", **{"conda.yaml": f"dependencies:\n  - {python}\n"})
    declared = envs.derive(proj)
    assert declared is not None
    with pytest.raises(envs.EnvFileError, match=r"conda\.yaml:2: " + message.replace(".", r"\.")):
        envs.ensure(proj, declared, env_dir=tmp_path / "envs")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"conda.yaml": "dependencies:\n  - {channels: x}\n"}, r"conda\.yaml:2: Invalid conda"),
        ({"python_env.yaml": "python: '3.11'\npackages: []\n"}, r":2: unknown key 'packages'"),
        ({"python_env.yaml": "python: 3.10\n"}, r":1: `python` must be a string"),
        ({"python_env.yaml": "dependencies: numpy\n"}, r":1: `dependencies` must be a list"),
        ({"python_env.yaml": "- a\n"}, r":1: an environment file must be a mapping"),
    ],
)
def test_an_environment_file_mlflow_refuses_is_an_error_naming_file_and_line(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    with pytest.raises(envs.EnvFileError, match=message):
        envs.derive(project(tmp_path / "p", **files))


def test_no_environment_declared(tmp_path: Path) -> None:
    bare = project(tmp_path / "bare")
    assert envs.derive(bare) is None
    assert envs.default_env_manager(bare) == "local"
    implicit = project(tmp_path / "implicit", **{"python_env.yaml": "dependencies: []\n"})
    assert envs.default_env_manager(implicit) == "uv"


def test_requirement_files_resolve_from_the_project_folder_here_and_for_databricks(
    tmp_path: Path,
) -> None:
    """As MLflow: `-r requirements.txt` in envs/python_env.yaml names the project's file, not
    one beside the environment file; nested files resolve from the file that names them."""
    proj = project(
        tmp_path / "p",
        "python_env: envs/python_env.yaml",
        **{
            "envs/python_env.yaml": "dependencies:\n  - -r requirements.txt\n",
            "envs/requirements.txt": "not-this-one\n",
            "requirements.txt": "-r more/reqs.txt\n",
            "more/reqs.txt": "demo_pkg==1.0\n",
        },
    )
    found = preflight.dependencies(proj)
    assert found.requirement_files == (proj.directory.resolve() / "requirements.txt",)
    assert found.problems == ()
    declared = envs.derive(proj)
    assert declared is not None
    interpreter = envs.Interpreter(Path("/usr/bin/python3"), "3.11.7")
    before = envs.environment_key("uv", interpreter, declared, proj.directory)
    (proj.directory / "envs" / "requirements.txt").write_text("changed\n")
    assert envs.environment_key("uv", interpreter, declared, proj.directory) == before
    (proj.directory / "more" / "reqs.txt").write_text("demo_pkg==2.0\n")
    assert envs.environment_key("uv", interpreter, declared, proj.directory) != before
    other = envs.Interpreter(Path("/usr/bin/python3"), "3.11.8")
    assert envs.environment_key("uv", other, declared, proj.directory) != before


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("conda", "conda is not supported: use `uv`, which builds conda.yaml projects"),
        (
            "pyenv",
            r"Invalid value for `env_manager`: pyenv\. Must be one of "
            r"\['uv', 'virtualenv', 'local'\]",
        ),
    ],
)
def test_env_managers_we_do_not_build_with_are_refused(value: str, message: str) -> None:
    with pytest.raises(MLprojectError, match="^--mlproject-env-manager: " + message):
        envs.check_env_manager(value, "--mlproject-env-manager")
    assert envs.check_env_manager(" UV ", "x") == "uv"
    assert envs.check_env_manager("virtualenv", "x") == "virtualenv"


def test_default_env_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert envs.default_env_dir() == tmp_path / "pytest-mlproject" / "envs"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert envs.default_env_dir() == Path.home() / ".cache" / "pytest-mlproject" / "envs"


# --- building (uv, from the wheelhouse) -----------------------------------------------------


def test_the_run_gets_the_declared_environment_built_once(tmp_path: Path) -> None:
    proj = project(
        tmp_path / "p",
        "python_env: python_env.yaml",
        **{"python_env.yaml": f'python: "{PYTHON}"\ndependencies:\n  - demo_pkg==1.0\n'},
    )
    heard: list[str] = []
    first = local.run_entry_point(
        proj, env_manager="uv", env_dir=tmp_path / "envs", progress=heard.append, timeout=120
    )
    assert first.ok, first.stderr
    assert first.stdout == "1.0\n"
    assert first.env_manager == "uv"
    assert heard[0] == (
        f"building environment for p (python_env.yaml, Python {platform.python_version()}): "
        "1 package ..."
    )
    assert heard[1].startswith("done in ")
    [built] = [p for p in (tmp_path / "envs").iterdir() if p.is_dir()]
    assert f"the uv environment {built} (Python " in first.environment
    heard.clear()
    again = local.run_entry_point(proj, env_manager="uv", env_dir=tmp_path / "envs", timeout=60)
    assert again.ok
    assert heard == []
    assert again.environment.endswith("from python_env.yaml, reused)")
    # The API's default is still the current interpreter, which lacks demo_pkg.
    here = local.run_entry_point(proj)
    assert here.exit_code == 1
    assert "No module named 'demo_pkg'" in here.stderr
    assert here.environment.endswith("python_env.yaml was not installed (env manager local)")


def test_the_environment_is_activated_and_nothing_of_the_callers_leaks_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest's interpreter has PyYAML; the project's environment does not, and neither
    PYTHONPATH nor pytest's folder on PATH may lend it."""
    import yaml

    site = Path(yaml.__file__).parent.parent
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv(
        "PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    )
    proj = project(tmp_path / "p", "python_env: python_env.yaml", **{"python_env.yaml": "{}\n"})
    (proj.directory / "MLproject").write_text(
        "entry_points:\n  main:\n    command: >-\n"
        '      echo "$VIRTUAL_ENV|$(command -v python)|${{PYTHONPATH-unset}}|$(command -v pytest)";'
        "      python -c 'import yaml'\n"
    )
    proj = spec.load(proj.directory)
    result = local.run_entry_point(proj, env_manager="uv", env_dir=tmp_path / "envs", timeout=60)
    venv, python, pythonpath, pytest_path = result.stdout.strip().split("|")
    assert python == f"{venv}/bin/python"
    assert pythonpath == "unset"
    assert not pytest_path.startswith(str(Path(sys.executable).parent))
    assert result.exit_code == 1
    assert "ModuleNotFoundError: No module named 'yaml'" in result.stderr


def test_a_failed_build_names_the_file_and_requirement_and_is_built_afresh_once_fixed(
    tmp_path: Path,
) -> None:
    proj = project(
        tmp_path / "p",
        "python_env: python_env.yaml",
        **{"python_env.yaml": "dependencies:\n  - demo_pkg==9.9\n"},
    )
    with pytest.raises(envs.BuildError) as failed:
        local.run_entry_point(proj, env_manager="uv", env_dir=tmp_path / "envs", timeout=60)
    message = str(failed.value)
    assert message.startswith(f"{proj.env_file}: uv failed installing demo_pkg==9.9 (exit code")
    assert "uv reports: " in message
    assert "demo-pkg==9.9" in message
    assert "--- last " in message
    assert [p.name for p in (tmp_path / "envs").iterdir() if p.is_dir()] == []
    (proj.directory / "python_env.yaml").write_text("dependencies:\n  - demo_pkg==2.0\n")
    result = local.run_entry_point(proj, env_manager="uv", env_dir=tmp_path / "envs", timeout=60)
    assert result.stdout == "2.0\n"


def test_a_missing_python_version_is_never_replaced_or_downloaded(tmp_path: Path) -> None:
    proj = project(
        tmp_path / "p",
        "python_env: python_env.yaml",
        **{"python_env.yaml": f'python: "{MISSING_PYTHON}"\n'},
    )
    with pytest.raises(envs.PythonNotFoundError) as missing:
        local.run_entry_point(proj, env_manager="uv", env_dir=tmp_path / "envs", timeout=60)
    assert str(missing.value) == (
        f"Python {MISSING_PYTHON} was not found on this machine, and pytest-mlproject never "
        f"downloads one unless told to. Ways out: install Python {MISSING_PYTHON} (any patch "
        "level); or let uv download it (UV_PYTHON_DOWNLOADS=automatic); or run with the "
        "current interpreter: --mlproject-env-manager local"
    )


def test_a_different_patch_level_is_a_warning_naming_both(tmp_path: Path) -> None:
    pinned = f"{PYTHON}.999"
    proj = project(
        tmp_path / "p",
        "python_env: python_env.yaml",
        **{"python_env.yaml": f'python: "{pinned}"\ndependencies: [demo_pkg==1.0]\n'},
    )
    with pytest.warns(MLprojectWarning) as caught:
        result = local.run_entry_point(proj, env_manager="uv", env_dir=tmp_path / "envs")
    assert result.ok
    [warning] = caught
    assert str(warning.message).startswith(
        f"python_env.yaml pins Python {pinned}, and this machine has {platform.python_version()}"
    )
    assert (warning.filename, warning.lineno) == (str(proj.env_file), 1)


SLOW_BACKEND = """\
import os, time, zipfile

def _maybe_slow():
    if os.environ.get("SLOW_PKG_SLEEP"):
        time.sleep(float(os.environ["SLOW_PKG_SLEEP"]))

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _maybe_slow()
    name = "slow_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as whl:
        whl.writestr("slow_pkg.py", "DONE = True\\n")
        info = "slow_pkg-1.0.dist-info/"
        whl.writestr(info + "METADATA", "Metadata-Version: 2.1\\nName: slow-pkg\\nVersion: 1.0\\n")
        whl.writestr(info + "WHEEL", "Wheel-Version: 1.0\\nTag: py3-none-any\\n")
        whl.writestr("slow_pkg-1.0.dist-info/RECORD", "")
    return name
"""


def test_an_interrupted_build_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build stopped by the run's time limit leaves nothing behind that a later run could
    take for complete; the next run builds it afresh."""
    proj = project(
        tmp_path / "p",
        "python_env: python_env.yaml",
        **{
            "python_env.yaml": "dependencies:\n  - ./slow\n",
            "slow/pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\n'
            'backend-path = ["."]\n\n[project]\nname = "slow-pkg"\nversion = "1.0"\n',
            "slow/backend.py": SLOW_BACKEND,
        },
    )
    (proj.directory / "MLproject").write_text(
        "entry_points:\n  main:\n    command: python -c 'import slow_pkg; print(slow_pkg.DONE)'\n"
    )
    proj = spec.load(proj.directory)
    monkeypatch.setenv("SLOW_PKG_SLEEP", "60")
    with pytest.raises(envs.BuildTimeout, match=r"timed out installing \./slow; its processes"):
        local.run_entry_point(proj, env_manager="uv", env_dir=tmp_path / "envs", timeout=3)
    assert sorted(p.name for p in (tmp_path / "envs").iterdir() if p.is_dir()) == []
    monkeypatch.delenv("SLOW_PKG_SLEEP")
    result = local.run_entry_point(proj, env_manager="uv", env_dir=tmp_path / "envs", timeout=60)
    assert result.stdout == "True\n"


def test_a_build_left_by_a_killed_process_is_removed_not_used(tmp_path: Path) -> None:
    proj = project(
        tmp_path / "p",
        "python_env: python_env.yaml",
        **{"python_env.yaml": "dependencies: [demo_pkg==1.0]\n"},
    )
    declared = envs.derive(proj)
    assert declared is not None
    interpreter = envs.find_interpreter(platform.python_version())
    key = envs.environment_key("uv", interpreter, declared, proj.directory)
    leftover = tmp_path / "envs" / f".{key}.tmp-killed"
    (leftover / "bin").mkdir(parents=True)
    (leftover / "bin" / "python").write_text("#!/bin/sh\nexit 3\n")
    result = local.run_entry_point(proj, env_manager="uv", env_dir=tmp_path / "envs", timeout=60)
    assert result.stdout == "1.0\n"
    assert not leftover.exists()
