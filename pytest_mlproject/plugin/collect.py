"""The pytest collectors: one file per descriptor, one collector per entry point.

Reading and checking happen once per descriptor, in ``MLprojectFile.collect``
(:func:`pytest_mlproject.descriptor.descriptor_problems`); the items only report. The
collectors sit above the item modules, which import only the base nodes below them.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlproject import checks, spec
from pytest_mlproject.descriptor import descriptor_problems
from pytest_mlproject.plugin.nodes import SPEC_ITEM, ProblemsItem, _settings, node_name
from pytest_mlproject.problems import Problem

if TYPE_CHECKING:
    from pytest_mlproject.descriptor import ProjectContext
    from pytest_mlproject.sources import Source


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
        options = _settings(self)
        # Only items that run an entry point need the project afterwards; a session that
        # only checks lets it go (its document, lines and settings) once collected.
        kept = context if options.run or options.databricks.submit else None
        for entry in context.project.entry_points.values():
            yield EntryPointNode.from_parent(
                self,
                name=node_name(entry.name),
                context=kept,
                entry_point=entry,
                problems=tuple(p for p in problems if p.entry_point == entry.name),
            )


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
        context: ProjectContext | None,
        entry_point: spec.EntryPoint,
        problems: tuple[Problem, ...],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        #: ``None`` in a session that only checks (nothing to run).
        self.context = context
        self.entry_point = entry_point
        self.problems = problems

    def collect(self) -> Iterable[pytest.Item]:
        yield ProblemsItem.from_parent(
            self, name="check", problems=self.problems, line=self.entry_point.line
        )
        if self.context is None:
            return
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
