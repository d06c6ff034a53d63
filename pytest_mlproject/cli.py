"""``mlproject-check PATH...``: the checks of ``pytest --mlproject``, for pre-commit and shells.

Same rules, codes, messages and configuration as the pytest items, without a pytest session:
the problems come from :func:`pytest_mlproject.descriptor.descriptor_problems`, and
``mlproject_ignore``, ``mlproject_strict``, ``filterwarnings``, ``norecursedirs`` and the
Databricks cluster spec are read from the pytest configuration file that pytest itself would
find for the same paths
(located by pytest's own code, so ``pytest.ini``, ``pyproject.toml``, ``tox.ini`` and
``setup.cfg`` are found and read exactly as pytest reads them).

Prints ``path:line: CODE message`` per problem on stdout (and, under GitHub Actions, the
workflow command that annotates the line); usage errors go to stderr. Exits 0 when nothing
fails (warnings alone do not, unless ``--strict``), 1 when a problem fails, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shlex
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlproject.problems import MLprojectWarning, Problem

if TYPE_CHECKING:
    from pytest_mlproject.options import MLprojectConfig

#: pytest's default ``norecursedirs``; the ini key replaces it, as in pytest.
NORECURSEDIRS = ("*.egg", ".*", "_darcs", "build", "CVS", "dist", "node_modules", "venv", "{arch}")
MISNAMED = ("mlproject.yaml", "mlproject.yml")


class UsageError(Exception):
    """A wrong path, flag or configuration value: exit status 2."""


@dataclass(frozen=True)
class IniFile:
    """The pytest configuration that applies: its file (``None`` without one) and values."""

    path: Path | None
    values: dict[str, Any]

    def get(self, name: str, kind: str, default: Any = None) -> Any:
        """A value converted the way pytest's ``getini`` converts one of ``kind``."""
        if name not in self.values:
            return default
        value = self.values[name]
        if kind == "args":
            return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]
        if kind == "linelist":
            if isinstance(value, str):
                return [line.strip() for line in value.splitlines() if line.strip()]
            return [str(v) for v in value]
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("y", "yes", "t", "true", "on", "1"):
                return True
            if text in ("n", "no", "f", "false", "off", "0"):
                return False
            raise UsageError(f"{self.path}: {name}: {value!r} is not true or false")
        return str(value)


def find_ini(paths: Sequence[str], cwd: Path) -> IniFile:
    """The configuration pytest would read if run here on ``paths``, found by pytest's code.

    ``determine_setup`` has changed shape between pytest releases (keyword ``override_ini``
    and a fourth result in pytest 9; values wrapped in ``ConfigValue``): both shapes work.
    """
    from pytest_mlproject.plugin.pytest_private import OutcomeException, findpaths

    kwargs: dict[str, Any] = {
        "inifile": None,
        "args": list(paths),
        "rootdir_cmd_arg": None,
        "invocation_dir": cwd,
    }
    if "override_ini" in inspect.signature(findpaths.determine_setup).parameters:
        kwargs["override_ini"] = None
    try:
        _, inipath, inicfg = findpaths.determine_setup(**kwargs)[:3]
    except (Exception, OutcomeException) as exc:  # UsageError; fail() for setup.cfg's [pytest]
        raise UsageError(f"cannot read the pytest configuration: {exc}") from None
    return IniFile(inipath, {k: getattr(v, "value", v) for k, v in (inicfg or {}).items()})


def _session_config(ini: IniFile, ignore: list[str], strict: bool) -> MLprojectConfig:
    """The settings the pytest items would have, for what checking reads of them."""
    import pytest

    from pytest_mlproject.options import checking_config
    from pytest_mlproject.plugin.config import rule_codes

    try:
        codes = rule_codes([*ini.get("mlproject_ignore", "args", []), *ignore])
    except pytest.UsageError as exc:
        raise UsageError(str(exc)) from None
    cluster_spec = None
    spec_text = ini.get("databricks_cluster_spec", "string", "").strip()
    if spec_text:
        from pytest_mlproject.databricks.clusterspec import SpecError, parse

        try:
            cluster_spec = parse(spec_text, base=ini.path.parent if ini.path else Path.cwd())
        except SpecError as exc:
            raise UsageError(f"databricks_cluster_spec: {exc}") from None
    serverless = ini.get("databricks_serverless", "bool", False)
    if serverless and cluster_spec is not None:
        raise UsageError(
            "databricks_serverless and databricks_cluster_spec were both given: choose one"
        )
    return checking_config(
        strict=strict,
        ignore=frozenset(codes),
        cluster_spec=cluster_spec,
        profile=ini.get("databricks_profile", "string", "").strip() or None,
        serverless=bool(serverless),
    )


def descriptors(paths: Sequence[str], norecursedirs: Sequence[str]) -> Iterator[Path]:
    """Descriptors and misnamed descriptors named by ``paths``, each once, in order.

    A folder is searched as pytest searches it (``norecursedirs``, virtual environments). A
    file that is not a descriptor (``conda.yaml``, ``pytest-mlproject.yaml``) stands for the
    project in its folder, so that changing it re-checks the project; it is skipped when its
    folder has none.
    """
    from pytest_mlproject.spec import find_descriptor

    seen: set[Path] = set()

    def once(path: Path) -> Iterator[Path]:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            yield path

    for text in paths:
        path = Path(text)
        if path.is_dir():
            for found in _walk(path, norecursedirs):
                yield from once(found)
        elif path.name.lower() == "mlproject" or path.name.lower() in MISNAMED:
            yield from once(path)
        else:
            descriptor = find_descriptor(path.parent)
            if descriptor is not None:
                yield from once(descriptor)


