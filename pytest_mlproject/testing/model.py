"""One-time runs and their task runs, and how Databricks renders them in JSON.

Both run-state shapes are rendered: ``state`` (``life_cycle_state`` / ``result_state``, marked
deprecated but what the SDK's own waiter reads) and ``status`` (``state`` plus
``termination_details``). A fault knob drops either, because real servers differ.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mlproject.testing.faults import RunBehaviour, StateFields


@dataclass(frozen=True)
class Ending:
    """How a run or task run ended: its ``state`` and its ``status.termination_details``."""

    life_cycle: str
    result: str | None
    code: str
    kind: str
    message: str


SUCCESS = Ending("TERMINATED", "SUCCESS", "SUCCESS", "SUCCESS", "")
WORKLOAD_FAILED = Ending(
    "TERMINATED",
    "FAILED",
    "RUN_EXECUTION_ERROR",
    "CLIENT_ERROR",
    "Workload failed, see run output for details",
)
CANCELED = Ending(
    "TERMINATED", "CANCELED", "USER_CANCELED", "SUCCESS", "Run was canceled by the user."
)
TIMED_OUT = Ending(
    "TERMINATED", "TIMEDOUT", "CANCELED", "CLIENT_ERROR", "Run timed out: timeout_seconds exceeded."
)
SKIPPED = Ending("SKIPPED", None, "SKIPPED", "SUCCESS", "Run was skipped.")
INTERNAL_ERROR = Ending(
    "INTERNAL_ERROR",
    None,
    "INTERNAL_ERROR",
    "INTERNAL_ERROR",
    "Run encountered an unexpected error in the Databricks platform.",
)
SHUT_DOWN = Ending(
    "INTERNAL_ERROR",
    None,
    "INTERNAL_ERROR",
    "INTERNAL_ERROR",
    "The fake Databricks workspace was stopped while the run was active.",
)
UPSTREAM_FAILED = Ending(
    "TERMINATED", "UPSTREAM_FAILED", "SKIPPED", "CLIENT_ERROR", "Upstream task(s) failed."
)
UPSTREAM_CANCELED = Ending(
    "TERMINATED", "UPSTREAM_CANCELED", "SKIPPED", "CLIENT_ERROR", "Upstream task(s) canceled."
)


@dataclass(frozen=True)
class Leftover:
    """A process of a task run still alive after the task ended, which the fake then killed."""

    pid: int
    #: Its command line, as far as the system tells (empty when it does not).
    command: str


def failure(code: str, message: str) -> Ending:
    return Ending("TERMINATED", "FAILED", code, "CLIENT_ERROR", message)


@dataclass
class TaskRun:
    """One task of a run; Databricks gives it its own run id. Times are epoch milliseconds."""

    run_id: int
    spec: dict[str, Any]
    life_cycle: str  # PENDING, or BLOCKED while it waits for the tasks it depends on
    ending: Ending | None = None
    start_time: int = 0
    running_at: int = 0
    terminating_at: int = 0
    end_time: int = 0
    pid: int | None = None
    log_path: Path | None = None
    error: str | None = None
    error_trace: str | None = None
    leftovers: list[Leftover] = field(default_factory=list)

    @property
    def key(self) -> str:
        return str(self.spec["task_key"])


@dataclass
class Run:
    run_id: int
    job_id: int
    body: dict[str, Any]
    tasks: list[TaskRun]
    behaviour: RunBehaviour
    start_time: int
    deadline: float | None
    life_cycle: str = "PENDING"
    ending: Ending | None = None
    end_time: int = 0
    polls: int = 0
    # Why the run is being stopped: "CANCELED", "TIMEDOUT" or "SHUTDOWN"; set by any thread,
    # acted on by the run's own thread.
    stop: str | None = None
    deleted: bool = False

    @property
    def terminal(self) -> bool:
        return self.ending is not None


def _state_fields(life_cycle: str, ending: Ending | None, fields: StateFields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if fields in ("both", "state"):
        state: dict[str, Any] = {
            "life_cycle_state": ending.life_cycle if ending else life_cycle,
            "state_message": ending.message if ending else "",
            "user_cancelled_or_timedout": bool(
                ending and ending.result in ("CANCELED", "TIMEDOUT")
            ),
        }
        if ending and ending.result:
            state["result_state"] = ending.result
        out["state"] = state
    if fields in ("both", "status"):
        if ending is None:
            out["status"] = {"state": life_cycle}
        else:
            details = {"code": ending.code, "type": ending.kind, "message": ending.message}
            out["status"] = {"state": "TERMINATED", "termination_details": details}
    return out


@dataclass(frozen=True)
class Site:
    """What every rendered run needs from its workspace."""

    host: str
    workspace_id: int
    user: str

    def page_url(self, job_id: int, run_id: int) -> str:
        return f"{self.host}/?o={self.workspace_id}#job/{job_id}/run/{run_id}"


def render_task(run: Run, task: TaskRun, site: Site, fields: StateFields) -> dict[str, Any]:
    out = copy.deepcopy(task.spec)
    out.update(
        run_id=task.run_id,
        attempt_number=0,
        start_time=task.start_time,
        setup_duration=task.running_at - task.start_time if task.running_at else 0,
        execution_duration=(
            task.terminating_at - task.running_at if task.terminating_at and task.running_at else 0
        ),
        cleanup_duration=task.end_time - task.terminating_at if task.terminating_at else 0,
        end_time=task.end_time,
        queue_duration=0,
        run_page_url=site.page_url(run.job_id, task.run_id),
    )
    if task.running_at and ("new_cluster" in task.spec or "existing_cluster_id" in task.spec):
        cluster_id = task.spec.get("existing_cluster_id") or f"0000-000000-fake{task.run_id}"
        out["cluster_instance"] = {"cluster_id": cluster_id}
    out.update(_state_fields(task.life_cycle, task.ending, fields))
    return out


def render_run(
    run: Run, site: Site, fields: StateFields, *, with_tasks: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "job_id": run.job_id,
        "run_id": run.run_id,
        "number_in_job": run.run_id,
        "original_attempt_run_id": run.run_id,
        "creator_user_name": site.user,
        "run_name": run.body.get("run_name") or "Untitled",
        "run_type": "SUBMIT_RUN",
        "trigger": "ONE_TIME",
        "format": "MULTI_TASK",
        "attempt_number": 0,
        "start_time": run.start_time,
        "setup_duration": 0,
        "execution_duration": 0,
        "cleanup_duration": 0,
        "end_time": run.end_time,
        "run_duration": run.end_time - run.start_time if run.end_time else 0,
        "queue_duration": 0,
        "run_page_url": site.page_url(run.job_id, run.run_id),
        "has_more": False,
    }
    if with_tasks:
        out["tasks"] = [render_task(run, t, site, fields) for t in run.tasks]
    for key in ("git_source", "timeout_seconds", "environments"):
        if key in run.body:
            out[key] = copy.deepcopy(run.body[key])
    out.update(_state_fields(run.life_cycle, run.ending, fields))
    return out


def render_task_as_run(run: Run, task: TaskRun, site: Site, fields: StateFields) -> dict[str, Any]:
    """A task run asked for by its own id (``runs/get``, ``get-output`` metadata)."""
    out = render_task(run, task, site, fields)
    out.update(
        job_id=run.job_id,
        job_run_id=run.run_id,
        creator_user_name=site.user,
        run_name=run.body.get("run_name") or "Untitled",
        run_type="SUBMIT_RUN",
    )
    return out
