"""Record runs in MLflow Tracking, as ``mlflow run`` does (``--mlproject-tracking``).

The contract is MLflow's own project runner (``mlflow/projects/utils.py`` ``_create_run``,
``mlflow/projects/__init__.py``, ``backend/local.py`` and ``databricks.py``): a run is created
before the entry point starts, with the tags ``mlflow run`` gives project runs and the
parameters it logs (``compute_parameters`` with ``storage_dir=None``: shell-quoted values,
``path`` values as given); the entry point gets ``MLFLOW_RUN_ID``, ``MLFLOW_TRACKING_URI``
and ``MLFLOW_EXPERIMENT_ID``, so what its code logs lands in that run; and the run ends
``FINISHED``, ``FAILED`` or ``KILLED`` with the item.

Where we differ from ``mlflow run``, docs/tracking.md says so and why. No pytest here, and
MLflow is imported only inside the functions that talk to the store: a session without
tracking never loads it.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.util
import os
import re
import shlex
import threading
import urllib.parse
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytest_mlproject import redact
from pytest_mlproject.problems import MLprojectError
from pytest_mlproject.spec import EntryPoint

__all__ = [
    "FAILED",
    "FINISHED",
    "KILLED",
    "ProjectOrigin",
    "TrackedRun",
    "Tracker",
    "TrackingError",
    "cluster_tracking_uri",
    "databricks_tags",
    "logged_parameters",
    "missing_mlflow",
    "project_tags",
    "run_url",
]

Status = Literal["FINISHED", "FAILED", "KILLED"]
FINISHED: Status = "FINISHED"
FAILED: Status = "FAILED"
KILLED: Status = "KILLED"
Backend = Literal["local", "databricks"]

# The tag keys of mlflow.utils.mlflow_tags that `mlflow run` sets on project runs.
USER = "mlflow.user"
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
GIT_COMMIT = "mlflow.source.git.commit"
GIT_REPO_URL = "mlflow.source.git.repoURL"
GIT_BRANCH = "mlflow.source.git.branch"
ENTRY_POINT = "mlflow.project.entryPoint"
BACKEND = "mlflow.project.backend"
ENV = "mlflow.project.env"
DATABRICKS_RUN_URL = "mlflow.databricks.runURL"
DATABRICKS_JOB_RUN_ID = "mlflow.databricks.shellJobRunID"
DATABRICKS_WEBAPP_URL = "mlflow.databricks.webappURL"
#: Ours: the pytest item that made the run, to find it again from the MLflow UI.
NODEID = "pytest.nodeid"

INSTALL_HINT = (
    "pip install 'pytest-mlproject[tracking]' (MLflow with its database store), or "
    "pip install mlflow"
)
#: Store schemes MLflow serves through SQLAlchemy, which mlflow-skinny does not install.
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


class TrackingError(MLprojectError):
    """The tracking store could not be reached or refused what we asked."""


def missing_mlflow() -> str | None:
    """Why ``--mlproject-tracking`` cannot work here (MLflow is not installed), or ``None``.

    Looks without importing: MLflow takes a second or more to import.
    """
    if importlib.util.find_spec("mlflow") is None:
        return (
            f"--mlproject-tracking records runs with MLflow, which is not installed: {INSTALL_HINT}"
        )
    return None


# --- what a run records ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectOrigin:
    """Where a project came from, for the source tags."""

    directory: Path
    #: The ``--mlproject-uri`` of a Git project (credentials removed); ``None`` for a folder.
    git_uri: str | None = None
    version: str | None = None
    commit: str | None = None


def logged_parameters(entry_point: EntryPoint, values: Mapping[str, Any]) -> dict[str, str]:
    """The parameters ``mlflow run`` logs: every declared one (the given value, else its
    default) and then the extras, each value shell-quoted as it goes into the command, and
    extra names quoted too; ``path`` values as given, not made absolute (MLflow computes
    them with ``storage_dir=None``). Secrets from the environment are masked. None for a
    Databricks Spark job's ``python_file``, which MLflow runs without parameters."""
    if entry_point.spark_python_file:
        return {}
    logged = {
        name: shlex.quote(str(values.get(name, parameter.default)))
        for name, parameter in entry_point.parameters.items()
    }
    for name, value in values.items():
        if name not in entry_point.parameters:
            logged[shlex.quote(str(name))] = shlex.quote(str(value))
    return {name: redact.scrub(value) for name, value in logged.items()}


