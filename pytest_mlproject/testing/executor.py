"""Executes submitted runs: one thread per run, one host process per task.

With ``task_host="databricks"`` (the default) a ``spark_python_task`` file runs as a Databricks
driver runs it (see :mod:`pytest_mlproject.testing.host`): read and ``exec``-ed in a Python host,
from a folder that is not the file's, without ``__file__``, any ``SystemExit`` a failure. A cancel
or a timeout interrupts the host alone (SIGINT: ``KeyboardInterrupt`` in the task's code) and
kills it after a grace period. With ``task_host="process"`` the file runs as ``python <file>
<parameters>`` from its own folder, and a cancel kills its process group at once.

Either way, every process of the task still alive once the host is gone is a leftover: recorded
for :meth:`FakeWorkspace.leftovers`, then killed, as tearing down a cluster would. The fake's
own clean-up must not hide a task that leaks processes. Whatever this module cannot execute
ends FAILED, never SUCCESS.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_mlproject.testing import model
from pytest_mlproject.testing.errors import ApiError
from pytest_mlproject.testing.model import Ending, Leftover, Run, TaskRun
from pytest_mlproject.testing.storage import Storage, now_ms
from pytest_mlproject.testing.validation import LIBRARY_KINDS, ordered_tasks, task_type

LOG_LIMIT = 5 * 1024 * 1024
# How long a cancel, a timeout or a shutdown can wait before the run's thread acts on it.
_POLL_SECONDS = 0.05
# A cluster does not inherit the CI's environment (nor its credentials): only these, plus the
# cluster's spark_env_vars.
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ")
#: How long a cancelled or timed-out host has between SIGINT and SIGKILL.
STOP_GRACE_SECONDS = 10.0
#: Set in each task's environment, so that the task's processes can be found after it, even
#: those that left its session. Its value is unique to one task run of one fake workspace.
_MARKER = "FAKE_DATABRICKS_TASK_RUN"
TASK_HOSTS = ("databricks", "process")
_CLUSTER_PATHS = ("/Workspace/", "/Volumes/", "/dbfs/", "dbfs:/")
_HOST = Path(__file__).with_name("host.py")
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


def _kill_host(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the host alone; returns once it has exited (it is not reaped)."""
    if not _has_exited(process):
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
    while not _has_exited(process):
        time.sleep(_POLL_SECONDS)


def _command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    return ""


