"""Parameter values and command lines, exactly as ``mlflow run`` computes them.

The contract is MLflow's ``EntryPoint.compute_command`` (``mlflow/projects/_project_spec.py``):

- a value given by the user wins over the declared default; a declared parameter with neither
  is missing, and all missing ones are reported at once, in declaration order;
- a ``path`` value naming a local file (no scheme, or ``file:`` without a host) must exist and
  becomes absolute; a remote one (``s3://``, ``dbfs:/`` ...) passes unchanged, because we never
  download anything (MLflow would);
- a ``uri`` value must have a scheme;
- every value is shell-quoted with :func:`shlex.quote`, then the template is filled with
  :meth:`str.format`, so ``{{`` and ``}}`` write literal braces;
- user values for undeclared names are appended as ``--KEY VALUE``, key and value quoted, in
  the order given.

Where MLflow refuses, we refuse with its message; where it crashes (a value that is not a
string for a ``path`` parameter, a placeholder that is not a parameter), we refuse with a
message that says what to fix.

Values also come from ``--mlproject-param`` specs (``NAME=VALUE`` or ``ENTRY:NAME=VALUE``),
the ini file and the per-project settings file; :func:`user_parameters` merges those layers.
"""

from __future__ import annotations

import os
import shlex
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mlproject.problems import MLprojectError
from pytest_mlproject.spec import EntryPoint, Parameter

__all__ = [
    "CommandError",
    "MissingParametersError",
    "ParamSpec",
    "ParameterError",
    "ResolvedParameters",
    "missing_parameters",
    "parse_param_spec",
    "parse_param_specs",
    "render_command",
    "resolve_parameters",
    "user_parameters",
]


class ParameterError(MLprojectError):
    """A parameter value MLflow would refuse, or a malformed ``--mlproject-param`` spec."""


