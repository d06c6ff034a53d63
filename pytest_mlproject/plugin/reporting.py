"""What a session tells beyond the terminal: GitHub annotations and a Markdown summary.

- Under GitHub Actions (``GITHUB_ACTIONS=true``) every problem is also printed as a workflow
  command (``::error file=...,line=...,title=...::message``), which GitHub shows on the pull
  request's diff. ``mlproject-check`` prints the same commands through :func:`annotation`.
- ``--mlproject-summary PATH`` (ini ``mlproject_summary``) appends a Markdown summary of the
  session to PATH: ``$GITHUB_STEP_SUMMARY`` is such a file, one per step, shown on the run's
  page.

Both are built from the reports alone, so they work the same under pytest-xdist: the workers
attach each item's problems to its report, and the controller, which has no items, reads them
back. The plugin imports this module only with ``--mlproject``, and then only when one of the
two is asked for (:func:`pytest_mlproject.plugin.config.summary_path`, ``GITHUB_ACTIONS``) or
when ``--databricks`` submits (:class:`DatabricksSummary`).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_mlproject.plugin.config import CONFIG_KEY, github_actions
from pytest_mlproject.problems import RULES, Problem

RULES_URL = "https://github.com/pytest-mlproject/pytest-mlproject/blob/main/docs/rules.md"
#: The attribute of a report that carries its item's problems, as JSON-ready lists.
PROBLEMS_ATTRIBUTE = "mlproject_problem_list"
KINDS = ("check", "run", "databricks")


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation_path(path: Path | str) -> str:
    """``path`` relative to the checkout (``GITHUB_WORKSPACE``, else the current folder), as
    GitHub needs it to place an annotation on the diff."""
    base = os.path.abspath(os.environ.get("GITHUB_WORKSPACE") or os.getcwd())
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute, base)
    return Path(absolute if relative.startswith("..") else relative).as_posix()


def annotation(problem: Problem, failing: bool) -> str:
    """The GitHub workflow command for one problem: an error if it fails, else a warning."""
    rule = RULES.get(problem.code)
    title = f"{problem.code} {rule.name}" if rule is not None else problem.code
    properties = ",".join(
        f"{key}={_escape_property(value)}"
        for key, value in (
            ("file", annotation_path(problem.path)),
            ("line", str(problem.line)),
            ("title", title),
        )
    )
    return f"::{'error' if failing else 'warning'} {properties}::{_escape_data(problem.message)}"


def rule_link(code: str) -> str:
    rule = RULES.get(code)
    if rule is None:
        return code
    return f"[{code} {rule.name}]({RULES_URL}#{code.lower()}-{rule.name})"


# --- the pytest side ----------------------------------------------------------------------


def configure_reporting(config: pytest.Config, path: Path | None) -> None:
    """Register the session report: a summary (to ``path``) or annotations are asked for."""
    if path is not None and not hasattr(config, "workerinput"):
        try:  # a summary that cannot be written is a usage error now, not a lost one later
            path.parent.mkdir(parents=True, exist_ok=True)
            path.open("a", encoding="utf-8").close()
        except OSError as exc:
            raise pytest.UsageError(f"--mlproject-summary: cannot write {path}: {exc}") from None
    config.pluginmanager.register(SessionReport(config, path), "mlproject-reporting")


@dataclass
class ItemResult:
    nodeid: str
    outcome: str = "passed"
    duration: float = 0.0
    skip_reason: str = ""
    properties: dict[str, str] = field(default_factory=dict)


class SessionReport:
    """Reads every report; annotates at the end of the terminal output, writes the summary
    when the session finishes. Does nothing on an xdist worker but attach problems."""

    def __init__(self, config: pytest.Config, summary: Path | None) -> None:
        self.config = config
        self.summary = summary
        self.worker = hasattr(config, "workerinput")
        self.items: dict[str, ItemResult] = {}
        #: (path, line, code, message, failing) of every problem, in report order.
        self.problems: list[tuple[str, int, str, str, bool]] = []
        self.started = time.monotonic()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        from pytest_mlproject.plugin.nodes import ProblemsItem

        if call.when == "call" and isinstance(item, ProblemsItem):
            strict = item.config.stash[CONFIG_KEY].strict
            setattr(
                report,
                PROBLEMS_ATTRIBUTE,
                [
                    [str(p.path), p.line, p.code, p.message, p.is_error or strict]
                    for p in item.problems
                ],
            )
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.keywords.get("mlproject") or _item_kind(report.nodeid) is None:
            return
        result = self.items.setdefault(report.nodeid, ItemResult(report.nodeid))
        result.duration += report.duration
        result.properties.update((str(k), str(v)) for k, v in report.user_properties)
        if report.failed:
            result.outcome = "error" if report.when != "call" else "failed"
        elif report.skipped and result.outcome == "passed":
            result.outcome = "skipped"
            if isinstance(report.longrepr, tuple):
                result.skip_reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        for path, line, code, message, failing in getattr(report, PROBLEMS_ATTRIBUTE, ()):
            self.problems.append((str(path), int(line), str(code), str(message), bool(failing)))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.worker or not github_actions() or not self.problems:
            return
        terminalreporter.section("GitHub annotations")
        # GitHub shows the first ten errors and ten warnings of a step: errors first.
        for path, line, code, message, failing in sorted(self.problems, key=lambda p: not p[4]):
            problem = Problem(Path(path), line, code, message)
            terminalreporter.write_line(annotation(problem, failing))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.worker or self.summary is None:
            return
        text = markdown(self.items.values(), self.problems, time.monotonic() - self.started)
        try:
            with self.summary.open("a", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            terminal = session.config.pluginmanager.get_plugin("terminalreporter")
            if terminal is not None:
                terminal.write_line(f"--mlproject-summary: cannot write {self.summary}: {exc}")


def _item_kind(nodeid: str) -> tuple[str, str, str] | None:
    """``(project, entry point, kind)`` of one of our node ids; the descriptor's own item is
    ``(project, "", "check")``."""
    parts = nodeid.split("::")
    if len(parts) == 2 and parts[1] == "spec":
        return parts[0], "", "check"
    if len(parts) == 3 and parts[2] in KINDS:
        return parts[0], parts[1], parts[2]
    return None


_ICONS = {"passed": "✅", "failed": "❌", "error": "💥", "skipped": "⏭️"}


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 60 else f"{value / 60:.1f} min"


def _describe(result: ItemResult, kind: str) -> str:
    parts = [f"{_ICONS.get(result.outcome, '')} {result.outcome}"]
    props = result.properties
    if kind == "run" and "exit_code" in props:
        parts.append(f"exit {props['exit_code']}")
    if kind == "databricks":
        if "databricks_payload" in props:
            parts.append("dry run")
        if props.get("databricks_compute"):
            parts.append(props["databricks_compute"])
        state = props.get("databricks_result_state")
        if state:
            parts.append(state)
        run_id, url = props.get("databricks_run_id"), props.get("databricks_run_page_url")
        if run_id:
            parts.append(f"[run {run_id}]({url})" if url else f"run {run_id}")
    if result.outcome == "skipped":
        reason = result.skip_reason
        if reason:
            parts.append(reason if len(reason) <= 120 else reason[:117] + "...")
    elif kind == "run" and props.get("duration"):
        parts.append(_seconds(float(props["duration"])))  # the command's own time
    elif kind == "databricks" and props.get("databricks_run_duration_ms"):
        parts.append(_seconds(float(props["databricks_run_duration_ms"]) / 1000))
    elif kind != "check":  # a check takes no time worth showing
        parts.append(_seconds(result.duration))
    return _cell(", ".join(parts))


def markdown(
    results: Iterable[ItemResult],
    problems: Sequence[tuple[str, int, str, str, bool]],
    elapsed: float,
) -> str:
    """The summary of a session, as Markdown that ends with a blank line."""
    projects: dict[str, dict[str, dict[str, ItemResult]]] = {}
    outcomes: Counter[str] = Counter()
    for result in sorted(results, key=lambda r: r.nodeid):
        kind = _item_kind(result.nodeid)
        assert kind is not None
        project, entry, column = kind
        projects.setdefault(project, {}).setdefault(entry, {})[column] = result
        outcomes[result.outcome] += 1
    lines = ["## MLflow projects", ""]
    if not projects:
        return "\n".join([*lines, "No MLproject file was collected.", "", ""])
    entry_points = sum(len([e for e in entries if e]) for entries in projects.values())
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
    lines += [
        f"{_plural(len(projects), 'project')}, {_plural(entry_points, 'entry point')}: "
        f"{counts} in {_seconds(elapsed)}",
        "",
    ]
    kinds = [k for k in KINDS if any(k in e for p in projects.values() for e in p.values())]
    lines += [
        "| project | entry point | " + " | ".join(kinds) + " |",
        "| --- | --- | " + " | ".join("---" for _ in kinds) + " |",
    ]
    for project, entries in projects.items():
        # The descriptor's own row first (its name sorts first: ""), then the entry points.
        for index, (entry, row) in enumerate(sorted(entries.items())):
            cells = [
                "" if index else f"`{_cell(project)}`",
                f"`{_cell(entry)}`" if entry else "*(descriptor)*",
                *(_describe(row[k], k) if k in row else "" for k in kinds),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if problems:
        by_code = Counter(code for _, _, code, _, _ in problems)
        failing = {code for _, _, code, _, fails in problems if fails}
        lines += ["### Problems by rule", "", "| rule | problems | fails its item |"]
        lines.append("| --- | --- | --- |")
        for code, count in sorted(by_code.items()):
            lines.append(f"| {rule_link(code)} | {count} | {'yes' if code in failing else 'no'} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class DatabricksSummary:
    """Collects Databricks runs from the reports (on the xdist controller too) and lists
    them, with their links, at the end of the session."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, dict[str, str]]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = {str(k): str(v) for k, v in report.user_properties}
        if report.when == "call" and (
            "databricks_label" in properties or "databricks_payload" in properties
        ):
            self.rows.append((report.nodeid, report.outcome, properties))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        payloads = [
            (n, p["databricks_payload"]) for n, _, p in self.rows if "databricks_payload" in p
        ]
        if payloads:
            terminalreporter.section("Databricks dry run: runs/submit payloads")
            for nodeid, payload in payloads:
                terminalreporter.write_line(f"{nodeid}:")
                terminalreporter.write_line(
                    json.dumps(json.loads(payload), indent=2, sort_keys=True)
                )
        runs = [row for row in self.rows if "databricks_label" in row[2]]
        if not runs:
            return
        terminalreporter.section("Databricks runs")
        for nodeid, outcome, properties in runs:
            run = properties.get("databricks_run_id", "-")
            state = properties.get("databricks_result_state", "not submitted")
            link = properties.get("databricks_run_page_url", "")
            compute = properties.get("databricks_compute", "")
            compute = f"{compute:25} " if compute else ""
            terminalreporter.write_line(
                f"{outcome.upper():7} {state:14} run {run:>8}  {compute}{nodeid}"
            )
            if link:
                terminalreporter.write_line(f"        {link}")
