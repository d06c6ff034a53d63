"""The ``mlproject_databricks`` fixture: submit an entry point from a test, get a result.

The plugin imports this module in every session, so it imports nothing heavy: the
Databricks machinery (and ``databricks.sdk``) loads when a test first submits something.
It has no test code, so pytest need not rewrite its asserts (PYTEST_DONT_REWRITE), nor
warn when a conftest's ``pytest_plugins`` names it after the plugin imported it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlproject.plugin.config import CONFIG_KEY

if TYPE_CHECKING:
    from pytest_mlproject.databricks.api import DatabricksResult
    from pytest_mlproject.databricks.clusterspec import ClusterSpec
    from pytest_mlproject.databricks.workspace import Workspace
    from pytest_mlproject.spec import Project

#: Given when nothing is to be submitted: tests that submit opt in with ``--databricks``.
SKIP_WITHOUT_DATABRICKS = (
    "submits to Databricks: run with --databricks (and a cluster spec, credentials) to run it"
)
SKIP_DRY_RUN = "submits to Databricks: nothing is submitted with --databricks-dry-run"


class MLprojectDatabricks:
    """What the ``mlproject_databricks`` fixture yields: :meth:`submit` runs an entry point
    on Databricks with the session's options as defaults, as its ``::databricks`` item
    would."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self.config = request.config
        #: Relative project paths start here (pytest's rootdir).
        self.rootpath = request.config.rootpath
        #: Every result of this test, in order.
        self.results: list[DatabricksResult] = []
        self._workspaces: dict[str | None, Workspace] = {}

    def submit(
        self,
        project: str | os.PathLike[str] | Project,
        entry: str = "main",
        parameters: Mapping[str, Any] | None = None,
        *,
        cluster_spec: str | os.PathLike[str] | Mapping[str, Any] | ClusterSpec | None = None,
        profile: str | None = None,
        upload_dir: str | None = None,
        timeout: float | None = None,
        experiment_id: str | None = None,
        configured: bool = True,
    ) -> DatabricksResult:
        """Run ``entry`` of ``project`` on Databricks and wait for it; see
        :func:`pytest_mlproject.databricks.api.submit_entry_point`.

        Each keyword left out takes the session's option: ``--databricks-profile``,
        ``--databricks-upload-dir``, ``--databricks-timeout``,
        ``--databricks-experiment-id``. The compute is ``cluster_spec`` if given, else the
        project's own in ``pytest-mlproject.yaml`` (a cluster spec or ``serverless: true``),
        else ``--databricks-serverless`` or ``--databricks-cluster-spec``.
        With ``configured``, parameters not in ``parameters`` come from
        ``--mlproject-param``, ``mlproject_params`` and ``pytest-mlproject.yaml``, as for
        the ``::databricks`` item.
        """
        from pytest_mlproject.databricks import api
        from pytest_mlproject.databricks.workspace import Workspace

        session = self.config.stash[CONFIG_KEY]
        options = session.databricks
        if isinstance(project, (str, os.PathLike)):
            project = self.rootpath / Path(project)
        loaded = api.load_project(project)
        values = dict(parameters or {})
        if configured:
            from pytest_mlproject.commands import user_parameters
            from pytest_mlproject.settings import read_settings

            layers = (session.cli_params, session.ini_params)
            settings = read_settings(loaded.directory).parameters
            for name, value in user_parameters(
                loaded.entry_point(entry), *layers, settings
            ).items():
                values.setdefault(name, value)
        serverless = False
        if cluster_spec is None:
            compute = api.own_compute(
                loaded,
                entry,
                serverless=options.serverless,
                environment_version=options.environment_version,
                session_spec=options.cluster_spec,
            )
            from pytest_mlproject.databricks.clusterspec import ClusterSpec

            serverless = compute is not None and not isinstance(compute, ClusterSpec)
            cluster_spec = compute if isinstance(compute, ClusterSpec) else None
        profile = profile if profile is not None else options.profile
        submission = api.prepare(
            loaded,
            entry,
            values,
            cluster_spec=cluster_spec,
            serverless=serverless,
            environment_version=options.environment_version,
            profile=profile,
            timeout=timeout if timeout is not None else options.timeout,
            experiment_id=experiment_id if experiment_id is not None else options.experiment_id,
        )
        # One connection per profile for the whole test, made once there is a run to submit.
        workspace = self._workspaces.get(profile)
        if workspace is None:
            workspace = self._workspaces[profile] = Workspace.connect(profile)
        result = api.run(
            submission,
            profile=profile,
            upload_dir=upload_dir if upload_dir is not None else options.upload_dir,
            workspace=workspace,
            echo=_echo,
        )
        self.results.append(result)
        if result.logs:
            title = f"Databricks run log of {result.project}::{result.entry_point}"
            self._request.node.add_report_section("call", title, result.logs)
        return result

    def close(self) -> None:
        for workspace in self._workspaces.values():
            workspace.close()
        self._workspaces.clear()


def _echo(line: str) -> None:
    # Captured with the test's output, and shown beside a failure.
    print(line, flush=True)


@pytest.fixture
def mlproject_databricks(request: pytest.FixtureRequest) -> Iterator[MLprojectDatabricks]:
    """Submit MLflow project entry points to Databricks from a test.

    ``mlproject_databricks.submit(project, entry="main", parameters=None, **options)``
    uploads the project, runs the entry point as a one-time job run on a new cluster, waits,
    and returns a :class:`~pytest_mlproject.databricks.api.DatabricksResult`
    (``assert result.passed, result.describe()``). The session's ``--databricks-*`` options
    are the defaults. Tests using it are skipped unless pytest runs with ``--databricks``:
    a plain ``pytest`` never spends money on a cluster. A run still going when the test
    ends (Ctrl-C, an exception) is cancelled.
    """
    options = request.config.stash[CONFIG_KEY].databricks
    if not options.submit:
        pytest.skip(SKIP_WITHOUT_DATABRICKS)
    if options.dry_run:
        pytest.skip(SKIP_DRY_RUN)
    submitter = MLprojectDatabricks(request)
    try:
        yield submitter
    finally:
        submitter.close()
