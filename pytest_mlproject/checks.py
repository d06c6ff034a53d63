"""The rules: functions from a :class:`~pytest_mlproject.spec.Project` to problems.

``spec.read`` already reports the shapes MLflow crashes on; the rules here look at what the
shapes mean: environment files, docker settings, parameter types and defaults, command
templates and the scripts they run. Each rule's code, severity and fix are in the catalogue
(``problems.RULES``) and in ``docs/rules.md``.
"""

from __future__ import annotations

import ast
import codecs
import difflib
import re
import string
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from pytest_mlproject import _fs, _shell, _yaml
from pytest_mlproject.problems import Problem
from pytest_mlproject.spec import (
    ENTRY_POINT_KEYS,
    PARAMETER_KEYS,
    SPARK_JOB_KEYS,
    TOP_LEVEL_KEYS,
    EntryPoint,
    Parameter,
    Project,
    kind_of,
    read,
    spark_libraries,
    spark_script,
)

#: The types MLflow's documentation lists. Others work: MLflow treats them as ``string``.
DOCUMENTED_TYPES = frozenset({"string", "float", "path", "uri"})
#: Undocumented names in wide use whose meaning is plain; they are not worth a warning.
COMMON_TYPES = frozenset({"str", "int", "integer", "long", "double", "number", "bool", "boolean"})
_LIST_TYPE = re.compile(r"list(\[\w+\])?")
NUMERIC_TYPES = {"float": float, "double": float, "int": int, "integer": int, "long": int}
#: Keys people add for documentation; MLflow ignores them and so do we.
DOCUMENTATION_KEYS = frozenset({"description", "help", "doc"})
PYTHON_ENV_KEYS = frozenset({"python", "build_dependencies", "dependencies"})
#: Interpreters whose first non-option argument is a script file in the project.
_INTERPRETERS = {"python", "python3", "bash", "sh", "zsh", "Rscript"}
_SCRIPT_SUFFIXES = (".py", ".sh", ".R", ".r")
_KEY_TYPO = re.compile(r"^(type|default)\s*[:=\s]\s*(\S.*)$")
_QUOTED_PLACEHOLDER = re.compile(r"(?=(['\"])\{([^{}]*)\}\1)")

Rule = Callable[[Project], Iterable[Problem]]


def check(
    target: Project | Path | str,
    ignore: Collection[str] = (),
    extra_rules: Iterable[Rule] = (),
) -> list[Problem]:
    """Every problem with a project, sorted by file and line; never raises for bad input.

    ``target`` is a descriptor, a project folder, or an already read project. Codes in
    ``ignore`` are left out.
    """
    if isinstance(target, Project):
        project: Project | None = target
        problems = list(target.problems)
    else:
        project, read_problems = read(target)
        problems = list(read_problems)
    if project is not None and project.descriptor is not None:
        for rule in (*RULES, *extra_rules):
            problems.extend(rule(project))
    return sorted(
        (p for p in problems if p.code not in ignore),
        key=lambda p: (str(p.path), p.line, p.code),
    )


def _problem(
    project: Project, line: int, code: str, message: str, ep: str | None = None
) -> Problem:
    assert project.descriptor is not None
    return Problem(project.descriptor, line, code, message, ep)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word.strip(), list(choices), n=1, cutoff=0.7)
    return f" (did you mean `{close[0]}`?)" if close else ""


# --- keys -------------------------------------------------------------------------------


def unknown_keys(project: Project) -> Iterator[Problem]:
    """MLP209 and MLP401: keys MLflow never reads, and the typos that make a key unread."""
    doc = project.document
    assert doc is not None
    yield from _unread_keys(
        project, doc, TOP_LEVEL_KEYS, kind="top-level key", fix="fix the name or remove it"
    )
    spark_job = doc.get("databricks_spark_job")
    if isinstance(spark_job, _yaml.YamlMap):
        yield from _unread_keys(
            project,
            spark_job,
            SPARK_JOB_KEYS,
            where=" in `databricks_spark_job`",
            fix="a Spark job takes `python_file`, `parameters` and `python_libraries`",
        )
    entry_points = doc.get("entry_points")
    if not isinstance(entry_points, _yaml.YamlMap):
        return
    for ep_name, body in entry_points.items():
        ep = str(ep_name)
        if not isinstance(body, _yaml.YamlMap):
            continue
        yield from _unread_keys(
            project,
            body,
            ENTRY_POINT_KEYS,
            where=f" in entry point {ep!r}",
            fix="an entry point takes `command` and `parameters`",
            ep=ep,
        )
        parameters = body.get("parameters")
        if not isinstance(parameters, _yaml.YamlMap):
            continue
        for param_name, spec in parameters.items():
            if isinstance(spec, _yaml.YamlMap):
                yield from _parameter_keys(project, ep, str(param_name), spec)


