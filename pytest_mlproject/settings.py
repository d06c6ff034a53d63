"""Per-project settings kept in the repository: ``pytest-mlproject.yaml`` beside the MLproject.

MLflow never reads this file; it tells pytest-mlproject what to pass and what to leave out
when it runs the project's entry points::

    env_manager: local     # or uv: how local runs get their environment (wins over the
                           # session's --mlproject-env-manager for this project)
    parameters:            # every entry point that declares the name
      data_path: tests/data/small.csv
    entry_points:
      train:
        parameters:        # this entry point only; passed even if undeclared (--name value)
          epochs: "1"
        timeout: 300       # seconds, for the local run
        skip: needs a GPU  # or `true`: do not run this entry point (locally)
        databricks:
          skip: true
    databricks:
      cluster_spec: cluster.json   # a path beside this file, or the spec itself
      skip: false
      # or, instead of cluster_spec: serverless jobs compute
      # serverless: true
      # environment_version: "5"
      # dependencies: ["scikit-learn==1.5.2"]

Reading never raises for anything in the file: a malformed file becomes problems (``MLP8xx``)
and the parts that could be read still apply.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlproject import _fs, _yaml
from pytest_mlproject.problems import Problem
from pytest_mlproject.spec import Project, implicit_entry_point, kind_of

if TYPE_CHECKING:
    from pytest_mlproject.commands import ParamSpec

__all__ = [
    "SETTINGS_FILE",
    "DatabricksSettings",
    "EntryPointSettings",
    "Settings",
    "check_settings",
    "read_settings",
]

SETTINGS_FILE = "pytest-mlproject.yaml"
#: Names people may give the file, which are not read; each gets a warning (MLP806).
MISNAMED_SETTINGS = (
    "pytest-mlproject.yml",
    ".pytest-mlproject.yaml",
    ".pytest-mlproject.yml",
    "pytest_mlproject.yaml",
    "pytest_mlproject.yml",
)
TOP_KEYS = ("parameters", "entry_points", "databricks", "env_manager")
ENTRY_POINT_KEYS = ("parameters", "skip", "timeout", "databricks")
DATABRICKS_KEYS = ("cluster_spec", "skip", "serverless", "environment_version", "dependencies")
#: Fields of a cluster, which only a cluster spec holds: beside ``serverless: true`` they are
#: refused (MLP807), ``init_scripts`` with its own rule (MLP808).
CLUSTER_FIELDS = (
    "new_cluster",
    "existing_cluster_id",
    "spark_version",
    "node_type_id",
    "driver_node_type_id",
    "num_workers",
    "autoscale",
    "spark_conf",
    "spark_env_vars",
    "libraries",
    "instance_pool_id",
    "policy_id",
    "custom_tags",
    "cluster_log_conf",
    "docker_image",
    "data_security_mode",
    "single_user_name",
    "runtime_engine",
    "aws_attributes",
    "azure_attributes",
    "gcp_attributes",
)
DEFAULT_SKIP_REASON = f"skipped in {SETTINGS_FILE}"
INF = float("inf")


@dataclass(frozen=True)
class DatabricksSettings:
    #: A path (relative to the settings file's folder) or the spec itself, as written.
    cluster_spec: str | Mapping[str, Any] | None = None
    #: Why Databricks runs are skipped, or ``None`` to run them.
    skip: str | None = None
    line: int = 1
    #: ``skip`` is written in the file (so an entry point's ``skip: false`` can override
    #: the project's ``skip: true``).
    skip_given: bool = False
    #: ``serverless:`` as written (``None``: not given, so a wider level decides).
    serverless: bool | None = None
    #: ``environment_version:``, a string holding a whole number (``None``: not given).
    environment_version: str | None = None
    #: ``dependencies:``, pip requirement lines with their lines (``None``: not given).
    dependencies: tuple[tuple[str, int], ...] | None = None


@dataclass(frozen=True)
class EntryPointSettings:
    name: str
    parameters: tuple[ParamSpec, ...] = ()
    #: Why the local run is skipped, or ``None`` to run it.
    skip: str | None = None
    #: Seconds allowed for the local run, or ``None`` for the session's default.
    timeout: float | None = None
    databricks: DatabricksSettings | None = None
    line: int = 1


@dataclass(frozen=True)
class Settings:
    """What the settings file of one project says; empty when there is no file."""

    directory: Path
    #: The file read, or ``None`` when the project has none.
    path: Path | None = None
    #: Every parameter value in the file, global and entry-scoped: one layer for
    #: :func:`pytest_mlproject.commands.user_parameters`.
    parameters: tuple[ParamSpec, ...] = ()
    entry_points: Mapping[str, EntryPointSettings] = field(default_factory=dict)
    databricks: DatabricksSettings | None = None
    problems: tuple[Problem, ...] = ()
    #: ``env_manager:``, ``uv`` or ``local``; ``None`` when not given.
    env_manager: str | None = None

    def skip_reason(self, entry_point: str) -> str | None:
        """Why the local run of ``entry_point`` is skipped, or ``None``."""
        entry = self.entry_points.get(entry_point)
        return entry.skip if entry is not None else None

    def timeout(self, entry_point: str) -> float | None:
        entry = self.entry_points.get(entry_point)
        return entry.timeout if entry is not None else None

    def databricks_skip_reason(self, entry_point: str) -> str | None:
        """Why the Databricks run of ``entry_point`` is skipped: the entry point's own
        ``databricks.skip`` if it has one, else the project's."""
        entry = self.entry_points.get(entry_point)
        if entry is not None and entry.databricks is not None and entry.databricks.skip_given:
            return entry.databricks.skip
        return self.databricks.skip if self.databricks is not None else None

    def cluster_spec(self, entry_point: str) -> str | Mapping[str, Any] | None:
        """The cluster spec for ``entry_point`` as written: its own, else the project's.
        A string is a path relative to :attr:`directory`."""
        entry = self.entry_points.get(entry_point)
        if entry is not None and entry.databricks and entry.databricks.cluster_spec is not None:
            return entry.databricks.cluster_spec
        return self.databricks.cluster_spec if self.databricks is not None else None

    def databricks_levels(self, entry_point: str) -> list[DatabricksSettings]:
        """The ``databricks:`` settings that apply to ``entry_point``, most specific first."""
        entry = self.entry_points.get(entry_point)
        levels = [entry.databricks] if entry is not None and entry.databricks else []
        return levels + ([self.databricks] if self.databricks is not None else [])


