"""The ``<entry>::run`` item: run an entry point locally, as ``mlflow run`` would.

The command is rendered with MLflow's semantics (``commands``) and run by ``local`` in the
project folder. What the run learned goes into ``user_properties`` (and so into JUnit XML);
its full output goes into report sections, and the failure message keeps the tail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlproject import commands, local, redact
from pytest_mlproject.plugin.config import CONFIG_KEY
from pytest_mlproject.plugin.nodes import EntryPointItem, MLprojectFailure
from pytest_mlproject.problems import MLprojectError
from pytest_mlproject.spec import EntryPoint, Project

if TYPE_CHECKING:
    from pytest_mlproject.descriptor import ProjectContext
    from pytest_mlproject.envs import EnvManager
    from pytest_mlproject.settings import Settings

#: Lines of each output stream shown in the failure message; the rest is in report sections.
TAIL_LINES = 30


def user_values(
    context: ProjectContext, entry_point: EntryPoint, config: pytest.Config
) -> dict[str, str]:
    """Parameter values for ``entry_point``: command line, then ini, then the settings file."""
    settings = config.stash[CONFIG_KEY]
    return commands.user_parameters(
        entry_point, settings.cli_params, settings.ini_params, context.settings.parameters
    )


def missing_reason(entry_point: EntryPoint, values: dict[str, str]) -> str | None:
    """The skip reason when required parameters have no value, naming how to give them."""
    missing = commands.missing_parameters(entry_point, values)
    if not missing:
        return None
    names = ", ".join(f"'{name}'" for name in missing)
    example = f"--mlproject-param '{entry_point.name}:{missing[0]}=VALUE'"
    return (
        f"No value given for missing parameters: {names}; give them with {example}, "
        "the ini key mlproject_params, or pytest-mlproject.yaml beside the MLproject file"
    )


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Make SIGTERM (a CI runner cancelling the job) interrupt the run as Ctrl-C does.

    The command runs in a session of its own, which a signal to pytest never reaches: left
    to SIGTERM's default, pytest would die at once and the command would go on running. As
    a Ctrl-C, the run ends the command's process group on the way out (and one that lands
    while the command starts is held back until it can). A handler set by anyone else, for
    either signal, is left alone.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_timeout(config: pytest.Config, settings: Settings, entry_point: str) -> float:
    """The time limit of a local run: the command line and the ini file win over
    pytest-mlproject.yaml, as for parameters; then the default."""
    session = config.stash[CONFIG_KEY]
    if session.timeout_given:
        return session.timeout
    return settings.timeout(entry_point) or session.timeout


def env_manager_for(config: pytest.Config, settings: Settings, project: Project) -> EnvManager:
    """How a local run of ``project`` gets its environment: the project's own
    ``env_manager:`` (the more specific setting), else the session's option or ini key,
    else ``uv`` when the project declares an environment and ``local`` when it does not."""
    from pytest_mlproject import envs

    if settings.env_manager is not None:
        return envs.check_env_manager(settings.env_manager, "env_manager")
    chosen = config.stash[CONFIG_KEY].env_manager
    return chosen if chosen is not None else envs.default_env_manager(project)


def _progress(config: pytest.Config) -> Callable[[str], None]:
    """A line on the terminal while an environment is built, even while output is captured
    (an xdist worker has no terminal: its lines go nowhere)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def say(text: str) -> None:
        if reporter is None:
            return
        quiet = capture.global_and_fixture_disabled() if capture is not None else None
        with quiet or contextlib.nullcontext():
            reporter.write_line(f"pytest-mlproject: {text}")

    return say