def _unread_keys(
    project: Project,
    mapping: _yaml.YamlMap,
    known: frozenset[str],
    *,
    kind: str = "key",
    where: str = "",
    fix: str,
    ep: str | None = None,
) -> Iterator[Problem]:
    """MLP209 for each key of ``mapping`` that is neither ``known`` nor documentation:
    "unknown KIND 'key'WHERE", then ``fix``, what the mapping takes; on ``ep``'s item."""
    for key in mapping:
        if key not in known and key not in DOCUMENTATION_KEYS:
            yield _problem(
                project,
                mapping.line_of(key),
                "MLP209",
                f"unknown {kind} {key!r}{where}{_did_you_mean(str(key), known)}; "
                f"MLflow ignores it: {fix}",
                ep,
            )


def _parameter_keys(project: Project, ep: str, name: str, spec: _yaml.YamlMap) -> Iterator[Problem]:
    for key in spec:
        if key in PARAMETER_KEYS or key in DOCUMENTATION_KEYS:
            continue
        typo = _KEY_TYPO.match(str(key)) if isinstance(key, str) else None
        if typo is not None:
            field, value = typo.groups()
            effect = (
                "so the parameter silently becomes a string"
                if field == "type"
                else "so the default is lost and the parameter becomes required"
            )
            yield _problem(
                project,
                spec.line_of(key),
                "MLP401",
                f"parameter {name!r} has the key {key!r}: MLflow reads it as one unknown key, "
                f"{effect}; write `{field}: {value}` (a colon and a space)",
                ep,
            )
        else:
            yield _problem(
                project,
                spec.line_of(key),
                "MLP209",
                f"unknown key {key!r} in parameter {name!r}"
                f"{_did_you_mean(str(key), PARAMETER_KEYS)}; MLflow ignores it: "
                "a parameter takes `type` and `default`",
                ep,
            )


# --- environments -----------------------------------------------------------------------


def environment(project: Project) -> Iterator[Problem]:
    """MLP302, MLP308-MLP310 and the docker rules MLP305-MLP307."""
    if project.docker_env is not None:
        yield from _docker(project, project.docker_env)
        return
    env_file = project.env_file
    if env_file is None:
        return
    declared = project.document is not None and project.env_type in project.document
    key = project.env_type
    line = project.line_of(key) if declared else 1
    if not _fs.exists(env_file):
        kind = "python_env file" if key == "python_env" else "conda environment file"
        yield _problem(
            project,
            line,
            "MLP302",
            f"Project specified {kind} {env_file}, but no such file was found: "
            f"create it, or point `{key}` at the right file",
        )
        return
    target = _fs.resolved(env_file)
    if target is None or not target.is_relative_to(project.directory.resolve()):
        yield _problem(
            project,
            line,
            "MLP310",
            f"`{key}` points outside the project folder ({env_file}); that file does not "
            "travel with the project (Git URIs, Databricks archives): move it into the project",
        )
        # Not read either: a pull request must not make CI print lines of files elsewhere.
        return
    if key == "python_env":
        yield from _python_env_file(env_file, target)
    else:
        yield from _conda_file(env_file, target)


def _env_document(
    env_file: Path, target: Path, code: str, not_a_mapping: str
) -> tuple[_yaml.YamlMap | None, list[Problem]]:
    """The environment file (``target``: links followed) as a mapping, or the problems that
    say why it is not one."""
    try:
        # Never the whole file, and never a FIFO or a device: either would hang the session.
        data = _yaml.read_head(env_file, _yaml.DEFAULT_LIMITS.max_bytes)
        if len(data) > _yaml.DEFAULT_LIMITS.max_bytes:
            raise ValueError("larger than the size limit")
        value, _ = _yaml.parse_file(target, data)
    except _yaml.YamlReadError as exc:
        return None, [Problem(env_file, exc.issue.line, code, f"{exc.issue.message}; fix the YAML")]
    except (OSError, ValueError) as exc:
        return None, [Problem(env_file, 1, code, f"cannot read the environment file: {exc}")]
    if not isinstance(value, _yaml.YamlMap):
        return None, [Problem(env_file, 1, code, not_a_mapping)]
    return value, []


