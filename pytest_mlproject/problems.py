"""Problems found in a project, the rule catalogue, and the one exception type.

A user's mistake is a :class:`Problem`, never an exception: ``check`` returns problems. Only
``load``, asked for a project it cannot build, raises :class:`MLprojectError`, carrying them.
Every rule has a stable code; ``docs/rules.md`` has a page per code with a bad and a fixed
example, and a test keeps the two in step.
"""

from __future__ import annotations

import contextlib
import enum
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    severity: Severity
    summary: str


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a project, located at ``path:line``.

    ``entry_point`` names the entry point the problem belongs to, or is ``None`` for a
    problem about the descriptor as a whole; the pytest layer reports the first kind on the
    entry point's ``::check`` item and the second on ``::spec``.
    """

    path: Path
    line: int
    code: str
    message: str
    entry_point: str | None = None

    @property
    def rule(self) -> Rule:
        return RULES[self.code]

    @property
    def severity(self) -> Severity:
        return RULES[self.code].severity

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def format(self, relative_to: Path | None = None) -> str:
        """``path:line: CODE message``, the form editors and CI annotations understand."""
        path = self.path
        if relative_to is not None:
            with contextlib.suppress(ValueError):
                path = path.relative_to(relative_to)
        return f"{path}:{self.line}: {self.code} {self.message}"

    def warn(self) -> None:
        """Issue it as an :class:`MLprojectWarning` at its file and line, through the warning
        filters in force (which may raise it, or hide it)."""
        warnings.warn_explicit(
            MLprojectWarning(f"{self.code} {self.message}"),
            MLprojectWarning,
            filename=str(self.path),
            lineno=self.line,
        )


class MLprojectError(Exception):
    """The root of every exception this package raises on purpose.

    Raised by ``load`` when a descriptor cannot be read into a project at all; ``problems``
    says why, each with file and line.
    """

    def __init__(self, message: str, problems: Iterable[Problem] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[Problem, ...] = tuple(problems)

    def __str__(self) -> str:
        head = super().__str__()
        if not self.problems:
            return head
        return "\n".join([head, *(p.format() for p in self.problems)])


E, W = Severity.ERROR, Severity.WARNING

_CATALOGUE = (
    # Reading the file: these stop everything else.
    Rule("MLP101", "yaml-syntax", E, "The descriptor is not valid YAML."),
    Rule("MLP102", "file-too-large", E, "The descriptor is larger than the size limit."),
    Rule("MLP103", "nesting-too-deep", E, "The YAML nests deeper than the depth limit."),
    Rule("MLP104", "too-many-aliases", E, "The YAML uses more aliases than the alias limit."),
    Rule("MLP105", "not-text", E, "The descriptor is not UTF-8 text."),
    Rule("MLP106", "unreadable", E, "The descriptor cannot be read."),
    Rule("MLP107", "misnamed-descriptor", W, "A file named like MLproject that MLflow ignores."),
    # The shape of the descriptor: each of these makes MLflow crash with AttributeError.
    Rule("MLP201", "empty-descriptor", E, "The descriptor holds no YAML document."),
    Rule("MLP202", "not-a-mapping", E, "The top level of the descriptor is not a mapping."),
    Rule("MLP203", "entry-points-not-mapping", E, "`entry_points` is not a mapping."),
    Rule("MLP204", "entry-point-not-mapping", E, "An entry point's body is not a mapping."),
    Rule("MLP205", "missing-command", E, "An entry point has no `command`."),
    Rule("MLP206", "command-not-string", E, "An entry point's `command` is not a string."),
    Rule("MLP207", "parameters-not-mapping", E, "`parameters` is not a mapping."),
    Rule("MLP208", "bad-parameter", E, "A parameter is neither a type name nor a mapping."),
    Rule("MLP209", "unknown-key", W, "A key MLflow does not read, so it has no effect."),
    Rule("MLP210", "duplicate-key", W, "A key given twice: only the last one counts."),
    # Environments.
    Rule("MLP301", "multiple-environments", E, "More than one environment key."),
    Rule("MLP302", "env-file-missing", E, "A referenced environment file does not exist."),
    Rule("MLP303", "env-path-not-string", E, "An environment file reference is not a string."),
    Rule("MLP304", "docker-env-not-mapping", E, "`docker_env` is not a mapping."),
    Rule("MLP305", "docker-no-image", E, "`docker_env` has no `image`."),
    Rule("MLP306", "docker-bad-volumes", E, "`docker_env.volumes` is not a list of strings."),
    Rule("MLP307", "docker-bad-environment", E, "`docker_env.environment` is malformed."),
    Rule("MLP308", "bad-python-env", E, "The python_env file is malformed."),
    Rule("MLP309", "bad-conda-env", E, "The conda environment file is malformed."),
    Rule("MLP310", "env-file-outside", W, "An environment file lies outside the project."),
    Rule("MLP311", "bad-spark-job", E, "A `databricks_spark_job` MLflow refuses or crashes on."),
    Rule("MLP312", "spark-file-outside", W, "A Spark job's `python_file` outside the project."),
    # Parameters.
    Rule("MLP401", "parameter-key-typo", W, "A parameter key that is a typo for `type`/`default`."),
    Rule("MLP402", "unknown-type", W, "A parameter type MLflow does not document."),
    Rule("MLP403", "default-type-mismatch", W, "A default that does not fit its numeric type."),
    Rule("MLP404", "path-default-missing", W, "A `path` default names a missing file."),
    Rule("MLP405", "uri-default-no-scheme", E, "A `uri` default has no scheme."),
    Rule("MLP406", "unused-parameter", W, "A declared parameter the command never uses."),
    # Commands.
    Rule("MLP501", "undeclared-placeholder", E, "A `{placeholder}` that is not a parameter."),
    Rule("MLP502", "bad-braces", E, "Braces that Python's str.format cannot read."),
    Rule("MLP503", "format-spec", W, "A placeholder with a format spec or conversion."),
    Rule("MLP504", "quoted-placeholder", W, "A placeholder inside quotes: values are quoted."),
    Rule("MLP505", "script-missing", W, "The command runs a script that is not there."),
    # Entry points.
    Rule("MLP601", "no-main", W, "No `main` entry point, which `mlflow run` runs by default."),
    # Databricks: checked whenever a cluster spec is configured, before any request.
    Rule("MLP701", "existing-cluster", E, "The cluster spec names an existing cluster."),
    Rule("MLP702", "nested-libraries", E, "`libraries` inside a bare new-cluster spec."),
    Rule("MLP703", "cluster-spec-wrapper", E, "The spec is wrapped in `cluster_spec`."),
    Rule("MLP704", "unsupported-library", E, "An egg or jar library, or a malformed one."),
    Rule("MLP705", "unreachable-library", E, "A library path the cluster cannot read."),
    Rule("MLP706", "docker-on-databricks", E, "A docker_env project, which Databricks refuses."),
    Rule("MLP707", "path-outside-project", E, "A `path` value that does not travel."),
    Rule("MLP708", "community-edition", E, "Community Edition cannot run projects."),
    Rule("MLP709", "unusable-dependency", E, "A dependency that cannot be a cluster library."),
    Rule("MLP710", "conda-package", W, "A conda package, which a cluster does not install."),
    Rule("MLP711", "spark-job-command", E, "A Spark job entry point not run by `python`."),
    Rule("MLP712", "sparkr-not-installed", W, "An R script loads SparkR before installing it."),
    Rule("MLP713", "serverless-r", E, "An R entry point on serverless compute, which has no R."),
    Rule("MLP714", "serverless-maven", E, "A Maven library on serverless compute."),
    Rule("MLP715", "serverless-python", W, "A Python no serverless environment version runs."),
    # The per-project settings file (pytest-mlproject.yaml), read by pytest-mlproject only.
    Rule("MLP801", "settings-unreadable", E, "The settings file cannot be read as YAML."),
    Rule("MLP802", "settings-unknown-key", W, "A settings key pytest-mlproject does not read."),
    Rule("MLP803", "settings-bad-value", E, "A settings value of the wrong shape or type."),
    Rule("MLP804", "settings-unknown-entry-point", W, "Settings for an entry point not there."),
    Rule("MLP805", "settings-unused-parameter", W, "A settings parameter no entry point takes."),
    Rule("MLP806", "settings-misnamed", W, "A file named like the settings file, but ignored."),
    Rule("MLP807", "settings-cluster-field", E, "A cluster field beside `serverless: true`."),
    Rule("MLP808", "settings-init-scripts", E, "Init scripts beside `serverless: true`."),
)

RULES: dict[str, Rule] = {rule.code: rule for rule in _CATALOGUE}


class MLprojectWarning(UserWarning):
    """A warning-level problem. ``-W error::pytest_mlproject.MLprojectWarning`` fails on it."""
