"""A descriptor read and checked with its project's settings: what every item of a project
shares, and every problem its items report. The pytest collector and ``mlproject-check``
both report through :func:`descriptor_problems`, so they always agree.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pytest_mlproject import checks, spec
from pytest_mlproject.problems import Problem
from pytest_mlproject.settings import Settings, check_settings, read_settings

if TYPE_CHECKING:
    from pytest_mlproject.databricks.clusterspec import ClusterSpec
    from pytest_mlproject.databricks.serverless import Serverless
    from pytest_mlproject.options import DatabricksConfig, MLprojectConfig
    from pytest_mlproject.sources import Source


class ProjectContext(NamedTuple):
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
    """What Databricks would refuse, whenever a cluster spec or serverless compute is
    configured: pull requests learn it from plain ``pytest --mlproject``, with no credentials
    and no request."""
    project = context.project
    options = config.databricks
    if project.descriptor is None:
        return []
    names = [None, *project.entry_points]
    if (
        options.cluster_spec is None
        and not options.serverless
        and all(context.settings.cluster_spec(n or "") is None for n in names)
        and not any(
            level.serverless for n in names for level in context.settings.databricks_levels(n or "")
        )
    ):
        return []
    from pytest_mlproject.databricks import preflight
    from pytest_mlproject.databricks.clusterspec import ClusterSpec, SpecError
    from pytest_mlproject.databricks.workspace import configured_host

    problems: list[Problem] = []
    seen: set[object] = set()
    host = configured_host(options.profile)
    for entry in project.entry_points.values():
        try:
            compute = compute_for(context, entry.name, options)
        except SpecError as exc:
            where = context.settings.path or project.descriptor
            problems.append(Problem(where, 1, "MLP803", str(exc)))
            continue
        if compute is None:
            continue
        if isinstance(compute, ClusterSpec):
            if id(compute) not in seen:  # a spec shared by entry points is reported once
                seen.add(id(compute))
                problems.extend(preflight.project_problems(project, compute, host))
            problems.extend(preflight.entry_problems(project, entry))
        else:
            if compute not in seen:
                seen.add(compute)
                problems.extend(preflight.serverless_project_problems(project, compute, host))
            problems.extend(preflight.serverless_entry_problems(project, entry))
    return sorted(set(problems), key=lambda p: (str(p.path), p.line, p.code))


def cluster_spec_for(
    context: ProjectContext, entry: str, session_spec: ClusterSpec | None
) -> ClusterSpec | None:
    """The entry point's spec from pytest-mlproject.yaml, else the project's, else the session's.

    Raises ``MLprojectError`` (``SpecError``) when the settings name a spec that cannot be read.
    """
    from pytest_mlproject.databricks.clusterspec import parse

    written = context.settings.cluster_spec(entry)
    if written is None:
        return session_spec
    return parse(written, base=context.settings.directory)


def compute_for(
    context: ProjectContext, entry: str, options: DatabricksConfig
) -> ClusterSpec | Serverless | None:
    """What runs ``entry`` on Databricks: the most specific of the entry point's settings,
    the project's, then the session's options, each either a cluster spec or serverless
    compute (``serverless: false`` passes the choice to the cluster spec below it).

    Raises ``MLprojectError`` (``SpecError``) when the settings name a spec that cannot be read.
    """
    from pytest_mlproject.databricks.clusterspec import parse
    from pytest_mlproject.databricks.serverless import Serverless

    levels = context.settings.databricks_levels(entry)
    serverless_allowed = True
    chosen: bool | None = None
    for level in levels:
        if level.serverless is True and serverless_allowed:
            chosen = True
            break
        if level.cluster_spec is not None:
            return parse(level.cluster_spec, base=context.settings.directory)
        if level.serverless is False:
            serverless_allowed = False
    if chosen is None and not (options.serverless and serverless_allowed):
        return options.cluster_spec
    version = next(
        (level.environment_version for level in levels if level.environment_version is not None),
        options.environment_version,
    )
    dependencies = next(
        (level.dependencies for level in levels if level.dependencies is not None), ()
    )
    return Serverless(version, dependencies, context.settings.path)