def _python_env_file(env_file: Path, target: Path) -> Iterator[Problem]:
    doc, problems = _env_document(
        env_file,
        target,
        "MLP308",
        "a python_env file must be a mapping with `python`, `build_dependencies` and "
        "`dependencies`; MLflow fails to build the environment from it",
    )
    yield from problems
    if doc is None:
        return
    for key in doc:
        if key not in PYTHON_ENV_KEYS:
            yield Problem(
                env_file,
                doc.line_of(key),
                "MLP308",
                f"unknown key {key!r} in a python_env file"
                f"{_did_you_mean(str(key), PYTHON_ENV_KEYS)}; MLflow refuses it: only "
                "`python`, `build_dependencies` and `dependencies` are allowed",
            )
    python = doc.get("python")
    if python is not None and not isinstance(python, str):
        written = _written_value(env_file, doc.line_of("python")) or str(python)
        yield Problem(
            env_file,
            doc.line_of("python"),
            "MLP308",
            f"`python: {written}` is read by YAML as the {type(python).__name__} {python!r}, "
            f'not a string, and MLflow refuses it; quote it: `python: "{written}"`',
        )
    for key in ("build_dependencies", "dependencies"):
        # Left empty (null) is fine: MLflow reads it as no dependencies.
        if doc.get(key) is not None and not _is_list_of_strings(doc[key]):
            yield Problem(
                env_file,
                doc.line_of(key),
                "MLP308",
                f"`{key}` must be a list of requirement strings, e.g. `- scikit-learn==1.5`",
            )


def _written_value(path: Path, line: int) -> str | None:
    """The value on ``key: value`` at ``line`` as written, before YAML typed it."""
    try:
        text = path.read_text(encoding="utf-8").splitlines()[line - 1]
    except (OSError, UnicodeDecodeError, IndexError):
        return None
    match = re.match(r"\s*[^:#]+:\s*([^\s#]+)", text)
    return match.group(1) if match else None


def _conda_file(env_file: Path, target: Path) -> Iterator[Problem]:
    doc, problems = _env_document(
        env_file,
        target,
        "MLP309",
        "a conda environment file must be a mapping with `dependencies:`; "
        "conda cannot create an environment from it",
    )
    yield from problems
    if doc is None:
        return
    deps = doc.get("dependencies")
    if "dependencies" in doc and not isinstance(deps, _yaml.YamlSeq):
        yield Problem(
            env_file,
            doc.line_of("dependencies"),
            "MLP309",
            "`dependencies` must be a list (conda packages, and a `pip:` list)",
        )


def _is_list_of_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _docker(project: Project, docker: Any) -> Iterator[Problem]:
    prefix = "Project configuration (MLproject file) was invalid: "
    if not docker.get("image"):
        yield _problem(
            project,
            project.line_of("docker_env", "image"),
            "MLP305",
            prefix + "Docker environment specified but no image attribute found: "
            "add `image: NAME` under `docker_env`",
        )
    volumes = docker.get("volumes")
    if volumes and not _is_list_of_strings(volumes):
        yield _problem(
            project,
            project.line_of("docker_env", "volumes"),
            "MLP306",
            prefix + 'Docker volumes must be a list of strings, e.g. `volumes: ["/path1/:/path1"]`',
        )
    env = docker.get("environment")
    if env and not (isinstance(env, list) and all(isinstance(item, (list, str)) for item in env)):
        yield _problem(
            project,
            project.line_of("docker_env", "environment"),
            "MLP307",
            prefix + "environment must be a list of strings (variables copied from the "
            'host) or [NAME, VALUE] pairs, e.g. `environment: [["NEW_VAR", "value"], '
            '"VAR_TO_COPY"]`',
        )


# --- Databricks Spark jobs --------------------------------------------------------------

