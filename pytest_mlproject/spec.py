"""Read an MLproject descriptor into a typed model, with MLflow's semantics and line numbers.

MLflow's own loader (``mlflow.projects._project_spec.load_project``) checks nothing and
crashes on malformed shapes; this reader accepts everything MLflow accepts, resolves it the
same way (parameter order, ``type`` defaulting to ``string``, required = no default, the
environment fallback order, implicit script entry points), and turns every shape MLflow
crashes on into a :class:`~pytest_mlproject.problems.Problem` with a line.

The reader stays tolerant: a broken entry point is still part of the model (with
``broken=True``), so the pytest layer can give it a failing ``::check`` item of its own.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytest_mlproject import _fs, _yaml
from pytest_mlproject.problems import MLprojectError, Problem

DESCRIPTOR_NAME = "mlproject"
#: Names people give a descriptor that MLflow never reads.
MISNAMED_DESCRIPTORS = frozenset({"mlproject.yaml", "mlproject.yml"})
DEFAULT_CONDA_FILE = "conda.yaml"
DEFAULT_PYTHON_ENV_FILE = "python_env.yaml"

EnvType = Literal["docker_env", "python_env", "conda_env"]
ENV_KEYS: tuple[EnvType, ...] = ("docker_env", "python_env", "conda_env")
TOP_LEVEL_KEYS = frozenset({"name", "entry_points", *ENV_KEYS, "databricks_spark_job"})
ENTRY_POINT_KEYS = frozenset({"parameters", "command"})
PARAMETER_KEYS = frozenset({"type", "default"})
SPARK_JOB_KEYS = frozenset({"python_file", "parameters", "python_libraries"})


@dataclass(frozen=True)
class Parameter:
    """A declared parameter. ``default is None`` means required, exactly as in MLflow."""

    name: str
    type: str
    default: Any
    line: int

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class EntryPoint:
    name: str
    command: str | None
    parameters: Mapping[str, Parameter]
    line: int
    #: Made up from a script name (``train.py``), not declared in the descriptor.
    implicit: bool = False
    #: The reader found a shape MLflow crashes on; see the project's problems.
    broken: bool = False
    #: Made up from ``databricks_spark_job.python_file``: the script and its ``parameters``.
    #: ``mlflow run -b databricks`` runs that file whatever entry point is asked for, and
    #: ignores ``-P`` values; it cannot run it locally.
    spark_python_file: bool = False

    @property
    def required_parameters(self) -> list[str]:
        return [name for name, p in self.parameters.items() if p.required]


@dataclass(frozen=True)
class Project:
    """A project folder and what its descriptor says, resolved as MLflow resolves it."""

    directory: Path
    #: The descriptor file; ``None`` for a folder without one (MLflow accepts that too).
    descriptor: Path | None
    name: str
    entry_points: Mapping[str, EntryPoint]
    env_type: EnvType
    #: The environment file that applies: declared, or ``python_env.yaml`` / ``conda.yaml``
    #: found beside the descriptor; ``None`` for docker and for plain virtualenv projects.
    env_file: Path | None
    docker_env: Mapping[str, Any] | None
    #: The parsed document, for rules that look at keys MLflow ignores.
    document: _yaml.YamlMap | None = None
    #: Problems met while reading (the shape); rules in ``checks`` add the rest.
    problems: tuple[Problem, ...] = field(default=())

    def line_of(self, *keys: Any) -> int:
        """The line of a key path such as ``("entry_points", "main", "command")``."""
        node: Any = self.document
        line = 1
        for key in keys:
            if isinstance(node, _yaml.YamlMap) and key in node:
                line = node.line_of(key)
                node = node[key]
            elif isinstance(node, _yaml.YamlSeq) and isinstance(key, int):
                line = node.line_of(key)
                node = node[key] if 0 <= key < len(node) else None
            else:
                break
        return line

    @property
    def spark_job(self) -> Any:
        """The ``databricks_spark_job`` section as written; ``None`` when absent or left empty,
        which MLflow reads as no Spark job."""
        return self.document.get("databricks_spark_job") if self.document is not None else None

    def entry_point(self, name: str) -> EntryPoint:
        """The entry point ``mlflow run -e NAME`` would run, implicit scripts included (for a
        Databricks Spark job: its ``python_file`` whatever the name, or a declared one)."""
        if name in self.entry_points:
            return self.entry_points[name]
        spark = [entry for entry in self.entry_points.values() if entry.spark_python_file]
        if spark:
            return spark[0]
        job = self.spark_job
        if isinstance(job, _yaml.YamlMap) and job.get("python_file") is not None:
            raise MLprojectError(
                "this Databricks Spark job's `python_file` cannot be run or submitted: see the "
                "MLP311 or MLP312 problem on the project's ::spec item"
            )
        if job is not None:
            raise MLprojectError(
                f"The entry point '{name}' is not defined in the Databricks spark job "
                "MLproject file."
            )
        implicit = implicit_entry_point(name)
        if implicit is None:
            raise MLprojectError(
                f"Could not find {name} among entry points {list(self.entry_points)} or "
                f"interpret {name} as a runnable script. Supported script file extensions: "
                "['.py', '.sh']"
            )
        return implicit


def implicit_entry_point(name: str) -> EntryPoint | None:
    """MLflow's entry point for a bare script name (``x.py``, ``x.sh``, ``x.R``)."""
    extension = os.path.splitext(name)[1]
    if extension == ".py":
        command = f"python {shlex.quote(name)}"
    elif extension == ".sh":
        command = f"{os.environ.get('SHELL', 'bash')} {shlex.quote(name)}"
    elif extension == ".R":
        command = f"Rscript -e \"mlflow::mlflow_source('{shlex.quote(name)}')\" --args"
    else:
        return None
    return EntryPoint(name=name, command=command, parameters={}, line=1, implicit=True)


