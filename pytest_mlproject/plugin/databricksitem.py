"""The ``<entry>::databricks`` item: an entry point as a one-time Databricks job run.

Everything that can be decided without a request is decided first (``prepare``): skip
reasons, the cluster spec and what Databricks would refuse, the command, the archive and
the submit body. Only then does the session's :class:`Coordinator` connect and submit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlproject import redact
from pytest_mlproject.plugin.config import CONFIG_KEY, COORDINATOR_KEY, DIST_KEY
from pytest_mlproject.plugin.nodes import EntryPointItem, MLprojectFailure, report_problems
from pytest_mlproject.problems import MLprojectError, Problem

if TYPE_CHECKING:
    from pytest_mlproject.databricks.job import Job
    from pytest_mlproject.databricks.session import Coordinator
    from pytest_mlproject.tracking import TrackedRun

#: Lines of the run's log shown in the failure message (the whole log is a report section).
TAIL_LINES = 40
PLACEHOLDER_DIR = "/Workspace/Users/<you>/.pytest-mlproject"
ARCHIVES_KEY = pytest.StashKey[dict[Path, Any]]()
#: Descriptors whose Databricks items this worker has all submitted (``--dist loadfile``).
_FILES_SUBMITTED = pytest.StashKey[set[Path]]()


class _Skip(Exception):
    pass


def _scrubbed(value: Any, secrets: set[str]) -> Any:
    """``value`` (JSON data) with secrets masked in every string, so it stays valid JSON."""
    if isinstance(value, str):
        return redact.scrub(value, secrets)
    if isinstance(value, dict):
        return {_scrubbed(k, secrets): _scrubbed(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item, secrets) for item in value]
    return value


def coordinator(config: pytest.Config) -> Coordinator:
    from pytest_mlproject.databricks.session import Coordinator, ledger_path, share
    from pytest_mlproject.plugin.config import session_id

    existing = config.stash.get(COORDINATOR_KEY, None)
    if existing is not None:
        return existing
    options = config.stash[CONFIG_KEY].databricks
    _, _, limit = share(options.max_parallel, getattr(config, "workerinput", None))
    worker = getattr(config, "workerinput", None) is not None
    created = Coordinator(
        profile=options.profile,
        upload_dir=options.upload_dir,
        max_parallel=limit,
        echo=terminal_echo(config),
        ledger=ledger_path(session_id(config)) if worker else None,
    )
    config.stash[COORDINATOR_KEY] = created
    return created


def terminal_echo(config: pytest.Config) -> Any:
    """Write a line to the terminal now, even while pytest captures output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def echo(line: str) -> None:
        if reporter is None:
            return
        if capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.ensure_newline()
                reporter.write_line(line)
        else:
            reporter.write_line(line)

    return echo


