"""The base nodes: what every item of ours shares, and the ``::spec`` / ``::check`` item.

Node ids (users select with them, ``--lf`` replays them)::

    path/to/MLproject::spec              the descriptor as a whole
    path/to/MLproject::<entry>::check    one entry point
    path/to/MLproject::<entry>::run      a local run (--mlproject-run)

The collectors (:mod:`pytest_mlproject.plugin.collect`) make the items; the item modules
(``localitem``, ``databricksitem``) subclass :class:`EntryPointItem` from here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlproject import spec
from pytest_mlproject.options import MLprojectConfig
from pytest_mlproject.plugin.config import CONFIG_KEY
from pytest_mlproject.problems import MLprojectWarning, Problem

if TYPE_CHECKING:
    from pytest_mlproject.descriptor import ProjectContext

SPEC_ITEM = "spec"
_ESCAPES = {"%": "%25", ":": "%3A", "[": "%5B", "]": "%5D", "\n": "%0A", "\r": "%0D"}


@functools.cache
def _mlproject_mark() -> pytest.MarkDecorator:
    """One marker for every item, built once (on first use, where the session knows the
    name): marks are immutable, and from the name pytest builds a new one for each item."""
    return pytest.mark.mlproject


def node_name(entry_point: str) -> str:
    """The node name of an entry point: itself, with what would break node ids escaped.

    ``%``, ``:``, ``[``, ``]`` and line breaks are percent-encoded; an entry point named
    ``spec`` would clash with the ``::spec`` item and becomes ``%73pec``; an empty name is
    ``%``. Distinct entry points always get distinct names.
    """
    if entry_point == SPEC_ITEM:
        return "%73pec"
    if entry_point == "":
        return "%"
    return "".join(_ESCAPES.get(char, char) for char in entry_point)


class MLprojectFailure(Exception):
    """Raised by an item whose problems fail it; shown as the problems alone."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)


def _settings(node: pytest.Item | pytest.Collector) -> MLprojectConfig:
    return node.config.stash[CONFIG_KEY]


def report_problems(item: pytest.Item, problems: Iterable[Problem]) -> None:
    """Fail ``item`` with its errors; show its warnings as pytest warnings.

    Warnings fail the item too under ``--mlproject-strict``, and when a warnings filter
    turns them into errors (``-W error``), just as cleanly: the problems, no traceback.
    """
    strict = _settings(item).strict
    failing = []
    for problem in problems:
        if problem.is_error or strict:
            failing.append(problem)
            continue
        try:
            problem.warn()
        except MLprojectWarning:  # -W error, or a filterwarnings entry that says so
            failing.append(problem)
    if failing:
        failing.sort(key=lambda p: (str(p.path), p.line, p.code))
        raise MLprojectFailure([p.format(relative_to=item.config.rootpath) for p in failing])


class MLprojectItem(pytest.Item):
    """Base of every item of ours: a failure we raise shows as its lines, never a traceback."""

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str:
        if isinstance(excinfo.value, MLprojectFailure):
            return "\n".join(excinfo.value.lines)
        return str(super().repr_failure(excinfo, style))


class EntryPointItem(MLprojectItem):
    """An item that runs one entry point (``::run``, ``::databricks``)."""

    def __init__(
        self,
        *,
        context: ProjectContext,
        entry_point: spec.EntryPoint,
        has_errors: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.context = context
        self.entry_point = entry_point
        self.has_errors = has_errors
        self.add_marker(_mlproject_mark())

    def where(self) -> str:
        """``path:line`` of the entry point, relative to the rootdir, for messages."""
        descriptor = self.context.project.descriptor
        path = descriptor if descriptor is not None else Path(self.path)
        try:
            shown = str(path.relative_to(self.config.rootpath))
        except ValueError:
            shown = str(path)
        return f"{shown}:{self.entry_point.line}"

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.entry_point.line - 1, self.nodeid


class ProblemsItem(MLprojectItem):
    """Passes when its problems are only warnings (shown as pytest warnings); else fails."""

    def __init__(
        self,
        *,
        problems: tuple[Problem, ...],
        line: int = 1,
        internal_error: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.problems = problems
        self.line = line
        self.internal_error = internal_error
        self.add_marker(_mlproject_mark())
        codes = sorted({p.code for p in problems})
        if codes:
            self.user_properties.append(("mlproject_problems", " ".join(codes)))

    def runtest(self) -> None:
        if self.internal_error is not None:
            raise MLprojectFailure(
                [
                    f"{self._where()}: pytest-mlproject failed while reading this file; "
                    "please report this with the traceback below",
                    self.internal_error,
                ]
            )
        report_problems(self, self.problems)

    def _where(self) -> str:
        try:
            return str(self.path.relative_to(self.config.rootpath))
        except ValueError:
            return str(self.path)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.line - 1, self.nodeid
