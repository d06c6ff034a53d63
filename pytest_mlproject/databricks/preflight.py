"""What Databricks would refuse, found before any client is built or request made.

Used twice: by ``--databricks`` items before they submit anything, and by plain
``pytest --mlproject`` whenever a cluster spec is configured, so a pull request learns about
these problems with no credentials.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mlproject import _fs, _yaml, checks, commands, envs, rsource
from pytest_mlproject.databricks import serverless as _serverless
from pytest_mlproject.databricks.archive import excluded
from pytest_mlproject.databricks.clusterspec import ClusterSpec, check_spec
from pytest_mlproject.problems import MLprojectError, Problem
from pytest_mlproject.spec import EntryPoint, Project, spark_libraries

COMMUNITY_EDITION = "community.cloud.databricks.com"
#: pip options and forms that name something on this machine or change pip itself.
_UNUSABLE = re.compile(
    r"^(-e\b|--editable\b|-c\b|--constraint\b|-f\b|--find-links\b|-i\b|--index-url\b|"
    r"--extra-index-url\b|--trusted-host\b|--no-index\b|--pre\b|\.{0,2}/|~|file:)"
)


@dataclass(frozen=True)
class Dependencies:
    """The project's Python dependencies as cluster libraries."""

    #: ``{"pypi": {"package": ...}}`` entries, in the order the environment file lists them.
    packages: tuple[str, ...] = ()
    #: Requirements files (``-r file``) to upload and install as ``requirements`` libraries.
    requirement_files: tuple[Path, ...] = ()
    problems: tuple[Problem, ...] = field(default=())


def dependencies(project: Project) -> Dependencies:
    """Read python_env / conda dependencies; what cannot be a cluster library is a problem.

    The dependencies are those a local run installs (:func:`pytest_mlproject.envs.derive`,
    MLflow's reading), and ``-r FILE`` resolves from the project folder, as MLflow resolves
    it. A Databricks Spark job project (``databricks_spark_job``) has no environment file:
    its ``python_libraries`` become PyPI libraries, as MLflow makes them (MLP311 checks them).
    """
    job = project.spark_job
    if isinstance(job, _yaml.YamlMap):
        libraries = spark_libraries(job.get("python_libraries", [])) or []
        return Dependencies(tuple(name.strip() for name in libraries if name.strip()))
    if project.env_file is None or not _fs.is_file(project.env_file):
        return Dependencies()
    try:
        declared = envs.derive(project)
    except envs.EnvFileError:
        return Dependencies()  # MLP308 / MLP309 report a file that cannot be read
    if declared is None:
        return Dependencies()
    env_file = declared.file
    problems = [
        Problem(
            env_file,
            entry.line,
            "MLP710",
            f"conda package {entry.text!r} is not installed on Databricks, whose clusters "
            "have no conda; the runtime may already have it, otherwise list it under `pip:` "
            "with its PyPI name",
        )
        for entry in declared.dropped
        if re.split(r"[=<>!\s]", entry.text.strip(), maxsplit=1)[0].split("::")[-1]
        not in ("python", "pip")
    ]
    packages: list[str] = []
    files: list[Path] = []
    root = project.directory.resolve()
    for entry in declared.dependencies:
        text, line = entry.text.strip(), entry.line
        named = envs.requirement_file(text, project.directory)
        if named is not None and envs.is_requirements_option(text):
            target = _fs.resolved(named)
            if target is None or not _fs.is_file(target) or root not in target.parents:
                problems.append(
                    _unusable(env_file, line, text, "the file is missing or outside the project")
                )
            elif excluded(target.relative_to(root).as_posix()):
                # It is uploaded as it is: a file the archive leaves out (.env, a key, a
                # file under .git) must not reach the workspace this way either.
                problems.append(
                    _unusable(
                        env_file,
                        line,
                        text,
                        "pytest-mlproject never uploads that file, as it may hold credentials "
                        "or is not project content: list the requirements in a file of their "
                        "own, such as requirements.txt",
                    )
                )
            else:
                files.append(target)
        elif _UNUSABLE.match(text):
            problems.append(
                _unusable(
                    env_file,
                    line,
                    text,
                    "it names something on this machine or changes how pip installs, which a "
                    "cluster library cannot do: publish the package, or put the options in "
                    "the cluster spec's libraries",
                )
            )
        else:
            packages.append(text)
    return Dependencies(tuple(packages), tuple(files), tuple(problems))