def project_tags(
    origin: ProjectOrigin,
    entry_point: str,
    backend: Backend,
    nodeid: str | None = None,
    *,
    env_manager: str = "local",
) -> dict[str, str]:
    """The tags ``mlflow run`` sets on a project run, for a run of ``entry_point``
    (``env_manager``: how its environment was made, ``uv`` or ``local``)."""
    tags = {
        USER: _user(),
        SOURCE_TYPE: "PROJECT",
        ENTRY_POINT: entry_point,
        BACKEND: backend,
        # MLflow tags the environment it built (uv, virtualenv, conda, docker); `local` is a
        # run with the current interpreter.
        ENV: env_manager,
    }
    if origin.git_uri is not None:
        from pytest_mlproject.sources import parse_uri

        parsed = parse_uri(origin.git_uri)
        location = _without_userinfo(parsed.location)
        tags[SOURCE_NAME] = location + (f"#{parsed.subdirectory}" if parsed.subdirectory else "")
        tags[GIT_REPO_URL] = location
        if origin.version is not None and _is_branch(origin.directory, origin.version):
            tags[GIT_BRANCH] = origin.version
    else:
        source, repo_url = _local_source(origin.directory)
        tags[SOURCE_NAME] = source
        if repo_url is not None:
            tags[GIT_REPO_URL] = repo_url
    if origin.commit:
        tags[GIT_COMMIT] = origin.commit
    if nodeid is not None:
        tags[NODEID] = nodeid
    return {key: redact.scrub(value) for key, value in tags.items()}


def databricks_tags(
    run_page_url: str | None, job_run_id: int | None, host: str | None
) -> dict[str, str]:
    """The tags MLflow's Databricks backend sets once the job run is submitted."""
    tags = {}
    if run_page_url:
        tags[DATABRICKS_RUN_URL] = run_page_url
    if job_run_id is not None:
        tags[DATABRICKS_JOB_RUN_ID] = str(job_run_id)
    if host:
        tags[DATABRICKS_WEBAPP_URL] = _https(host)
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except (ImportError, KeyError, OSError):  # no login name (a container with a bare uid)
        return "unknown"


def _local_source(directory: Path) -> tuple[str, str | None]:
    """``mlflow run FOLDER``'s source name and repository URL: ``file://<repository>#<sub
    folder>`` and the first remote's URL (credentials removed) inside a Git repository, else
    the folder's absolute path and none."""
    path = os.path.abspath(directory)
    try:
        import git
    except ImportError:  # GitPython raises ImportError when `git` cannot be run
        return path, None
    try:
        with git.Repo(path, search_parent_directories=True) as repo:
            root = str(repo.working_tree_dir)
            remote = next((r.url for r in repo.remotes), None)
    except (git.exc.GitError, ValueError, OSError):
        return path, None
    relative = os.path.relpath(path, root)
    if relative.startswith(".."):  # reached through a link: compare the real paths
        relative = os.path.relpath(os.path.realpath(path), os.path.realpath(root))
    source = f"file://{root}" if relative == "." else f"file://{root}#{relative}"
    return source, _without_userinfo(remote) if remote else None


