"""The pre-commit hook, run by pre-commit itself on a sample repository.

pre-commit installs the hook into a virtualenv of its own with pip, from a repository: this
test builds one from the working tree (so uncommitted changes are what is tested) and lets
pre-commit install it from PyPI's packages, which takes about 20 s.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: What pip needs to install the package, as pre-commit installs it.
ARGS = ("--all-files", "--color", "never")
PACKAGE = ("pyproject.toml", "README.md", "LICENSE", ".pre-commit-hooks.yaml", "pytest_mlproject")

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(
        importlib.util.find_spec("pre_commit") is None,
        reason="pre-commit is not installed (pip install -e '.[test]' brings it)",
    ),
    pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed"),
]


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def committed_repository(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text, encoding="utf-8")
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "sample")
    return path


def hook_repository(path: Path) -> Path:
    """This package's working tree as a committed repository, as pre-commit needs one."""
    path.mkdir()
    for name in PACKAGE:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, path / name)
    return committed_repository(path, {})


def test_the_hook_checks_the_repository_with_its_pytest_configuration(tmp_path: Path) -> None:
    hooks = hook_repository(tmp_path / "hooks")
    sample = committed_repository(
        tmp_path / "sample",
        {
            "models/churn/MLproject": (
                'name: churn\nentry_points:\n  main:\n    command: "python train.py {missing}"\n'
            ),
            "models/churn/train.py": "",
            "models/good/MLproject": "name: good\nentry_points:\n  main:\n    command: ls\n",
            "models/unused/conda.yaml": "dependencies: []\n",
            # Read by the hook as pytest would read it: the missing script is not reported.
            "pyproject.toml": '[tool.pytest.ini_options]\nmlproject_ignore = "MLP505"\n',
            "models/unused/MLproject": (
                "name: unused\nentry_points:\n  main:\n    command: python missing.py\n"
            ),
        },
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PRE_COMMIT"))},
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(hooks), "mlproject-check", *ARGS],
        cwd=sample,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "check MLflow MLproject files" in output
    problems = [line for line in output.splitlines() if line.startswith("models/")]
    assert problems == [
        "models/churn/MLproject:4: MLP501 placeholder `{missing}` in entry point 'main' is not "
        "a declared parameter; MLflow fails with KeyError: 'missing' when it runs: declare "
        "`missing` under `parameters`, or write `{{missing}}` for literal braces"
    ]