def _unusable(env_file: Path, line: int, entry: str, why: str) -> Problem:
    return Problem(
        env_file, line, "MLP709", f"dependency {entry!r} cannot be a cluster library: {why}"
    )


def project_problems(
    project: Project, spec: ClusterSpec, host: str | None = None
) -> Iterator[Problem]:
    """Problems about the whole project on Databricks (they go on ``::spec``)."""
    assert project.descriptor is not None
    yield from check_spec(spec, project.descriptor)
    if project.env_type == "docker_env":
        yield _docker_problem(project)
    yield from dependencies(project).problems
    if host and COMMUNITY_EDITION in host:
        yield Problem(
            project.descriptor,
            1,
            "MLP708",
            f"the workspace {host} is Databricks Community Edition, which cannot run MLflow "
            "projects as jobs: use a full workspace",
        )


def _docker_problem(project: Project) -> Problem:
    assert project.descriptor is not None
    return Problem(
        project.descriptor,
        project.line_of("docker_env"),
        "MLP706",
        "Running docker-based projects on Databricks is not yet supported: use "
        "python_env (or conda_env) for the Databricks runs, or skip them in "
        "pytest-mlproject.yaml (databricks: skip: ...)",
    )


def serverless_project_problems(
    project: Project, serverless: _serverless.Serverless, host: str | None = None
) -> Iterator[Problem]:
    """What serverless jobs compute would refuse about the whole project (on ``::spec``)."""
    assert project.descriptor is not None
    if project.env_type == "docker_env":
        yield _docker_problem(project)
    yield from dependencies(project).problems
    yield from _serverless.dependency_problems(serverless)
    python = _serverless.python_problem(project, serverless)
    if python is not None:
        yield python
    if host and COMMUNITY_EDITION in host:
        yield Problem(
            project.descriptor,
            1,
            "MLP708",
            f"the workspace {host} is Databricks Community Edition, which cannot run MLflow "
            "projects as jobs: use a full workspace",
        )


def serverless_entry_problems(project: Project, entry: EntryPoint) -> Iterator[Problem]:
    """An entry point that runs R (MLP713), then what :func:`entry_problems` finds."""
    r = _serverless.r_problem(project, entry)
    if r is not None:
        yield r
    for problem in entry_problems(project, entry):
        if r is None or problem.code != "MLP712":  # SparkR does not matter without R
            yield problem


def serverless_dependencies(
    project: Project,
    serverless: _serverless.Serverless,
    deps: Dependencies,
    requirement_paths: Mapping[Path, str],
) -> list[str]:
    """``environments[].spec.dependencies``: the project's requirements, its requirements
    files as ``-r NAME`` (placed in the upload folder on submit), the settings' lines, and
    MLflow's client when none of them names MLflow."""
    lines = [*deps.packages, *(f"-r {requirement_paths[p]}" for p in deps.requirement_files)]
    lines += [text for text, _ in serverless.dependencies if text not in lines]
    named = list(deps.packages) + [text for text, _ in serverless.dependencies]
    for path in deps.requirement_files:
        try:
            named += path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
    if not _serverless.names_mlflow(named):
        lines.append(_serverless.MLFLOW_CLIENT)
    return lines


