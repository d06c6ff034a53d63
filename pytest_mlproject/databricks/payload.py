"""The command a cluster runs, and the ``runs/submit`` body that makes it run there.

Shared by the ``::databricks`` items and :func:`pytest_mlproject.databricks.api.submit_entry_point`:
both render the command with :func:`cluster_command` and make the job with :func:`build_job`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlproject import _fs, commands
from pytest_mlproject.databricks import preflight
from pytest_mlproject.problems import MLprojectError
from pytest_mlproject.spec import EntryPoint, Project

if TYPE_CHECKING:
    from pytest_mlproject.databricks.archive import Archive
    from pytest_mlproject.databricks.clusterspec import ClusterSpec
    from pytest_mlproject.databricks.job import Job
    from pytest_mlproject.databricks.serverless import Serverless

TASK_KEY = "mlproject"


def cluster_command(project: Project, entry: EntryPoint, values: Mapping[str, Any]) -> str:
    """The command as ``mlflow run`` renders it, with ``path`` values made relative to the
    project folder: the launcher runs the command where it unpacked the project.

    Raises ``MLprojectError`` for a value MLflow refuses or one that does not travel.
    """
    given = dict(values)
    parameters = dict(entry.parameters)
    for name, parameter in entry.parameters.items():
        if parameter.type != "path":
            continue
        value = given.get(name, parameter.default)
        if value is None:
            continue  # missing: render_command says so, in MLflow's words
        reason = preflight.outside_path(project, entry, name, value)
        if reason is not None:
            raise MLprojectError(reason)
        text = str(value)
        parsed = urllib.parse.urlparse(text)
        if text == "" or (parsed.scheme and not (parsed.scheme == "file" and not parsed.netloc)):
            continue  # remote (dbfs:/, s3://...): passed unchanged
        local = parsed.path if parsed.scheme == "file" else text
        target = _fs.resolved(project.directory / local)
        if target is None or not _fs.exists(target):
            raise commands.ParameterError(
                f"Got value {text} for parameter {name}, but no such file or directory was found."
            )
        given[name] = os.path.relpath(target, project.directory.resolve())
        parameters[name] = dataclasses.replace(parameter, type="string")
    cluster_entry = dataclasses.replace(entry, parameters=parameters)
    return commands.render_command(cluster_entry, given, base_dir=project.directory)


def idempotency_token(session: str, nodeid: str) -> str:
    """Unique to this session and item, the same on every retry (at most 64 characters)."""
    return hashlib.sha256(f"{session}\0{nodeid}".encode()).hexdigest()[:64]


def timeout_seconds(timeout: float) -> int:
    """A run's ``timeout_seconds`` for a time limit in seconds: whole seconds, rounded up and
    at least 1, since Databricks reads 0 as "no limit" (``round`` made 0.4 s mean none, and
    2.5 s mean 2)."""
    return max(1, math.ceil(timeout))


def run_name(project: Project, entry: str) -> str:
    return f"{project.name}: {entry} (pytest-mlproject)"[:4096]


def submit_body(
    *,
    name: str,
    new_cluster: Mapping[str, Any],
    libraries: list[Any],
    launcher: str,
    archive_name: str,
    entry: str,
    command: str,
    timeout_seconds: int,
    token: str,
    env: Mapping[str, str],
) -> dict[str, Any]:
    """A Jobs API 2.2 ``runs/submit`` body: one ``spark_python_task`` running the launcher."""
    from pytest_mlproject.databricks import launcher as launcher_script

    parameters = launcher_script.arguments(archive=archive_name, entry=entry, command=command)
    cluster = dict(new_cluster)
    cluster["spark_env_vars"] = {**dict(cluster.get("spark_env_vars") or {}), **env}
    task: dict[str, Any] = {
        "task_key": TASK_KEY,
        "new_cluster": cluster,
        "spark_python_task": {"python_file": launcher, "parameters": parameters},
        "timeout_seconds": timeout_seconds,
    }
    if libraries:
        task["libraries"] = libraries
    return {
        "run_name": name,
        "tasks": [task],
        "timeout_seconds": timeout_seconds,
        "idempotency_token": token,
    }


#: What reaches a serverless run's command, through the launcher's ``--env`` arguments (task
#: parameters, shown on the run page: nothing secret goes this way).
SERVERLESS_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")


def serverless_body(
    *,
    name: str,
    environment_version: str,
    dependencies: list[str],
    launcher: str,
    archive_name: str,
    entry: str,
    command: str,
    timeout_seconds: int,
    token: str,
    env: Mapping[str, str],
) -> dict[str, Any]:
    """A ``runs/submit`` body for serverless jobs compute: the task names the run's one
    environment, and the MLflow variables travel as launcher arguments (serverless has no
    cluster variables)."""
    from pytest_mlproject.databricks import launcher as launcher_script
    from pytest_mlproject.databricks.serverless import ENVIRONMENT_KEY

    passed = {k: v for k, v in env.items() if k in SERVERLESS_ENV}
    parameters = launcher_script.arguments(
        archive=archive_name, entry=entry, command=command, env=passed
    )
    task: dict[str, Any] = {
        "task_key": TASK_KEY,
        "environment_key": ENVIRONMENT_KEY,
        "spark_python_task": {"python_file": launcher, "parameters": parameters},
        "timeout_seconds": timeout_seconds,
    }
    spec = {"environment_version": environment_version, "dependencies": dependencies}
    return {
        "run_name": name,
        "tasks": [task],
        "environments": [{"environment_key": ENVIRONMENT_KEY, "spec": spec}],
        "timeout_seconds": timeout_seconds,
        "idempotency_token": token,
    }


def placed(body: Mapping[str, Any], upload_dir: str) -> dict[str, Any]:
    """``body`` with the launcher, its archive and the requirements files named where a
    cluster finds them once uploaded to ``upload_dir`` (``/Workspace/...`` or ``/Volumes/...``):
    absolute paths, since the launcher cannot know where it is stored (no ``__file__``).

    Raises ``DatabricksError`` for a folder that is neither a workspace nor a volume folder.
    """
    from pytest_mlproject.databricks.workspace import cluster_path

    placed_body = dict(body)
    task = dict(body["tasks"][0])
    python_task = dict(task["spark_python_task"])
    python_task["python_file"] = cluster_path(upload_dir, python_task["python_file"])
    parameters = list(python_task.get("parameters", []))
    # The options come first, so the first "--archive" is the option, never the command.
    at = parameters.index("--archive") + 1 if "--archive" in parameters else len(parameters)
    if at < len(parameters) and "/" not in parameters[at]:
        parameters[at] = cluster_path(upload_dir, parameters[at])
    python_task["parameters"] = parameters
    task["spark_python_task"] = python_task
    libraries = [
        {"requirements": cluster_path(upload_dir, library["requirements"])}
        if "requirements" in library and "/" not in library["requirements"]
        else library
        for library in task.get("libraries", [])
    ]
    if libraries:
        task["libraries"] = libraries
    placed_body["tasks"] = [task]
    if body.get("environments"):
        placed_body["environments"] = [
            _placed_environment(environment, upload_dir) for environment in body["environments"]
        ]
    return placed_body


def _placed_environment(environment: Mapping[str, Any], upload_dir: str) -> dict[str, Any]:
    """An environment whose ``-r NAME`` lines name uploaded files by absolute path (relative
    ones do not resolve on serverless)."""
    from pytest_mlproject.databricks.workspace import cluster_path

    spec = dict(environment.get("spec") or {})
    lines = []
    for line in spec.get("dependencies") or []:
        option, _, name = str(line).partition(" ")
        placed_line = line
        if option == "-r" and name and "/" not in name:
            placed_line = f"-r {cluster_path(upload_dir, name)}"
        lines.append(placed_line)
    spec["dependencies"] = lines
    return {**dict(environment), "spec": spec}


def launcher_source() -> tuple[str, bytes]:
    """The launcher script and the content-addressed name it is stored under."""
    from pytest_mlproject.databricks import launcher

    data = Path(launcher.__file__).read_bytes()
    return f"mlproject-launcher-{hashlib.sha256(data).hexdigest()[:16]}.py", data


def build_job(
    project: Project,
    entry: str,
    spec: ClusterSpec | Serverless,
    *,
    command: str,
    packed: Archive,
    nodeid: str,
    label: str,
    token: str,
    timeout: float,
    experiment_id: str | None,
    mlflow_env: Mapping[str, str] | None = None,
) -> Job:
    """The job that runs ``command`` (from :func:`cluster_command`) for entry point ``entry``
    on a new cluster: its submit body, with the launcher and requirements files still bare
    names that :class:`~pytest_mlproject.databricks.session.Coordinator` places in the upload
    folder, and the files to upload there (the launcher, the archive, requirements files).
    ``mlflow_env`` (``--mlproject-tracking``: the MLflow run to log into) wins over the
    MLflow variables made from ``experiment_id``."""
    from pytest_mlproject.databricks import archive
    from pytest_mlproject.databricks.job import Job, Upload

    deps = preflight.dependencies(project)
    requirement_names = {
        path: f"requirements-{archive.content_name(path.read_bytes())}.txt"
        for path in deps.requirement_files
    }
    launcher_name, launcher_data = launcher_source()
    env = {"MLFLOW_TRACKING_URI": "databricks"}
    if experiment_id:
        env["MLFLOW_EXPERIMENT_ID"] = experiment_id
    env.update(mlflow_env or {})
    from pytest_mlproject.databricks.clusterspec import ClusterSpec

    if isinstance(spec, ClusterSpec):
        body = submit_body(
            name=run_name(project, entry),
            new_cluster=spec.new_cluster,
            libraries=preflight.libraries(spec, deps, requirement_names),
            launcher=launcher_name,
            archive_name=packed.name,
            entry=entry,
            command=command,
            timeout_seconds=timeout_seconds(timeout),
            token=token,
            env=env,
        )
    else:
        from pytest_mlproject.databricks.serverless import environment_version

        body = serverless_body(
            name=run_name(project, entry),
            environment_version=environment_version(project, spec),
            dependencies=preflight.serverless_dependencies(project, spec, deps, requirement_names),
            launcher=launcher_name,
            archive_name=packed.name,
            entry=entry,
            command=command,
            timeout_seconds=timeout_seconds(timeout),
            token=token,
            env=env,
        )
    uploads = (
        Upload(launcher_name, launcher_data),
        Upload(packed.name, packed.data),
        *(Upload(name, path.read_bytes()) for path, name in requirement_names.items()),
    )
    return Job(nodeid=nodeid, label=label, body=body, uploads=uploads, timeout=timeout)