def _is_branch(directory: Path, version: str) -> bool:
    """Whether ``version`` is a branch of the repository ``directory`` was checked out from
    (MLflow tags the branch only then, not for tags and commits)."""
    try:
        import git
    except ImportError:
        return False
    try:
        with git.Repo(directory, search_parent_directories=True) as repo:
            for ref in (f"refs/remotes/origin/{version}", f"refs/heads/{version}"):
                try:
                    repo.git.rev_parse("--verify", "--quiet", ref)
                    return True
                except git.exc.GitCommandError:
                    continue
    except (git.exc.GitError, ValueError, OSError):
        pass
    return False


def _without_userinfo(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _https(host: str) -> str:
    host = host.strip().rstrip("/")
    return host if "://" in host else f"https://{host}"


# --- where runs go --------------------------------------------------------------------------


def absolute_uri(uri: str) -> str:
    """``uri`` with a relative local store made absolute: the entry point runs in the
    project folder, where a relative ``sqlite:///mlflow.db`` would name another file."""
    if is_databricks_uri(uri):
        return uri
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "sqlite" and parts.path.startswith("/") and parts.path != "/":
        path = urllib.parse.unquote(parts.path[1:])
        if path != ":memory:" and not os.path.isabs(path):
            return "sqlite:///" + urllib.parse.quote(os.path.abspath(path))
        return uri
    if parts.scheme == "file" and not parts.netloc and not os.path.isabs(parts.path):
        return Path(os.path.abspath(urllib.parse.unquote(parts.path))).as_uri()
    if not parts.scheme and uri:
        return Path(os.path.abspath(uri)).as_uri()
    return uri


def is_databricks_uri(uri: str) -> bool:
    return uri == "databricks" or urllib.parse.urlsplit(uri).scheme == "databricks"


def is_http_uri(uri: str) -> bool:
    return urllib.parse.urlsplit(uri).scheme in ("http", "https")


def cluster_tracking_uri(uri: str) -> str:
    """The tracking URI a Databricks cluster is given for ``uri``: ``databricks`` (its own
    workspace) for any Databricks URI, the same URI for a tracking server.

    Raises :class:`TrackingError` with MLflow's message for anything else: a cluster cannot
    reach a store on this machine.
    """
    if is_databricks_uri(uri):
        return "databricks"
    if is_http_uri(uri):
        return uri
    raise TrackingError(
        "When running on Databricks, the MLflow tracking URI must be of the form "
        "'databricks' or 'databricks://profile', or a remote HTTP URI accessible to both the "
        "current client and code running on Databricks. Got local tracking URI "
        f"{_shown(uri)}. Please specify a valid tracking URI via mlflow.set_tracking_uri or "
        "by setting the MLFLOW_TRACKING_URI environment variable."
    )


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI: on a tracking server, or in the Databricks workspace
    of a ``databricks`` URI (its host as the Databricks SDK would find it); ``None`` for a
    store on this machine, which has no UI until ``mlflow ui`` serves one."""
    if is_http_uri(tracking_uri):
        base = _without_userinfo(tracking_uri).rstrip("/")
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    if is_databricks_uri(tracking_uri):
        from pytest_mlproject.databricks.credentials import configured_host

        profile = urllib.parse.urlsplit(tracking_uri).netloc or None
        if profile is not None and ":" in profile:
            return None  # databricks://scope:prefix: the host is in a secret scope
        host = configured_host(profile)
        if not host:
            return None
        return f"{_https(host)}/ml/experiments/{experiment_id}/runs/{run_id}"
    return None


def _shown(uri: str) -> str:
    return _without_userinfo(uri)


# --- the store ------------------------------------------------------------------------------


@dataclass
class TrackedRun:
    """One MLflow run we created, until we end it."""

    run_id: str
    experiment_id: str
    experiment_name: str
    tracking_uri: str
    url: str | None
    status: str | None = None

    def env(self, *, cluster: bool = False) -> dict[str, str]:
        """What the entry point needs to log into this run: the variables ``mlflow run``
        sets. ``cluster``: for a Databricks run (see :func:`cluster_tracking_uri`)."""
        uri = cluster_tracking_uri(self.tracking_uri) if cluster else self.tracking_uri
        env = {
            "MLFLOW_RUN_ID": self.run_id,
            "MLFLOW_TRACKING_URI": uri,
            "MLFLOW_EXPERIMENT_ID": self.experiment_id,
        }
        if "MLFLOW_EXPERIMENT_NAME" in os.environ:
            # MLflow refuses an experiment name and id that disagree; an inherited name
            # would make the entry point's first log call fail.
            env["MLFLOW_EXPERIMENT_NAME"] = self.experiment_name
        return env


@dataclass
class Tracker:
    """The store and experiment of one pytest process; creates, tags and ends its runs.

    ``experiment`` is a name or an all-digits id, or ``None`` for MLflow's choice
    (``MLFLOW_EXPERIMENT_NAME``, ``MLFLOW_EXPERIMENT_ID``, else the Default experiment).
    ``tracking_uri`` defaults to MLflow's (``MLFLOW_TRACKING_URI``, else its default store).
    The experiment is found (or created) once, on the first run; if that fails, every later
    run fails with the same message without asking the store again.
    """

    experiment: str | None = None
    tracking_uri: str | None = None
    runs: list[TrackedRun] = field(default_factory=list)
    _client: Any = None
    _experiment: tuple[str, str] | None = None
    _error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def resolve_uri(self) -> str:
        """The tracking URI, made absolute for a local store. Imports MLflow."""
        if self.tracking_uri is None:
            import mlflow

            self.tracking_uri = str(mlflow.get_tracking_uri())
        self.tracking_uri = absolute_uri(self.tracking_uri)
        return self.tracking_uri

    def start(
        self, tags: Mapping[str, str], params: Mapping[str, str], *, cluster: bool = False
    ) -> TrackedRun:
        """Create a run with ``tags`` and log ``params``. ``cluster``: the run is for a
        Databricks job, so the URI must be one a cluster reaches; that is checked before
        anything is asked of the store. Raises :class:`TrackingError`."""
        uri = self.resolve_uri()
        if cluster:
            cluster_tracking_uri(uri)
        experiment_id, experiment_name = self._resolve()
        client = self._client
        try:
            from mlflow.entities import Param

            with _quiet():
                created = client.create_run(experiment_id=experiment_id, tags=dict(tags))
            run_id = str(created.info.run_id)
        except Exception as exc:
            raise TrackingError(
                f"MLflow Tracking: could not create a run in experiment {experiment_id} of "
                f"{_shown(uri)}: {_reason(exc)}"
            ) from None
        run = TrackedRun(
            run_id, experiment_id, experiment_name, uri, run_url(uri, experiment_id, run_id)
        )
        with self._lock:
            self.runs.append(run)
        try:
            if params:
                with _quiet():
                    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        except Exception as exc:
            with contextlib.suppress(TrackingError):  # the reason to tell is the first one
                self.end(run, FAILED)
            raise TrackingError(
                f"MLflow Tracking: could not log the parameters of run {run_id}: {_reason(exc)}"
            ) from None
        return run

    def set_tags(self, run: TrackedRun, tags: Mapping[str, str]) -> None:
        """Add tags to a run. Raises :class:`TrackingError`."""
        from mlflow.entities import RunTag

        try:
            with _quiet():
                self._client.log_batch(run.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        except Exception as exc:
            raise TrackingError(
                f"MLflow Tracking: could not tag run {run.run_id}: {_reason(exc)}"
            ) from None

    def end(self, run: TrackedRun, status: Status) -> None:
        """End ``run`` with ``status`` (once; later calls do nothing), whatever the entry
        point's own code set. Raises :class:`TrackingError`."""
        with self._lock:
            if run.status is not None:
                return
            run.status = status
        try:
            with _quiet():
                self._client.set_terminated(run.run_id, status)
        except Exception as exc:
            raise TrackingError(
                f"MLflow Tracking: could not end run {run.run_id} as {status}: {_reason(exc)}"
            ) from None

    def adopt(self, run: TrackedRun) -> TrackedRun:
        """Take over a run another process created (a pytest-xdist worker that submitted
        this item's job), to end it here. Raises :class:`TrackingError`."""
        self._resolve()
        with self._lock:
            self.runs.append(run)
        return run

    def close(self) -> list[str]:
        """End every run still open as KILLED: the session stopped before its item ended
        (Ctrl-C, ``-x``, a crash). A run that has ended meanwhile in the store (another
        xdist worker ran its item) is left as it is, as MLflow leaves a run its code ended.
        Returns what could not be done, one line each."""
        problems = []
        for run in list(self.runs):
            if run.status is not None:
                continue
            try:
                with _quiet():
                    current = str(self._client.get_run(run.run_id).info.status)
            except Exception as exc:
                problems.append(f"MLflow Tracking: could not read run {run.run_id}: {_reason(exc)}")
                continue
            if current not in ("RUNNING", "SCHEDULED"):
                continue
            try:
                self.end(run, KILLED)
            except TrackingError as exc:
                problems.append(str(exc))
        return problems

    def _resolve(self) -> tuple[str, str]:
        """The experiment (id, name): found, or created for a name that does not exist,
        as ``mlflow run --experiment-name`` does. Cached, and so is a failure."""
        if self._experiment is not None:
            return self._experiment
        if self._error is not None:
            raise TrackingError(self._error)
        try:
            self._experiment = self._find_experiment()
        except TrackingError as exc:
            self._error = str(exc)
            raise
        return self._experiment

    def _find_experiment(self) -> tuple[str, str]:
        with _quiet():
            return self._look_up_experiment()

    def _look_up_experiment(self) -> tuple[str, str]:
        uri = self.resolve_uri()
        store = _shown(uri)
        scheme = urllib.parse.urlsplit(uri).scheme
        if scheme.partition("+")[0] in _DATABASE_SCHEMES and (
            importlib.util.find_spec("sqlalchemy") is None
            or importlib.util.find_spec("alembic") is None
        ):
            raise TrackingError(
                f"MLflow Tracking: the store {store} is a database, which MLflow reads with "
                "SQLAlchemy and alembic; mlflow-skinny does not install them: "
                f"{INSTALL_HINT}; or point MLFLOW_TRACKING_URI at a tracking server "
                "(http://...) or Databricks (databricks)"
            )
        try:
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=uri)
        except Exception as exc:
            raise TrackingError(
                f"MLflow Tracking: cannot use the store {store}: {_reason(exc)}"
            ) from None
        name = self.experiment
        identifier = None
        if name is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or None
            identifier = None if name else os.environ.get("MLFLOW_EXPERIMENT_ID") or "0"
        elif name.isascii() and name.isdigit():
            name, identifier = None, name
        try:
            if identifier is not None:
                found = self._client.get_experiment(identifier)
                return str(found.experiment_id), str(found.name)
            assert name is not None
            found = self._client.get_experiment_by_name(name)
            if found is None:
                try:
                    return str(self._client.create_experiment(name)), name
                except MlflowException:
                    # Another process (an xdist worker) created it first.
                    found = self._client.get_experiment_by_name(name)
                    if found is None:
                        raise
            return str(found.experiment_id), str(found.name)
        except Exception as exc:
            what = f"experiment id {identifier}" if identifier is not None else repr(name)
            raise TrackingError(
                f"MLflow Tracking: cannot find or create the experiment {what} in {store}: "
                f"{_reason(exc)}"
            ) from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's store code warns about its own dependencies (SQLAlchemy deprecations): not
    the user's to act on, so not shown on their items."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _reason(exc: BaseException) -> str:
    """An MLflow error in one line, secrets masked."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return redact.scrub(re.sub(r"\s+", " ", str(message)).strip())