def outside_path(project: Project, entry: EntryPoint, name: str, value: Any) -> str | None:
    """Why a ``path`` value cannot travel to the cluster, or ``None`` if it can.

    Local values must name something inside the project folder (they travel in the archive);
    remote ones (``dbfs:/``, ``s3://``...) pass as they are.
    """
    text = str(value)
    parsed = urllib.parse.urlparse(text)
    if text == "" or (parsed.scheme and not (parsed.scheme == "file" and not parsed.netloc)):
        return None
    local = _fs.expanded(Path(parsed.path if parsed.scheme == "file" else text))
    target = None if local is None else _fs.resolved(project.directory / local)
    root = project.directory.resolve()
    if target is not None and (target == root or root in target.parents):
        return None
    return (
        f"`path` parameter {name!r} of entry point {entry.name!r} is {text!r}, outside the "
        "project folder, so it does not exist on the cluster: put the file in the project, "
        "or give a workspace, volume or dbfs:/ location"
    )


def entry_problems(project: Project, entry: EntryPoint) -> Iterator[Problem]:
    """``path`` defaults that do not travel, Spark job commands MLflow refuses, and R scripts
    that load SparkR without installing it (they go on the entry point's ``::check``)."""
    assert project.descriptor is not None
    spark = project.spark_job is not None and not entry.spark_python_file
    if spark and isinstance(entry.command, str):
        problem = _spark_command_problem(project, entry)
        if problem is not None:
            yield Problem(
                project.descriptor,
                project.line_of("entry_points", entry.name, "command"),
                "MLP711",
                problem,
                entry.name,
            )
    for parameter in entry.parameters.values():
        if parameter.type != "path" or parameter.default is None:
            continue
        reason = outside_path(project, entry, parameter.name, parameter.default)
        if reason is not None:
            yield Problem(project.descriptor, parameter.line, "MLP707", reason, entry.name)
    sparkr = rsource.sparkr_problem(project, entry)
    if sparkr is not None:
        yield sparkr


def _spark_command_problem(project: Project, entry: EntryPoint) -> str | None:
    """What MLflow refuses or fails on in a Spark job entry point: it fills the command in,
    splits it on single spaces, and submits the second word as the job's Python file (read
    from the project) with the rest as its arguments."""
    assert entry.command is not None
    try:
        rendered = commands.render_command(entry, {}, base_dir=project.directory)
    except MLprojectError:
        # A required value is missing (or the template is broken: MLP5xx says so). Judge the
        # template, unless a placeholder stands where the interpreter or the script goes.
        rendered = entry.command
        if "{" in " ".join(rendered.split(" ")[:2]):
            return None
    words = rendered.split(" ")
    if words[0] != "python":
        return (
            "Databricks spark job only supports 'python' command in the entry point "
            f"configuration. (the command starts with {words[0]!r}): start it with `python "
            "SCRIPT.py`, a single space apart, or remove `databricks_spark_job` to run any "
            "command"
        )
    script = words[1] if len(words) > 1 else ""
    if not script or not _fs.is_file(project.directory / script):
        return (
            "MLflow submits the word after `python` as the Spark job's Python file, and "
            f"{script!r} is not a file in the project, so the submission fails: write "
            "`python SCRIPT.py ARGS...` on one line, single spaces apart (no `-m`, no "
            "block scalar ending in a line break)"
        )
    pasted = checks.pasted_code_problem(project.directory / script)
    if pasted is not None:
        return f"{script}:{pasted[0]}: {pasted[1]}"
    return None


def libraries(
    spec: ClusterSpec, deps: Dependencies, requirement_paths: Mapping[Path, str]
) -> list[Any]:
    """The spec's libraries, then the project's dependencies not already among them."""
    merged: list[Any] = [dict(library) for library in spec.libraries]
    listed = {
        str(library["pypi"].get("package"))
        for library in spec.libraries
        if isinstance(library.get("pypi"), Mapping)
    }
    merged.extend({"pypi": {"package": p}} for p in deps.packages if p not in listed)
    merged.extend({"requirements": requirement_paths[path]} for path in deps.requirement_files)
    return merged
