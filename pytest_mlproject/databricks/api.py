"""Submit one entry point to Databricks from Python (a test, a script) and get its result.

:func:`submit_entry_point` does what ``pytest --databricks`` does for one entry point, with
the same pieces: the preflight checks (nothing is uploaded when Databricks would refuse the
run), the deterministic archive, the submit body and the launcher (``payload``), and the
:class:`~pytest_mlproject.databricks.session.Coordinator` that uploads, submits, polls with
backoff, enforces the deadline and cancels. It blocks until the run ends and returns a
:class:`DatabricksResult`; whatever happens meanwhile (an exception, Ctrl-C, SIGTERM), the
run is cancelled before the call returns or raises.

No pytest here (the ``mlproject_databricks`` fixture wraps this module), and
``databricks.sdk`` is imported only when a workspace is connected.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlproject.problems import MLprojectError

if TYPE_CHECKING:
    from pytest_mlproject.databricks.archive import Archive
    from pytest_mlproject.databricks.clusterspec import ClusterSpec
    from pytest_mlproject.databricks.job import Job
    from pytest_mlproject.databricks.serverless import Serverless
    from pytest_mlproject.databricks.workspace import Workspace
    from pytest_mlproject.spec import Project

__all__ = [
    "DEFAULT_TIMEOUT",
    "DatabricksResult",
    "PreflightError",
    "Submission",
    "load_project",
    "own_cluster_spec",
    "own_compute",
    "prepare",
    "run",
    "submit_entry_point",
]

#: Seconds, as ``--databricks-timeout``: the run's ``timeout_seconds`` and the wait here.
DEFAULT_TIMEOUT = 7200.0
#: Lines of the run's error trace and log in :meth:`DatabricksResult.describe`.
TAIL_LINES = 40


class PreflightError(MLprojectError):
    """The entry point cannot run on Databricks as asked; nothing was uploaded or submitted.

    ``problems`` holds what Databricks (or MLflow) would refuse, each with file, line and
    rule code (MLP7xx: see docs/rules.md).
    """


@dataclass(frozen=True)
class DatabricksResult:
    """How one Databricks run of an entry point went.

    ``passed`` is the only verdict to trust: the run ended ``SUCCESS`` and nothing went wrong
    on this side. ``assert result.passed, result.describe()`` fails with the same message a
    failing ``::databricks`` item shows.
    """

    #: The project's name and the entry point, as in ``<project>::<entry>``.
    project: str
    entry_point: str
    #: The command the launcher ran on the cluster (``path`` values made relative).
    command: str
    #: ``None`` when the run was never submitted (see ``client_error``).
    run_id: int | None
    run_page_url: str | None
    #: The life cycle state last seen: ``TERMINATED``, ``SKIPPED``, ``INTERNAL_ERROR``, or a
    #: non-terminal one when this side gave up; ``None`` when never submitted.
    state: str | None
    #: ``SUCCESS``, ``FAILED``, ``TIMEDOUT``, ``CANCELED``...; ``None`` without a result.
    result_state: str | None
    #: Databricks' message about the state (``state_message`` or the termination details).
    state_message: str
    #: ``status.termination_details.code``: ``SUCCESS``, ``RUN_EXECUTION_ERROR``,
    #: ``LIBRARY_INSTALLATION_ERROR``, ``USER_CANCELED``...; ``None`` if not sent.
    termination_code: str | None
    #: The end of the task's stdout and stderr (``runs/get-output``), secrets replaced by ***.
    logs: str
    logs_truncated: bool
    #: The run's own error and traceback, when it failed.
    error: str | None
    error_trace: str | None
    #: Why this side failed rather than the run: could not submit, lost contact, no result
    #: within the timeout (the run was cancelled), interrupted, or a run that ended
    #: ``SUCCESS`` without the launcher's start line in its log. ``None`` otherwise.
    client_error: str | None
    setup_duration_ms: int | None
    execution_duration_ms: int | None
    run_duration_ms: int | None
    #: The sha256 of the project archive that was run (its name on Databricks).
    archive_sha256: str
    #: Warnings from the preflight checks, as ``path:line: CODE message``.
    warnings: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        # A result state is only set once the run has ended.
        return self.client_error is None and self.result_state == "SUCCESS"

    def describe(self) -> str:
        """A few lines on what happened: the state (or our failure), the run page, the
        run's error, and the last lines of its error trace and log."""
        from pytest_mlproject.databricks.runstate import RunOutput, RunState, detail_lines

        head = f"{self.project}::{self.entry_point} on Databricks"
        if self.run_id is not None:
            head += f", run {self.run_id}"
        if self.client_error is not None:
            what = self.client_error
        elif self.state is None:
            what = "no state"
        else:
            what = RunState(
                run_id=self.run_id or 0,
                life_cycle=self.state,
                result=self.result_state,
                terminal=self.result_state is not None,
                message=self.state_message,
                termination_code=self.termination_code,
            ).describe()
        output = RunOutput(self.logs, self.logs_truncated, self.error, self.error_trace)
        lines = detail_lines(self.run_page_url, output, TAIL_LINES)
        return "\n".join([f"{head}: {what}", *lines])


