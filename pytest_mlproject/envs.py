"""Declared environments: derived as MLflow derives them, built with uv (or with venv and pip
for ``virtualenv``), kept and shared.

What ``mlflow run --env-manager uv`` does (``mlflow/projects/backend/local.py``,
``mlflow/utils/virtualenv.py``, ``_PythonEnv.from_conda_yaml``), with these differences:

- the environment is named by everything that decides its content: the env manager, the
  interpreter (path and full version), the dependency lines, and the contents of the
  requirement files they reference (MLflow leaves the interpreter out);
- it is built in a temporary folder under a file lock and renamed into place when complete,
  so concurrent sessions and pytest-xdist workers build it once, and an interrupted or
  failed build is never reused (MLflow reuses any folder that exists); a ``virtualenv``
  build, which cannot be moved, is made in place under the same lock and counts as complete
  only once its record is written;
- the Python version is never downloaded unless ``UV_PYTHON_DOWNLOADS`` allows it: a
  missing version is an error that names it, never another version silently.

:func:`derive` is shared with the Databricks preflight: both read the dependencies the same
way, and both resolve ``-r requirements.txt`` from the project folder, as MLflow does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pytest_mlproject import _fs, _yaml, indexes
from pytest_mlproject.problems import MLprojectError
from pytest_mlproject.spec import Project

__all__ = [
    "ENV_MANAGERS",
    "BuildError",
    "DeclaredEnvironment",
    "EnvFileError",
    "Environment",
    "Interpreter",
    "Note",
    "Requirement",
    "check_env_manager",
    "default_env_dir",
    "default_env_manager",
    "derive",
    "ensure",
    "find_interpreter",
    "find_uv",
]

EnvManager = Literal["uv", "virtualenv", "local"]
ENV_MANAGERS: tuple[EnvManager, ...] = ("uv", "virtualenv", "local")
#: MLflow's names we know but do not build with, and what to use instead.
_REFUSED = {
    "conda": (
        "conda is not supported: use `uv`, which builds conda.yaml projects as "
        "`mlflow run --env-manager uv` does (python and the `pip:` list; other conda "
        "packages are left out with a warning), or `local`"
    ),
}
#: How ``_PythonEnv.get_dependencies_from_conda_yaml`` tells the conda packages it keeps.
_CONDA_KEPT = re.compile(
    r"^(?P<package>python|pip|setuptools|wheel)(?P<operator><|>|<=|>=|=|==|!=)?(?P<version>[\d.]+)?$"
)
#: ``-r FILE`` / ``-c FILE`` in a requirements list (pip's and uv's forms).
_FILE_OPTION = re.compile(r"^(-r|--requirement|-c|--constraint)(?:\s*=\s*|\s+)(\S+)\s*$")
_VERSION = re.compile(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?\s*$")
#: What describes a built environment, inside it.
_RECORD = "pytest-mlproject-env.json"
#: Lines of uv's output kept in a build failure's message.
_TAIL_LINES = 25
#: Bump when the folder layout or the key changes, so older folders are not reused.
_FORMAT = 2


class EnvFileError(MLprojectError):
    """The environment file cannot be turned into an environment (MLflow refuses it too)."""


class BuildError(MLprojectError):
    """The environment could not be built; the message says why, with uv's own words."""


class BuildTimeout(BuildError):
    """The build did not end within the run's time limit."""


class PythonNotFoundError(BuildError):
    """No interpreter of the requested version on this machine."""


@dataclass(frozen=True)
class Requirement:
    """One dependency line as written, and where."""

    text: str
    line: int


@dataclass(frozen=True)
class Note:
    """Something MLflow warns about when it derives the environment: ``path:line: message``."""

    path: Path
    line: int
    message: str


