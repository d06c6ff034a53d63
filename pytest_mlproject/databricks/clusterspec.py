"""Read a Databricks cluster spec and check what Databricks (or MLflow) would refuse.

The spec is what ``mlflow run -b databricks --backend-config cluster.json`` takes: a bare
new-cluster object, or ``{"new_cluster": {...}, "libraries": [...]}``. Everything here is
pure: no client, no request. A spec that cannot be read at all is a :class:`SpecError` (the
plugin makes it one usage error at start-up); a spec that reads but would be refused gives
problems (rule codes MLP7xx) that fail items before anything is uploaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mlproject import _fs
from pytest_mlproject._yaml import NotAFileError, read_head
from pytest_mlproject.problems import MLprojectError, Problem

#: The library kinds of the Jobs API; exactly one per entry.
LIBRARY_KINDS = ("pypi", "whl", "jar", "maven", "requirements", "cran", "egg")
#: Places a cluster can read a file from. A path on the submitting machine is not one.
_REACHABLE = re.compile(r"^(/Workspace/|/Volumes/|/dbfs/|dbfs:/|[a-z][a-z0-9+.-]*://)", re.I)
#: A cluster spec is a few hundred bytes of JSON; a file far larger is not one.
MAX_SPEC_BYTES = 1024 * 1024
_LOCAL_FILE = re.compile(r"^(\.{0,2}/|~|[A-Za-z]:\\)|\.(whl|egg|jar|txt)$", re.I)


class SpecError(MLprojectError):
    """The cluster spec cannot be read: not a file, not JSON, not an object."""


@dataclass(frozen=True)
class ClusterSpec:
    """A new-cluster spec and the libraries to install on it, with where it came from."""

    new_cluster: Mapping[str, Any]
    libraries: tuple[Mapping[str, Any], ...]
    #: The file it was read from, or ``None`` for inline JSON.
    path: Path | None
    #: The raw JSON text, for locating keys in messages.
    text: str = field(repr=False, default="")
    #: The object as given, before normalising; checks look for what it should not hold.
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @property
    def origin(self) -> str:
        """How messages name the spec; one read from a file is named by the problem's path."""
        return "the cluster spec" if self.path is not None else "the inline cluster spec"

    def line_of(self, key: str) -> int:
        """The first line mentioning ``"key"`` in the JSON text (1 when inline or absent)."""
        needle = json.dumps(key)
        for number, line in enumerate(self.text.splitlines(), start=1):
            if needle in line:
                return number
        return 1


def parse(value: str | Mapping[str, Any], base: Path | None = None) -> ClusterSpec:
    """Read a spec given as a path, inline JSON, or an already parsed mapping.

    ``base`` is the folder a relative path is taken from (the current folder by default).
    """
    path: Path | None = None
    if isinstance(value, Mapping):
        raw: Any = value
        text = json.dumps(value, indent=2)
    else:
        stripped = value.strip()
        if stripped.startswith(("{", "[")):
            text = stripped
        else:
            expanded = _fs.expanded(Path(stripped))
            if expanded is None:
                raise SpecError(
                    f"cannot read the cluster spec {stripped}: no such user or home folder; "
                    "give a JSON file or inline JSON (see docs/databricks.md)"
                )
            path = expanded
            if base is not None and not path.is_absolute():
                path = base / path
            text = _read(path)
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            where = f"{path}:{exc.lineno}" if path else f"inline JSON, column {exc.colno}"
            raise SpecError(f"the cluster spec is not valid JSON ({where}: {exc.msg})") from None
    if not isinstance(raw, Mapping):
        raise SpecError(
            f"the cluster spec {path or ''} must be a JSON object: a new-cluster spec, or "
            '{"new_cluster": {...}, "libraries": [...]}'.replace("  ", " ")
        )
    if "new_cluster" in raw:
        new_cluster = raw["new_cluster"]
        libraries = raw.get("libraries")
        if libraries is None:
            libraries = []
    else:
        new_cluster, libraries = raw, []
    if not isinstance(new_cluster, Mapping):
        raise SpecError(f"`new_cluster` in the cluster spec {path or ''} must be an object")
    if not isinstance(libraries, list):
        raise SpecError(f"`libraries` in the cluster spec {path or ''} must be a list")
    return ClusterSpec(
        new_cluster=dict(new_cluster),
        libraries=tuple(lib if isinstance(lib, Mapping) else {"?": lib} for lib in libraries),
        path=path,
        text=text,
        raw=dict(raw),
    )


