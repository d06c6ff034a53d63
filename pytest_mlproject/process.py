"""Run a shell command as a child process, safe to leave unattended: the layer under local
runs (:mod:`pytest_mlproject.local`) and environment builds (:mod:`pytest_mlproject.envs`).

Like MLflow's local runs: ``bash -c COMMAND`` with the caller's environment (so
``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_ID`` pass through when set). Given an
environment (``venv``), it is activated as MLflow activates one: its ``bin`` first on
``PATH``, ``VIRTUAL_ENV`` set; and further, the caller's interpreter folder is taken off
``PATH``, and ``PYTHONPATH`` and ``PYTHONHOME`` are unset, so nothing of the caller's
environment leaks in. Without one, the command runs with the interpreter running this code,
whose folder is put first on ``PATH`` so that ``python`` means it even in a venv that is not
activated. The result says which (:attr:`RunResult.environment`).

Unlike MLflow:

- standard input is ``/dev/null``, so a command waiting for input fails instead of hanging;
- the command runs in its own process group, and that whole group (grandchildren included)
  is ended when the command ends, times out, or the caller is interrupted: ``SIGTERM``, then
  ``SIGKILL`` after a grace period;
- both output streams are captured without deadlock (one ``select`` loop, no threads) and
  with bounded memory: the first ``max_output`` bytes of each are kept, then only the last
  ``tail_output``; they can also be echoed live (for ``pytest -s``).
"""

from __future__ import annotations

import codecs
import contextlib
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pytest_mlproject.problems import MLprojectError
from pytest_mlproject.sources import redact
from pytest_mlproject.spec import Project

__all__ = [
    "Activated",
    "Echo",
    "RunError",
    "RunResult",
    "child_environment",
    "environment_description",
    "run_command",
]

MAX_OUTPUT = 10 * 1024 * 1024
TAIL_OUTPUT = 1024 * 1024
GRACE = 5.0
_CHUNK = 65536
#: Longest wait between two checks for a Ctrl-C CPython has not acted on yet.
_SIGNAL_CHECK = 0.1
#: Environment variables shown in :attr:`RunResult.env` (values redacted of credentials).
_SHOWN_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
)