def spark_script(directory: Path, name: str) -> tuple[Path | None, bool]:
    """A Spark job's ``python_file`` as MLflow reads it (``directory / name``): the file, links
    followed, or ``None`` when that is not a file it can read; and whether it lies inside
    ``directory``, the only place pytest-mlproject runs it from."""
    target = directory / name
    where = _fs.resolved(target)
    if where is None or not _fs.is_file(target):
        return None, False
    return where, where.is_relative_to(directory.resolve())


def spark_libraries(value: Any) -> list[str] | None:
    """The package names MLflow makes of ``python_libraries`` by iterating it (nothing for
    ``""`` or ``{}``, a mapping's keys), or ``None`` when that fails or gives non-strings
    (``None`` left empty, a number, a word it would split into letters)."""
    if value == "":
        return []
    if isinstance(value, (list, dict)) and all(isinstance(item, str) for item in value):
        return [str(item) for item in value]
    return None


def find_descriptor(directory: Path) -> Path | None:
    """The file MLflow reads in ``directory``: the first whose lower-cased name is
    ``mlproject``, in ``os.listdir`` order, as MLflow picks it."""
    for name in os.listdir(directory):
        if name.lower() == DESCRIPTOR_NAME:
            return directory / name
    return None


def read(
    path: Path | str, limits: _yaml.Limits = _yaml.DEFAULT_LIMITS
) -> tuple[Project | None, tuple[Problem, ...]]:
    """Read a descriptor or a project folder; never raises for anything in the files.

    Returns the project (``None`` when the file cannot be read into one at all) and the
    problems met while reading it.
    """
    path = Path(path)
    if path.is_dir():
        directory, descriptor = path, find_descriptor(path)
    else:
        directory, descriptor = path.parent, path
    if descriptor is None:
        return _build(directory, None, _empty_document(), ()), ()

    data, problem = _read_bytes(descriptor, limits)
    if problem is not None:
        return None, (problem,)
    assert data is not None
    try:
        document, duplicates = _yaml.parse(data, limits)
    except _yaml.YamlReadError as exc:
        issue = exc.issue
        message = issue.message
        if issue.code == "MLP101":
            message = f"invalid YAML: {message}; MLflow cannot read this file, fix the syntax here"
        return None, (Problem(descriptor, issue.line, issue.code, message),)

    if document is None:
        return None, (
            Problem(
                descriptor,
                1,
                "MLP201",
                "the descriptor is empty (or only comments); MLflow fails on it with "
                "AttributeError: add at least `entry_points:` with a `main` entry point",
            ),
        )
    if not isinstance(document, _yaml.YamlMap):
        return None, (
            Problem(
                descriptor,
                getattr(document, "line", 1),
                "MLP202",
                f"the descriptor's top level is a {kind_of(document)}, not a mapping; "
                "MLflow fails on it with AttributeError: write `name:`, `entry_points:` "
                "and an environment key at the top level",
            ),
        )
    problems = [
        Problem(
            descriptor,
            dup.line,
            "MLP210",
            f"key {dup.key!r} is given again (first on line {dup.first_line}); YAML keeps "
            "only the last one, so the first is silently ignored: remove one of them",
            _entry_point_at(document, dup.line),
        )
        for dup in sorted(duplicates, key=lambda d: d.line)
    ]
    project = _build(directory, descriptor, document, problems)
    return project, project.problems