def _task_processes(marker: bytes, group: int) -> list[int]:
    """Live processes (not zombies) in process group ``group`` or whose environment holds
    ``marker``. Without ``/proc`` (macOS), only the group's, through ``ps``."""
    if not Path("/proc/self/environ").exists():
        listing = subprocess.run(
            ["ps", "-A", "-o", "pid=,pgid=,stat="], capture_output=True, text=True, check=False
        ).stdout
        rows = [line.split() for line in listing.splitlines()]
        return [int(r[0]) for r in rows if len(r) == 3 and int(r[1]) == group and "Z" not in r[2]]
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            if int(fields[2]) == group or marker in Path(entry.path, "environ").read_bytes().split(
                b"\0"
            ):
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or another user's
    return found


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

    def __init__(
        self,
        storage: Storage,
        changed: threading.Condition,
        work_dir: Path,
        task_host: str = "databricks",
    ) -> None:
        if task_host not in TASK_HOSTS:
            raise ValueError(f"task_host must be one of {', '.join(TASK_HOSTS)}: {task_host!r}")
        self._storage = storage
        self._changed = changed
        self._work_dir = work_dir
        self._task_host = task_host
        self._nonce = secrets.token_hex(8)

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
        for line in self._environment_of(run, task):
            option, _, path = line.partition(" ")
            if option != "-r":
                continue
            local = self._storage.local_path(path.strip())
            if not path.strip().startswith("/") or local is None or not local.is_file():
                return model.failure(
                    "LIBRARY_INSTALLATION_ERROR",
                    f"Failed to install the environment's dependencies: {line}: no such file "
                    "(a requirements file must be given by its absolute /Workspace or "
                    "/Volumes path).",
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
        parameters = [
            self._on_cluster(self._substitute(p, run, task))
            for p in python_task.get("parameters", [])
        ]
        env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
        env.update(task.spec.get("new_cluster", {}).get("spark_env_vars", {}))
        env[_MARKER] = self._marker(task)
        # The driver's own folder: the file's folder only from DBR 14 on.
        cwd = self._work_dir / "driver" / str(task.run_id)
        cwd.mkdir(parents=True)
        task.log_path = self._work_dir / "logs" / f"{task.run_id}.log"
        task.log_path.parent.mkdir(exist_ok=True)
        if self._task_host == "process":
            # Unbuffered, so what a task printed before it was killed still reaches its log.
            env["PYTHONUNBUFFERED"] = "1"
            return [sys.executable, str(local), *parameters], env, cwd
        result = self._result_path(task)
        argv = [sys.executable, str(_HOST), str(result), str(task.log_path), str(local)]
        return [*argv, *parameters], env, cwd

    @staticmethod
    def _environment_of(run: Run, task: TaskRun) -> list[str]:
        """The dependency lines of the serverless environment ``task`` names (none on a
        cluster). The fake installs none of them: the host's Python runs the task."""
        key = task.spec.get("environment_key")
        for environment in run.body.get("environments") or []:
            if key is not None and environment.get("environment_key") == key:
                return [str(d) for d in environment.get("spec", {}).get("dependencies") or []]
        return []

    def _marker(self, task: TaskRun) -> str:
        return f"{self._nonce}-{task.run_id}"

    def _result_path(self, task: TaskRun) -> Path:
        return self._work_dir / "logs" / f"{task.run_id}.result.json"

    def _on_cluster(self, parameter: str) -> str:
        """A parameter that names a stored file as a cluster sees it (``/Workspace/...``,
        ``/Volumes/...``, ``/dbfs/...``, ``dbfs:/...``) names it where the fake keeps it: on a
        cluster these are plain files, and a task reads them by their absolute paths."""
        if not parameter.startswith(_CLUSTER_PATHS):
            return parameter
        if parameter.startswith("/dbfs/"):
            parameter = "dbfs:" + parameter[len("/dbfs") :]
        try:
            local = self._storage.local_path(parameter)
        except ApiError:  # "..", and such: no file of the workspace
            return parameter
        return parameter if local is None else str(local)

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
        assert task.log_path is not None
        hosted = self._task_host == "databricks"
        output = task.log_path.with_suffix(".host") if hosted else task.log_path
        # A host writes the task's output to the log itself; its own descriptors are for its
        # own failures only.
        with output.open("wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self._changed:
            task.pid = process.pid
            task.life_cycle = run.life_cycle = "RUNNING"
            task.running_at = now_ms()
            self._changed.notify_all()
        reason = self._watch(run, process, deadline)
        with self._changed:
            task.life_cycle = run.life_cycle = "TERMINATING"
            task.terminating_at = now_ms()
        if reason and hosted and reason != "SHUTDOWN":
            self._interrupt(process)
        elif reason:
            _kill_host(process)
        # Whatever the task left running dies with it, as it would with its cluster; first it
        # is recorded, so that a test can see what a task leaked.
        self._kill_leftovers(task, process.pid)
        code = process.wait()
        with self._changed:
            task.pid = None
        if reason:
            return _STOPPED[reason]
        if not hosted:
            if code == 0:
                return model.SUCCESS
            task.error, task.error_trace = _error_from_log(task.log_path, code)
            return model.WORKLOAD_FAILED
        return self._hosted_ending(task, code, output)

    def _watch(
        self, run: Run, process: subprocess.Popen[bytes], deadline: float | None
    ) -> str | None:
        """Wait for the host to exit (without reaping it) or to be told to stop; why it must."""
        while not _has_exited(process):
            with self._changed:
                reason = self._stop_reason(run, deadline)
                if reason is None:
                    self._changed.wait(_POLL_SECONDS)
            if reason:
                return reason
        return None

    @staticmethod
    def _interrupt(process: subprocess.Popen[bytes]) -> None:
        """Stop a host as a cancel does: SIGINT to it alone (``KeyboardInterrupt`` in the
        task's code), then SIGKILL to it alone after a grace period."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGINT)
        give_up = time.monotonic() + STOP_GRACE_SECONDS
        while not _has_exited(process) and time.monotonic() < give_up:
            time.sleep(_POLL_SECONDS)
        _kill_host(process)

    def _kill_leftovers(self, task: TaskRun, host: int) -> None:
        """Record and kill the task's processes still alive, ``host`` (unreaped) aside: the
        group's, and any that carries the task's marker in its environment."""
        marker = f"{_MARKER}={self._marker(task)}".encode()
        for _ in range(10):  # a leftover may fork while it is being killed
            found = [pid for pid in _task_processes(marker, host) if pid != host]
            if not found:
                return
            with self._changed:
                known = {leftover.pid for leftover in task.leftovers}
                task.leftovers += [Leftover(p, _command_line(p)) for p in found if p not in known]
            for pid in found:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            _kill_group(host)
            time.sleep(_POLL_SECONDS)

    def _hosted_ending(self, task: TaskRun, code: int, host_output: Path) -> Ending:
        try:
            result = json.loads(self._result_path(task).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            # The host died: killed, or the task's code ended the process itself.
            said = host_output.read_text(errors="replace").strip() if host_output.exists() else ""
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            task.error = f"The Python process {how} while running the task"
            task.error_trace = said or None
            return model.WORKLOAD_FAILED
        if result.get("error") is None:
            return model.SUCCESS
        task.error, task.error_trace = result["error"], result.get("error_trace")
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