class DatabricksItem(EntryPointItem):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_marker("databricks")
        self._prepared: Job | BaseException | None = None
        self._warnings: list[Problem] = []
        self.payload: dict[str, Any] | None = None
        #: The MLflow run of this item, with --mlproject-tracking.
        self._tracked: TrackedRun | None = None

    # --- preparing: no request is made here ---------------------------------------------

    def prepared(self) -> Job:
        """The job for this item; raises the skip or failure that preparing met (cached)."""
        if self._prepared is None:
            try:
                self._prepared = self._prepare()
            except (_Skip, MLprojectFailure, MLprojectError) as exc:
                self._prepared = exc
        if isinstance(self._prepared, BaseException):
            if isinstance(self._prepared, _Skip):
                raise pytest.skip.Exception(str(self._prepared), _use_item_location=True)
            if isinstance(self._prepared, MLprojectError):
                raise MLprojectFailure([f"{self.where()}: {self._prepared}"])
            raise self._prepared
        return self._prepared

    def _prepare(self) -> Job:
        from pytest_mlproject.databricks import archive, payload, preflight
        from pytest_mlproject.databricks.clusterspec import ClusterSpec
        from pytest_mlproject.databricks.workspace import configured_host
        from pytest_mlproject.descriptor import compute_for
        from pytest_mlproject.plugin.config import session_id
        from pytest_mlproject.plugin.localitem import missing_reason, user_values

        options = self.config.stash[CONFIG_KEY].databricks
        project, entry = self.context.project, self.entry_point
        reason = self.context.settings.databricks_skip_reason(entry.name)
        if reason is None and self.has_errors:
            reason = "the entry point has errors, so it cannot run: see its ::check item"
        if reason is not None:
            raise _Skip(reason)
        spec = compute_for(self.context, entry.name, options)
        if spec is None:
            raise MLprojectError(
                "no cluster spec for Databricks runs: give --databricks-cluster-spec "
                "(ini databricks_cluster_spec), or `databricks: cluster_spec:` in "
                "pytest-mlproject.yaml beside the MLproject file; or run on serverless jobs "
                "compute with --databricks-serverless (ini databricks_serverless), or "
                "`databricks: serverless: true` in pytest-mlproject.yaml"
            )
        host = configured_host(options.profile)
        if isinstance(spec, ClusterSpec):
            problems = [
                *preflight.project_problems(project, spec, host),
                *preflight.entry_problems(project, entry),
            ]
        else:
            problems = [
                *preflight.serverless_project_problems(project, spec, host),
                *preflight.serverless_entry_problems(project, entry),
            ]
        settings = self.config.stash[CONFIG_KEY]
        problems = [p for p in problems if p.code not in settings.ignore]
        errors = [p for p in problems if p.is_error or settings.strict]
        if errors:
            raise MLprojectFailure([p.format(relative_to=self.config.rootpath) for p in errors])
        # Warnings are shown when this item runs, not while another one prepares it.
        self._warnings = problems
        values = user_values(self.context, entry, self.config)
        missing = missing_reason(entry, values)
        if missing is not None:
            raise _Skip(missing)
        command = payload.cluster_command(project, entry, values)
        archives = self.config.stash.setdefault(ARCHIVES_KEY, {})
        if project.directory not in archives:
            archives[project.directory] = archive.pack(project.directory)
        packed = archives[project.directory]
        if not options.dry_run:  # a dry run asks nothing of the tracking store either
            from pytest_mlproject.plugin.trackingitem import start_run

            self._tracked = start_run(self, self.context, entry, values, "databricks")
        job = payload.build_job(
            project,
            entry.name,
            spec,
            command=command,
            packed=packed,
            nodeid=self.nodeid,
            label=f"{project.name}::{entry.name}",
            token=payload.idempotency_token(session_id(self.config), self.nodeid),
            timeout=options.timeout,
            experiment_id=options.experiment_id,
            mlflow_env=self._tracked.env(cluster=True) if self._tracked is not None else None,
        )
        self.user_properties.append(("archive_sha256", packed.sha256))
        from pytest_mlproject.databricks.serverless import describe_compute

        self.user_properties.append(("databricks_compute", describe_compute(dict(job.body))))
        return job

    # --- running ------------------------------------------------------------------------

    def runtest(self) -> None:
        job = self.prepared()
        report_problems(self, self._warnings)
        options = self.config.stash[CONFIG_KEY].databricks
        if options.dry_run:
            self._dry_run(job, options.upload_dir or PLACEHOLDER_DIR)
            return
        runs = coordinator(self.config)
        if not runs.started:
            runs.start(self._session_share())
        job = runs.ensure(job)
        for sibling in self._coming_here():
            runs.ensure(sibling, first=False)
        from pytest_mlproject.plugin.trackingitem import end_databricks_run, end_run

        try:
            runs.wait(job)
        except BaseException as exc:  # Ctrl-C or SIGTERM: the MLflow run ends KILLED
            end_run(self, self._tracked, exc)
            raise
        end_databricks_run(self, self._tracked, job, runs)
        self._report(job)

    def _session_share(self) -> list[Job]:
        """Jobs for this process's share of the session's Databricks items (all of them
        without xdist); items that skip or fail in preparation are left out."""
        from pytest_mlproject.databricks.session import share

        options = self.config.stash[CONFIG_KEY].databricks
        index, count, _ = share(options.max_parallel, getattr(self.config, "workerinput", None))
        items = [item for item in self.session.items if isinstance(item, DatabricksItem)]
        jobs = []
        for position, item in enumerate(items):
            if item is not self and position % count != index:
                continue
            try:
                jobs.append(item.prepared())
            except (pytest.skip.Exception, MLprojectFailure):
                continue
        return jobs

    def _coming_here(self) -> list[Job]:
        """Jobs of the items that will surely run in this process after this one: under
        ``--dist loadfile`` every item of a file goes to the worker that got its first one,
        whatever this worker's share says. Submitting them when the first of them runs keeps
        them in flight together instead of one after another as each is reached. Once per
        file."""
        workerinput: dict[str, Any] = getattr(self.config, "workerinput", None) or {}
        files = self.config.stash.setdefault(_FILES_SUBMITTED, set())
        if workerinput.get(DIST_KEY) != "loadfile" or self.path in files:
            return []
        files.add(self.path)
        jobs = []
        for item in self.session.items:
            if isinstance(item, DatabricksItem) and item is not self and item.path == self.path:
                try:
                    jobs.append(item.prepared())
                except (pytest.skip.Exception, MLprojectFailure):
                    continue
        return jobs

    def _dry_run(self, job: Job, upload_dir: str) -> None:
        from pytest_mlproject.databricks.payload import placed
        from pytest_mlproject.databricks.workspace import DatabricksError

        # The paths a real submit would send (/Users/x becomes /Workspace/Users/x), and an
        # upload folder a real submit would refuse fails here too.
        try:
            body = placed(json.loads(json.dumps(job.body)), upload_dir)
        except DatabricksError as exc:
            raise MLprojectFailure([f"{self.where()}: {exc}"]) from None
        self.payload = body
        # What is shown lands in CI logs and JUnit XML: a secret from the environment (in a
        # cluster spec's spark_env_vars, a parameter value, a tracking URI) is masked there,
        # as everywhere a local run's output is shown.
        shown = _scrubbed(body, redact.secret_values())
        text = json.dumps(shown, indent=2, sort_keys=True)
        self.add_report_section("call", "runs/submit payload (dry run)", text)
        self.user_properties.append(("databricks_payload", json.dumps(shown, sort_keys=True)))

    def _report(self, job: Job) -> None:
        state = job.state
        properties: list[tuple[str, object]] = [("databricks_label", job.label)]
        if job.run_id is not None:
            properties.append(("databricks_run_id", str(job.run_id)))
        if state is not None:
            properties += [
                ("databricks_run_page_url", state.run_page_url or ""),
                ("databricks_result_state", state.result or state.life_cycle),
                ("databricks_setup_ms", str(state.setup_ms or "")),
                ("databricks_execution_ms", str(state.execution_ms or "")),
                ("databricks_run_duration_ms", str(state.run_duration_ms or "")),
            ]
        properties.append(("git_commit", self.context.commit or ""))
        self.user_properties.extend(properties)
        output = job.output
        if output is not None and output.logs:
            self.add_report_section("call", "Databricks run log", output.logs)
        silence = None
        if job.error is None and state is not None and state.passed:
            from pytest_mlproject.databricks.runstate import launcher_silence

            # A host that did not run the launcher as __main__ ran nothing, and says SUCCESS.
            silence = launcher_silence(output, self.entry_point.name)
            if silence is None:
                return
        raise MLprojectFailure(self._failure_lines(job, silence))

    def _failure_lines(self, job: Job, error: str | None = None) -> list[str]:
        """The failure message; ``error``, if given, says what failed instead of the job."""
        from pytest_mlproject.databricks.runstate import detail_lines

        state, output = job.state, job.output
        head = f"{self.where()}: entry point {self.entry_point.name!r} on Databricks"
        if job.run_id is not None:
            head += f", run {job.run_id}"
        error = error or job.error
        runs = self.config.stash.get(COORDINATOR_KEY, None)
        if error is not None and runs is not None and error == runs.connect_error:
            # Said in full once, on the first item that met it; the others say it short.
            if runs.connect_error_shown:
                error = error.splitlines()[0] + " (how to give credentials: see above)"
            runs.connect_error_shown = True
        lines = [f"{head}: {error or (state.describe() if state else 'no state')}"]
        return lines + detail_lines(state.run_page_url if state else None, output, TAIL_LINES)
