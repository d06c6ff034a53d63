"""The pytest floor of ``bench_check.py``: the least a plugin can do to give our items.

Loaded instead of the real plugin::

    PYTHONPATH=benchmarks pytest -p no:mlproject -p floor_plugin -p no:cacheprovider -q DIR

It collects the same nodes as ``pytest --mlproject`` (``MLproject::spec``, and
``MLproject::<entry point>::check`` under one collector per entry point; ``MLproject.yaml``
gives a ``::spec`` alone) and only parses each descriptor with PyYAML's C loader: no line
numbers, no limits, no rules, no environment files, no markers.

Without ``MLPROJECT_FLOOR_OUTCOMES`` every item passes. With it, the file written by
``record_outcomes.py`` in a real run says which items fail (with which text) and which warn
(with which warnings), and the floor does exactly that, so the two runs report the same
failures and warnings.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

OUTCOMES_ENV = "MLPROJECT_FLOOR_OUTCOMES"
DESCRIPTOR = "mlproject"
MISNAMED = frozenset({"mlproject.yaml", "mlproject.yml"})
# The same node names as pytest_mlproject.plugin.nodes.node_name, so the node ids match.
_ESCAPES = {"%": "%25", ":": "%3A", "[": "%5B", "]": "%5D", "\n": "%0A", "\r": "%0D"}

Outcomes = dict[str, dict[str, Any]]
OUTCOMES_KEY = pytest.StashKey[Outcomes]()


class FloorWarning(UserWarning):
    """Stands in for ``MLprojectWarning``."""


class FloorFailure(Exception):
    """Raised by an item that ours fails; shown as our failure text."""


def node_name(entry_point: str) -> str:
    if entry_point == "spec":
        return "%73pec"
    if entry_point == "":
        return "%"
    return "".join(_ESCAPES.get(char, char) for char in entry_point)


def pytest_configure(config: pytest.Config) -> None:
    path = os.environ.get(OUTCOMES_ENV)
    outcomes: Outcomes = {}
    if path:
        outcomes = json.loads(Path(path).read_text("utf-8"))["outcomes"]
    config.stash[OUTCOMES_KEY] = outcomes


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    name = file_path.name.lower()
    if name == DESCRIPTOR:
        return DescriptorFile.from_parent(parent, path=file_path)
    if name in MISNAMED:
        return MisnamedFile.from_parent(parent, path=file_path)
    return None


def entry_point_names(data: bytes) -> list[str]:
    try:
        document = yaml.load(data, Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        return []
    if not isinstance(document, dict):
        return []
    entry_points = document.get("entry_points")
    if not isinstance(entry_points, dict):
        return []
    return [str(name) for name in entry_points]


class DescriptorFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        names = entry_point_names(self.path.read_bytes())
        yield FloorItem.from_parent(self, name="spec")
        for name in names:
            yield EntryPointNode.from_parent(self, name=node_name(name))


class MisnamedFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        yield FloorItem.from_parent(self, name="spec")


class EntryPointNode(pytest.Collector):
    def collect(self) -> Iterator[pytest.Item]:
        yield FloorItem.from_parent(self, name="check")


class FloorItem(pytest.Item):
    def runtest(self) -> None:
        outcome = self.config.stash[OUTCOMES_KEY].get(self.nodeid)
        if outcome is None:
            return
        for message, filename, lineno in outcome["warnings"]:
            warnings.warn_explicit(FloorWarning(message), FloorWarning, filename, lineno)
        if outcome["failure"] is not None:
            raise FloorFailure(outcome["failure"])

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str:
        if isinstance(excinfo.value, FloorFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, self.nodeid