@dataclass(frozen=True)
class DeclaredEnvironment:
    """A project's environment as MLflow derives it for ``--env-manager uv``."""

    #: The environment file (python_env.yaml, conda.yaml, or whatever the descriptor names).
    file: Path
    kind: Literal["python_env", "conda_env"]
    #: The Python version asked for, as written (``3.10``, ``3.10.12``); ``None``: not pinned.
    python: str | None
    python_line: int
    build_dependencies: tuple[Requirement, ...] = ()
    dependencies: tuple[Requirement, ...] = ()
    #: conda packages MLflow leaves out under uv (everything but python, pip, setuptools and
    #: wheel).
    dropped: tuple[Requirement, ...] = ()
    #: Why MLflow refuses the Python pin under uv (``python`` bare, ``python<3.9``), if it does.
    python_error: str | None = None

    @property
    def requirements(self) -> tuple[Requirement, ...]:
        return self.build_dependencies + self.dependencies

    def python_version(self) -> str:
        """The version to build with: the pin, else the running Python's (as MLflow)."""
        return self.python or platform.python_version()

    def notes(self) -> list[Note]:
        """MLflow's warnings about this derivation, as ours."""
        notes = []
        if self.kind == "conda_env" and self.python is None and self.python_error is None:
            notes.append(
                Note(
                    self.file,
                    1,
                    f"{self.file.name} does not include a python version specification. "
                    f"Using the current python version {platform.python_version()}. "
                    "Pin it (`- python=3.11`) so every machine builds the same environment",
                )
            )
        if self.dropped:
            names = [entry.text for entry in self.dropped]
            notes.append(
                Note(
                    self.file,
                    self.dropped[0].line,
                    "The following conda dependencies will not be installed in the resulting "
                    f"environment: {names}; list them under `pip:` with their PyPI names if "
                    "the project needs them",
                )
            )
        return notes


def check_env_manager(value: str, where: str) -> EnvManager:
    """``value`` as an env manager, or :class:`MLprojectError` naming ``where`` it came from."""
    name = value.strip().lower()
    if name == "uv":
        return "uv"
    if name == "local":
        return "local"
    if name == "virtualenv":
        return "virtualenv"
    if name in _REFUSED:
        raise MLprojectError(f"{where}: {_REFUSED[name]}")
    raise MLprojectError(
        f"{where}: Invalid value for `env_manager`: {value}. Must be one of {list(ENV_MANAGERS)}"
    )


def default_env_manager(project: Project) -> EnvManager:
    """``uv`` for a project that declares an environment, ``local`` for one that does not."""
    return "uv" if declares_environment(project) else "local"


def declares_environment(project: Project) -> bool:
    return project.env_type != "docker_env" and project.env_file is not None