_SPARK_ENVIRONMENTS = {"docker_env": "docker", "python_env": "python", "conda_env": "conda"}


def spark_job(project: Project) -> Iterator[Problem]:
    """MLP311: a ``databricks_spark_job`` section MLflow refuses when it loads the project, or
    crashes on when it submits the job (``mlflow run -b databricks``)."""
    doc = project.document
    assert doc is not None
    job = project.spark_job
    if job is None:
        return  # absent or left empty: MLflow treats both as no Spark job
    line = doc.line_of("databricks_spark_job")
    if not isinstance(job, _yaml.YamlMap):
        yield _problem(
            project,
            line,
            "MLP311",
            f"`databricks_spark_job` is {_kind(job)}, not a mapping; MLflow fails on it with "
            "AttributeError: write `python_file: job.py` indented under it, or remove it",
        )
        return
    python_file = job.get("python_file")
    declared = doc.get("entry_points")
    # MLflow's test is on the entry points written in the file (ours adds `main` for a file).
    has_entry_points = isinstance(declared, _yaml.YamlMap) and len(declared) > 0
    if python_file is None and not has_entry_points:
        yield _problem(
            project,
            line,
            "MLP311",
            "Databricks Spark job requires either 'databricks_spark_job.python_file' setting or "
            "'entry_points' setting.: add `python_file: job.py` under `databricks_spark_job`, "
            "or entry points",
        )
    if python_file is not None and has_entry_points:
        yield _problem(
            project,
            job.line_of("python_file"),
            "MLP311",
            "Databricks Spark job does not allow setting both 'databricks_spark_job.python_file' "
            "and 'entry_points'.: remove `python_file` to run the entry points, or "
            "`entry_points` to run the file",
        )
    for ep in project.entry_points.values():
        for param in ep.parameters.values():
            if param.type == "path":
                yield _problem(
                    project,
                    param.line,
                    "MLP311",
                    "Databricks Spark job does not support entry point parameter of 'path' "
                    f"type. '{param.name}' value type is invalid.: use `type: string`; the "
                    "value then reaches the job as written",
                )
    for key, kind in _SPARK_ENVIRONMENTS.items():
        if key in doc:
            yield _problem(
                project,
                doc.line_of(key),
                "MLP311",
                f"Databricks Spark job does not support setting {kind} environment.: remove "
                f"`{key}`; the job runs in the cluster's environment, and "
                "`databricks_spark_job.python_libraries` lists what to install there",
            )
    if python_file is not None:
        yield from _spark_python_file(project, job, python_file)
        parameters = job.get("parameters")
        if parameters is not None and not _is_list_of_strings(parameters):
            yield _problem(
                project,
                job.line_of("parameters"),
                "MLP311",
                "`databricks_spark_job.parameters` must be a list of strings, which MLflow "
                "passes to the job as they are and Databricks refuses otherwise: write them "
                'quoted, e.g. `parameters: ["--epochs", "10"]`',
            )
    # MLflow makes a PyPI library of each item it iterates: None (left empty) or a number
    # fails, a word gives one library per letter, a non-string is refused by Databricks.
    if "python_libraries" in job and spark_libraries(job["python_libraries"]) is None:
        yield _problem(
            project,
            job.line_of("python_libraries"),
            "MLP311",
            "`databricks_spark_job.python_libraries` must be a list of pip requirement strings "
            "(MLflow makes each one a PyPI library of the job): write e.g. "
            '`python_libraries: ["scikit-learn==1.5"]`',
        )


def pasted_code_problem(script: Path) -> tuple[int, str] | None:
    """Why a Spark job's script fails once MLflow pastes its code below lines of its own
    (``run_databricks_spark_job``), as ``(line, message)``; ``None`` when it does not or
    cannot be told. A ``from __future__`` import must come first in a file, and a byte order
    mark is a stray character mid-file."""
    try:
        code = _yaml.read_head(script, _yaml.DEFAULT_LIMITS.max_bytes)
    except (OSError, ValueError):
        return None
    fix = "so the job fails on the cluster"
    if code.startswith(codecs.BOM_UTF8):
        return 1, (
            f"{script.name} starts with a byte order mark: MLflow pastes the script's code below "
            f"lines of its own, where that mark is an invalid character, {fix}: save the file "
            "as UTF-8 without a BOM"
        )
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None  # the script is broken by itself, which running it shows
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            return node.lineno, (
                "`from __future__ import` in a Spark job's script: MLflow pastes the script's "
                f"code below lines of its own, where such an import is a SyntaxError, {fix}: "
                "remove it, or move the code into a module the script imports"
            )
    return None