def load(path: Path | str, limits: _yaml.Limits = _yaml.DEFAULT_LIMITS) -> Project:
    """Read a project; raise :class:`MLprojectError` if it cannot be read into one at all.

    A project that reads but has other problems loads; run ``check`` for those.
    """
    project, problems = read(path, limits)
    if project is None:
        where = problems[0].path if problems else Path(path)
        raise MLprojectError(f"cannot read MLproject descriptor {where}", problems)
    return project


def _read_bytes(descriptor: Path, limits: _yaml.Limits) -> tuple[bytes | None, Problem | None]:
    def fail(code: str, message: str) -> tuple[None, Problem]:
        return None, Problem(descriptor, 1, code, message)

    try:
        if descriptor.is_symlink() and descriptor.exists():
            # Problems quote what they read (keys, lines): a pull request must not be able to
            # make CI print a file from elsewhere on the machine through a link.
            target = descriptor.resolve()
            if descriptor.parent.resolve() not in target.parents:
                return fail(
                    "MLP106",
                    "this is a symbolic link to a file outside the project folder, which "
                    "pytest-mlproject does not read: put the descriptor in the project",
                )
        mode = descriptor.stat().st_mode
        if stat.S_ISDIR(mode):
            return fail("MLP106", "this is a folder, not a file; MLflow expects a YAML file here")
        if not stat.S_ISREG(mode):
            # A FIFO or a device would block or never end: never open one.
            return fail("MLP106", "this is not a regular file; MLflow expects a YAML file here")
        with descriptor.open("rb") as handle:
            data = handle.read(limits.max_bytes + 1)
    except FileNotFoundError:
        return fail("MLP106", "the file does not exist (a broken symbolic link?); fix the link")
    except OSError as exc:
        return fail("MLP106", f"cannot read the file ({exc.strerror}); check its permissions")
    if len(data) > limits.max_bytes:
        return fail(
            "MLP102",
            f"the file is larger than {limits.max_bytes} bytes; a descriptor is a few lines "
            "of YAML, so this is probably not one: move data out of it",
        )
    if b"\x00" in data:
        return fail("MLP105", "the file holds NUL bytes, so it is binary, not YAML text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, Problem(
            descriptor,
            line,
            "MLP105",
            f"the file is not UTF-8 text (byte {data[exc.start]:#04x}); save it as UTF-8",
        )
    del text
    return data, None


def _empty_document() -> _yaml.YamlMap:
    document = _yaml.YamlMap()
    document.line = 1
    document.key_lines = {}
    return document


