"""What a one-time run's JSON says about it, read the same way whichever state shape a server sends.

Databricks answers ``runs/get`` with ``state`` (``life_cycle_state``, ``result_state``,
``state_message``; marked deprecated but still sent) and ``status`` (``state`` and
``termination_details``); some servers send only one of them. :func:`parse_run` reads both into
one :class:`RunState` and never raises on a missing or odd field: a poller must not crash on a
payload it does not fully understand, and a run it cannot place stays non-terminal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Life cycles after which a run never changes again (``state.life_cycle_state``).
TERMINAL_LIFE_CYCLES = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
#: The life cycle reported when a payload carries neither ``status`` nor ``state``.
UNKNOWN = "UNKNOWN"
_MESSAGE_LIMIT = 500
#: A run's ``error`` when the launcher reports that the command failed: its ``error_trace``
#: holds only the launcher's own frames (the command's output is in the log), so it is not
#: shown. Databricks may prefix the exception with its module.
_COMMAND_FAILED = re.compile(r"(?:[\w.]+\.)?LauncherError: entry point '.*' failed: its command ")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _result_from_code(code: str | None, message: str) -> str | None:
    """A ``result_state`` for a server that sent only ``status``: what ``state`` would have said."""
    if code is None or code in ("SKIPPED", "INTERNAL_ERROR"):
        return None  # like state.result_state, which these runs lack
    if code in ("SUCCESS", "SUCCESS_WITH_FAILURES"):
        return code
    if code == "USER_CANCELED":
        return "CANCELED"
    if code == "CANCELED":  # canceled by the platform, most often for exceeding timeout_seconds
        return (
            "TIMEDOUT" if re.search(r"tim(ed|e)[ _-]?out", message, re.IGNORECASE) else "CANCELED"
        )
    return "FAILED"


def _duration(run: Mapping[str, Any], task: Mapping[str, Any], key: str) -> int | None:
    """A duration from the run, or from its one task when the run gives 0 (multi-task format)."""
    value = _int(run.get(key))
    if not value:
        value = _int(task.get(key)) if key in task else value
    return value


@dataclass(frozen=True)
class RunState:
    """One look at a run. ``life_cycle`` and ``result`` use ``state``'s vocabulary."""

    run_id: int
    life_cycle: str
    result: str | None
    terminal: bool
    message: str
    termination_code: str | None = None
    termination_type: str | None = None
    run_page_url: str | None = None
    task_run_id: int | None = None
    setup_ms: int | None = None
    execution_ms: int | None = None
    run_duration_ms: int | None = None

    @property
    def passed(self) -> bool:
        """Only SUCCESS passes; a terminal run without a result (SKIPPED, INTERNAL_ERROR) fails."""
        return self.terminal and self.result == "SUCCESS"

    def describe(self) -> str:
        """One line, e.g. ``TERMINATED FAILED (RUN_EXECUTION_ERROR: Workload failed ...)``."""
        words = [self.life_cycle]
        if self.result and self.result != self.life_cycle:
            words.append(self.result)
        code = self.termination_code
        if code in (self.life_cycle, self.result, "SUCCESS"):
            code = None
        message = " ".join(self.message.split())
        if len(message) > _MESSAGE_LIMIT:
            message = message[: _MESSAGE_LIMIT - 3] + "..."
        detail = ": ".join(part for part in (code, message) if part)
        return " ".join(words) + (f" ({detail})" if detail else "")


def parse_run(payload: Mapping[str, Any]) -> RunState:
    """Read a ``runs/get`` answer (or one of its ``tasks``) into a :class:`RunState`.

    ``status`` is read when present and ``state`` is the fallback. When both came, a terminal
    ``SKIPPED`` or ``INTERNAL_ERROR`` from ``state`` is kept as the life cycle (``status`` says only
    ``TERMINATED``), and either one saying the run ended makes it terminal. Without
    ``result_state``, the result is derived from ``termination_details.code``. An unknown life
    cycle is not terminal.
    """
    payload = _mapping(payload)
    state = _mapping(payload.get("state"))
    status = _mapping(payload.get("status"))
    details = _mapping(status.get("termination_details"))

    old_life_cycle = _text(state.get("life_cycle_state"))
    new_life_cycle = _text(status.get("state"))
    terminal = old_life_cycle in TERMINAL_LIFE_CYCLES or new_life_cycle == "TERMINATED"
    if terminal:
        if old_life_cycle in ("SKIPPED", "INTERNAL_ERROR"):
            life_cycle = str(old_life_cycle)
        else:
            life_cycle = "TERMINATED" if new_life_cycle == "TERMINATED" else str(old_life_cycle)
    else:
        life_cycle = new_life_cycle or old_life_cycle or UNKNOWN

    code = _text(details.get("code"))
    message = _text(details.get("message")) or _text(state.get("state_message")) or ""
    result: str | None = None
    if terminal:
        result = _text(state.get("result_state")) or _result_from_code(code, message)

    tasks = payload.get("tasks")
    first: Mapping[str, Any] = {}
    if isinstance(tasks, list) and tasks:
        first = _mapping(tasks[0])
    return RunState(
        run_id=_int(payload.get("run_id")) or 0,
        life_cycle=life_cycle,
        result=result,
        terminal=terminal,
        message=message,
        termination_code=code,
        termination_type=_text(details.get("type")),
        run_page_url=_text(payload.get("run_page_url")),
        task_run_id=_int(first.get("run_id")),
        setup_ms=_duration(payload, first, "setup_duration"),
        execution_ms=_duration(payload, first, "execution_duration"),
        run_duration_ms=_int(payload.get("run_duration")),
    )


@dataclass(frozen=True)
class RunOutput:
    """``runs/get-output`` of a task run: the end of its stdout/stderr and its error, if any."""

    logs: str
    logs_truncated: bool
    error: str | None
    error_trace: str | None


def launcher_silence(output: RunOutput | None, entry: str) -> str | None:
    """Why a run that ended ``SUCCESS`` cannot pass: its log lacks the launcher's start line
    (for a log cut to its last 5 MB, its finished line), so the launcher never ran as the
    task's main program and nothing was run. ``None`` when the launcher did run, or when the
    log could not be read."""
    from pytest_mlproject.databricks import launcher

    if output is None:
        return None  # the log could not be read: nothing to tell from
    start = launcher.START_PREFIX.format(entry=entry)
    lines = output.logs.splitlines()
    if any(line.startswith(start) for line in lines):
        return None
    if output.logs_truncated and launcher.FINISH.format(entry=entry) in lines:
        return None
    return (
        f"the run ended SUCCESS, but its log lacks the launcher's start line ({start}...): "
        "the launcher never ran the entry point (was the task file not run as the main "
        "program?)"
    )


def detail_lines(run_page_url: str | None, output: RunOutput | None, tail: int = 40) -> list[str]:
    """What a failure message shows after its first line: the run page, the run's error,
    and the last ``tail`` lines of its error trace and of its log."""
    lines: list[str] = []
    if run_page_url:
        lines.append(f"run page: {run_page_url}")
    if output is None:
        return lines
    if output.error:
        lines.append(f"error: {output.error}")
    if output.error_trace and not (output.error and _COMMAND_FAILED.match(output.error)):
        lines.append("--- error trace ---")
        lines.extend(output.error_trace.rstrip("\n").splitlines()[-tail:])
    logs = output.logs.rstrip("\n").splitlines()[-tail:]
    if logs:
        truncated = " (the run's log was truncated)" if output.logs_truncated else ""
        lines.append(f"--- last {len(logs)} lines of the run's log{truncated} ---")
        lines.extend(logs)
    return lines