class MissingParametersError(ParameterError):
    """Required parameters without a value; ``names`` lists them in declaration order."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names: tuple[str, ...] = tuple(names)
        quoted = ", ".join(f"'{name}'" for name in self.names)
        super().__init__(f"No value given for missing parameters: {quoted}")


class CommandError(MLprojectError):
    """The command template cannot be filled (MLflow crashes on these)."""


@dataclass(frozen=True)
class ResolvedParameters:
    """What goes into the command: shell-quoted values by name, and the ``--key value`` extras.

    ``declared`` is keyed by parameter name (in declaration order) and holds quoted values;
    ``extra`` is keyed by the quoted name of each undeclared parameter, in the order given.
    """

    declared: Mapping[str, str]
    extra: Mapping[str, str]


def missing_parameters(entry_point: EntryPoint, user_values: Mapping[str, Any]) -> list[str]:
    """The required parameters that ``user_values`` gives no value for, in declaration order."""
    return [
        name
        for name, parameter in entry_point.parameters.items()
        if parameter.required and name not in user_values
    ]


def resolve_parameters(
    entry_point: EntryPoint,
    user_values: Mapping[str, Any] | None = None,
    base_dir: Path | str | None = None,
) -> ResolvedParameters:
    """Check and quote the values for ``entry_point``, as MLflow's ``compute_parameters``.

    Relative local ``path`` values are resolved against ``base_dir`` (default: the current
    working directory, which is what MLflow uses).
    """
    values: Mapping[str, Any] = user_values if user_values is not None else {}
    missing = missing_parameters(entry_point, values)
    if missing:
        raise MissingParametersError(missing)
    base = os.path.abspath(base_dir if base_dir is not None else os.getcwd())
    declared: dict[str, str] = {}
    for name, parameter in entry_point.parameters.items():
        value = values.get(name, parameter.default)
        declared[name] = shlex.quote(str(_compute_value(parameter, value, base)))
    extra = {
        shlex.quote(str(key)): shlex.quote(str(value))
        for key, value in values.items()
        if key not in entry_point.parameters
    }
    return ResolvedParameters(declared, extra)


def render_command(
    entry_point: EntryPoint,
    user_values: Mapping[str, Any] | None = None,
    base_dir: Path | str | None = None,
) -> str:
    """The shell command ``mlflow run -e ENTRY -P ...`` runs, byte for byte.

    Raises :class:`MissingParametersError`, :class:`ParameterError` (a ``path`` or ``uri``
    value MLflow refuses) or :class:`CommandError` (a template that cannot be filled).
    """
    if entry_point.command is None:
        raise CommandError(
            f"entry point {entry_point.name!r} has no command to run; add `command:` under it"
        )
    if entry_point.spark_python_file:
        user_values = None  # MLflow ignores -P for a Spark job's python_file
    resolved = resolve_parameters(entry_point, user_values, base_dir)
    try:
        command = entry_point.command.format(**resolved.declared)
    except KeyError as exc:
        raise CommandError(
            f"cannot fill the command of entry point {entry_point.name!r}: "
            f"{{{exc.args[0]}}} is not one of its parameters (MLflow fails with KeyError); "
            "declare it under `parameters:`, or write literal braces doubled: {{ and }}"
        ) from None
    except IndexError:
        raise CommandError(
            f"cannot fill the command of entry point {entry_point.name!r}: it has an empty or "
            "numbered placeholder such as {} or {0} (MLflow fails with IndexError); name the "
            "parameter inside the braces, or write literal braces doubled: {{ and }}"
        ) from None
    except (ValueError, AttributeError, TypeError) as exc:
        raise CommandError(
            f"cannot fill the command of entry point {entry_point.name!r} with Python's "
            f"str.format ({type(exc).__name__}: {exc}); write literal braces doubled: "
            "{{ and }}"
        ) from None
    return " ".join([command, *(f"--{key} {value}" for key, value in resolved.extra.items())])


def _compute_value(parameter: Parameter, value: Any, base_dir: str) -> Any:
    if parameter.type == "path":
        return _path_value(parameter.name, value, base_dir)
    if parameter.type == "uri":
        return _uri_value(parameter.name, value)
    return value


def _urlparse(name: str, value: Any) -> urllib.parse.ParseResult:
    if not isinstance(value, str):
        raise ParameterError(
            f"Got value {value!r} for parameter {name}, of type {type(value).__name__} where "
            "a path or URI string is expected (MLflow fails on it with AttributeError); "
            "quote the value"
        )
    try:
        return urllib.parse.urlparse(value)
    except ValueError as exc:
        raise ParameterError(
            f"Got value {value} for parameter {name}, which is neither a local path nor a "
            f"valid URI ({exc})"
        ) from None


def _path_value(name: str, value: Any, base_dir: str) -> str:
    parsed = _urlparse(name, value)
    if parsed.scheme and not (parsed.scheme == "file" and not parsed.netloc):
        return str(value)  # remote: MLflow downloads it; we leave that to the command
    local = _local_path(value, parsed)
    if not local:
        # `""` and `file:` name no file; MLflow then "downloads" them as remote URIs (into
        # an empty folder). We pass them on unchanged, as every value MLflow would download.
        return str(value)
    full = os.path.join(base_dir, local)
    if not os.path.exists(full):
        raise ParameterError(
            f"Got value {value} for parameter {name}, but no such file or directory was found."
        )
    return os.path.normpath(full)


def _local_path(value: str, parsed: urllib.parse.ParseResult) -> str:
    # MLflow takes the path of a `file:` URI (prefix checked case-sensitively) and the whole
    # value otherwise, then percent-decodes it with url2pathname.
    from urllib.request import url2pathname  # imports http.client: only when needed

    return str(url2pathname(parsed.path if value.startswith("file:") else value))


def _uri_value(name: str, value: Any) -> Any:
    if isinstance(value, bytes):  # YAML's !!binary: MLflow handles bytes the same way
        scheme = _urlparse(name, value.decode("utf-8", "surrogateescape")).scheme
    elif not value:  # urlparse takes 0 and false for an empty string: no scheme
        scheme = ""
    else:
        scheme = _urlparse(name, value).scheme
    if not scheme:
        raise ParameterError(f"Expected URI for parameter {name} but got {value}")
    return value


# ---------------------------------------------------------------------------------------------
# --mlproject-param specs and the layers they come in


@dataclass(frozen=True)
class ParamSpec:
    """One ``[ENTRY:]NAME=VALUE`` value; ``entry_point is None`` means every entry point that
    declares ``name``. ``origin`` says where it came from, for messages."""

    name: str
    value: str
    entry_point: str | None = None
    origin: str = "--mlproject-param"

    @property
    def scope(self) -> str:
        return self.name if self.entry_point is None else f"{self.entry_point}:{self.name}"


def parse_param_spec(text: str, origin: str = "--mlproject-param") -> ParamSpec:
    """Read ``NAME=VALUE`` or ``ENTRY:NAME=VALUE``, split on the first ``=``.

    The entry point is what precedes the first ``:`` of the part before ``=``; an empty one
    (``:NAME=VALUE``) means every entry point, which lets a global name contain ``:``.
    """
    key, equals, value = text.partition("=")
    if not equals:
        raise ParameterError(
            f"{origin}: invalid parameter {text!r}; use NAME=VALUE (every entry point that "
            "declares NAME) or ENTRY:NAME=VALUE (one entry point)"
        )
    entry_point: str | None = None
    name = key
    if ":" in key:
        entry, _, name = key.partition(":")
        entry_point = entry or None
    if not name:
        raise ParameterError(
            f"{origin}: invalid parameter {text!r}: the name before '=' is empty; "
            "use NAME=VALUE or ENTRY:NAME=VALUE"
        )
    return ParamSpec(name=name, value=value, entry_point=entry_point, origin=origin)


def parse_param_specs(
    texts: Iterable[str], origin: str = "--mlproject-param"
) -> tuple[ParamSpec, ...]:
    """Read one layer of specs; a name given twice for the same scope is an error, as
    ``mlflow run`` refuses a repeated ``-P``."""
    specs = tuple(parse_param_spec(text, origin) for text in texts)
    check_repeats(specs)
    return specs


def check_repeats(specs: Iterable[ParamSpec]) -> None:
    seen: dict[tuple[str | None, str], ParamSpec] = {}
    for spec in specs:
        key = (spec.entry_point, spec.name)
        if key in seen:
            first = seen[key]
            raise ParameterError(
                f"Repeated parameter: '{spec.scope}' ({first.origin} gives "
                f"{first.scope}={first.value} and {spec.origin} gives "
                f"{spec.scope}={spec.value}); give each parameter once"
            )
        seen[key] = spec


def user_parameters(entry_point: EntryPoint, *layers: Iterable[ParamSpec]) -> dict[str, str]:
    """The user values for ``entry_point`` from layers of specs, highest precedence first
    (command line, ini file, settings file; declared defaults are applied later).

    A layer wins over the ones after it; within a layer, ``ENTRY:NAME`` wins over ``NAME``.
    A global ``NAME`` reaches only entry points that declare it; an entry-scoped one always
    reaches its entry point, and becomes ``--NAME VALUE`` there if undeclared. Values are
    kept in order of precedence, then as given, which is the order extras are appended in.
    """
    chosen: dict[str, str] = {}
    for layer in layers:
        specs = tuple(layer)
        scoped = [s for s in specs if s.entry_point == entry_point.name]
        unscoped = [s for s in specs if s.entry_point is None and s.name in entry_point.parameters]
        for spec in (*scoped, *unscoped):
            chosen.setdefault(spec.name, spec.value)
    return chosen
