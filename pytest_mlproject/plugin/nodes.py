"""The pytest nodes: one file per descriptor, one collector per entry point, and the items.

Node ids (users select with them, ``--lf`` replays them)::

    path/to/MLproject::spec              the descriptor as a whole
    path/to/MLproject::<entry>::check    one entry point
    path/to/MLproject::<entry>::run      a local run (--mlproject-run)

Reading and checking happen once per descriptor, in ``collect``; the items only report. A
descriptor that cannot be read is a failing ``::spec`` item, never a collection error.
"""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlproject import checks, spec
from pytest_mlproject.plugin.config import CONFIG_KEY, MLprojectConfig
from pytest_mlproject.problems import MLprojectWarning, Problem
from pytest_mlproject.settings import Settings, check_settings, read_settings

if TYPE_CHECKING:
    from pytest_mlproject.sources import Source

SPEC_ITEM = "spec"
_ESCAPES = {"%": "%25", ":": "%3A", "[": "%5B", "]": "%5D", "\n": "%0A", "\r": "%0D"}


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


@dataclass(frozen=True)
class ProjectContext:
    """What every item of one project shares: the project, its settings, where it came from."""

    project: spec.Project
    settings: Settings
    #: The URI it was fetched from (``--mlproject-uri``), or ``None`` for a collected file.
    source: Source | None = None

    @property
    def commit(self) -> str | None:
        """The Git commit of the project's files; looked up once, on first use (git is slow)."""
        if self.source is not None:
            return self.source.commit
        return _commit_of(self.project.directory)


@functools.cache
def _commit_of(directory: Path) -> str | None:
    from pytest_mlproject.sources import git_commit

    return git_commit(directory)


class MLprojectFile(pytest.File):
    """A descriptor. Reads and checks it once; yields ``::spec`` and one node per entry point."""

    def __init__(self, *, source: Source | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source

    def collect(self) -> Iterable[pytest.Item | pytest.Collector]:
        try:
            context, problems = descriptor_problems(self.path, _settings(self), self.source)
        except Exception:
            # A bug of ours must not abort the session (one collection error hides every
            # other result), but it must not hide either: the item fails with the traceback.
            yield ProblemsItem.from_parent(
                self, name=SPEC_ITEM, problems=(), internal_error=traceback.format_exc()
            )
            return
        names = set(context.project.entry_points) if context is not None else set()
        whole = tuple(p for p in problems if p.entry_point not in names)
        yield ProblemsItem.from_parent(self, name=SPEC_ITEM, problems=whole, line=1)
        if context is None:
            return
        for entry in context.project.entry_points.values():
            yield EntryPointNode.from_parent(
                self,
                name=node_name(entry.name),
                context=context,
                entry_point=entry,
                problems=tuple(p for p in problems if p.entry_point == entry.name),
            )


def descriptor_problems(
    path: Path, config: MLprojectConfig, source: Source | None = None
) -> tuple[ProjectContext | None, tuple[Problem, ...]]:
    """The project at ``path`` (``None`` when it cannot be read) and every problem its items
    report, the ignored rules left out. ``mlproject-check`` reports the same, through this."""
    project, problems = spec.read(path)
    context = None
    if project is not None:
        settings = read_settings(project.directory)
        context = ProjectContext(project, settings, source)
        problems = (
            *checks.check(project),
            *settings.problems,
            *check_settings(settings, project),
            *_databricks_problems(context, config),
        )
    return context, tuple(p for p in problems if p.code not in config.ignore)


def _databricks_problems(context: ProjectContext, config: MLprojectConfig) -> list[Problem]:
    """What Databricks would refuse, whenever a cluster spec is configured: pull requests
    learn it from plain ``pytest --mlproject``, with no credentials and no request."""
    project = context.project
    session_spec = config.databricks.cluster_spec
    if project.descriptor is None:
        return []
    names = [None, *project.entry_points]
    if session_spec is None and all(context.settings.cluster_spec(n or "") is None for n in names):
        return []
    from pytest_mlproject.databricks import preflight
    from pytest_mlproject.databricks.clusterspec import SpecError
    from pytest_mlproject.databricks.workspace import configured_host
    from pytest_mlproject.plugin.databricksitem import cluster_spec_for

    problems: list[Problem] = []
    seen: set[int] = set()
    host = configured_host(config.databricks.profile)
    for entry in project.entry_points.values():
        try:
            spec = cluster_spec_for(context, entry.name, session_spec)
        except SpecError as exc:
            where = context.settings.path or project.descriptor
            problems.append(Problem(where, 1, "MLP803", str(exc)))
            continue
        if spec is None:
            continue
        if id(spec) not in seen:  # a spec shared by entry points is reported once
            seen.add(id(spec))
            problems.extend(preflight.project_problems(project, spec, host))
        problems.extend(preflight.entry_problems(project, entry))
    return sorted(set(problems), key=lambda p: (str(p.path), p.line, p.code))


# pytest marks Dir final for type checkers only; extending its collect() is the one way to
# add an item for a link that its directory walk skips.
class DirWithBrokenDescriptor(pytest.Dir):  # type: ignore[misc]
    """A folder collected as usual, plus its broken ``MLproject`` link as a failing item."""

    def collect(self) -> Iterable[pytest.Item | pytest.Collector]:
        yield from super().collect()
        for entry in sorted(os.scandir(self.path), key=lambda e: e.name):
            if entry.name.lower() == "mlproject" and entry.is_symlink() and not entry.is_file():
                yield MLprojectFile.from_parent(self, path=Path(entry.path))


class MisnamedFile(pytest.File):
    """``MLproject.yaml`` and friends: MLflow never reads them, which is worth a warning."""

    def collect(self) -> Iterable[pytest.Item]:
        ignored = "MLP107" in _settings(self).ignore
        problems = () if ignored else (checks.misnamed_descriptor(self.path),)
        yield ProblemsItem.from_parent(self, name=SPEC_ITEM, problems=problems, line=1)


class EntryPointNode(pytest.Collector):
    """One entry point: ``check``, and ``run`` with ``--mlproject-run``."""

    def __init__(
        self,
        *,
        context: ProjectContext,
        entry_point: spec.EntryPoint,
        problems: tuple[Problem, ...],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.context = context
        self.entry_point = entry_point
        self.problems = problems

    def collect(self) -> Iterable[pytest.Item]:
        yield ProblemsItem.from_parent(
            self, name="check", problems=self.problems, line=self.entry_point.line
        )
        if _settings(self).run:
            from pytest_mlproject.plugin.localitem import RunItem

            yield RunItem.from_parent(
                self,
                name="run",
                context=self.context,
                entry_point=self.entry_point,
                has_errors=self.has_errors,
            )
        if _settings(self).databricks.submit:
            from pytest_mlproject.plugin.databricksitem import DatabricksItem

            yield DatabricksItem.from_parent(
                self,
                name="databricks",
                context=self.context,
                entry_point=self.entry_point,
                has_errors=self.has_errors,
            )

    @property
    def has_errors(self) -> bool:
        return any(p.is_error for p in self.problems)


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
        self.add_marker("mlproject")

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
        self.add_marker("mlproject")
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
