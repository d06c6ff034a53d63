"""A fake Databricks workspace for tests: a real HTTP server on 127.0.0.1 that the official
``databricks-sdk`` talks to unchanged, that really runs submitted Python tasks, and that can be
made to misbehave (throttling, errors, dropped connections, slow or odd runs).

This package imports only the standard library; ``FakeWorkspace.client()`` imports
``databricks.sdk`` when called. The pytest fixture lives in ``pytest_mlproject.testing.fixtures``.
"""

from pytest_mlproject.testing.faults import Faults
from pytest_mlproject.testing.requestlog import LoggedRequest, RequestLog
from pytest_mlproject.testing.server import FakeWorkspace

__all__ = ["FakeWorkspace", "Faults", "LoggedRequest", "RequestLog"]