class Echo(Protocol):
    """Where live output goes (``sys.stdout``, or anything that writes text)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class Activated(Protocol):
    """A built environment a command can run in (:class:`pytest_mlproject.envs.Environment`)."""

    @property
    def path(self) -> Path: ...

    @property
    def manager(self) -> str: ...

    def describe(self) -> str: ...


class RunError(MLprojectError):
    """The command could not be started at all."""


@dataclass(frozen=True)
class RunResult:
    """What a local run did. ``stdout``/``stderr`` are decoded as UTF-8 (bad bytes replaced)."""

    command: str
    cwd: Path
    #: The exit status; negative (``-N``) when killed by signal N, as in :mod:`subprocess`.
    exit_code: int
    stdout: str
    stderr: str
    duration: float
    timed_out: bool
    #: The time limit in seconds, or ``None``.
    timeout: float | None
    #: The Git commit of the project's files, when known.
    commit: str | None
    #: Which Python environment ran the command, in words.
    environment: str
    #: A few of the variables the command saw (MLflow's), credentials removed.
    env: Mapping[str, str] = field(default_factory=dict)
    #: Bytes of output dropped between the kept head and tail, per stream.
    stdout_dropped: int = 0
    stderr_dropped: int = 0
    entry_point: str | None = None
    #: ``uv`` or ``virtualenv`` (the environment the project declares) or ``local`` (the
    #: current interpreter).
    env_manager: str = "local"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """One line: how the run ended."""
        took = f"{self.duration:.1f} s"
        if self.timed_out:
            return f"timed out after {took} (limit {self.timeout:g} s); its processes were killed"
        if self.exit_code < 0:
            try:
                name = signal.Signals(-self.exit_code).name
            except ValueError:
                name = f"signal {-self.exit_code}"
            return f"killed by {name} after {took}"
        return f"exit code {self.exit_code} after {took}"


def child_environment(
    extra: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
    venv: Path | None = None,
) -> dict[str, str]:
    """The caller's environment (or ``base``) plus ``extra``, with this interpreter's folder
    first on ``PATH``; or, given ``venv``, that environment activated instead."""
    env = dict(os.environ if base is None else base)
    env.update(extra or {})
    parts = env.get("PATH", "").split(os.pathsep) if env.get("PATH") else []
    bindir = os.path.dirname(sys.executable)
    if venv is not None:
        # The caller's interpreter (and an activated venv of the caller's) must not answer
        # for `python`, `pip` or a console script the environment lacks.
        outside = {bindir, os.path.join(env.get("VIRTUAL_ENV", ""), "bin")}
        parts = [part for part in parts if part not in outside]
        env["PATH"] = os.pathsep.join([str(venv / "bin"), *parts])
        env["VIRTUAL_ENV"] = str(venv)
        for name in ("PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX"):
            env.pop(name, None)
        return env
    if bindir and (not parts or parts[0] != bindir):
        env["PATH"] = os.pathsep.join([bindir, *parts])
    return env


def environment_description(project: Project | None = None) -> str:
    version = ".".join(str(part) for part in sys.version_info[:3])
    text = f"the current interpreter, {sys.executable} (Python {version})"
    if project is not None and project.env_type != "docker_env":
        if project.env_file is None:
            text += "; the project declares no environment"
        else:
            text += f"; {project.env_file.name} was not installed (env manager local)"
    return text


def run_command(
    command: str,
    cwd: Path | str,
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    echo: Echo | None = None,
    commit: str | None = None,
    environment: str | None = None,
    entry_point: str | None = None,
    max_output: int = MAX_OUTPUT,
    tail_output: int = TAIL_OUTPUT,
    grace: float = GRACE,
    venv: Activated | None = None,
) -> RunResult:
    """Run ``bash -c command`` in ``cwd`` and wait for it, at most ``timeout`` seconds.

    ``env`` adds variables to the caller's environment. ``venv``: run in that environment,
    activated (``environment`` then defaults to its description). ``echo``, if given,
    receives both output streams as they come. On ``KeyboardInterrupt`` the command's
    process group is killed and the interrupt re-raised.
    """
    environ = child_environment(env, venv=venv.path if venv is not None else None)
    if venv is not None:
        environment = venv.describe()
    captures = (_Capture(max_output, tail_output, echo), _Capture(max_output, tail_output, echo))
    start = time.monotonic()
    process = None
    try:
        with _interrupts_deferred() as interrupted:
            process = _start(command, cwd, environ)
        if interrupted:
            signal.raise_signal(signal.SIGINT)  # now that the group can be ended
        timed_out = _supervise(process, captures, timeout, grace)
    finally:
        if process is not None:
            _end(process, grace)
    duration = time.monotonic() - start
    returncode = process.returncode
    assert returncode is not None
    return RunResult(
        command=command,
        cwd=Path(cwd),
        exit_code=returncode,
        stdout=captures[0].text(),
        stderr=captures[1].text(),
        duration=duration,
        timed_out=timed_out,
        timeout=timeout,
        commit=commit,
        environment=environment or environment_description(),
        env={name: redact(environ[name]) for name in _SHOWN_ENV if name in environ},
        stdout_dropped=captures[0].dropped,
        stderr_dropped=captures[1].dropped,
        entry_point=entry_point,
        env_manager=venv.manager if venv is not None else "local",
    )


def _start(command: str, cwd: Path | str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise RunError(f"cannot start `bash -c {command}` in {cwd}: {exc}") from None


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[list[int]]:
    """Hold back Ctrl-C while the command starts.

    An interrupt inside ``Popen`` can leave the child running with its pid lost, so nothing
    could end it. The caller re-raises a held-back interrupt once it can end the command.
    """
    received: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    # Only the main thread receives KeyboardInterrupt, and a handler set outside Python
    # (None) could not be put back.
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield received
        return
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        _handle_pending_signals()  # with our handler still in place
        signal.signal(signal.SIGINT, previous)


class _Capture:
    """One output stream: the first ``head`` bytes, then a rolling window of the last
    ``tail`` bytes, and a count of what fell between them."""

    def __init__(self, head: int, tail: int, echo: Echo | None) -> None:
        self.head_limit = head
        self.tail_limit = tail
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0
        self.echo = echo
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes) -> None:
        if self.echo is not None:
            try:
                self.echo.write(self.decoder.decode(data))
                self.echo.flush()
            except (OSError, ValueError):
                self.echo = None  # a closed or broken stream: keep capturing
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            excess = len(self.tail) - self.tail_limit
            if excess > 0:
                del self.tail[:excess]
                self.dropped += excess

    def text(self) -> str:
        if not self.dropped:
            return (self.head + self.tail).decode("utf-8", "replace")
        head = self.head.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        return f"{head}\n[... {self.dropped} bytes of output not kept ...]\n{tail}"


def _exited(process: subprocess.Popen[bytes]) -> bool:
    """Has the command's leader exited? Where ``waitid`` exists (not on macOS before Python
    3.13) it stays unreaped, so no other process can get its id while we signal its group;
    elsewhere POSIX still keeps the id from reuse while the group has members."""
    waitid = getattr(os, "waitid", None)
    if waitid is None or process.returncode is not None:
        return process.poll() is not None
    try:
        return waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _handle_pending_signals() -> None:
    """Run the handlers of signals that arrived but were not handled yet.

    CPython runs signal handlers in the main thread only, and a signal that lands while
    another thread runs Python code can wait until the main thread's next interrupted
    system call: a Ctrl-C could go unnoticed until the time limit. ``pthread_kill`` with
    signal 0 sends nothing, but CPython checks for pending signals after it.
    """
    if threading.current_thread() is threading.main_thread():
        signal.pthread_kill(threading.get_ident(), 0)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux), to wait without polling."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def _supervise(
    process: subprocess.Popen[bytes],
    captures: tuple[_Capture, _Capture],
    timeout: float | None,
    grace: float,
) -> bool:
    """Read both streams until the command and everything it left behind are gone.

    Returns whether the time limit was hit. The leader is not reaped here, so the group id
    cannot be reused by another process while we still signal it.
    """
    assert process.stdout is not None
    assert process.stderr is not None
    pid = process.pid
    selector = selectors.DefaultSelector()
    for stream, capture in zip((process.stdout, process.stderr), captures, strict=True):
        os.set_blocking(stream.fileno(), False)
        selector.register(stream.fileno(), selectors.EVENT_READ, capture)
    pidfd = _pidfd(pid)
    if pidfd is not None:
        selector.register(pidfd, selectors.EVENT_READ, None)
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = exited = False
    term_at: float | None = None  # when the group got SIGTERM
    kill_at: float | None = None  # when it got SIGKILL
    try:
        while True:
            now = time.monotonic()
            if not exited and _exited(process):
                exited = True
                if pidfd is not None:
                    selector.unregister(pidfd)
                if term_at is None:  # end what the command left running
                    _signal_group(pid, signal.SIGTERM)
                    term_at = now
            streams_open = any(key.data is not None for key in selector.get_map().values())
            if exited and not streams_open:
                break
            if deadline is not None and not exited and not timed_out and now >= deadline:
                timed_out = True
                _signal_group(pid, signal.SIGTERM)
                term_at = now
            if term_at is not None and kill_at is None and now >= term_at + grace:
                _signal_group(pid, signal.SIGKILL)
                kill_at = now
            if kill_at is not None and exited and now >= kill_at + grace:
                break  # the pipes are held open outside the group: stop reading
            wake = [
                moment
                for moment in (
                    deadline if not (timed_out or exited) else None,
                    term_at + grace if term_at is not None and kill_at is None else None,
                    kill_at + grace if kill_at is not None else None,
                )
                if moment is not None
            ]
            wait = min([*wake, now + _SIGNAL_CHECK]) - now
            if pidfd is None and not exited:
                wait = min(wait, 0.02)
            wait = max(0.0, wait)
            _handle_pending_signals()
            if not selector.get_map():
                time.sleep(wait)
                continue
            for key, _ in selector.select(wait):
                if key.data is None:
                    continue  # the pidfd: the loop notices the exit
                try:
                    data = os.read(key.fd, _CHUNK)
                except BlockingIOError:
                    continue
                if data:
                    key.data.feed(data)
                else:
                    selector.unregister(key.fd)
    finally:
        selector.close()
        if pidfd is not None:
            os.close(pidfd)
    return timed_out


def _end(process: subprocess.Popen[bytes], grace: float) -> None:
    """Make sure nothing of the group survives, reap the leader, close the pipes.

    After a normal end this only kills leftovers; after an interrupt it stops the command
    (``SIGTERM``, ``SIGKILL`` after ``grace``).
    """
    pid = process.pid
    if not _exited(process):
        _signal_group(pid, signal.SIGTERM)
        until = time.monotonic() + grace
        while not _exited(process) and time.monotonic() < until:
            time.sleep(0.01)
    _signal_group(pid, signal.SIGKILL)
    process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