def load_project(project: str | os.PathLike[str] | Project) -> Project:
    """A project from its folder or its MLproject file (an already read one is returned)."""
    from pytest_mlproject.spec import Project, load

    if isinstance(project, Project):
        return project
    return load(Path(project))


def own_cluster_spec(project: Project, entry: str) -> ClusterSpec | None:
    """The entry point's cluster spec from ``pytest-mlproject.yaml`` beside the MLproject
    file (its own, else the project's), or ``None`` when the file names none.

    Raises :class:`~pytest_mlproject.databricks.clusterspec.SpecError` when it names one that
    cannot be read.
    """
    from pytest_mlproject.databricks.clusterspec import parse
    from pytest_mlproject.settings import read_settings

    settings = read_settings(project.directory)
    written = settings.cluster_spec(entry)
    return None if written is None else parse(written, base=settings.directory)


def own_compute(
    project: Project,
    entry: str,
    *,
    serverless: bool = False,
    environment_version: str | None = None,
    session_spec: ClusterSpec | None = None,
) -> ClusterSpec | Serverless | None:
    """What runs ``entry`` by ``pytest-mlproject.yaml`` (the entry point's settings, then the
    project's), else serverless compute when ``serverless``, else ``session_spec``.

    Raises :class:`~pytest_mlproject.databricks.clusterspec.SpecError` when the file names a
    spec that cannot be read.
    """
    from pytest_mlproject.descriptor import ProjectContext, compute_for
    from pytest_mlproject.options import checking_config
    from pytest_mlproject.settings import read_settings

    context = ProjectContext(project, read_settings(project.directory))
    options = checking_config(
        cluster_spec=session_spec, serverless=serverless, environment_version=environment_version
    ).databricks
    return compute_for(context, entry, options)


