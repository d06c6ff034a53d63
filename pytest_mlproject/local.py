"""Run an entry point locally, as ``mlflow run`` does: its command rendered with MLflow's
semantics, in the project folder, in the environment the project declares when asked to
(``env_manager="uv"``, built by :mod:`pytest_mlproject.envs`) or with the current
interpreter (``env_manager="local"``, the default of this API). The command itself runs
through :mod:`pytest_mlproject.process`, which says how it is kept safe to leave unattended.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlproject.commands import render_command
from pytest_mlproject.problems import MLprojectError, MLprojectWarning
from pytest_mlproject.process import (
    GRACE,
    MAX_OUTPUT,
    TAIL_OUTPUT,
    Echo,
    RunError,
    RunResult,
    child_environment,
    environment_description,
    run_command,
)
from pytest_mlproject.sources import git_commit
from pytest_mlproject.spec import Project

if TYPE_CHECKING:
    from pytest_mlproject.envs import Environment, EnvManager, Note, Progress

__all__ = [
    "Echo",
    "NotRunnableError",
    "RunError",
    "RunResult",
    "child_environment",
    "environment_description",
    "local_skip_reason",
    "prepare_environment",
    "run_command",
    "run_entry_point",
]


class NotRunnableError(MLprojectError):
    """The project cannot be run locally by design (``docker_env``); a reason to skip."""


def local_skip_reason(project: Project) -> str | None:
    """Why ``project`` is not run locally, or ``None`` if it can be."""
    if project.env_type == "docker_env":
        image = (project.docker_env or {}).get("image")
        named = f" ({image})" if isinstance(image, str) and image else ""
        return (
            f"docker_env project: its commands need the Docker image{named}, and local runs "
            "use the current Python interpreter; run it with `mlflow run` instead"
        )
    if any(entry.spark_python_file for entry in project.entry_points.values()):
        return (
            "Databricks Spark job: MLflow runs its `databricks_spark_job.python_file` only on "
            "Databricks (`mlflow run -b databricks`; locally it fails with AttributeError): "
            "run it with --databricks"
        )
    return None


def issue(notes: list[Note] | tuple[Note, ...]) -> None:
    """Issue MLflow's warnings about an environment as :class:`MLprojectWarning`, at the
    environment file's line, through the warning filters in force."""
    for note in notes:
        warnings.warn_explicit(
            MLprojectWarning(note.message),
            MLprojectWarning,
            filename=str(note.path),
            lineno=note.line,
        )


def prepare_environment(
    project: Project,
    env_manager: EnvManager,
    *,
    env_dir: Path | str | None = None,
    timeout: float | None = None,
    progress: Progress | None = None,
) -> Environment | None:
    """The environment a run of ``project`` uses: built (or found) for ``uv`` and
    ``virtualenv`` when the project declares one, ``None`` to run with the current
    interpreter. Raises
    :class:`~pytest_mlproject.envs.BuildError` and
    :class:`~pytest_mlproject.envs.EnvFileError`."""
    if env_manager == "local":
        return None
    from pytest_mlproject import envs

    declared = envs.derive(project)
    if declared is None:
        return None
    return envs.ensure(
        project,
        declared,
        env_dir=Path(env_dir) if env_dir is not None else envs.default_env_dir(),
        manager=env_manager,
        timeout=timeout,
        progress=progress,
    )


def run_entry_point(
    project: Project,
    entry_point: str = "main",
    parameters: Mapping[str, Any] | None = None,
    *,
    base_dir: Path | str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    echo: Echo | None = None,
    commit: str | None = None,
    max_output: int = MAX_OUTPUT,
    tail_output: int = TAIL_OUTPUT,
    grace: float = GRACE,
    env_manager: EnvManager = "local",
    env_dir: Path | str | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Render and run ``entry_point`` of ``project`` in its folder; see :func:`run_command`.

    Relative ``path`` values resolve against ``base_dir`` (default: the current directory,
    as in MLflow). ``commit`` defaults to the commit of the project's Git repository.
    ``env_manager="uv"`` (or ``"virtualenv"``) runs it in the environment the project
    declares, built in
    ``env_dir`` (default: :func:`~pytest_mlproject.envs.default_env_dir`) if it is not there
    yet; the build counts against ``timeout``, and ``progress`` hears about it.
    Raises :class:`NotRunnableError` for ``docker_env`` projects, the errors of
    :func:`~pytest_mlproject.commands.render_command`, and those of the build
    (:class:`~pytest_mlproject.envs.BuildError`, :class:`~pytest_mlproject.envs.EnvFileError`).
    """
    reason = local_skip_reason(project)
    if reason is not None:
        raise NotRunnableError(reason)
    command = render_command(project.entry_point(entry_point), parameters, base_dir)
    if commit is None:
        commit = git_commit(project.directory)  # imports GitPython, which runs git
    environment = prepare_environment(
        project, env_manager, env_dir=env_dir, timeout=timeout, progress=progress
    )
    if environment is not None:
        issue(environment.notes)
        if timeout is not None:
            timeout = max(timeout - environment.duration, 0.001)
    return run_command(
        command,
        project.directory,
        timeout=timeout,
        env=env,
        echo=echo,
        commit=commit,
        environment=environment_description(project),
        entry_point=entry_point,
        max_output=max_output,
        tail_output=tail_output,
        grace=grace,
        venv=environment,
    )
