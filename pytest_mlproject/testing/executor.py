"""Executes submitted runs: one thread per run, one process group per task.

A ``spark_python_task`` runs as ``python <file> <parameters>`` (``sys.executable``) from where the
file would be on a cluster, so it finds its companion files beside itself. Each task process
starts its own session, so cancelling or timing out kills everything it started, as tearing
down a cluster would. Whatever this module cannot execute ends FAILED, never SUCCESS.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_mlproject.testing import model
from pytest_mlproject.testing.model import Ending, Run, TaskRun
from pytest_mlproject.testing.storage import Storage, now_ms
from pytest_mlproject.testing.validation import LIBRARY_KINDS, ordered_tasks, task_type

LOG_LIMIT = 5 * 1024 * 1024
# How long a cancel, a timeout or a shutdown can wait before the run's thread acts on it.
_POLL_SECONDS = 0.05
# A cluster does not inherit the CI's environment (nor its credentials): only these, plus the
# cluster's spark_env_vars.
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ")
_STOPPED = {"CANCELED": model.CANCELED, "TIMEDOUT": model.TIMED_OUT, "SHUTDOWN": model.SHUT_DOWN}
_REFERENCE = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def _has_exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether the task process has exited, without reaping it: until it is reaped its pid (and
    so its process group id) cannot be reused, which makes the group kill that follows safe."""
    if not hasattr(os, "waitid"):  # macOS: reaped at once; a pid reused that fast is unlikely
        return process.poll() is not None
    return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def read_log(path: Path | None) -> tuple[str, bool]:
    """A task's output as ``runs/get-output`` gives it (the last 5 MB), and whether it was cut."""
    if path is None or not path.exists():
        return "", False
    with path.open("rb") as log:
        size = log.seek(0, os.SEEK_END)
        log.seek(max(0, size - LOG_LIMIT))
        return log.read().decode("utf-8", errors="replace"), size > LOG_LIMIT


def _error_from_log(path: Path | None, code: int) -> tuple[str, str | None]:
    text, _ = read_log(path)
    at = text.rfind("Traceback (most recent call last):")
    if at >= 0:
        trace = text[at:].rstrip()
        return trace.splitlines()[-1].strip(), trace
    if code < 0:
        return f"The Python process was killed by signal {-code}", None
    return f"The Python process exited with code {code}", None