def submit_entry_point(
    project: str | os.PathLike[str] | Project,
    entry: str = "main",
    parameters: Mapping[str, Any] | None = None,
    *,
    cluster_spec: str | os.PathLike[str] | Mapping[str, Any] | ClusterSpec | None = None,
    serverless: bool = False,
    environment_version: str | None = None,
    profile: str | None = None,
    upload_dir: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    experiment_id: str | None = None,
    workspace: Workspace | None = None,
    echo: Callable[[str], None] | None = None,
) -> DatabricksResult:
    """Run entry point ``entry`` of ``project`` as a one-time Databricks job run; wait for it.

    ``project`` is a project folder, its MLproject file, or a read
    :class:`~pytest_mlproject.spec.Project`; ``entry`` may also be a script (``train.py``),
    as with ``mlflow run -e``. ``parameters`` are the values to pass (declared defaults apply
    to the rest); ``path`` values must name something inside the project, or a remote
    location (``dbfs:/``, ``s3://``...).

    ``cluster_spec`` is a JSON file (relative to the current folder), inline JSON, a mapping,
    or a parsed :class:`~pytest_mlproject.databricks.clusterspec.ClusterSpec`: a bare
    new-cluster object or ``{"new_cluster": {...}, "libraries": [...]}``. ``None`` takes the
    compute from ``pytest-mlproject.yaml`` beside the MLproject file (a cluster spec, or
    ``serverless: true``), else serverless jobs compute when ``serverless`` is true, in
    environment ``environment_version`` (default: from the project's Python).

    ``workspace`` is a connected :class:`~pytest_mlproject.databricks.workspace.Workspace`
    to use (and leave open); without one, ``profile`` (or the SDK's default auth chain)
    connects and the connection is closed afterwards. ``upload_dir`` defaults to
    ``/Workspace/Users/<you>/.pytest-mlproject``. ``timeout`` is the run's
    ``timeout_seconds``; this call waits that long plus a grace (5%, 5 s to 60 s) from the
    submission, then cancels the run. ``echo`` receives progress lines (submitted, state
    changes, cancelled).

    Raises, before anything is uploaded or submitted: :class:`PreflightError` for what
    Databricks would refuse, ``MLprojectError`` for a project that cannot be read or an
    unknown entry point, ``ParameterError`` for missing or refused parameter values,
    ``SpecError`` for an unreadable cluster spec, and ``CredentialsError`` (one message
    saying how to give credentials) when the workspace cannot be reached or refuses them.
    A run that fails, times out or cannot be submitted is a result with ``passed`` false.
    """
    submission = prepare(
        project,
        entry,
        parameters,
        cluster_spec=cluster_spec,
        serverless=serverless,
        environment_version=environment_version,
        profile=profile,
        host=workspace.host if workspace is not None else None,
        timeout=timeout,
        experiment_id=experiment_id,
    )
    return run(submission, profile=profile, upload_dir=upload_dir, workspace=workspace, echo=echo)


@dataclass(frozen=True)
class Submission:
    """An entry point ready to submit: everything decided without a request."""

    project: Project
    entry: str
    #: The command the launcher runs on the cluster.
    command: str
    #: The ``runs/submit`` body (launcher and requirements files still bare names, placed in
    #: the upload folder when submitted) and the files to upload.
    job: Job
    archive: Archive
    #: Warnings from the preflight checks, as ``path:line: CODE message``.
    warnings: tuple[str, ...]


def prepare(
    project: str | os.PathLike[str] | Project,
    entry: str = "main",
    parameters: Mapping[str, Any] | None = None,
    *,
    cluster_spec: str | os.PathLike[str] | Mapping[str, Any] | ClusterSpec | None = None,
    serverless: bool = False,
    environment_version: str | None = None,
    profile: str | None = None,
    host: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    experiment_id: str | None = None,
) -> Submission:
    """The first half of :func:`submit_entry_point`: read, check, render, pack; no request.

    ``host`` is the workspace's, for the checks that depend on it (Community Edition); by
    default the one ``profile`` or ``DATABRICKS_HOST`` configures. Raises what
    :func:`submit_entry_point` raises before connecting.
    """
    from pytest_mlproject import checks
    from pytest_mlproject.databricks import archive, payload, preflight
    from pytest_mlproject.databricks.clusterspec import ClusterSpec, check_spec, parse
    from pytest_mlproject.databricks.workspace import configured_host

    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a number of seconds greater than 0, not {timeout!r}")
    project = load_project(project)
    entry_point = project.entry_point(entry)
    if serverless and cluster_spec is not None:
        raise ValueError("give cluster_spec or serverless=True, not both")
    if environment_version is not None:
        from pytest_mlproject.databricks.serverless import check_version

        environment_version = check_version(str(environment_version))
    spec: ClusterSpec | Serverless | None
    if isinstance(cluster_spec, ClusterSpec):
        spec = cluster_spec
    elif cluster_spec is not None:
        given = cluster_spec if isinstance(cluster_spec, Mapping) else os.fspath(cluster_spec)
        spec = parse(given)
    else:
        spec = own_compute(
            project, entry, serverless=serverless, environment_version=environment_version
        )
    if spec is None:
        raise MLprojectError(
            f"no cluster spec to run {project.name}::{entry} on Databricks: pass cluster_spec "
            "(a JSON file, inline JSON or a mapping) or serverless=True, or write `databricks: "
            "cluster_spec:` (or `serverless: true`) in pytest-mlproject.yaml beside the "
            "MLproject file"
        )
    found = [p for p in checks.check(project) if p.entry_point is None or p.entry_point == entry]
    if project.descriptor is not None and isinstance(spec, ClusterSpec):
        found += [
            *preflight.project_problems(project, spec, host or configured_host(profile)),
            *preflight.entry_problems(project, entry_point),
        ]
    elif project.descriptor is not None and not isinstance(spec, ClusterSpec):
        found += [
            *preflight.serverless_project_problems(project, spec, host or configured_host(profile)),
            *preflight.serverless_entry_problems(project, entry_point),
        ]
    elif isinstance(spec, ClusterSpec):  # a folder without MLproject: only the spec to check
        found += check_spec(spec, project.directory / "MLproject")
    errors = [p for p in found if p.is_error]
    if errors:
        raise PreflightError(
            f"{project.name}::{entry} cannot run on Databricks; nothing was uploaded or submitted",
            errors,
        )
    command = payload.cluster_command(project, entry_point, dict(parameters or {}))
    packed = archive.pack(project.directory)
    label = f"{project.name}::{entry}"
    job = payload.build_job(
        project,
        entry,
        spec,
        command=command,
        packed=packed,
        nodeid=f"{project.directory}::{entry}",
        label=label,
        # Unique per call; the same on the SDK's retries of this submit.
        token=payload.idempotency_token(uuid.uuid4().hex, label),
        timeout=float(timeout),
        experiment_id=experiment_id,
    )
    warnings = tuple(p.format() for p in found)
    return Submission(project, entry, command, job, packed, warnings)


