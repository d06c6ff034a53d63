"""The pytest side of ``--mlproject-tracking``: the session's tracker, and what ``::run``
and ``::databricks`` items record with it (the work is done in :mod:`pytest_mlproject.tracking`).

Imported only when tracking is on. A run is created once the item knows it will start its
entry point (a skipped item, or one refused before anything runs, creates none), and ends
with the item: ``FINISHED`` when it passes, ``KILLED`` when it was stopped (a time limit,
Ctrl-C, SIGTERM, a cancelled Databricks run), ``FAILED`` otherwise. A run whose item never
ended (the session stopped first) is ended ``KILLED`` when pytest exits.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlproject import tracking
from pytest_mlproject.plugin.config import CONFIG_KEY
from pytest_mlproject.plugin.nodes import MLprojectFailure
from pytest_mlproject.spec import EntryPoint

if TYPE_CHECKING:
    from pytest_mlproject.databricks.job import Job
    from pytest_mlproject.databricks.session import Coordinator
    from pytest_mlproject.descriptor import ProjectContext
    from pytest_mlproject.local import RunResult

TRACKER_KEY = pytest.StashKey[tracking.Tracker]()
#: Databricks run results that mean the run was stopped rather than failed.
_STOPPED_RESULTS = ("CANCELED", "CANCELLED", "TIMEDOUT")


def tracker(config: pytest.Config) -> tracking.Tracker:
    """This process's tracker, made on first use; pytest's exit ends the runs left open."""
    existing = config.stash.get(TRACKER_KEY, None)
    if existing is not None:
        return existing
    created = tracking.Tracker(experiment=config.stash[CONFIG_KEY].experiment)
    config.stash[TRACKER_KEY] = created

    def close() -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        for problem in created.close():
            if reporter is not None:
                reporter.write_line(problem)
            else:
                sys.stderr.write(problem + "\n")

    config.add_cleanup(close)
    return created


def start_run(
    item: pytest.Item,
    context: ProjectContext,
    entry_point: EntryPoint,
    values: Mapping[str, str],
    backend: tracking.Backend,
    *,
    env_manager: str = "local",
) -> tracking.TrackedRun | None:
    """Create the MLflow run of ``item``, or ``None`` without ``--mlproject-tracking``.

    Its id and page go into ``user_properties``. A store that cannot be used fails the item.
    """
    if not item.config.stash[CONFIG_KEY].tracking:
        return None
    source = context.source
    origin = tracking.ProjectOrigin(
        directory=context.project.directory,
        git_uri=source.uri if source is not None and source.kind == "git" else None,
        version=source.version if source is not None else None,
        commit=context.commit,
    )
    runs = tracker(item.config)

    def create() -> tracking.TrackedRun:
        return runs.start(
            tracking.project_tags(
                origin, entry_point.name, backend, item.nodeid, env_manager=env_manager
            ),
            tracking.logged_parameters(entry_point, values),
            cluster=backend == "databricks",
        )

    try:
        run = _one_per_session(item, runs, create) if backend == "databricks" else create()
    except tracking.TrackingError as exc:
        raise MLprojectFailure([f"{_where(item, context, entry_point)}: {exc}"]) from None
    item.user_properties.append(("mlflow_run_id", run.run_id))
    if run.url:
        item.user_properties.append(("mlflow_run_url", run.url))
    return run


def _one_per_session(
    item: pytest.Item, runs: tracking.Tracker, create: Callable[[], tracking.TrackedRun]
) -> tracking.TrackedRun:
    """The item's run, the same in every pytest-xdist worker.

    Each worker submits the Databricks jobs of its share of the items when its first one
    runs, and an item run by another worker is submitted there too; both submits carry the
    same idempotency token, so Databricks starts one job run, with the body that came
    first. Both bodies must then name the same MLflow run: the first worker to prepare the
    item creates it and notes it in a file of the session; the other adopts it.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return create()
    from pytest_mlproject.plugin.config import session_id

    folder = Path(tempfile.gettempdir()) / f"pytest-mlproject-{os.getuid()}" / "tracking"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    session = session_id(item.config)
    path = folder / f"{session}.json"
    lock = os.open(folder / f"{session}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed, or if the worker dies
        known: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}
        if item.nodeid in known:
            return runs.adopt(tracking.TrackedRun(**known[item.nodeid]))
        run = create()
        known[item.nodeid] = {
            "run_id": run.run_id,
            "experiment_id": run.experiment_id,
            "experiment_name": run.experiment_name,
            "tracking_uri": run.tracking_uri,
            "url": run.url,
        }
        temporary = path.with_name(f"{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(known))
        os.replace(temporary, path)
        return run
    finally:
        os.close(lock)


def end_run(
    item: pytest.Item,
    run: tracking.TrackedRun | None,
    outcome: tracking.Status | BaseException,
    tags: Mapping[str, str] | None = None,
) -> None:
    """End ``run`` as ``outcome``: a status, or the exception that is stopping the item
    (an interrupt ends it ``KILLED``, anything else ``FAILED``).

    If the store refuses, an item that passed fails with the reason; one that failed or
    was interrupted keeps its own failure, and the reason is added as a report section.
    """
    if run is None:
        return
    if isinstance(outcome, BaseException):
        stopped = isinstance(outcome, (KeyboardInterrupt, SystemExit))
        status: tracking.Status = tracking.KILLED if stopped else tracking.FAILED
    else:
        status = outcome
    runs = tracker(item.config)
    try:
        if tags:
            runs.set_tags(run, tags)
        runs.end(run, status)
    except tracking.TrackingError as exc:
        if status == tracking.FINISHED:
            raise MLprojectFailure([str(exc)]) from None
        item.add_report_section("call", "MLflow Tracking", str(exc))


def local_status(result: RunResult) -> tracking.Status:
    """How a local run ended: its time limit stopped it, it failed, or it passed."""
    if result.timed_out:
        return tracking.KILLED
    return tracking.FINISHED if result.ok else tracking.FAILED


def end_databricks_run(
    item: pytest.Item, run: tracking.TrackedRun | None, job: Job, runs: Coordinator
) -> None:
    """Tag ``run`` with its Databricks job run, as MLflow's Databricks backend does, and end
    it as the job ended."""
    if run is None:
        return
    state = job.state
    if job.error is None and state is not None and state.passed:
        status = tracking.FINISHED
    elif job.cancelled or (state is not None and state.result in _STOPPED_RESULTS):
        status = tracking.KILLED
    else:
        status = tracking.FAILED
    host = runs.workspace.host if runs.workspace is not None else None
    tags = tracking.databricks_tags(state.run_page_url if state else None, job.run_id, host)
    end_run(item, run, status, tags)


def _where(item: pytest.Item, context: ProjectContext, entry_point: EntryPoint) -> str:
    """``path:line`` of the entry point, as the items' own messages start."""
    path = context.project.descriptor or item.path
    try:
        shown = str(path.relative_to(item.config.rootpath))
    except ValueError:
        shown = str(path)
    return f"{shown}:{entry_point.line}"