def read_settings(directory: Path | str, limits: _yaml.Limits = _yaml.DEFAULT_LIMITS) -> Settings:
    """Read ``pytest-mlproject.yaml`` from a project folder; never raises for its content."""
    directory = Path(directory)
    path = directory / SETTINGS_FILE
    # os.path on strings: five names asked of every project, almost never there.
    folder = str(directory)
    misnamed = [
        Problem(
            directory / name,
            1,
            "MLP806",
            f"pytest-mlproject reads its settings from {SETTINGS_FILE}, so this file is "
            f"ignored: rename it to {SETTINGS_FILE}",
        )
        for name in MISNAMED_SETTINGS
        if os.path.isfile(os.path.join(folder, name))
    ]
    if not path.is_file():
        return Settings(directory, problems=tuple(misnamed))
    reader = _Reader(path, misnamed)
    return reader.read(limits)


def check_settings(settings: Settings, project: Project) -> list[Problem]:
    """Settings that cannot have an effect on ``project``: warnings MLP804 and MLP805."""
    if settings.path is None:
        return []
    problems = []
    declared = list(project.entry_points)
    for name, entry in settings.entry_points.items():
        if name not in project.entry_points and implicit_entry_point(name) is None:
            problems.append(
                Problem(
                    settings.path,
                    entry.line,
                    "MLP804",
                    f"entry point {name!r} is not declared in {_descriptor_name(project)} "
                    f"(entry points: {', '.join(declared) or 'none'}), so these settings "
                    "have no effect: fix the name" + _suggest(name, declared),
                )
            )
    for spec in settings.parameters:
        if spec.entry_point is not None:
            continue
        if not any(spec.name in ep.parameters for ep in project.entry_points.values()):
            problems.append(
                Problem(
                    settings.path,
                    _origin_line(spec.origin),
                    "MLP805",
                    f"no entry point declares parameter {spec.name!r}, so this value is never "
                    "passed: fix the name, or move it under entry_points: ENTRY: parameters: "
                    f"to pass it to one entry point as --{spec.name} VALUE",
                )
            )
    return problems


def _descriptor_name(project: Project) -> str:
    return project.descriptor.name if project.descriptor is not None else "the project"


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _origin_line(origin: str) -> int:
    head, _, line = origin.rpartition(":")
    return int(line) if head and line.isdigit() else 1