def _read(path: Path) -> str:
    """The spec file's text. A spec named in a settings file comes with a pull request, so
    a FIFO (which would block) or a device such as /dev/zero (which never ends) is refused
    without reading it, and so is anything larger than a spec could be."""
    try:
        data = read_head(path, MAX_SPEC_BYTES)
    except NotAFileError:
        raise SpecError(
            f"cannot read the cluster spec {path}: it is not a regular file; give a JSON "
            "file or inline JSON (see docs/databricks.md)"
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise SpecError(
            f"cannot read the cluster spec {path}: {getattr(exc, 'strerror', None) or exc}; "
            "give a JSON "
            "file or inline JSON (see docs/databricks.md)"
        ) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(
            f"the cluster spec {path} is larger than {MAX_SPEC_BYTES} bytes, which no cluster "
            "spec is; give the JSON file of the spec"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"the cluster spec {path} is not UTF-8 text") from None


def check_spec(spec: ClusterSpec, descriptor: Path) -> Iterator[Problem]:
    """Problems with the spec itself; reported on the ``::spec`` item of ``descriptor``."""

    def problem(key: str, code: str, message: str) -> Problem:
        # The problem is located in the spec file when there is one, else in the descriptor.
        where = spec.path if spec.path is not None else descriptor
        line = spec.line_of(key) if spec.path is not None else 1
        return Problem(where, line, code, message)

    raw = spec.raw
    if "existing_cluster_id" in raw or "existing_cluster_id" in spec.new_cluster:
        yield problem(
            "existing_cluster_id",
            "MLP701",
            f"{spec.origin} names an existing cluster; MLflow project runs "
            "on Databricks must provide a *new cluster* specification: replace "
            "`existing_cluster_id` with a new-cluster spec (spark_version, node_type_id, "
            "num_workers)",
        )
    if "cluster_spec" in raw:
        yield problem(
            "cluster_spec",
            "MLP703",
            f"{spec.origin} is wrapped in `cluster_spec`; write the "
            'new-cluster object itself, or {"new_cluster": {...}, "libraries": [...]}',
        )
    if "new_cluster" not in raw and "libraries" in raw:
        yield problem(
            "libraries",
            "MLP702",
            f"{spec.origin} is a bare new-cluster object with `libraries` "
            "inside it, where Databricks ignores them (MLflow nests them in new_cluster): "
            'write {"new_cluster": {...}, "libraries": [...]}',
        )
    libraries = spec.libraries
    if "new_cluster" not in raw and isinstance(raw.get("libraries"), list):
        libraries = tuple(lib for lib in raw["libraries"] if isinstance(lib, Mapping))
    for library in libraries:
        yield from _library_problems(library, problem, spec.origin)


def _library_problems(library: Mapping[str, Any], problem: Any, origin: str) -> Iterator[Problem]:
    kinds = [kind for kind in library if kind in LIBRARY_KINDS]
    if len(kinds) != 1 or len(library) != 1:
        yield problem(
            "libraries",
            "MLP704",
            f"library {json.dumps(library)} in {origin} must have exactly "
            f"one of {', '.join(LIBRARY_KINDS)}",
        )
        return
    kind = kinds[0]
    value = library[kind]
    location = value.get("package", "") if isinstance(value, Mapping) else value
    location = str(location)
    if kind in ("egg", "jar") or location.lower().endswith((".egg", ".jar")):
        yield problem(
            kind,
            "MLP704",
            f"library {json.dumps(library)} in {origin} is an "
            f"{'egg' if kind == 'egg' or location.lower().endswith('.egg') else 'jar'}; "
            "Databricks does not run MLflow projects with egg or jar libraries (eggs are not "
            "supported from Runtime 14): build a wheel and list it as `whl` or `pypi`",
        )
        return
    is_file = kind in ("whl", "requirements") or (kind == "pypi" and _LOCAL_FILE.search(location))
    if is_file and not _REACHABLE.match(location):
        yield problem(
            kind,
            "MLP705",
            f"library {location!r} in {origin} is a path on this "
            "machine, which the cluster cannot read: upload it to the workspace "
            "(/Workspace/...), a volume (/Volumes/...) or DBFS, and give that path",
        )
