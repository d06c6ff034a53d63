"""The ``<entry>::run`` item: run an entry point locally, as ``mlflow run`` would.

The command is rendered with MLflow's semantics (``commands``) and run by ``local`` in the
project folder. What the run learned goes into ``user_properties`` (and so into JUnit XML);
its full output goes into report sections, and the failure message keeps the tail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlproject import commands, local, redact
from pytest_mlproject.config import CONFIG_KEY
from pytest_mlproject.nodes import MLprojectFailure
from pytest_mlproject.problems import MLprojectError
from pytest_mlproject.spec import EntryPoint

if TYPE_CHECKING:
    from pytest_mlproject.nodes import ProjectContext

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


class RunItem(pytest.Item):
    def __init__(
        self,
        *,
        context: ProjectContext,
        entry_point: EntryPoint,
        has_errors: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.context = context
        self.entry_point = entry_point
        self.has_errors = has_errors
        self.add_marker("mlproject")
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
            raise MLprojectFailure([f"{self._where()}: {exc}"]) from None
        self.user_properties.append(("command", redact.scrub(command)))
        settings = self.config.stash[CONFIG_KEY]
        # The command line and the ini file win over pytest-mlproject.yaml, as for parameters.
        timeout = settings.timeout
        if not settings.timeout_given:
            timeout = self.context.settings.timeout(entry.name) or settings.timeout
        live = self.config.getoption("capture") == "no"
        echo = redact.ScrubbingWriter(sys.stdout) if live else None
        try:
            with _sigterm_interrupts():
                result = local.run_command(
                    command,
                    project.directory,
                    timeout=timeout,
                    echo=echo,
                    commit=self.context.commit,
                    environment=local.environment_description(project),
                    entry_point=entry.name,
                )
        finally:
            if echo is not None:
                echo.close()
        # The project's code may print its environment: what we show holds no secret.
        result = dataclasses.replace(
            result,
            command=redact.scrub(result.command),
            stdout=redact.scrub(result.stdout),
            stderr=redact.scrub(result.stderr),
        )
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
            f"{self._where()}: entry point {self.entry_point.name!r} failed: {result.describe()}",
            f"command: {result.command}",
            f"ran in: {result.cwd} with {result.environment}",
        ]
        for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
            tail = text.rstrip("\n").splitlines()[-TAIL_LINES:]
            if tail:
                lines.append(f"--- last {len(tail)} lines of {name} ---")
                lines.extend(tail)
        return lines

    def _where(self) -> str:
        descriptor = self.context.project.descriptor
        path = descriptor if descriptor is not None else Path(self.path)
        try:
            shown = str(path.relative_to(self.config.rootpath))
        except ValueError:
            shown = str(path)
        return f"{shown}:{self.entry_point.line}"

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str:
        if isinstance(excinfo.value, MLprojectFailure):
            return "\n".join(excinfo.value.lines)
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.entry_point.line - 1, self.nodeid
