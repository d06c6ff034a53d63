"""The Jobs API of the fake workspace: one-time runs, from ``runs/submit`` to ``runs/delete``."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

from pytest_mlproject.testing.errors import ApiError, invalid
from pytest_mlproject.testing.executor import Executor, read_log
from pytest_mlproject.testing.faults import Faults
from pytest_mlproject.testing.model import (
    Leftover,
    Run,
    Site,
    TaskRun,
    render_run,
    render_task_as_run,
)
from pytest_mlproject.testing.storage import Storage, now_ms
from pytest_mlproject.testing.validation import validate_submit

MAX_LIST_LIMIT = 25
#: The answer to a serverless submit with the ``serverless_enabled`` fault knob off. Databricks'
#: wording for a workspace without serverless jobs compute is not published; this says the same.
SERVERLESS_DISABLED = (
    "Serverless compute for jobs is not enabled in this workspace. Ask a workspace admin to "
    "enable it, or run the task on a cluster."
)
_MULTI_TASK_OUTPUT = (
    "Retrieving the output of runs with multiple tasks is not supported. "
    "Please retrieve the output of each individual task run instead."
)


def _int(query: dict[str, str], name: str, default: int | None = None) -> int | None:
    if name not in query:
        return default
    try:
        return int(query[name])
    except ValueError:
        raise invalid(f"Invalid value for {name}: {query[name]!r} is not a whole number") from None


def _flag(query: dict[str, str], name: str) -> bool:
    return query.get(name, "false").lower() == "true"


class Runs:
    """Every one-time run of one fake workspace, thread-safe."""

    def __init__(
        self,
        storage: Storage,
        faults: Faults,
        work_dir: Path,
        site: Site,
        task_host: str = "databricks",
    ) -> None:
        self._faults = faults
        self._site = site
        self._changed = threading.Condition()
        self._executor = Executor(storage, self._changed, work_dir, task_host)
        self._runs: dict[int, Run] = {}
        self._task_runs: dict[int, tuple[Run, TaskRun]] = {}
        self._tokens: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        # Ids of real runs are large and shared by runs and task runs; these are small but shared.
        self._next_run_id = 1001
        self._next_job_id = 1
        self._closed = False

    def _new_run_id(self) -> int:
        self._next_run_id += 1
        return self._next_run_id - 1

    def submit(self, body: Any) -> dict[str, Any]:
        validate_submit(body)
        serverless = any("environment_key" in task for task in body["tasks"])
        if serverless and not self._faults.serverless_enabled:
            raise invalid(SERVERLESS_DISABLED)
        token = body.get("idempotency_token")
        with self._changed:
            if self._closed:
                raise ApiError(503, "TEMPORARILY_UNAVAILABLE", "The workspace is shutting down.")
            if token in self._tokens:
                run_id = self._tokens[token]
                if self._runs[run_id].deleted:
                    raise invalid(f"The run with idempotency token {token} was deleted.")
                return {"run_id": run_id}
            body = copy.deepcopy(body)
            run_id = self._new_run_id()
            tasks = [
                TaskRun(
                    self._new_run_id(), spec, "BLOCKED" if spec.get("depends_on") else "PENDING"
                )
                for spec in body["tasks"]
            ]
            timeout = body.get("timeout_seconds") or 0
            run = Run(
                run_id=run_id,
                job_id=self._next_job_id,
                body=body,
                tasks=tasks,
                behaviour=self._faults.run_behaviour(),
                start_time=now_ms(),
                deadline=time.monotonic() + timeout if timeout else None,
            )
            self._next_job_id += 1
            self._runs[run_id] = run
            self._task_runs.update((task.run_id, (run, task)) for task in tasks)
            if token is not None:
                self._tokens[token] = run_id
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(self._executor.start(run))
        return {"run_id": run_id}

    def _find(self, run_id: Any) -> tuple[Run, TaskRun | None]:
        """The run, and the task run if ``run_id`` names one; called with the lock held."""
        if run_id is None or run_id == "":
            raise invalid("Missing required field: run_id")
        try:
            number = int(run_id)
        except (TypeError, ValueError):
            raise invalid(f"Invalid run_id: {run_id!r}") from None
        run = self._runs.get(number)
        if run is not None and not run.deleted:
            return run, None
        found = self._task_runs.get(number)
        if found is not None and not found[0].deleted:
            return found
        raise invalid(f"Run {number} does not exist")

    def get(self, run_id: Any) -> dict[str, Any]:
        with self._changed:
            run, task = self._find(run_id)
            run.polls += 1
            self._changed.notify_all()
            fields = self._faults.state_fields
            if task is not None:
                return render_task_as_run(run, task, self._site, fields)
            return render_run(run, self._site, fields)

    def get_output(self, run_id: Any) -> dict[str, Any]:
        with self._changed:
            run, task = self._find(run_id)
            if task is None:
                raise invalid(_MULTI_TASK_OUTPUT)
            out: dict[str, Any] = {
                "metadata": render_task_as_run(run, task, self._site, self._faults.state_fields)
            }
            if task.ending is None:
                return out
            log_path, error, trace = task.log_path, task.error, task.error_trace
        if log_path is not None:
            out["logs"], out["logs_truncated"] = read_log(log_path)
        if error:
            out["error"] = error
        if trace:
            out["error_trace"] = trace
        return out

    def cancel(self, run_id: Any) -> None:
        with self._changed:
            run, _ = self._find(run_id)
            if not run.terminal and run.stop is None:
                run.stop = "CANCELED"
                self._changed.notify_all()

    def delete(self, run_id: Any) -> None:
        with self._changed:
            run, task = self._find(run_id)
            if task is not None:
                raise invalid(f"Run {task.run_id} is a task run; delete its run {run.run_id}.")
            if not run.terminal:
                raise invalid(
                    f"Run {run.run_id} is still active; only finished runs can be deleted."
                )
            run.deleted = True

    def list_runs(self, query: dict[str, str]) -> dict[str, Any]:
        active_only, completed_only = _flag(query, "active_only"), _flag(query, "completed_only")
        if active_only and completed_only:
            raise invalid("active_only and completed_only cannot both be true")
        limit = _int(query, "limit", 20) or MAX_LIST_LIMIT
        if not 0 < limit <= MAX_LIST_LIMIT:
            raise invalid(f"limit must be between 1 and {MAX_LIST_LIMIT}: {limit}")
        offset = _int(query, "page_token") if "page_token" in query else _int(query, "offset", 0)
        assert offset is not None
        start_from = _int(query, "start_time_from", 0) or 0
        start_to = _int(query, "start_time_to", 2**63) or 2**63
        job_id = _int(query, "job_id")
        with self._changed:
            runs = [
                r
                for r in self._runs.values()
                if not r.deleted
                and not (active_only and r.terminal)
                and not (completed_only and not r.terminal)
                and query.get("run_type", "SUBMIT_RUN") == "SUBMIT_RUN"
                and (job_id is None or r.job_id == job_id)
                and start_from <= r.start_time <= start_to
            ]
            runs.sort(key=lambda r: (r.start_time, r.run_id), reverse=True)
            expand = _flag(query, "expand_tasks")
            fields = self._faults.state_fields
            page = [
                render_run(r, self._site, fields, with_tasks=expand)
                for r in runs[offset : offset + limit]
            ]
        out: dict[str, Any] = {"has_more": offset + limit < len(runs)}
        if page:
            out["runs"] = page
        if out["has_more"]:
            out["next_page_token"] = str(offset + limit)
        if offset > 0:
            out["prev_page_token"] = str(max(0, offset - limit))
        return out

    def active(self) -> list[int]:
        with self._changed:
            return [r.run_id for r in self._runs.values() if not r.terminal]

    def leftovers(self, run_id: int) -> list[Leftover]:
        """What the run's tasks (or the task run ``run_id``) left running; raises ``KeyError``
        for an unknown id."""
        with self._changed:
            if run_id in self._runs:
                return [left for task in self._runs[run_id].tasks for left in task.leftovers]
            return list(self._task_runs[run_id][1].leftovers)

    def log_so_far(self, run_id: int) -> str:
        """Everything the task run ``run_id`` has printed yet (not cut to 5 MB)."""
        with self._changed:
            path = self._task_runs[run_id][1].log_path
        if path is None or not path.exists():
            return ""
        return path.read_bytes().decode("utf-8", errors="replace")

    def environments(self, run_id: int) -> dict[str, list[str]]:
        """The dependencies of each environment run ``run_id`` declared, by key."""
        with self._changed:
            run, _ = self._find(run_id)
            return {
                str(e["environment_key"]): list(e.get("spec", {}).get("dependencies") or [])
                for e in run.body.get("environments") or []
            }

    def ids(self) -> list[int]:
        with self._changed:
            return sorted(self._runs)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every active run (killing its processes) and wait for the run threads to end."""
        with self._changed:
            self._closed = True
            for run in self._runs.values():
                if not run.terminal and run.stop is None:
                    run.stop = "SHUTDOWN"
            self._changed.notify_all()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