def default_env_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/pytest-mlproject/envs``, else ``~/.cache/pytest-mlproject/envs``."""
    environ = os.environ if environ is None else environ
    cache = environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(cache) if cache and os.path.isabs(cache) else Path.home() / ".cache"
    return base / "pytest-mlproject" / "envs"


# --- deriving -------------------------------------------------------------------------------


def derive(project: Project) -> DeclaredEnvironment | None:
    """The environment ``project`` declares, or ``None`` when it declares none.

    Raises :class:`EnvFileError` when the file cannot be read, or when MLflow would refuse
    it under uv for a reason other than the Python pin (that one is
    :attr:`DeclaredEnvironment.python_error`, which only a local build needs).
    """
    if not declares_environment(project):
        return None
    env_file = project.env_file
    assert env_file is not None
    kind: Literal["python_env", "conda_env"] = (
        "python_env" if project.env_type == "python_env" else "conda_env"
    )
    document = _read(env_file)
    if kind == "python_env":
        return _from_python_env(env_file, document)
    return _from_conda_yaml(env_file, document)


def _read(env_file: Path) -> _yaml.YamlMap:
    def fail(line: int, message: str) -> EnvFileError:
        return EnvFileError(f"{env_file}:{line}: {message}")

    try:
        data = _yaml.read_head(env_file, _yaml.DEFAULT_LIMITS.max_bytes)
        if len(data) > _yaml.DEFAULT_LIMITS.max_bytes:
            raise fail(1, "the environment file is larger than the size limit")
        target = _fs.resolved(env_file)
        # The rules read the same file: parsed once, whoever asks first.
        document, _ = _yaml.parse(data) if target is None else _yaml.parse_file(target, data)
    except _yaml.YamlReadError as exc:
        raise fail(exc.issue.line, f"{exc.issue.message}; fix the YAML") from None
    except (OSError, ValueError) as exc:
        raise fail(1, f"cannot read the environment file: {exc}") from None
    if document is None:
        return _yaml.YamlMap()
    if not isinstance(document, _yaml.YamlMap):
        raise fail(1, "an environment file must be a mapping")
    return document


def _string_list(env_file: Path, document: _yaml.YamlMap, key: str) -> tuple[Requirement, ...]:
    value = document.get(key)
    if value is None:
        return ()
    if not isinstance(value, _yaml.YamlSeq) or not all(isinstance(v, str) for v in value):
        raise EnvFileError(
            f"{env_file}:{document.line_of(key)}: `{key}` must be a list of requirement "
            "strings, e.g. `- scikit-learn==1.5`"
        )
    return tuple(Requirement(text, value.line_of(i)) for i, text in enumerate(value))


def _from_python_env(env_file: Path, document: _yaml.YamlMap) -> DeclaredEnvironment:
    for key in document:
        if key not in ("python", "build_dependencies", "dependencies"):
            raise EnvFileError(
                f"{env_file}:{document.line_of(key)}: unknown key {key!r}; MLflow refuses it: "
                "only `python`, `build_dependencies` and `dependencies` are allowed"
            )
    python = document.get("python")
    if python is not None and not isinstance(python, str):
        raise EnvFileError(
            f"{env_file}:{document.line_of('python')}: `python` must be a string; quote it: "
            f'`python: "{python}"`'
        )
    return DeclaredEnvironment(
        file=env_file,
        kind="python_env",
        python=python or None,
        python_line=document.line_of("python") if "python" in document else 1,
        build_dependencies=_string_list(env_file, document, "build_dependencies"),
        dependencies=_string_list(env_file, document, "dependencies"),
    )


def _from_conda_yaml(env_file: Path, document: _yaml.YamlMap) -> DeclaredEnvironment:
    """MLflow's conversion: ``python`` pinned with ``<=, >=, =, ==``; pip, setuptools and wheel
    become build dependencies; the ``pip:`` list the dependencies; other packages dropped."""
    deps = document.get("dependencies")
    if deps is None:
        deps = _yaml.YamlSeq()
    if not isinstance(deps, _yaml.YamlSeq):
        raise EnvFileError(
            f"{env_file}:{document.line_of('dependencies')}: `dependencies` must be a list "
            "(conda packages, and a `pip:` list)"
        )
    python: str | None = None
    python_line = 1
    python_error: str | None = None
    build: list[Requirement] = []
    pip: tuple[Requirement, ...] = ()
    dropped: list[Requirement] = []
    for index, item in enumerate(deps):
        line = deps.line_of(index)
        if isinstance(item, str):
            match = _CONDA_KEPT.match(item)
            if match is None:
                dropped.append(Requirement(item, line))
                continue
            package, operator, version = match.group("package", "operator", "version")
            if package == "python" and python is None and python_error is None:
                python_line = line
                if operator is None:
                    python_error = (
                        f"Invalid dependency for python: {item}. It must be pinned "
                        "(e.g. python=3.8.13)."
                    )
                elif operator in ("<", ">", "!="):
                    python_error = (
                        f"Invalid version comparator for python: '{operator}'. "
                        "Must be one of ['<=', '>=', '=', '==']."
                    )
                else:
                    python = version
                continue
            operator = "==" if operator == "=" else operator
            build.append(Requirement(package + (operator or "") + (version or ""), line))
        elif isinstance(item, _yaml.YamlMap) and "pip" in item:
            pip = _string_list(env_file, item, "pip")
        else:
            raise EnvFileError(
                f"{env_file}:{line}: Invalid conda dependency: {item}. Must be str or dict in "
                'the form of {"pip": [...]}'
            )
    return DeclaredEnvironment(
        file=env_file,
        kind="conda_env",
        python=python,
        python_line=python_line,
        build_dependencies=tuple(build),
        dependencies=pip,
        dropped=tuple(dropped),
        python_error=python_error,
    )


def requirement_file(text: str, directory: Path) -> Path | None:
    """The file a ``-r FILE`` / ``-c FILE`` line names, resolved from ``directory`` (the
    project folder for the environment file's own lines, as MLflow resolves them), or
    ``None`` for any other line."""
    match = _FILE_OPTION.match(text.strip())
    if match is None:
        return None
    expanded = _fs.expanded(Path(match.group(2)))
    return directory / expanded if expanded is not None else directory / match.group(2)


def is_requirements_option(text: str) -> bool:
    """Whether the line is ``-r FILE`` (not ``-c``)."""
    match = _FILE_OPTION.match(text.strip())
    return match is not None and match.group(1) in ("-r", "--requirement")


def _referenced_files(lines: list[str], directory: Path) -> dict[str, str]:
    """Every requirement file the lines reference, nested ones too: path -> sha256 of its
    content (``missing`` when it cannot be read; uv then says why)."""
    found: dict[str, str] = {}
    pending = [(text, directory) for text in lines]
    while pending:
        text, base = pending.pop(0)
        path = requirement_file(text, base)
        if path is None or str(path) in found:
            continue
        try:
            data = path.read_bytes() if _fs.is_file(path) else None
        except OSError:
            data = None
        found[str(path)] = "missing" if data is None else hashlib.sha256(data).hexdigest()
        if data is not None:
            nested = data.decode("utf-8", "replace").splitlines()
            pending.extend((line, path.parent) for line in nested)
    return found


# --- the interpreter ------------------------------------------------------------------------


@dataclass(frozen=True)
class Interpreter:
    path: Path
    #: The full version, ``3.11.7``.
    version: str


def find_uv() -> str:
    """The uv binary of the ``uv`` package (a dependency), else one on ``PATH``."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found is None:
        raise BuildError(
            "uv is not installed: `pip install uv` (it comes with pytest-mlproject), or run "
            "with --mlproject-env-manager local"
        )
    return found


def _downloads_allowed(environ: Mapping[str, str]) -> bool:
    value = environ.get("UV_PYTHON_DOWNLOADS", "").strip().lower()
    return bool(value) and value not in ("never", "manual", "false", "0")


def uv_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables uv runs with: no Python downloads unless the user set uv's own
    ``UV_PYTHON_DOWNLOADS``; no virtual environment of the caller's in the way."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env.pop("VIRTUAL_ENV", None)
    env.pop("CONDA_PREFIX", None)
    return env


def _running_interpreter() -> Interpreter:
    major, minor = sys.version_info[:2]
    base = Path(sys.base_prefix) / "bin" / f"python{major}.{minor}"
    path = base if _fs.is_file(base) else Path(sys.executable)
    return Interpreter(path, platform.python_version())


def find_interpreter(
    request: str,
    *,
    uv: str | None = None,
    deadline: float | None = None,
    environ: Mapping[str, str] | None = None,
    manager: EnvManager = "uv",
) -> Interpreter:
    """An interpreter with ``request``'s major.minor version: the one running this code when
    it fits, else the first that uv's discovery finds (no virtual environments, no downloads
    unless ``UV_PYTHON_DOWNLOADS`` allows them); for ``virtualenv``, ``pythonX.Y`` on
    ``PATH`` first, and uv's discovery only when uv is there. Raises
    :class:`PythonNotFoundError`."""
    wanted = _VERSION.match(request)
    if wanted is not None and (int(wanted[1]), int(wanted[2])) == sys.version_info[:2]:
        return _running_interpreter()
    query = f"{wanted[1]}.{wanted[2]}" if wanted is not None else request.strip()
    env = uv_environ(environ)
    if manager == "virtualenv":
        return _find_for_virtualenv(query, uv, env, deadline)
    uv = uv or find_uv()
    found = _uv_find(uv, query, env, deadline)
    if found is None and _downloads_allowed(env):
        _uv(
            [uv, "python", "install", query],
            Path.cwd(),
            env,
            deadline,
            doing=f"installing Python {query} (UV_PYTHON_DOWNLOADS={env['UV_PYTHON_DOWNLOADS']})",
        )
        found = _uv_find(uv, query, env, deadline)
    if found is None:
        raise PythonNotFoundError(
            f"Python {query} was not found on this machine, and pytest-mlproject never "
            "downloads one unless told to. Ways out: install Python "
            f"{query} (any patch level); or let uv download it "
            "(UV_PYTHON_DOWNLOADS=automatic); or run with the current interpreter: "
            "--mlproject-env-manager local"
        )
    return found


def _find_for_virtualenv(
    query: str, uv: str | None, env: Mapping[str, str], deadline: float | None
) -> Interpreter:
    from pytest_mlproject.process import run_command

    named = shutil.which(f"python{query}", path=env.get("PATH"))
    if named is not None:
        version = "import platform; print(platform.python_version())"
        script = f"{shlex.quote(named)} -c {shlex.quote(version)}"
        result = run_command(script, Path.cwd(), timeout=_remaining(deadline), env=dict(env))
        if result.ok and result.stdout.strip().startswith(query):
            return Interpreter(Path(named), result.stdout.strip())
    if uv is None:
        try:
            uv = find_uv()
        except BuildError:
            uv = None
    found = _uv_find(uv, query, env, deadline) if uv is not None else None
    if found is None:
        raise PythonNotFoundError(
            f"Python {query} was not found on this machine (no python{query} on PATH), and "
            "the virtualenv env manager never installs one (MLflow's installs it with "
            f"pyenv). Ways out: install Python {query} (any patch level) and put "
            f"python{query} on PATH; or run with the current interpreter: "
            "--mlproject-env-manager local"
        )
    return found


def _uv_find(
    uv: str, query: str, env: Mapping[str, str], deadline: float | None
) -> Interpreter | None:
    from pytest_mlproject.process import run_command

    find = shlex.join([uv, "python", "find", "--system", "--no-project", query])
    version = "import platform; print(platform.python_version())"
    script = f'found=$({find}) && echo "$found" && "$found" -c {shlex.quote(version)}'
    result = run_command(script, Path.cwd(), timeout=_remaining(deadline), env=dict(env))
    if result.timed_out:
        raise BuildTimeout(f"timed out looking for Python {query}")
    lines = result.stdout.split()
    if result.exit_code != 0 or len(lines) != 2:
        return None
    return Interpreter(Path(lines[0]), lines[1])


# --- building -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """A built environment, ready to run commands in."""

    manager: EnvManager
    path: Path
    interpreter: Interpreter
    declared: DeclaredEnvironment
    #: Whether this call built it (``False``: it was there already).
    built: bool
    #: Seconds spent finding, waiting for or building it.
    duration: float
    #: MLflow's warnings about the derivation, and a patch level other than the pin's.
    notes: tuple[Note, ...] = ()

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin"

    def describe(self) -> str:
        how = f"built in {self.duration:.1f} s" if self.built else "reused"
        return (
            f"the {self.manager} environment {self.path} (Python {self.interpreter.version}, "
            f"from {self.declared.file.name}, {how})"
        )


Progress = Callable[[str], None]


def index_config(
    manager: EnvManager, project_dir: Path, environ: Mapping[str, str] | None = None
) -> indexes.IndexConfig:
    """Where a build installs from: for uv, uv's settings else pip's (handed to uv); for
    virtualenv, pip's, which pip reads itself."""
    if manager == "virtualenv":
        return indexes.pip_index_config(os.environ if environ is None else environ)
    return indexes.index_config(project_dir, environ)


def environment_key(
    manager: EnvManager,
    interpreter: Interpreter,
    declared: DeclaredEnvironment,
    project_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The name of the folder of this content: what decides what gets installed, the index
    configuration included (credentials removed)."""
    build = [entry.text for entry in declared.build_dependencies]
    deps = [entry.text for entry in declared.dependencies]
    content = {
        "format": _FORMAT,
        "manager": manager,
        "python": [str(interpreter.path), interpreter.version],
        "build_dependencies": build,
        "dependencies": deps,
        "files": _referenced_files(build + deps, project_dir),
        "index": index_config(manager, project_dir, environ).key(),
    }
    data = json.dumps(content, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:24]


def ensure(
    project: Project,
    declared: DeclaredEnvironment,
    *,
    env_dir: Path,
    manager: EnvManager = "uv",
    timeout: float | None = None,
    progress: Progress | None = None,
    environ: Mapping[str, str] | None = None,
) -> Environment:
    """The environment ``declared`` describes, built if it is not there yet.

    Raises :class:`BuildError` (with uv's words) or :class:`EnvFileError`. ``timeout`` bounds
    everything: finding the interpreter, waiting for another process building the same
    environment, and the build.
    """
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    if declared.python_error is not None:
        raise EnvFileError(f"{declared.file}:{declared.python_line}: {declared.python_error}")
    requested = declared.python_version()
    uv = find_uv() if manager == "uv" else None
    interpreter = find_interpreter(
        requested, uv=uv, deadline=deadline, environ=environ, manager=manager
    )
    key = environment_key(manager, interpreter, declared, project.directory, environ)
    final = env_dir / key

    notes = declared.notes()
    pinned = declared.python
    if pinned is not None and pinned.count(".") == 2 and pinned.strip() != interpreter.version:
        notes.append(
            Note(
                declared.file,
                declared.python_line,
                f"{declared.file.name} pins Python {declared.python}, and this machine "
                f"has {interpreter.version} ({interpreter.path}): the environment uses "
                f"{interpreter.version}",
            )
        )

    def done(built: bool) -> Environment:
        duration = time.monotonic() - start
        return Environment(manager, final, interpreter, declared, built, duration, tuple(notes))

    if (final / _RECORD).is_file():  # complete: folders appear by rename only
        return done(False)
    try:
        env_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot create the environment folder {env_dir}: {exc}") from None
    with _locked(env_dir / f"{key}.lock", deadline, final):
        if (final / _RECORD).is_file():  # built by another process while we waited
            return done(False)
        _remove_leftovers(env_dir, key)
        if final.exists():  # a virtualenv build that never completed
            shutil.rmtree(final, ignore_errors=True)
        count = len(declared.requirements)
        if progress is not None:
            progress(
                f"building environment for {project.name} ({declared.file.name}, Python "
                f"{interpreter.version}): {count} package{'s' if count != 1 else ''} ..."
            )
        if uv is None:
            _build_virtualenv(
                project,
                declared=declared,
                interpreter=interpreter,
                final=final,
                deadline=deadline,
                environ=environ,
            )
        else:
            _build(
                project,
                declared=declared,
                interpreter=interpreter,
                uv=uv,
                env_dir=env_dir,
                key=key,
                deadline=deadline,
                environ=environ,
            )
        result = done(True)
        if progress is not None:
            progress(f"done in {result.duration:.1f} s")
        return result


@contextlib.contextmanager
def _locked(path: Path, deadline: float | None, final: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (released when closed, or when the process dies)."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise BuildTimeout(
                        f"timed out waiting for another process building {final}"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(descriptor)


def _remove_leftovers(env_dir: Path, key: str) -> None:
    """Folders of builds of this key that never completed (the process was killed): only a
    lock holder builds a key, so none of them is in use."""
    for leftover in env_dir.glob(f".{key}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _build(
    project: Project,
    *,
    declared: DeclaredEnvironment,
    interpreter: Interpreter,
    uv: str,
    env_dir: Path,
    key: str,
    deadline: float | None,
    environ: Mapping[str, str] | None,
) -> None:
    temporary = env_dir.resolve() / f".{key}.tmp-{uuid.uuid4().hex[:12]}"
    env = uv_environ(environ)
    index = indexes.index_config(project.directory, env)
    env.update(index.uv_environ(env))
    secrets = index.secrets()
    try:
        _uv(
            [
                uv, "venv", "--no-project", "--relocatable", "--quiet",
                "--python", str(interpreter.path), str(temporary),
            ],
            project.directory,
            env,
            deadline,
            doing=f"creating the environment with Python {interpreter.version}",
            declared=declared,
        )  # fmt: skip
        python = temporary / "bin" / "python"
        for group in (declared.build_dependencies, declared.dependencies):
            if not group:
                continue
            listing = temporary / f"requirements-{uuid.uuid4().hex[:8]}.txt"
            listing.write_text(
                "".join(_absolute(entry.text, project.directory) + "\n" for entry in group)
            )
            _uv(
                [
                    uv, "pip", "install", "--python", str(python),
                    *index.uv_args(), "-r", str(listing),
                ],
                project.directory,  # where MLflow installs from: `./pkg` resolves there
                env,
                deadline,
                doing="installing " + ", ".join(entry.text for entry in group),
                declared=declared,
                secrets=secrets,
                source=index.describe(),
            )  # fmt: skip
            listing.unlink()
        _write_record(temporary, declared, interpreter, index)
        os.rename(temporary, env_dir / key)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _build_virtualenv(
    project: Project,
    *,
    declared: DeclaredEnvironment,
    interpreter: Interpreter,
    final: Path,
    deadline: float | None,
    environ: Mapping[str, str] | None,
) -> None:
    """The stdlib's ``venv`` (pip from the interpreter's own ensurepip wheels, no download)
    and ``pip install``, reading pip's configuration as it always does. Built in place (a
    venv cannot be moved): complete once the record is there, removed if the build fails."""
    env = uv_environ(environ)
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    index = indexes.pip_index_config(env)
    secrets = index.secrets()
    try:
        _uv(
            [str(interpreter.path), "-m", "venv", str(final)],
            project.directory,
            env,
            deadline,
            doing=f"creating the environment with Python {interpreter.version}",
            declared=declared,
            tool="venv",
            secrets=secrets,
        )
        python = final / "bin" / "python"
        for group in (declared.build_dependencies, declared.dependencies):
            if not group:
                continue
            listing = final / f"requirements-{uuid.uuid4().hex[:8]}.txt"
            listing.write_text(
                "".join(_absolute(entry.text, project.directory) + "\n" for entry in group)
            )
            _uv(
                [str(python), "-m", "pip", "install", "-r", str(listing)],
                project.directory,
                env,
                deadline,
                doing="installing " + ", ".join(entry.text for entry in group),
                declared=declared,
                tool="pip",
                secrets=secrets,
                source=index.describe(),
            )
            listing.unlink()
        _write_record(final, declared, interpreter, index)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise


def _write_record(
    folder: Path,
    declared: DeclaredEnvironment,
    interpreter: Interpreter,
    index: indexes.IndexConfig,
) -> None:
    """What the environment holds; written last, whole (by rename), so its presence says the
    environment is complete. Index URLs are written with credentials removed."""
    record = {
        "environment_file": str(declared.file),
        "python": [str(interpreter.path), interpreter.version],
        "build_dependencies": [entry.text for entry in declared.build_dependencies],
        "dependencies": [entry.text for entry in declared.dependencies],
        "index": index.describe(),
    }
    partial = folder / f".{_RECORD}.tmp"
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, folder / _RECORD)


def _absolute(text: str, directory: Path) -> str:
    """``-r FILE`` / ``-c FILE`` with FILE made absolute from the project folder."""
    path = requirement_file(text, directory)
    if path is None:
        return text
    option = text.strip().split()[0].split("=")[0]
    return f"{option} {shlex.quote(str(path))}"


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(deadline - time.monotonic(), 0.001)


def _uv(
    argv: list[str],
    cwd: Path,
    env: Mapping[str, str],
    deadline: float | None,
    *,
    doing: str,
    declared: DeclaredEnvironment | None = None,
    tool: str = "uv",
    secrets: Iterable[str] = (),
    source: str | None = None,
) -> None:
    """Run a build step; :class:`BuildError` with the tool's words, credentials removed."""
    from pytest_mlproject.process import run_command
    from pytest_mlproject.redact import MIN_SECRET_LENGTH, scrub
    from pytest_mlproject.sources import redact

    if deadline is not None and time.monotonic() >= deadline:
        raise BuildTimeout(f"timed out before {doing}")
    result = run_command(shlex.join(argv), cwd, timeout=_remaining(deadline), env=dict(env))
    if result.ok:
        return
    where = f"{declared.file}: " if declared is not None else ""
    if result.timed_out:
        raise BuildTimeout(f"{where}timed out {doing}; its processes were killed")
    output = (result.stderr + result.stdout).rstrip("\n").splitlines()
    tail = output[-_TAIL_LINES:]
    lines = [f"{where}{tool} failed {doing} ({result.describe()})"]
    reported = _reported_requirement(output)
    if reported is not None:
        lines.append(f"{tool} reports: {reported}")
    if source is not None:
        lines.append(f"packages from: {source}")
    if tail:
        lines.append(f"--- last {len(tail)} lines of {tool}'s output ---")
        lines.extend(tail)
    known = {
        value
        for value in set(secrets) | indexes.url_secrets("\n".join(lines))
        if len(value) >= MIN_SECRET_LENGTH
    }
    raise BuildError(redact(scrub("\n".join(lines), known)))


def _reported_requirement(output: list[str]) -> str | None:
    """The line where uv names the requirement it could not satisfy (``Because ...``), else
    its first ``error:`` line."""
    errors = []
    for line in output:
        text = line.strip().removeprefix("cause:").strip()
        if "Because " in text:
            return text[text.index("Because ") :]
        if text.lower().startswith("error:"):
            errors.append(text[len("error:") :].strip())
    return errors[0] if errors else None
