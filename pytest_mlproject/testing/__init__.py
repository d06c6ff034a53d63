"""A fake Databricks workspace for tests: a real HTTP server on 127.0.0.1 that the official
``databricks-sdk`` talks to unchanged, that really runs submitted Python tasks, and that can be
made to misbehave (throttling, errors, dropped connections, slow or odd runs).

Only the standard library is imported, and only when a name below is first used, so that the
pytest plugin can import ``pytest_mlproject.plugin.workspace_fixtures`` at no cost.
``FakeWorkspace.client()`` imports ``databricks.sdk`` when called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mlproject.testing.faults import Faults
    from pytest_mlproject.testing.requestlog import LoggedRequest, RequestLog
    from pytest_mlproject.testing.server import FakeWorkspace

__all__ = ["FakeWorkspace", "Faults", "LoggedRequest", "RequestLog"]

_HOMES = {
    "FakeWorkspace": "pytest_mlproject.testing.server",
    "Faults": "pytest_mlproject.testing.faults",
    "LoggedRequest": "pytest_mlproject.testing.requestlog",
    "RequestLog": "pytest_mlproject.testing.requestlog",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