class _Reader:
    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems

    def problem(self, line: int, code: str, message: str) -> None:
        self.problems.append(Problem(self.path, line, code, message))

    def read(self, limits: _yaml.Limits) -> Settings:
        empty = Settings(self.path.parent, self.path)
        document = self.parse(limits)
        if document is None:
            return Settings(empty.directory, empty.path, problems=tuple(self.problems))
        parameters = list(self.parameters(document, "parameters", None))
        entry_points: dict[str, EntryPointSettings] = {}
        raw_entries = document.get("entry_points")
        if "entry_points" in document and self.mapping(document, "entry_points"):
            assert isinstance(raw_entries, _yaml.YamlMap)
            for key, body in raw_entries.items():
                entry = self.entry_point(raw_entries, key, body)
                if entry is not None:
                    entry_points[entry.name] = entry
                    parameters.extend(entry.parameters)
        databricks = None
        if "databricks" in document and self.mapping(document, "databricks"):
            databricks = self.databricks(document["databricks"], "databricks")
        env_manager = self.env_manager(document)
        return Settings(
            empty.directory,
            empty.path,
            tuple(parameters),
            entry_points,
            databricks,
            tuple(self.problems),
            env_manager,
        )

    def env_manager(self, document: _yaml.YamlMap) -> str | None:
        value = document.get("env_manager")
        if value is None:
            return None
        if isinstance(value, str) and value.strip().lower() in ("uv", "virtualenv", "local"):
            return value.strip().lower()
        hint = " (MLflow runs conda projects under uv too)" if value == "conda" else ""
        self.problem(
            document.line_of("env_manager"),
            "MLP803",
            f"`env_manager` is {value!r}; give `uv` (build the environment the project "
            "declares), `virtualenv` (build it with venv and pip) or `local` (use the "
            f"interpreter running pytest){hint}",
        )
        return None

    def parse(self, limits: _yaml.Limits) -> _yaml.YamlMap | None:
        target = self.path.resolve()
        if not _inside(target, self.path.parent.resolve()):
            # As for the descriptor: problems quote what they read, so a link in a pull
            # request must not make CI print lines of a file from elsewhere on the machine.
            self.problem(
                1,
                "MLP801",
                "the settings file is a symbolic link to a file outside the project folder, "
                "which pytest-mlproject does not read: put the settings in the project",
            )
            return None
        try:
            data = _yaml.read_head(self.path, limits.max_bytes)
        except OSError as exc:
            self.problem(1, "MLP801", f"cannot read the settings file ({exc.strerror})")
            return None
        except _yaml.NotAFileError:
            self.problem(1, "MLP801", "the settings file is not a regular file")
            return None
        if len(data) > limits.max_bytes:
            self.problem(
                1,
                "MLP801",
                f"the settings file is larger than {limits.max_bytes} bytes; it holds a few "
                "settings, so this is probably not one",
            )
            return None
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            self.problem(line, "MLP801", "the settings file is not UTF-8 text; save it as UTF-8")
            return None
        try:
            document, duplicates = _yaml.parse_file(target, data, limits)
        except _yaml.YamlReadError as exc:
            self.problem(
                exc.issue.line,
                "MLP801",
                f"the settings file is not valid YAML: {exc.issue.message}; nothing in it "
                "applies until this is fixed",
            )
            return None
        for dup in duplicates:
            self.problem(
                dup.line,
                "MLP210",
                f"key {dup.key!r} is given again (first on line {dup.first_line}); YAML keeps "
                "only the last one, so the first is silently ignored: remove one of them",
            )
        if document is None:
            return _yaml_map()  # an empty file: no settings
        if not isinstance(document, _yaml.YamlMap):
            self.problem(
                getattr(document, "line", 1),
                "MLP801",
                f"the settings file's top level is a {kind_of(document)}, not a mapping; "
                f"write keys such as {', '.join(TOP_KEYS)} at the top level",
            )
            return None
        self.known_keys(document, TOP_KEYS, "at the top level")
        return document

    def known_keys(self, mapping: _yaml.YamlMap, known: tuple[str, ...], where: str) -> None:
        for key in mapping:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
                self.problem(
                    mapping.line_of(key),
                    "MLP802",
                    f"unknown key {key!r} {where} of {SETTINGS_FILE}, so it has no effect ({hint})",
                )

    def mapping(self, parent: _yaml.YamlMap, key: str, where: str = "") -> bool:
        value = parent[key]
        if isinstance(value, _yaml.YamlMap):
            return True
        if value is None:  # `parameters:` left empty: nothing to apply, nothing wrong
            return False
        self.problem(
            parent.line_of(key),
            "MLP803",
            f"`{where}{key}` is a {kind_of(value)}, not a mapping; write `NAME: VALUE` lines "
            "indented under it",
        )
        return False

    def parameters(
        self, parent: _yaml.YamlMap, key: str, entry_point: str | None
    ) -> list[ParamSpec]:
        where = "" if entry_point is None else f"entry_points: {entry_point}: "
        if key not in parent or not self.mapping(parent, key, where):
            return []
        raw = parent[key]
        assert isinstance(raw, _yaml.YamlMap)
        specs = []
        for name, value in raw.items():
            line = raw.line_of(name)
            if not isinstance(name, (str, int, float)) or isinstance(name, bool):
                self.problem(
                    line,
                    "MLP803",
                    f"parameter name {name!r} is a {kind_of(name)} in YAML (yes, no, on, off "
                    "and null are not strings); quote the name",
                )
                continue
            text = self.scalar(value, f"parameter {str(name)!r}", line)
            if text is not None:
                # Here only: a check reads settings files, most of which give no parameters.
                from pytest_mlproject.commands import ParamSpec

                specs.append(ParamSpec(str(name), text, entry_point, f"{self.path}:{line}"))
        return specs

    def scalar(self, value: Any, what: str, line: int) -> str | None:
        if isinstance(value, bool):
            return "true" if value else "false"  # as written in YAML, not Python's True
        if isinstance(value, (str, int, float)):
            return str(value)
        self.problem(
            line,
            "MLP803",
            f"{what} has a {kind_of(value)} value; give a string or a number (quote it to keep "
            'it exactly as written, e.g. "0.10" or "1e-3")',
        )
        return None

    def entry_point(self, parent: _yaml.YamlMap, key: Any, body: Any) -> EntryPointSettings | None:
        name = str(key)
        line = parent.line_of(key)
        if body is None:
            return EntryPointSettings(name, line=line)
        if not isinstance(body, _yaml.YamlMap):
            self.problem(
                line,
                "MLP803",
                f"settings of entry point {name!r} are a {kind_of(body)}, not a mapping; write "
                f"keys such as {', '.join(ENTRY_POINT_KEYS)} indented under it",
            )
            return None
        self.known_keys(body, ENTRY_POINT_KEYS, f"under entry point {name!r}")
        databricks = None
        if "databricks" in body and self.mapping(body, "databricks", f"entry_points: {name}: "):
            databricks = self.databricks(body["databricks"], f"entry_points: {name}: databricks")
        return EntryPointSettings(
            name=name,
            parameters=tuple(self.parameters(body, "parameters", name)),
            skip=self.skip(body, f"entry_points: {name}: skip"),
            timeout=self.timeout(body, f"entry_points: {name}: timeout"),
            databricks=databricks,
            line=line,
        )

    def skip(self, parent: _yaml.YamlMap, where: str) -> str | None:
        value = parent.get("skip")
        if value is None or value is False:
            return None
        if value is True:
            return DEFAULT_SKIP_REASON
        if isinstance(value, str) and value.strip():
            return value
        self.problem(
            parent.line_of("skip"),
            "MLP803",
            f"`{where}` is a {kind_of(value)}; write `skip: true` or `skip: REASON` (a string)",
        )
        return None

    def timeout(self, parent: _yaml.YamlMap, where: str) -> float | None:
        value = parent.get("timeout")
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < INF:
            return float(value)
        self.problem(
            parent.line_of("timeout"),
            "MLP803",
            f"`{where}` is {value!r}; give a number of seconds greater than 0, e.g. `timeout: 600`",
        )
        return None

    def databricks(self, body: _yaml.YamlMap, where: str) -> DatabricksSettings:
        serverless = self.serverless(body, where)
        self.known_keys(
            body,
            DATABRICKS_KEYS
            if not serverless
            else (*DATABRICKS_KEYS, *CLUSTER_FIELDS, "init_scripts"),
            f"under `{where}`",
        )
        if serverless:
            self.cluster_fields(body, where)
        spec = body.get("cluster_spec")
        if spec is not None and not isinstance(spec, (str, _yaml.YamlMap)):
            self.problem(
                body.line_of("cluster_spec"),
                "MLP803",
                f"`{where}: cluster_spec` is a {kind_of(spec)}; give the path of a JSON or YAML "
                "file beside the settings file, or the cluster spec itself as a mapping",
            )
            spec = None
        elif isinstance(spec, str) and not spec.strip().startswith(("{", "[")):
            outside = self.outside_repository(spec)
            if outside is not None:
                self.problem(
                    body.line_of("cluster_spec"),
                    "MLP803",
                    f"`{where}: cluster_spec` names {spec!r}, which leads {outside}; a setting "
                    "in the repository reads no file from elsewhere on the machine (a dry run "
                    "would print it): put the spec file in the repository",
                )
                spec = None
        if serverless and spec is not None:
            self.problem(
                body.line_of("cluster_spec"),
                "MLP803",
                f"`{where}` has both `serverless: true` and a `cluster_spec`, which contradict "
                "each other: keep one (an entry point can keep its own cluster spec in a "
                "serverless project: write it under entry_points: ENTRY: databricks:)",
            )
            spec = None
        skip = self.skip(body, f"{where}: skip")
        return DatabricksSettings(
            spec,
            skip,
            body.line,
            skip_given="skip" in body,
            serverless=serverless,
            environment_version=self.environment_version(body, where),
            dependencies=self.dependencies(body, where),
        )

    def serverless(self, body: _yaml.YamlMap, where: str) -> bool | None:
        value = body.get("serverless")
        if value is None or isinstance(value, bool):
            return value
        self.problem(
            body.line_of("serverless"),
            "MLP803",
            f"`{where}: serverless` is {value!r}; write `serverless: true` (serverless jobs "
            "compute) or `serverless: false` (a new cluster from the cluster spec)",
        )
        return None

    def environment_version(self, body: _yaml.YamlMap, where: str) -> str | None:
        value = body.get("environment_version")
        if value is None:
            return None
        text = str(value).strip() if not isinstance(value, bool) else ""
        if isinstance(value, (str, int)) and text.isdigit() and int(text) > 0:
            return str(int(text))
        self.problem(
            body.line_of("environment_version"),
            "MLP803",
            f"`{where}: environment_version` is {value!r}; give the serverless environment "
            'version, a whole number such as "5" (see docs/databricks.md)',
        )
        return None

    def dependencies(self, body: _yaml.YamlMap, where: str) -> tuple[tuple[str, int], ...] | None:
        value = body.get("dependencies")
        if value is None:
            return None
        line = body.line_of("dependencies")
        if not isinstance(value, list) or not all(
            isinstance(item, str) and item.strip() for item in value
        ):
            self.problem(
                line,
                "MLP803",
                f"`{where}: dependencies` is a {kind_of(value)}; give a list of pip "
                'requirement lines, e.g. `dependencies: ["scikit-learn==1.5.2"]`',
            )
            return None

        def line_of(index: int) -> int:
            return value.line_of(index) if isinstance(value, _yaml.YamlSeq) else line

        return tuple((item.strip(), line_of(i)) for i, item in enumerate(value))

    def cluster_fields(self, body: _yaml.YamlMap, where: str) -> None:
        """Cluster fields beside ``serverless: true``: serverless has no cluster to give them."""
        for key in body:
            if key == "init_scripts":
                self.problem(
                    body.line_of(key),
                    "MLP808",
                    f"`{where}: init_scripts`: serverless jobs compute runs no init scripts; "
                    "install what the scripts installed through `dependencies:` (pip "
                    "requirement lines), or give this entry point a cluster spec",
                )
            elif key in CLUSTER_FIELDS:
                self.problem(
                    body.line_of(key),
                    "MLP807",
                    f"`{where}: {key}` is a cluster field, and serverless jobs compute has no "
                    "cluster to apply it to: remove it (Python packages go in "
                    "`dependencies:`), or drop `serverless: true` and write the cluster in "
                    "a `cluster_spec`",
                )

    def outside_repository(self, written: str) -> str | None:
        """Where a spec path leads if not into the project's Git work tree (the project
        folder outside Git), links followed; ``None`` if it stays inside."""
        project = self.path.parent.resolve()
        top = next((f for f in (project, *project.parents) if (f / ".git").exists()), project)
        expanded = _fs.expanded(Path(written.strip()))
        target = None if expanded is None else _fs.resolved(self.path.parent / expanded)
        if target is not None and _inside(target, top):
            return None
        return "outside the project folder" if top == project else "outside the repository"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _yaml_map() -> _yaml.YamlMap:
    mapping = _yaml.YamlMap()
    mapping.line = 1
    mapping.key_lines = {}
    return mapping