def _spark_python_file(project: Project, job: _yaml.YamlMap, python_file: Any) -> Iterator[Problem]:
    """MLflow reads ``python_file`` on the submitting machine (after uploading the project)
    and pastes its code into a job script of its own, below a few lines that set it up."""
    line = job.line_of("python_file")
    if not isinstance(python_file, str) or not python_file:
        yield _problem(
            project,
            line,
            "MLP311",
            f"`databricks_spark_job.python_file` is {_kind(python_file)}, not a file name; "
            "MLflow fails on it when it submits the job: write the script's path relative to "
            "the project folder, e.g. `python_file: job.py`",
        )
        return
    target, inside = spark_script(project.directory, python_file)
    if target is None:
        yield _problem(
            project,
            line,
            "MLP311",
            f"`databricks_spark_job.python_file` {python_file!r} is not a file in the project "
            "folder; MLflow fails to read it when it submits the job: add the script or fix "
            "the path (relative to the folder holding the MLproject file)",
        )
        return
    if not inside:
        yield _problem(
            project,
            line,
            "MLP312",
            f"`databricks_spark_job.python_file` {python_file!r} lies outside the project "
            "folder: MLflow reads it from this machine, but pytest-mlproject sends only the "
            "project folder, so it neither runs nor submits this job: move the script into "
            "the project",
        )
        return  # not read either: a pull request must not make CI quote files elsewhere
    pasted = pasted_code_problem(target)
    if pasted is not None:
        yield Problem(target, pasted[0], "MLP311", pasted[1])


def _kind(value: Any) -> str:
    """``a string`` / ``empty`` for messages, from :func:`spec.kind_of`."""
    if value is None or value == "":
        return "empty"
    name = kind_of(value)
    return f"an {name}" if name[:1] in "aeiou" else f"a {name}"


# --- parameters -------------------------------------------------------------------------


def parameters(project: Project) -> Iterator[Problem]:
    """MLP402-MLP405: parameter types and whether the defaults fit them."""
    for ep in project.entry_points.values():
        for param in ep.parameters.values():
            yield from _parameter(project, ep, param)


def _parameter(project: Project, ep: EntryPoint, param: Parameter) -> Iterator[Problem]:
    where = f"parameter {param.name!r} of entry point {ep.name!r}"
    if (
        param.type not in DOCUMENTED_TYPES
        and param.type not in COMMON_TYPES
        and not _LIST_TYPE.fullmatch(param.type)
    ):
        if param.default is None and param.type not in NUMERIC_TYPES and " " not in param.type:
            hint = (
                f"; if {param.type!r} is meant as the default, write "
                f"`{param.name}: {{type: string, default: {param.type}}}`"
            )
        else:
            hint = _did_you_mean(param.type, DOCUMENTED_TYPES)
        yield _problem(
            project,
            param.line,
            "MLP402",
            f"{where} has type {param.type!r}, which MLflow does not know and treats as "
            f"a string{hint}; use one of string, float, path, uri",
            ep.name,
        )
    if param.default is None:
        return
    numeric = NUMERIC_TYPES.get(param.type)
    if numeric is not None and not _fits(param.default, numeric):
        none_hint = (
            " (YAML reads a bare `None` as the string 'None'; `null` or `~` would make the "
            "parameter required)"
            if param.default == "None"
            else ""
        )
        yield _problem(
            project,
            param.line,
            "MLP403",
            f"{where} is of type {param.type} but its default {param.default!r} is not "
            f"{'an integer' if numeric is int else 'a number'}{none_hint}; MLflow does not check "
            "it and passes it through: fix the default or the type",
            ep.name,
        )
    if param.type == "uri" and not urllib.parse.urlparse(str(param.default)).scheme:
        yield _problem(
            project,
            param.line,
            "MLP405",
            f"Expected URI for parameter {param.name} but got {param.default}: the default of "
            f"a `uri` parameter needs a scheme (s3://, dbfs:/, https://, file://); "
            "MLflow refuses it when the entry point runs with its defaults",
            ep.name,
        )
    if param.type == "path":
        value = str(param.default)
        parsed = urllib.parse.urlparse(value)
        local = not parsed.scheme or (parsed.scheme == "file" and not parsed.netloc)
        if local and value and "{" not in value and "$" not in value:
            target = Path(parsed.path if parsed.scheme == "file" else value)
            if not _fs.exists(project.directory / target):
                yield _problem(
                    project,
                    param.line,
                    "MLP404",
                    f"{where} defaults to {value!r}, which does not exist in the project "
                    "folder; MLflow refuses a missing local path when the entry point runs: "
                    "add the file, fix the default, or give a value with --mlproject-param",
                    ep.name,
                )


