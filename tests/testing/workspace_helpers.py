"""The ``harness`` fixture for the fake workspace's tests, loaded by each test module through
``pytest_plugins``: a conftest here would clash with ``tests/conftest.py`` as a module name, and
importing from this module in a test module would bypass pytest's assertion rewriting in it.

Everything talks to the fake through ``databricks-sdk``, as a user's code would.
"""

from __future__ import annotations

import base64
import textwrap
import time
from collections.abc import Callable
from typing import Any

import pytest
from databricks.sdk.service.jobs import Run, SubmitTask
from databricks.sdk.service.workspace import ImportFormat

from pytest_mlproject.testing import FakeWorkspace

TERMINAL = ("TERMINATED", "SKIPPED", "INTERNAL_ERROR")


class Harness:
    """The fake workspace, an SDK client for it, and the steps tests repeat."""

    def __init__(self, workspace: FakeWorkspace) -> None:
        self.workspace = workspace
        self.client = workspace.client(retry_timeout_seconds=30)
        self.home = f"/Users/{workspace.user_name}"

    def put_script(self, name: str, source: str) -> str:
        """Import a file under the home folder (format AUTO); returns its /Workspace path."""
        path = f"{self.home}/project/{name}"
        self.client.workspace.mkdirs(path.rsplit("/", 1)[0])
        content = base64.b64encode(textwrap.dedent(source).encode()).decode()
        self.client.workspace.import_(
            path, content=content, format=ImportFormat.AUTO, overwrite=True
        )
        return f"/Workspace{path}"

    def submit(self, *tasks: dict[str, Any], **options: Any) -> int:
        """``runs/submit`` of these tasks (JSON, as ``task`` builds); the run id."""
        waiter = self.client.jobs.submit(
            run_name="test", tasks=[SubmitTask.from_dict(t) for t in tasks], **options
        )
        return int(waiter.bind()["run_id"])

    def wait_for_end(self, run_id: int, timeout: float = 30.0) -> Run:
        """Poll ``runs/get`` until the run ends; faster than the SDK's waiter (1 s and up)."""
        runs: list[Run] = []

        def ended() -> bool:
            runs.append(self.client.jobs.get_run(run_id))
            return self.life_cycle(runs[-1]) in TERMINAL

        self.until(ended, timeout)
        return runs[-1]

    def run(self, *tasks: dict[str, Any], **options: Any) -> Run:
        return self.wait_for_end(self.submit(*tasks, **options))

    @staticmethod
    def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
        """Poll until ``condition()`` holds, or fail: tests never rely on a fixed sleep."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"condition not met within {timeout} s")
            time.sleep(0.02)

    @staticmethod
    def life_cycle(run: Run) -> str:
        """The run's life cycle, from ``state`` or, when only that came, ``status``."""
        if run.state is not None and run.state.life_cycle_state is not None:
            return run.state.life_cycle_state.value
        assert run.status is not None
        assert run.status.state is not None
        return run.status.state.value

    @staticmethod
    def result(run: Run) -> str | None:
        if run.state is None or run.state.result_state is None:
            return None
        return run.state.result_state.value

    @staticmethod
    def termination(run: Run) -> tuple[str, str]:
        """``status.termination_details``: its code and message."""
        assert run.status is not None
        details = run.status.termination_details
        assert details is not None
        assert details.code is not None
        return details.code.value, details.message or ""

    @staticmethod
    def task_id(run: Run, index: int = 0) -> int:
        assert run.tasks
        run_id = run.tasks[index].run_id
        assert run_id is not None
        return run_id

    @staticmethod
    def task(
        python_file: str,
        *,
        key: str = "main",
        parameters: list[str] | None = None,
        env: dict[str, str] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A submit task (JSON) running a Python file on a new cluster."""
        cluster: dict[str, Any] = {"spark_version": "15.4.x-scala2.12", "num_workers": 0}
        if env:
            cluster["spark_env_vars"] = env
        task = {"python_file": python_file, "parameters": parameters or []}
        return {"task_key": key, "spark_python_task": task, "new_cluster": cluster, **extra}


@pytest.fixture
def harness(databricks_workspace: FakeWorkspace) -> Harness:
    return Harness(databricks_workspace)
