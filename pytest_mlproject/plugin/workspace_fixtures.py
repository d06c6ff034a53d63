"""The ``databricks_workspace`` fixture: the fake workspace (pytest_mlproject.testing), for tests.

The plugin imports this module in every session, so it imports the server only when a test
asks for the fixture. A session without the plugin can use it alone: ``-p
pytest_mlproject.plugin.workspace_fixtures``.
It has no test code, so pytest need not rewrite its asserts (PYTEST_DONT_REWRITE), nor
warn when a conftest's ``pytest_plugins`` names it after the plugin imported it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_mlproject.testing.server import FakeWorkspace


@pytest.fixture
def databricks_workspace() -> Iterator[FakeWorkspace]:
    """A fake Databricks workspace on ``http://127.0.0.1:<free port>``, running what is submitted.

    Yields a started :class:`~pytest_mlproject.testing.FakeWorkspace`: ``host``, ``token``,
    ``client()`` (a configured ``databricks-sdk`` ``WorkspaceClient``), ``faults``, ``log``,
    ``active_runs()``, ``run_ids()`` and ``root``. Afterwards every run still going is killed,
    with its processes, and the temporary directory is removed.
    """
    from pytest_mlproject.testing.server import FakeWorkspace

    workspace = FakeWorkspace().start()
    try:
        yield workspace
    finally:
        workspace.stop()