def _fits(value: Any, numeric: type) -> bool:
    if isinstance(value, bool):
        return False
    if numeric is float:
        if isinstance(value, (int, float)):
            return True
        try:
            float(str(value))
        except ValueError:
            return False
        return True
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return False
    return re.fullmatch(r"[+-]?\d+", str(value).strip()) is not None


# --- commands ---------------------------------------------------------------------------


def commands(project: Project) -> Iterator[Problem]:
    """MLP406 and MLP501-MLP505: the command template and what it runs."""
    for ep in project.entry_points.values():
        if ep.command is None or ep.broken:
            # A broken entry point already fails; its parameters are not all known, so
            # placeholder checks would only add misleading problems.
            continue
        line = project.line_of("entry_points", ep.name, "command")
        yield from _template(project, ep, line)
        yield from _scripts(project, ep, line)


def _template(project: Project, ep: EntryPoint, line: int) -> Iterator[Problem]:
    assert ep.command is not None
    try:
        fields = list(string.Formatter().parse(ep.command))
    except ValueError as exc:
        yield _problem(
            project,
            line,
            "MLP502",
            f"the command of entry point {ep.name!r} has braces Python's str.format cannot "
            f"read ({exc}); MLflow fails on it when it runs: write literal braces twice, "
            "e.g. `awk '{{print $1}}'` or `${{HOME}}`",
            ep.name,
        )
        return
    used: set[str] = set()
    for literal, field, spec, conversion in fields:
        if field is None:
            continue
        base = re.split(r"[.\[]", field, maxsplit=1)[0]
        if base == "" or base.isdigit():
            yield _problem(
                project,
                line,
                "MLP502",
                f"the command of entry point {ep.name!r} has a positional placeholder "
                f"`{{{field}}}`; MLflow fills placeholders by name only and fails on it: "
                "name a parameter, or write `{{}}` for literal braces",
                ep.name,
            )
            continue
        used.add(base)
        if base not in ep.parameters:
            if literal.endswith("$"):
                fix = (
                    f"for the shell variable write `${{{{{base}}}}}` (braces doubled), or "
                    f"declare `{base}` under `parameters`"
                )
            elif re.fullmatch(r"[\w-]+", base):
                fix = (
                    f"declare `{base}` under `parameters`, or write `{{{{{field}}}}}` for "
                    "literal braces"
                )
            else:
                fix = f"for literal braces (awk, shell) write them doubled: `{{{{{field}}}}}`"
            yield _problem(
                project,
                line,
                "MLP501",
                f"placeholder `{{{field}}}` in entry point {ep.name!r} is not a declared "
                f"parameter; MLflow fails with KeyError: '{base}' when it runs: {fix}",
                ep.name,
            )
        elif "." in field:
            yield _problem(
                project,
                line,
                "MLP502",
                f"placeholder `{{{field}}}` in entry point {ep.name!r} reads an attribute of "
                "the value, but MLflow fills placeholders with shell-quoted strings, so the run "
                f"fails with AttributeError: write `{{{base}}}` and work on the value in your "
                "script",
                ep.name,
            )
        elif spec and not _formats_strings(spec):
            yield _problem(
                project,
                line,
                "MLP502",
                f"placeholder `{{{field}:{spec}}}` in entry point {ep.name!r} applies a format "
                "spec to the value, but MLflow formats the shell-quoted string, so every run "
                f"fails with ValueError: write `{{{base}}}` and format the value in your script",
                ep.name,
            )
        elif field != base or spec or conversion:
            yield _problem(
                project,
                line,
                "MLP503",
                f"placeholder `{{{field}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}}` in entry point {ep.name!r} formats the "
                "already shell-quoted value, which can break the quoting: write "
                f"`{{{base}}}` and format the value in your script",
                ep.name,
            )
    for name in ep.parameters:
        if name not in used:
            yield _problem(
                project,
                ep.parameters[name].line,
                "MLP406",
                f"parameter {name!r} of entry point {ep.name!r} is never used in its command, "
                f"so its value is dropped: add `{{{name}}}` to the command or remove it",
                ep.name,
            )
    # One pass over the command, not one per parameter: thousands of parameters in a long
    # command took minutes. The lookahead finds overlapping matches ('{a}'{b}').
    # Most commands quote nothing: the lookahead tries every position, so skip them.
    quoted = (
        {match.group(2) for match in _QUOTED_PLACEHOLDER.finditer(ep.command)}
        if "'" in ep.command or '"' in ep.command
        else set()
    )
    for name in sorted(used & set(ep.parameters) & quoted):
        yield _problem(
            project,
            line,
            "MLP504",
            f"placeholder `{{{name}}}` in entry point {ep.name!r} is inside quotes, but "
            "MLflow already shell-quotes every value, so a value with spaces or quotes "
            f"breaks apart: write `{{{name}}}` without quotes",
            ep.name,
        )