def _walk(top: Path, norecursedirs: Sequence[str]) -> Iterator[Path]:
    from pytest_mlproject.plugin.pytest_private import fnmatch_ex

    for folder, dirs, files in os.walk(top):
        here = Path(folder)
        dirs[:] = sorted(
            name
            for name in dirs
            if not any(fnmatch_ex(pattern, here / name) for pattern in norecursedirs)
            and not _is_venv(here / name)
        )
        for name in sorted(files):
            if name.lower() == "mlproject" or name.lower() in MISNAMED:
                yield here / name


def _is_venv(path: Path) -> bool:
    """pytest's test for a virtual environment, which it never searches."""
    return (path / "pyvenv.cfg").is_file() or (path / "conda-meta" / "history").is_file()


def check_paths(
    paths: Sequence[str], ini: IniFile, ignore: list[str], strict: bool
) -> list[tuple[Problem, bool]]:
    """Every problem under ``paths`` and whether it fails, as the pytest items decide it."""
    from pytest_mlproject.checks import misnamed_descriptor
    from pytest_mlproject.descriptor import descriptor_problems

    config = _session_config(ini, ignore, strict)
    norecursedirs = ini.get("norecursedirs", "args", list(NORECURSEDIRS))
    problems: list[Problem] = []
    for path in descriptors(paths, norecursedirs):
        if path.name.lower() in MISNAMED:
            if "MLP107" not in config.ignore:
                problems.append(misnamed_descriptor(path.absolute()))
        else:
            # Absolute, as pytest's are: messages that name a file read the same.
            problems.extend(descriptor_problems(path.absolute(), config)[1])
    problems.sort(key=lambda p: (str(p.path), p.line, p.code))
    return _verdicts(problems, strict, ini)


def _verdicts(
    problems: Sequence[Problem], strict: bool, ini: IniFile
) -> list[tuple[Problem, bool]]:
    """Each problem and whether it fails, as ``plugin.nodes.report_problems`` decides it.

    A warning goes through the ini file's ``filterwarnings`` as it does in pytest: ``error``
    there makes it fail, and ``ignore`` hides it (it is left out).
    """
    from pytest_mlproject.plugin.pytest_private import apply_warning_filters

    verdicts = []
    with warnings.catch_warnings(record=True) as shown:
        try:
            apply_warning_filters(ini.get("filterwarnings", "linelist", []), [])
        except Exception as exc:  # pytest.UsageError for a malformed filter
            raise UsageError(f"{ini.path}: filterwarnings: {exc}") from None
        for problem in problems:
            if problem.is_error or strict:
                verdicts.append((problem, True))
                continue
            before = len(shown)
            try:
                problem.warn()
            except MLprojectWarning:
                verdicts.append((problem, True))
                continue
            if len(shown) > before:
                verdicts.append((problem, False))
    return verdicts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlproject-check",
        description="Check MLflow project descriptors (MLproject files) with the rules of "
        "pytest --mlproject, reading mlproject_ignore and mlproject_strict from the pytest "
        "configuration. Exit status: 0 nothing fails, 1 a problem fails, 2 usage error.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="an MLproject file, a file beside one (conda.yaml...), or a folder to search "
        "(default: the current folder)",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="CODE",
        help="skip a rule, by code (MLP406) or name (unused-parameter); repeatable; added to "
        "mlproject_ignore",
    )
    parser.add_argument(
        "--strict", action="store_true", help="warnings fail too (as mlproject_strict = true)"
    )
    options = parser.parse_args(argv)  # a bad flag exits with status 2
    paths = options.paths or ["."]
    try:
        for text in paths:
            if not os.path.exists(text):
                raise UsageError(f"{text}: no such file or folder")
            if not os.access(text, os.R_OK):
                raise UsageError(f"{text}: permission denied")
        ini = find_ini(paths, Path.cwd())
        strict = options.strict or ini.get("mlproject_strict", "bool", False)
        found = check_paths(paths, ini, options.ignore, strict)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"mlproject-check: error: {exc}", file=sys.stderr)
        return 2
    from pytest_mlproject.plugin.config import github_actions

    cwd = Path.cwd()
    annotate = github_actions()
    if annotate:  # only then: the reporting module is a pytest plugin's, and not light
        from pytest_mlproject.plugin.reporting import annotation
    for problem, failing in found:
        print(problem.format(relative_to=cwd))
        if annotate:
            print(annotation(problem, failing))
    failures = sum(failing for _, failing in found)
    if found:
        note = "" if failures else " (--strict or mlproject_strict = true makes warnings fail)"
        print(
            f"mlproject-check: {failures} failing, {_plural(len(found) - failures, 'warning')}"
            + note,
            file=sys.stderr,
        )
    return 1 if failures else 0


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


if __name__ == "__main__":
    sys.exit(main())