def run(
    submission: Submission,
    *,
    profile: str | None = None,
    upload_dir: str | None = None,
    workspace: Workspace | None = None,
    echo: Callable[[str], None] | None = None,
) -> DatabricksResult:
    """The second half of :func:`submit_entry_point`: connect (unless given ``workspace``),
    upload, submit, wait, and cancel the run if the wait ends early.

    Running the same submission again sends the same idempotency token, so Databricks
    answers with the run it already started; :func:`prepare` again for a new run.
    """
    from pytest_mlproject.databricks.session import Coordinator
    from pytest_mlproject.databricks.workspace import Workspace

    connected = workspace if workspace is not None else Workspace.connect(profile)
    runs = Coordinator(
        profile=profile,
        upload_dir=upload_dir,
        max_parallel=1,
        echo=echo or _quiet,
        connect=lambda: connected,
        close_workspace=workspace is None,
    )
    job = dataclasses.replace(submission.job, done=threading.Event())
    why = "the submitting call ended before the run did"
    try:
        runs.start([job])
        runs.wait(job)
    except BaseException as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}"
        raise
    finally:
        # Every run still going is cancelled, whatever ended the wait.
        runs.close(why)
    return _result(submission, job)


def _quiet(line: str) -> None:
    pass


def _result(prepared: Submission, job: Job) -> DatabricksResult:
    from pytest_mlproject.databricks.runstate import launcher_silence

    state, output = job.state, job.output
    error = job.error
    if error is None and state is not None and state.passed:
        error = launcher_silence(output, prepared.entry)  # a launcher that never ran
    return DatabricksResult(
        project=prepared.project.name,
        entry_point=prepared.entry,
        command=prepared.command,
        run_id=job.run_id,
        run_page_url=state.run_page_url if state else None,
        state=state.life_cycle if state else None,
        result_state=state.result if state else None,
        state_message=state.message if state else "",
        termination_code=state.termination_code if state else None,
        logs=output.logs if output else "",
        logs_truncated=output.logs_truncated if output else False,
        error=output.error if output else None,
        error_trace=output.error_trace if output else None,
        client_error=error,
        setup_duration_ms=state.setup_ms if state else None,
        execution_duration_ms=state.execution_ms if state else None,
        run_duration_ms=state.run_duration_ms if state else None,
        archive_sha256=prepared.archive.sha256,
        warnings=prepared.warnings,
    )