def _formats_strings(spec: str) -> bool:
    try:
        format("'x'", spec)
    except ValueError:
        return False
    return True


def _scripts(project: Project, ep: EntryPoint, line: int) -> Iterator[Problem]:
    assert ep.command is not None
    for script in _scripts_run_by(ep.command):
        if not _fs.exists(project.directory / script):
            yield _problem(
                project,
                line,
                "MLP505",
                f"the command of entry point {ep.name!r} runs {script!r}, which is not in "
                "the project folder; the run will fail: add the script or fix its path "
                "(relative to the folder holding the MLproject file)",
                ep.name,
            )


def _scripts_run_by(command: str) -> Iterator[str]:
    """Relative script paths that a command runs, as far as can be told without a shell."""
    for words in _shell.simple_commands(command):  # FOO=bar left out of `FOO=bar python x.py`
        if not words:
            continue
        script: str | None = None
        program = Path(words[0]).name
        if program in _INTERPRETERS or re.fullmatch(r"python3(\.\d+)?", program):
            for word in words[1:]:
                if word in ("-m", "-c", "-e"):
                    break
                if not word.startswith("-"):
                    script = word
                    break
        elif words[0].startswith("./"):
            script = words[0]
        if (
            script is not None
            and script.endswith(_SCRIPT_SUFFIXES)
            and not script.startswith(("/", "~"))
            and not re.search(r"[{}$`*?]", script)
        ):
            yield script


# --- entry points -----------------------------------------------------------------------


def main_entry_point(project: Project) -> Iterator[Problem]:
    """MLP601: ``mlflow run`` with no ``-e`` runs ``main``."""
    document = project.document
    if "main" in project.entry_points or (
        document is not None
        and "entry_points" in document
        and not isinstance(document["entry_points"], _yaml.YamlMap)
    ):
        return  # MLP203 already says what is wrong with `entry_points`
    job = project.spark_job
    if isinstance(job, _yaml.YamlMap) and job.get("python_file") is not None:
        return  # MLflow runs the file whatever the entry point; MLP311 if it cannot
    names = ", ".join(project.entry_points) or "none"
    yield _problem(
        project,
        project.line_of("entry_points"),
        "MLP601",
        f"there is no `main` entry point (entry points: {names}); `mlflow run` without "
        "`-e` fails: add `main`, or always pass `-e NAME`",
    )


RULES: tuple[Rule, ...] = (
    unknown_keys,
    environment,
    spark_job,
    parameters,
    commands,
    main_entry_point,
)


def misnamed_descriptor(path: Path) -> Problem:
    """MLP107, for a file such as ``MLproject.yaml`` that MLflow never reads."""
    return Problem(
        path,
        1,
        "MLP107",
        f"MLflow only reads a file named exactly `MLproject` (any case), so {path.name!r} "
        "is ignored and the project has no entry points: rename it to `MLproject`",
    )