def run_locally(
    config: pytest.Config,
    project: Project,
    entry_point: str,
    command: str,
    *,
    timeout: float | None,
    commit: str | None,
    env: Mapping[str, str] | None = None,
    env_manager: EnvManager = "local",
) -> local.RunResult:
    """Run ``command`` in the project's folder as a run item does (the ``mlproject`` fixture
    too): in the environment ``env_manager`` gives it (built first if need be, within
    ``timeout``), echoed as it comes with ``-s``, SIGTERM taken as Ctrl-C, and no secret in
    what the result holds, since the project's code may print its environment.

    Raises :class:`~pytest_mlproject.envs.BuildError` and
    :class:`~pytest_mlproject.envs.EnvFileError` when the environment cannot be built."""
    secrets = redact.secret_values({**os.environ, **(env or {})})
    live = config.getoption("capture") == "no"
    echo = redact.ScrubbingWriter(sys.stdout, secrets) if live else None
    try:
        with _sigterm_interrupts():
            environment = local.prepare_environment(
                project,
                env_manager,
                env_dir=config.stash[CONFIG_KEY].env_dir,
                timeout=timeout,
                progress=_progress(config),
            )
            if environment is not None:
                local.issue(environment.notes)
                if timeout is not None:
                    timeout = max(timeout - environment.duration, 0.001)
            result = local.run_command(
                command,
                project.directory,
                timeout=timeout,
                env=env,
                echo=echo,
                commit=commit,
                environment=local.environment_description(project),
                entry_point=entry_point,
                venv=environment,
            )
    finally:
        if echo is not None:
            echo.close()
    return dataclasses.replace(
        result,
        command=redact.scrub(result.command, secrets),
        stdout=redact.scrub(result.stdout, secrets),
        stderr=redact.scrub(result.stderr, secrets),
    )


class RunItem(EntryPointItem):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_marker("mlproject_run")

    def runtest(self) -> None:
        project, entry = self.context.project, self.entry_point
        reason = local.local_skip_reason(project) or self.context.settings.skip_reason(entry.name)
        if reason is None and self.has_errors:
            reason = "the entry point has errors, so it cannot run: see its ::check item"
        values = user_values(self.context, entry, self.config)
        reason = reason or missing_reason(entry, values)
        if reason is not None:
            # Shown at the entry point (`SKIPPED [1] p/MLproject:4: ...`), as a skip marker
            # is shown at its test, not at this line of the plugin.
            raise pytest.skip.Exception(reason, _use_item_location=True)
        try:
            command = commands.render_command(entry, values, base_dir=project.directory)
        except MLprojectError as exc:
            raise MLprojectFailure([f"{self.where()}: {exc}"]) from None
        self.user_properties.append(("command", redact.scrub(command)))
        from pytest_mlproject import envs
        from pytest_mlproject.plugin.trackingitem import end_run, local_status, start_run

        try:
            manager = env_manager_for(self.config, self.context.settings, project)
        except MLprojectError as exc:  # MLP803 on ::spec says where
            raise MLprojectFailure([f"{self.where()}: {exc}"]) from None
        self.user_properties.append(("env_manager", manager))
        tracked = start_run(self, self.context, entry, values, "local", env_manager=manager)
        try:
            result = run_locally(
                self.config,
                project,
                entry.name,
                command,
                timeout=run_timeout(self.config, self.context.settings, entry.name),
                commit=self.context.commit,
                env=tracked.env() if tracked is not None else None,
                env_manager=manager,
            )
        except (envs.BuildError, envs.EnvFileError) as exc:
            from pytest_mlproject import tracking

            timed_out = isinstance(exc, envs.BuildTimeout)
            end_run(self, tracked, tracking.KILLED if timed_out else tracking.FAILED)
            self.user_properties.append(("environment", "not built"))
            raise MLprojectFailure(
                [
                    f"{self.where()}: entry point {entry.name!r} did not run: its environment "
                    f"could not be built (--mlproject-env-manager {manager})",
                    *str(exc).splitlines(),
                ]
            ) from None
        except BaseException as exc:  # Ctrl-C or SIGTERM ends the run KILLED
            end_run(self, tracked, exc)
            raise
        end_run(self, tracked, local_status(result))
        self.user_properties.extend(
            [
                ("exit_code", str(result.exit_code)),
                ("duration", f"{result.duration:.3f}"),
                ("git_commit", result.commit or ""),
                ("environment", result.environment),
            ]
        )
        if result.stdout:
            self.add_report_section("call", "stdout (full)", result.stdout)
        if result.stderr:
            self.add_report_section("call", "stderr (full)", result.stderr)
        if not result.ok:
            raise MLprojectFailure(self._failure_lines(result))

    def _failure_lines(self, result: local.RunResult) -> list[str]:
        lines = [
            f"{self.where()}: entry point {self.entry_point.name!r} failed: {result.describe()}",
            f"command: {result.command}",
            f"ran in: {result.cwd} with {result.environment}",
        ]
        for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
            tail = text.rstrip("\n").splitlines()[-TAIL_LINES:]
            if tail:
                lines.append(f"--- last {len(tail)} lines of {name} ---")
                lines.extend(tail)
        return lines
