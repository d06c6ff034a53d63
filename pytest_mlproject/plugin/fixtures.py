"""The ``mlproject`` fixture: load, check, render and run MLflow projects from a test.

The plugin imports this module in every session, so it imports nothing heavy: the reader,
the rules, Git and the runner load when a test first uses them.
It has no test code, so pytest need not rewrite its asserts (PYTEST_DONT_REWRITE), nor
warn when a conftest's ``pytest_plugins`` names it after the plugin imported it.

What the fixture does is what the items do: relative paths start at pytest's rootdir,
``--mlproject-uri`` style URIs are fetched into the same cache, ``check`` reports what the
``::spec`` and ``::check`` items report, and ``run`` runs an entry point as its ``::run``
item would, with the same parameter values and time limit unless the test says otherwise.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlproject.plugin.config import CONFIG_KEY

if TYPE_CHECKING:
    from pytest_mlproject.commands import ParamSpec
    from pytest_mlproject.local import RunResult
    from pytest_mlproject.problems import Problem
    from pytest_mlproject.spec import EntryPoint, Project

__all__ = ["MLprojectFixture", "mlproject"]

#: ``user@host:path``, Git's short form for SSH: a URI, though it has no ``://``.
_SCP_LIKE = re.compile(r"^[\w.+-]+@[\w.-]+:")


class MLprojectFixture:
    """What the ``mlproject`` fixture returns: the core API bound to this test's session.

    ``project`` arguments take a :class:`~pytest_mlproject.Project`, a folder or descriptor
    path (relative paths start at pytest's rootdir), or a project URI as
    ``--mlproject-uri`` takes them (``https://host/org/repo#sub/dir@v1``, ``file://...``).
    """

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self.config = request.config
        #: Relative project paths start here.
        self.rootpath = request.config.rootpath
        #: Every run of this test, in order.
        self.results: list[RunResult] = []

    # -- projects ------------------------------------------------------------------------------

    def load(self, project: str | os.PathLike[str], version: str | None = None) -> Project:
        """Read a project from a folder, a descriptor or a URI (fetched once per session,
        into the cache ``--mlproject-uri`` uses). ``version`` is a branch, tag or commit, as
        ``--mlproject-version``; one in the URI (``#sub@v1``) wins.

        Raises :class:`~pytest_mlproject.MLprojectError` when the project cannot be fetched
        or its descriptor cannot be read at all; run :meth:`check` for everything else.
        """
        from pytest_mlproject.spec import load

        return load(self._directory(project, version))

    def check(
        self, project: str | os.PathLike[str] | Project, ignore: Iterable[str] = ()
    ) -> list[Problem]:
        """Every problem the ``::spec`` and ``::check`` items would report: the rules, and
        the project's ``pytest-mlproject.yaml``. Rules in ``ignore`` (codes or names) are
        left out, and so are those of ``--mlproject-ignore`` and ``mlproject_ignore``.

        Never raises for what is in the files (an unreadable descriptor is a problem too),
        only for a URI that cannot be fetched. With a cluster spec configured
        (``--databricks-cluster-spec`` or the project's own), what Databricks would refuse
        is checked too, as for the items.
        """
        from pytest_mlproject.descriptor import descriptor_problems
        from pytest_mlproject.spec import Project

        if isinstance(project, Project):
            target = project.descriptor or project.directory
        else:
            target = self._directory(project, None)
        _, problems = descriptor_problems(target, self.config.stash[CONFIG_KEY])
        skipped = _rule_codes(ignore)
        return sorted(
            (p for p in problems if p.code not in skipped),
            key=lambda p: (str(p.path), p.line, p.code),
        )

    # -- parameters, commands and runs ---------------------------------------------------------

    def parameters(
        self,
        project: str | os.PathLike[str] | Project,
        entry: str = "main",
        parameters: Mapping[str, Any] | None = None,
        *,
        configured: bool = True,
    ) -> dict[str, Any]:
        """The values ``entry`` gets, declared defaults left out: ``parameters`` first, then
        (with ``configured``) ``--mlproject-param``, ``mlproject_params`` and the project's
        ``pytest-mlproject.yaml``, exactly as for its ``::run`` item."""
        loaded = self._project(project)
        return self._values(loaded, loaded.entry_point(entry), parameters, configured)

    def render(
        self,
        project: str | os.PathLike[str] | Project,
        entry: str = "main",
        parameters: Mapping[str, Any] | None = None,
        *,
        configured: bool = True,
    ) -> str:
        """The command ``entry`` runs, as ``mlflow run`` computes it, with the values of
        :meth:`parameters`; relative ``path`` values start at the project's folder.

        Raises :class:`~pytest_mlproject.MissingParametersError` (naming every required
        parameter without a value), :class:`~pytest_mlproject.ParameterError` or
        :class:`~pytest_mlproject.CommandError`.
        """
        from pytest_mlproject.commands import render_command

        loaded = self._project(project)
        entry_point = loaded.entry_point(entry)
        values = self._values(loaded, entry_point, parameters, configured)
        return render_command(entry_point, values, base_dir=loaded.directory)

    def run(
        self,
        project: str | os.PathLike[str] | Project,
        entry: str = "main",
        parameters: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        configured: bool = True,
    ) -> RunResult:
        """Run ``entry`` in the project's folder as its ``::run`` item would, and return the
        :class:`~pytest_mlproject.RunResult` (``assert result.ok, result.stderr``).

        The command is :meth:`render`'s. ``timeout`` defaults to ``--mlproject-timeout``
        (or ``mlproject_timeout``), else the entry point's ``timeout`` in
        ``pytest-mlproject.yaml``, else one hour. ``env`` adds environment variables. The
        environment is the session's choice (``--mlproject-env-manager``, else the
        project's ``env_manager:``, else uv when the project declares one), built first if
        need be (:class:`~pytest_mlproject.envs.BuildError` if that fails). The
        output is shown as it comes with ``-s``, and beside the test's failure otherwise;
        secrets are masked in it. A failed run does not fail the test: assert on the result.

        Raises :class:`~pytest_mlproject.NotRunnableError` for ``docker_env`` projects, and
        what :meth:`render` raises. Skips in ``pytest-mlproject.yaml`` apply to the
        ``::run`` items only.
        """
        from pytest_mlproject.local import NotRunnableError, local_skip_reason
        from pytest_mlproject.plugin.localitem import env_manager_for, run_locally, run_timeout
        from pytest_mlproject.settings import read_settings
        from pytest_mlproject.sources import git_commit

        loaded = self._project(project)
        reason = local_skip_reason(loaded)
        if reason is not None:
            raise NotRunnableError(reason)
        command = self.render(loaded, entry, parameters, configured=configured)
        settings = read_settings(loaded.directory)
        if timeout is None:
            timeout = run_timeout(self.config, settings, entry)
        result = run_locally(
            self.config,
            loaded,
            entry,
            command,
            timeout=timeout,
            commit=git_commit(loaded.directory),
            env=env,
            env_manager=env_manager_for(self.config, settings, loaded),
        )
        self.results.append(result)
        title = f"{loaded.name}::{entry}"
        for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
            if text:
                self._request.node.add_report_section("call", f"{name} of {title}", text)
        return result

    # -- helpers -------------------------------------------------------------------------------

    def _project(self, project: str | os.PathLike[str] | Project) -> Project:
        from pytest_mlproject.spec import Project

        return project if isinstance(project, Project) else self.load(project)

    def _directory(self, project: str | os.PathLike[str], version: str | None) -> Path:
        """The local folder or descriptor ``project`` names, fetching it if it is a URI."""
        text = os.fspath(project)
        if "://" in text or _SCP_LIKE.match(text):
            uri = text
        else:
            path = self.rootpath / text  # an absolute path stays as it is
            if version is None and ("#" not in text or path.exists()):
                return path
            uri = str(path)  # a local repository, with #sub or @version
        from pytest_mlproject.plugin.config import session_id
        from pytest_mlproject.plugin.uriitems import cache_dir
        from pytest_mlproject.sources import resolve_source

        source = resolve_source(
            uri, version, cache_dir=cache_dir(self.config), session=session_id(self.config)
        )
        return source.directory

    def _values(
        self,
        project: Project,
        entry_point: EntryPoint,
        parameters: Mapping[str, Any] | None,
        configured: bool,
    ) -> dict[str, Any]:
        values: dict[str, Any] = dict(parameters or {})
        if configured:
            from pytest_mlproject.commands import user_parameters
            from pytest_mlproject.settings import read_settings

            layers = (*self._session_layers(), read_settings(project.directory).parameters)
            for name, value in user_parameters(entry_point, *layers).items():
                values.setdefault(name, value)
        return values

    def _session_layers(self) -> tuple[tuple[ParamSpec, ...], tuple[ParamSpec, ...]]:
        """``--mlproject-param`` and ``mlproject_params``; the plugin reads them only when
        it collects projects, so a plain ``pytest`` run reads them here."""
        session = self.config.stash[CONFIG_KEY]
        if session.enabled:
            return session.cli_params, session.ini_params
        from pytest_mlproject.commands import parse_param_specs

        ini = (line.strip() for line in self.config.getini("mlproject_params") if line.strip())
        return (
            parse_param_specs(self.config.option.mlproject_param, "--mlproject-param"),
            parse_param_specs(ini, "mlproject_params"),
        )


def _rule_codes(values: Iterable[str]) -> frozenset[str]:
    """Rule codes for ``ignore`` values given as codes (MLP406) or names (unused-parameter)."""
    from pytest_mlproject.problems import RULES

    by_name = {rule.name: code for code, rule in RULES.items()}
    codes = set()
    for value in values:
        code = value.upper() if value.upper() in RULES else by_name.get(value.lower())
        if code is None:
            raise ValueError(
                f"unknown rule {value!r}; rules are codes like MLP406 or names like "
                "unused-parameter, listed in docs/rules.md"
            )
        codes.add(code)
    return frozenset(codes)


@pytest.fixture
def mlproject(request: pytest.FixtureRequest) -> MLprojectFixture:
    """Load, check, render and run MLflow projects in a test.

    ``mlproject.load(path_or_uri, version=None)`` reads a project (fetching a Git URI);
    ``mlproject.check(project, ignore=())`` lists its problems;
    ``mlproject.render(project, entry="main", parameters=None)`` gives its command;
    ``mlproject.run(project, entry="main", parameters=None, timeout=None, env=None)`` runs
    it in its folder and returns a ``RunResult`` to assert on. Values, time limits and
    fetched repositories are those of the session's ``::run`` items, unless the test gives
    its own; relative paths start at pytest's rootdir. It makes no temporary folder.
    """
    return MLprojectFixture(request)
