"""Calibration plugin of ``bench_check.py``: record what a real ``pytest --mlproject`` run did.

Loaded beside the real plugin in one untimed run (``-p record_outcomes`` with ``benchmarks/``
on ``PYTHONPATH``); writes to the file named by ``MLPROJECT_BENCH_RECORD``: every collected
node id, and for each item that failed or warned, its failure text and its warnings. The
floor plugin (``floor_plugin.py``) replays exactly that, so the floor fails and warns on the
same items, with the same text, as ours.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pytest

RECORD_ENV = "MLPROJECT_BENCH_RECORD"

_nodeids: list[str] = []
_outcomes: dict[str, dict[str, Any]] = {}


def _outcome(nodeid: str) -> dict[str, Any]:
    return _outcomes.setdefault(nodeid, {"failure": None, "warnings": []})


def pytest_collection_finish(session: pytest.Session) -> None:
    _nodeids.extend(item.nodeid for item in session.items)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        _outcome(report.nodeid)["failure"] = report.longreprtext


def pytest_warning_recorded(
    warning_message: warnings.WarningMessage,
    when: str,
    nodeid: str,
    location: tuple[str, int, str] | None,
) -> None:
    if when == "runtest":
        _outcome(nodeid)["warnings"].append(
            [str(warning_message.message), warning_message.filename, warning_message.lineno]
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(RECORD_ENV)
    if not target:
        raise pytest.UsageError(f"record_outcomes: set {RECORD_ENV} to the output file")
    record = {"nodeids": _nodeids, "outcomes": _outcomes}
    Path(target).write_text(json.dumps(record), "utf-8")
