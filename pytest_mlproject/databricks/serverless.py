"""Serverless jobs compute: which environment a run gets, and what it cannot do there.

Pure, like :mod:`pytest_mlproject.databricks.clusterspec`: no client, no request. A run on
serverless compute names an environment (``environments[].spec``: an environment version and
pip requirement lines) instead of a cluster; see docs/databricks.md, "Serverless jobs compute".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pytest_mlproject import envs, rsource
from pytest_mlproject.problems import MLprojectError, Problem
from pytest_mlproject.spec import EntryPoint, Project

#: Serverless environment versions and the Python each one runs (Databricks' release notes).
ENVIRONMENT_PYTHONS = {"1": "3.10", "2": "3.11", "3": "3.12", "4": "3.12", "5": "3.12"}
#: The newest version: what a project that pins no Python gets.
LATEST = "5"
#: The environment key of every run's one environment.
ENVIRONMENT_KEY = "mlproject"
#: What the launcher needs to log into MLflow when the project does not list MLflow itself:
#: the release notes of the standard environments do not list MLflow among their libraries.
MLFLOW_CLIENT = "mlflow-skinny"
_MLFLOW_NAMES = ("mlflow", "mlflow-skinny", "mlflow_skinny")
#: ``group:artifact:version``, how a Maven library is named.
_MAVEN = re.compile(r"^[\w.\-]+:[\w.\-]+:[\w.\-]+$")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class VersionError(MLprojectError):
    """An environment version that is not a whole number."""


def check_version(text: str) -> str:
    """``text`` as an environment version ("5"), or :class:`VersionError`."""
    stripped = text.strip()
    if not stripped.isdigit() or int(stripped) < 1:
        raise VersionError(
            f"{text!r} is not a serverless environment version; give a whole number such as "
            f'"{LATEST}" (versions: {offered()})'
        )
    return str(int(stripped))


def offered() -> str:
    return ", ".join(f"{v} (Python {p})" for v, p in ENVIRONMENT_PYTHONS.items())


@dataclass(frozen=True)
class Serverless:
    """Serverless compute for one entry point, as the settings or the session give it."""

    #: The version asked for; ``None``: from the project's Python (:func:`environment_version`).
    environment_version: str | None = None
    #: Pip requirement lines from the settings (``databricks: dependencies:``), with lines.
    dependencies: tuple[tuple[str, int], ...] = ()
    #: The settings file they come from, for messages; ``None`` for the session's options.
    path: Path | None = None


def describe_compute(body: dict[str, object]) -> str:
    """What a ``runs/submit`` body runs on: ``serverless, environment 5`` or ``cluster 15.4.x``."""
    environments = body.get("environments")
    if isinstance(environments, list) and environments:
        spec = environments[0].get("spec", {}) if isinstance(environments[0], dict) else {}
        return f"serverless, environment {spec.get('environment_version', '?')}"
    tasks = body.get("tasks")
    task = tasks[0] if isinstance(tasks, list) and tasks else {}
    cluster = task.get("new_cluster", {}) if isinstance(task, dict) else {}
    version = cluster.get("spark_version", "?") if isinstance(cluster, dict) else "?"
    return f"cluster {version}"


def declared_python(project: Project) -> tuple[str | None, Path | None, int]:
    """The ``major.minor`` Python the project pins, where, or ``None``."""
    try:
        declared = envs.derive(project)
    except envs.EnvFileError:
        return None, None, 1
    if declared is None or declared.python is None:
        return None, None, 1
    match = re.match(r"^\s*(\d+)\.(\d+)", declared.python)
    if match is None:
        return None, None, 1
    return f"{match.group(1)}.{match.group(2)}", declared.file, declared.python_line


def environment_version(project: Project, serverless: Serverless) -> str:
    """The version to send: the one given, else the newest that runs the project's Python."""
    if serverless.environment_version is not None:
        return serverless.environment_version
    python, _, _ = declared_python(project)
    matching = [v for v, p in ENVIRONMENT_PYTHONS.items() if p == python]
    return matching[-1] if matching else LATEST


def python_problem(project: Project, serverless: Serverless) -> Problem | None:
    """MLP715: the project pins a Python that the environment it gets does not run."""
    python, where, line = declared_python(project)
    if python is None or where is None:
        return None
    version = environment_version(project, serverless)
    if ENVIRONMENT_PYTHONS.get(version, python) == python:
        return None
    return Problem(
        where,
        line,
        "MLP715",
        f"the project pins Python {python}, which serverless environment version {version} "
        f"does not run (Python {ENVIRONMENT_PYTHONS[version]}); the versions and their "
        f"Pythons: {offered()}: pin a Python one of them runs, or choose the version with "
        "`environment_version:` (or --databricks-environment-version)",
    )


def names_mlflow(lines: list[str]) -> bool:
    for line in lines:
        match = _NAME.match(line)
        if match and match.group(1).lower().replace("_", "-") in _MLFLOW_NAMES:
            return True
    return False


def dependency_problems(serverless: Serverless) -> Iterator[Problem]:
    """Settings dependency lines serverless cannot install: JARs and eggs (MLP704), Maven
    coordinates (MLP714)."""
    where = serverless.path
    if where is None:
        return
    for text, line in serverless.dependencies:
        lowered = text.lower().split("#", 1)[0].strip()
        if lowered.endswith((".jar", ".egg")):
            kind = "jar" if lowered.endswith(".jar") else "egg"
            yield Problem(
                where,
                line,
                "MLP704",
                f"dependency {text!r} is an {kind}; serverless jobs compute installs pip "
                "requirements only (and Databricks no longer installs eggs): build a wheel "
                "and list it, or give this entry point a cluster spec",
            )
        elif _MAVEN.match(lowered):
            yield Problem(
                where,
                line,
                "MLP714",
                f"dependency {text!r} is a Maven coordinate; serverless jobs compute installs "
                "no Maven libraries, only pip requirement lines: use a Python package, or "
                "give this entry point a cluster spec with the library",
            )


def r_problem(project: Project, entry: EntryPoint) -> Problem | None:
    """MLP713: an entry point that runs R, which serverless compute does not have."""
    command = entry.command
    if not isinstance(command, str) or project.descriptor is None:
        return None
    scripts = list(rsource.scripts_run_by(command))
    words = command.split()
    runs_r = bool(scripts) or "Rscript" in words or (bool(words) and words[0] in ("R", "Rscript"))
    if not runs_r and not entry.name.lower().endswith(".r"):
        return None
    return Problem(
        project.descriptor,
        project.line_of("entry_points", entry.name, "command")
        if entry.name in project.entry_points
        else 1,
        "MLP713",
        f"entry point {entry.name!r} runs R, and serverless jobs compute runs Python only: "
        "give this entry point a cluster spec (entry_points: "
        f"{entry.name}: databricks: cluster_spec: ... in pytest-mlproject.yaml), or skip it "
        "on Databricks",
        entry.name,
    )