def kind_of(value: Any) -> str:
    """How a message names the YAML type of ``value``: null, list, mapping, string..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _entry_point_at(document: _yaml.YamlMap, line: int) -> str | None:
    """The entry point whose block holds ``line``, to route a problem to its item."""
    entry_points = document.get("entry_points")
    if not isinstance(entry_points, _yaml.YamlMap) or line < entry_points.line:
        return None
    # The block of `entry_points` ends where the next top-level key after it begins.
    start = document.line_of("entry_points")
    if any(start < document.line_of(key) <= line for key in document):
        return None
    owner = None
    for name in entry_points:
        if entry_points.line_of(name) <= line:
            owner = str(name)
    return owner


class _Builder:
    def __init__(self, directory: Path, descriptor: Path | None, document: _yaml.YamlMap):
        self.directory = directory
        self.descriptor = descriptor
        self.document = document
        self.problems: list[Problem] = []

    def problem(self, line: int, code: str, message: str, entry_point: str | None = None) -> None:
        assert self.descriptor is not None
        self.problems.append(Problem(self.descriptor, line, code, message, entry_point))

    def entry_points(self) -> dict[str, EntryPoint]:
        doc = self.document
        if "entry_points" not in doc:
            return {}
        raw = doc["entry_points"]
        if not isinstance(raw, _yaml.YamlMap):
            self.problem(
                doc.line_of("entry_points"),
                "MLP203",
                f"`entry_points` is a {kind_of(raw)}, not a mapping; MLflow fails on it with "
                "AttributeError: write each entry point as `NAME:` with `command:` under it",
            )
            return {}
        return {
            str(name): self.entry_point(str(name), body, raw.line_of(name))
            for name, body in raw.items()
        }

    def entry_point(self, name: str, body: Any, line: int) -> EntryPoint:
        if not isinstance(body, _yaml.YamlMap):
            hint = "is empty" if body is None else f"is a {kind_of(body)}, not a mapping"
            self.problem(
                line,
                "MLP204",
                f"entry point {name!r} {hint}; MLflow fails on it with AttributeError: give it "
                "a `command:` (and `parameters:` if it takes any), indented under its name",
                name,
            )
            return EntryPoint(name, None, {}, line, broken=True)
        broken = False
        command = body.get("command")
        if command is None:
            broken = True
            self.problem(
                body.line_of("command") if "command" in body else line,
                "MLP205",
                f"entry point {name!r} has no `command`; MLflow loads it but fails when it "
                'runs: add `command: "python train.py ..."` indented under the entry point',
                name,
            )
        elif not isinstance(command, str):
            broken = True
            self.problem(
                body.line_of("command"),
                "MLP206",
                f"the command of entry point {name!r} is a {kind_of(command)}, not a string; "
                "MLflow fails on it when it runs: quote it, or use a `|` block for "
                "several lines",
                name,
            )
            command = None
        parameters: dict[str, Parameter] = {}
        if "parameters" in body:
            raw = body["parameters"]
            if not isinstance(raw, _yaml.YamlMap):
                broken = True
                self.problem(
                    body.line_of("parameters"),
                    "MLP207",
                    f"`parameters` of entry point {name!r} is "
                    + ("empty" if raw is None else f"a {kind_of(raw)}, not a mapping")
                    + "; MLflow fails on it with AttributeError: list parameters as "
                    "`NAME: TYPE` or `NAME: {type: TYPE, default: VALUE}`, or remove the key",
                    name,
                )
            else:
                for key, spec in raw.items():
                    parameter = self.parameter(name, key, spec, raw.line_of(key))
                    if parameter is None:
                        broken = True
                    else:
                        parameters[parameter.name] = parameter
        return EntryPoint(name, command, parameters, line, broken=broken)

    def parameter(self, entry_point: str, key: Any, spec: Any, line: int) -> Parameter | None:
        name = str(key)
        if isinstance(spec, str):
            return Parameter(name, spec, None, line)
        if isinstance(spec, _yaml.YamlMap):
            return Parameter(name, str(spec.get("type", "string")), spec.get("default"), line)
        self.problem(
            line,
            "MLP208",
            f"parameter {name!r} is "
            + ("empty" if spec is None else f"a {kind_of(spec)}")
            + ", neither a type name nor a mapping; MLflow fails on it with AttributeError: "
            f"write `{name}: {{type: string, default: ...}}` or `{name}: string`",
            entry_point,
        )
        return None

    def environment(self) -> tuple[EnvType, Path | None, Mapping[str, Any] | None]:
        doc = self.document
        present = [key for key in ENV_KEYS if key in doc]
        if len(present) > 1:
            self.problem(
                doc.line_of(present[1]),
                "MLP301",
                "Project cannot contain multiple environment fields: "
                + ", ".join(present)
                + "; keep exactly one of docker_env, python_env and conda_env",
            )
        if doc.get("databricks_spark_job") is not None and not present:
            # MLflow returns before looking for an environment: a Spark job runs in the
            # cluster's own, so python_env.yaml or conda.yaml beside it means nothing.
            return "python_env", None, None
        docker = doc.get("docker_env")
        if docker:
            if not isinstance(docker, _yaml.YamlMap):
                self.problem(
                    doc.line_of("docker_env"),
                    "MLP304",
                    f"`docker_env` is a {kind_of(docker)}, not a mapping; MLflow fails on it "
                    "with AttributeError: write `docker_env:` with `image: NAME` under it",
                )
                return "docker_env", None, None
            return "docker_env", None, docker
        for key in ("python_env", "conda_env"):
            value = doc.get(key)
            if not value:
                continue
            env_type: EnvType = "python_env" if key == "python_env" else "conda_env"
            if not isinstance(value, str):
                self.problem(
                    doc.line_of(key),
                    "MLP303",
                    f"`{key}` is a {kind_of(value)}, not a file name; MLflow fails on it: "
                    f"write the environment file's path, e.g. `{key}: "
                    + ("python_env.yaml`" if key == "python_env" else "conda.yaml`"),
                )
                return env_type, None, None
            return env_type, self.directory / value, None
        if (self.directory / DEFAULT_PYTHON_ENV_FILE).exists():
            return "python_env", self.directory / DEFAULT_PYTHON_ENV_FILE, None
        if (self.directory / DEFAULT_CONDA_FILE).exists():
            return "conda_env", self.directory / DEFAULT_CONDA_FILE, None
        return "python_env", None, None

    def spark_python_file(self, entry_points: Mapping[str, EntryPoint]) -> EntryPoint | None:
        """The entry point ``main`` for a Databricks Spark job given as ``python_file``:
        ``python FILE PARAMETERS...``, as MLflow submits it. Only for a well-formed job (a
        file in the project, parameters that are strings, no entry points): MLP311 says what
        is wrong with any other."""
        job = self.document.get("databricks_spark_job")
        if entry_points or not isinstance(job, _yaml.YamlMap):
            return None
        if any(key in self.document for key in ENV_KEYS):
            return None  # MLflow refuses a Spark job with an environment (MLP311)
        python_file = job.get("python_file")
        parameters = job.get("parameters") or []
        if not isinstance(python_file, str) or not python_file or not isinstance(parameters, list):
            return None
        if not all(isinstance(p, str) for p in parameters):
            return None
        where, inside = spark_script(self.directory, python_file)
        if where is None or not inside:
            return None
        # Relative to the project, as written or not (`/abs/path/train.py`, `train.py/`): the
        # cluster runs it where it unpacked the project.
        relative = where.relative_to(self.directory.resolve()).as_posix()
        script = f"./{relative}" if relative.startswith("-") else relative
        words = " ".join(shlex.quote(word) for word in (script, *parameters))
        # Braces doubled: the command is a template, and these words are not placeholders.
        command = "python " + words.replace("{", "{{").replace("}", "}}")
        return EntryPoint("main", command, {}, job.line_of("python_file"), spark_python_file=True)

    def name(self) -> str:
        raw = self.document.get("name")
        if raw is None or raw == "":
            return self.directory.resolve().name or str(self.directory)
        return str(raw)


def _build(
    directory: Path,
    descriptor: Path | None,
    document: _yaml.YamlMap,
    problems: Iterable[Problem],
) -> Project:
    builder = _Builder(directory, descriptor, document)
    builder.problems.extend(problems)
    entry_points = builder.entry_points()
    spark = builder.spark_python_file(entry_points)
    if spark is not None:
        entry_points = {spark.name: spark}
    env_type, env_file, docker_env = builder.environment()
    return Project(
        directory=directory,
        descriptor=descriptor,
        name=builder.name(),
        entry_points=entry_points,
        env_type=env_type,
        env_file=env_file,
        docker_env=docker_env,
        document=document if descriptor is not None else None,
        problems=tuple(builder.problems),
    )