class Executor:
    """Runs runs. Every change to a run happens under ``changed``, which it notifies."""

    def __init__(self, storage: Storage, changed: threading.Condition, work_dir: Path) -> None:
        self._storage = storage
        self._changed = changed
        self._work_dir = work_dir

    def start(self, run: Run) -> threading.Thread:
        thread = threading.Thread(
            target=self._main, args=(run,), name=f"fake-databricks-run-{run.run_id}", daemon=True
        )
        thread.start()
        return thread

    def _main(self, run: Run) -> None:
        try:
            self._execute(run)
        except Exception as exc:  # a bug here must end the run visibly, never as a success
            broken = Ending(
                "INTERNAL_ERROR", None, "INTERNAL_ERROR", "INTERNAL_ERROR", f"Fake failed: {exc!r}"
            )
            with self._changed:
                for task in run.tasks:
                    if task.pid is not None:
                        _kill_group(task.pid)
                    if task.ending is None:
                        self._end_task(task, broken)
                self._end_run(run, broken)

    def _execute(self, run: Run) -> None:
        outcome = run.behaviour.outcome
        if outcome == "SKIPPED":
            with self._changed:
                for task in run.tasks:
                    self._end_task(task, model.SKIPPED)
                self._end_run(run, model.SKIPPED)
            return
        by_key = {task.key: task for task in run.tasks}
        for spec in ordered_tasks([task.spec for task in run.tasks]):
            task = by_key[spec["task_key"]]
            ending = self._upstream_ending(run, task, by_key)
            if ending is None:
                ending = self._run_task(run, task)
            with self._changed:
                self._end_task(task, ending)
        with self._changed:
            self._end_run(run, self._run_ending(run))

    def _upstream_ending(
        self, run: Run, task: TaskRun, by_key: dict[str, TaskRun]
    ) -> Ending | None:
        with self._changed:
            if run.stop:
                return _STOPPED[run.stop]
        upstream = [by_key[d["task_key"]].ending for d in task.spec.get("depends_on") or []]
        results = [ending.result if ending else None for ending in upstream]
        if any(r in ("CANCELED", "UPSTREAM_CANCELED") for r in results):
            return model.UPSTREAM_CANCELED
        if any(r != "SUCCESS" for r in results):
            return model.UPSTREAM_FAILED
        return None

    def _stop_reason(self, run: Run, task_deadline: float | None) -> str | None:
        """Why the task must stop now, if it must; called with ``changed`` held."""
        now = time.monotonic()
        if run.stop is None and run.deadline is not None and now >= run.deadline:
            run.stop = "TIMEDOUT"
        if run.stop:
            return run.stop
        if task_deadline is not None and now >= task_deadline:
            return "TIMEDOUT"
        return None

    def _wait(self, run: Run, deadline: float | None, ready: Callable[[], bool]) -> str | None:
        with self._changed:
            while True:
                reason = self._stop_reason(run, deadline)
                if reason or ready():
                    return reason
                self._changed.wait(_POLL_SECONDS)

    def _run_task(self, run: Run, task: TaskRun) -> Ending:
        timeout = task.spec.get("timeout_seconds") or 0
        deadline = time.monotonic() + timeout if timeout else None
        ready_at = time.monotonic() + run.behaviour.cluster_start_seconds
        with self._changed:
            task.life_cycle = "PENDING"
            task.start_time = now_ms()
            if run.life_cycle == "TERMINATING":  # an earlier task's cleanup; the run goes on
                run.life_cycle = "RUNNING"
            self._changed.notify_all()

        def cluster_ready() -> bool:
            polled = run.polls >= run.behaviour.pending_polls
            return polled and time.monotonic() >= ready_at

        reason = self._wait(run, deadline, cluster_ready)
        if reason:
            return _STOPPED[reason]
        if run.behaviour.outcome == "INTERNAL_ERROR":
            return model.INTERNAL_ERROR
        prepared = self._prepare(run, task)
        if isinstance(prepared, Ending):
            return prepared
        return self._run_process(run, task, prepared, deadline)

    def _prepare(self, run: Run, task: TaskRun) -> Ending | tuple[list[str], dict[str, str], Path]:
        """What a cluster does before the task's code starts: install libraries, find the file."""
        for library in task.spec.get("libraries") or []:
            kind = next(k for k in LIBRARY_KINDS if k in library)
            value = library[kind]
            path = value.get("package") if kind == "pypi" else value
            if isinstance(path, str) and path.startswith(("/", "dbfs:/")):
                local = self._storage.local_path(path)
                if local is not None and not local.is_file():
                    return model.failure(
                        "LIBRARY_INSTALLATION_ERROR",
                        f'Library installation failed for library due to user error for {kind}: "'
                        f'{path}". Error messages: File {path} does not exist.',
                    )
        kind = task_type(task.spec)
        if kind != "spark_python_task":
            return model.failure(
                "INVALID_RUN_CONFIGURATION",
                f"The fake Databricks workspace cannot execute {kind}; "
                "only spark_python_task runs here.",
            )
        python_task: dict[str, Any] = task.spec[kind]
        python_file: str = python_task["python_file"]
        local = self._storage.local_path(python_file)
        if python_task.get("source") == "GIT" or (local is None and "git_source" in run.body):
            return model.failure(
                "REPOSITORY_CHECKOUT_FAILED",
                "The fake Databricks workspace cannot check out git_source repositories.",
            )
        if self._storage.is_notebook(python_file):
            return model.failure(
                "INVALID_RUN_CONFIGURATION",
                f"{python_file} is a notebook, not a Python file; import it with format AUTO "
                "or RAW (without a notebook header) to run it as a spark_python_task.",
            )
        if local is None or not local.is_file():
            return model.failure("RESOURCE_NOT_FOUND", f"Python file {python_file} does not exist.")
        parameters = [self._substitute(p, run, task) for p in python_task.get("parameters", [])]
        env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
        # Unbuffered, so what a task printed before it was killed still reaches its log.
        env["PYTHONUNBUFFERED"] = "1"
        env.update(task.spec.get("new_cluster", {}).get("spark_env_vars", {}))
        cwd = self._work_dir / "driver" / str(task.run_id)
        cwd.mkdir(parents=True)
        return [sys.executable, str(local), *parameters], env, cwd

    @staticmethod
    def _substitute(text: str, run: Run, task: TaskRun) -> str:
        """Dynamic value references Databricks fills in parameters; others are left as they are."""
        values = {
            "job.id": run.job_id,
            "job.run_id": run.run_id,
            "task.run_id": task.run_id,
            "task.name": task.key,
            "job_id": run.job_id,
            "run_id": task.run_id,
            "parent_run_id": run.run_id,
            "task_key": task.key,
        }
        return _REFERENCE.sub(lambda m: str(values.get(m.group(1), m.group(0))), text)

    def _run_process(
        self,
        run: Run,
        task: TaskRun,
        prepared: tuple[list[str], dict[str, str], Path],
        deadline: float | None,
    ) -> Ending:
        argv, env, cwd = prepared
        task.log_path = self._work_dir / "logs" / f"{task.run_id}.log"
        task.log_path.parent.mkdir(exist_ok=True)
        with task.log_path.open("wb") as log:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self._changed:
            task.pid = process.pid
            task.life_cycle = run.life_cycle = "RUNNING"
            task.running_at = now_ms()
            self._changed.notify_all()
        reason = None
        while not _has_exited(process):
            with self._changed:
                reason = self._stop_reason(run, deadline)
                if reason is None:
                    self._changed.wait(_POLL_SECONDS)
            if reason:
                break
        with self._changed:
            task.life_cycle = run.life_cycle = "TERMINATING"
            task.terminating_at = now_ms()
        # Whatever the task left running dies with it, as it would with its cluster.
        _kill_group(process.pid)
        code = process.wait()
        with self._changed:
            task.pid = None
        if reason:
            return _STOPPED[reason]
        if code == 0:
            return model.SUCCESS
        task.error, task.error_trace = _error_from_log(task.log_path, code)
        return model.WORKLOAD_FAILED

    def _end_task(self, task: TaskRun, ending: Ending) -> None:
        task.ending = ending
        task.life_cycle = ending.life_cycle
        task.end_time = now_ms()
        if task.error is None and ending.result not in ("SUCCESS", None):
            task.error = ending.message
        self._changed.notify_all()

    @staticmethod
    def _run_ending(run: Run) -> Ending:
        if run.stop:
            return _STOPPED[run.stop]
        endings = [task.ending for task in run.tasks if task.ending is not None]
        broken = [e for e in endings if e.life_cycle == "INTERNAL_ERROR"]
        if broken:
            return broken[0]
        if all(e.result == "SUCCESS" for e in endings):
            return model.SUCCESS
        upstream = ("UPSTREAM_FAILED", "UPSTREAM_CANCELED")
        skipped = any(e.result in upstream for e in endings)
        # The first task that failed by itself; those after it were skipped because of it.
        failed = [
            t for t in run.tasks if t.ending and t.ending.result not in ("SUCCESS", *upstream)
        ]
        cause = failed[0].ending
        assert cause is not None
        message = f"Task {failed[0].key} failed with message: {cause.message}"
        if skipped:
            message += " This caused all downstream tasks to get skipped."
        return Ending("TERMINATED", cause.result, cause.code, cause.kind, message)

    def _end_run(self, run: Run, ending: Ending) -> None:
        run.ending = ending
        run.life_cycle = ending.life_cycle
        run.end_time = now_ms()
        self._changed.notify_all()
