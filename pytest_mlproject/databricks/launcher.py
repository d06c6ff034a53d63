"""Run one MLflow project entry point on Databricks.

pytest-mlproject uploads this file beside the project archive and submits it as the
``spark_python_task`` of a one-time run, with these parameters (see :func:`arguments`)::

    --archive ABS_PATH --entry NAME [--env NAME=VALUE]... -- COMMAND

It unpacks the archive into a fresh temporary folder of its own, so runs that share an archive
never race, runs COMMAND (already rendered, every parameter value shell-quoted) with bash in
that folder, writes the command's output through ``sys.stdout`` as it comes, and removes the
folder.

Databricks does not run this file as ``python launcher.py``: its driver reads the file and
runs it with ``exec`` inside its own Python host. So this file never reads ``__file__`` (not
defined there), never ends with ``SystemExit`` (which fails a task, even ``sys.exit(0)``), and
never lets the command write to the inherited descriptors (what does not go through
``sys.stdout`` may not reach the run's log). Success is a normal return; a failure is an
exception whose message names the entry point and the exit code: it becomes the run's error.
Whatever ends the launcher (the end of the command, an interrupt, SIGTERM, an exception), the
command's whole process group is stopped before it returns.

It must run on any cluster Python (3.8 and later) with nothing installed: standard library
only, and no import from pytest_mlproject.
"""

from __future__ import annotations

import codecs
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO, NamedTuple

USAGE = "--archive ABS_PATH --entry NAME [--env NAME=VALUE]... -- COMMAND"
#: The first line the launcher writes; the ``::databricks`` item looks for it in the run's log.
START_PREFIX = "launcher: entry point {entry!r}: running in "
START = START_PREFIX + "{folder}: {command}"
#: The last line of a successful run, for a log cut to its last 5 MB.
FINISH = "launcher: entry point {entry!r}: finished"
#: How long the command's process group gets between SIGTERM and SIGKILL.
STOP_GRACE_SECONDS = 5.0
_READ_SIZE = 65536


class LauncherError(Exception):
    """The launcher could not run the entry point, or the entry point failed."""


class Arguments(NamedTuple):
    archive: str
    entry: str
    env: dict[str, str]
    command: str


def arguments(
    *, archive: str, entry: str, command: str, env: dict[str, str] | None = None
) -> list[str]:
    """The task ``parameters`` that make the launcher run ``command``: the one definition of its
    command line, read back by :func:`parse`."""
    out = ["--archive", archive, "--entry", entry]
    for name, value in (env or {}).items():
        out += ["--env", f"{name}={value}"]
    return [*out, "--", command]


def parse(argv: list[str]) -> Arguments:
    """Read the launcher's parameters (``sys.argv[1:]``); a mistake raises ``LauncherError``."""
    archive: str | None = None
    entry: str | None = None
    env: dict[str, str] = {}
    rest = list(argv)
    while rest and rest[0] != "--":
        option = rest.pop(0)
        if option not in ("--archive", "--entry", "--env") or not rest:
            raise LauncherError(f"launcher: unexpected {option!r}; usage: {USAGE}")
        value = rest.pop(0)
        if option == "--archive":
            archive = value
        elif option == "--entry":
            entry = value
        else:
            name, equals, setting = value.partition("=")
            if not name or not equals:
                raise LauncherError(f"launcher: --env takes NAME=VALUE, got {value!r}")
            env[name] = setting
    if archive is None or entry is None or len(rest) != 2:
        raise LauncherError(f"launcher: usage: {USAGE}; got {argv!r}")
    return Arguments(archive, entry, env, rest[1])


def local_path(archive: str, script: str = "") -> Path:
    """Where the cluster sees a stored file: ``dbfs:/x`` is ``/dbfs/x``; an absolute path is as
    given; a bare name is beside ``script`` (``sys.argv[0]``, the launcher's own path)."""
    if archive.startswith("dbfs:/"):
        return Path("/dbfs") / archive[len("dbfs:/") :].lstrip("/")
    path = Path(archive)
    if path.is_absolute():
        return path
    return Path(os.path.abspath(script)).parent / path


def unpack(archive: Path, target: Path) -> None:
    """Extract regular files only, each inside ``target``; refuse anything else."""
    with tarfile.open(archive, mode="r:gz") as tar:
        for member in tar.getmembers():
            destination = (target / member.name).resolve()
            if not member.isfile() or target.resolve() not in destination.parents:
                raise LauncherError(f"launcher: refusing archive member {member.name!r}")
            destination.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                raise LauncherError(f"launcher: cannot read archive member {member.name!r}")
            with source, destination.open("wb") as out:
                shutil.copyfileobj(source, out)
            destination.chmod(0o755 if member.mode & 0o111 else 0o644)


def _write(text: str) -> None:
    """Write through ``sys.stdout`` (whatever the host made of it), never failing on a
    character its encoding lacks."""
    try:
        sys.stdout.write(text)
    except UnicodeEncodeError:
        encoding = getattr(sys.stdout, "encoding", None) or "ascii"
        sys.stdout.write(text.encode(encoding, "replace").decode(encoding))
    sys.stdout.flush()


def _copy_output(pipe: BinaryIO) -> None:
    """Copy the command's output to ``sys.stdout`` as it comes, until every writer is gone.
    Bytes that are not UTF-8 are shown as U+FFFD."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    try:
        while True:
            chunk = os.read(pipe.fileno(), _READ_SIZE)
            text = decoder.decode(chunk, final=not chunk)
            if text:
                _write(text)
            if not chunk:
                return
    finally:
        pipe.close()


def _group_alive(child: subprocess.Popen[bytes]) -> bool:
    child.poll()  # reap the leader, so a dead one does not count
    try:
        os.killpg(child.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_group(child: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop the command and everything it started in its process group: SIGTERM, then SIGKILL
    after ``grace`` seconds. Returns once the group is gone (or after the SIGKILL)."""
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        if not _group_alive(child):
            return
        try:
            os.killpg(child.pid, signum)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while _group_alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"launcher: stopped by signal {signum}")


def _handle_sigterm() -> Callable[[], None]:
    """Make SIGTERM interrupt the launcher like Ctrl-C; what undoes it. Outside the main
    thread (a host may run the file there) Python refuses signal handlers: go on without."""
    try:
        previous: Any = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        return lambda: None

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def run(args: Arguments, script: str = "") -> None:
    """Run the entry point; return when it succeeded, raise ``LauncherError`` when it did not.
    ``script`` is the launcher's own path (``sys.argv[0]``), where a bare archive name is."""
    archive = local_path(args.archive, script)
    if not archive.is_file():
        raise LauncherError(f"launcher: entry point {args.entry!r}: no archive at {archive}")
    workdir = Path(tempfile.mkdtemp(prefix="mlproject-"))
    restore = _handle_sigterm()
    child: subprocess.Popen[bytes] | None = None
    copier: threading.Thread | None = None
    try:
        unpack(archive, workdir)
        _write(START.format(entry=args.entry, folder=workdir, command=args.command) + "\n")
        # `python` in the command must be the cluster's Python, the one with the libraries, as
        # a local run puts the running interpreter first on PATH. Unbuffered, so that what a
        # Python command prints reaches the run's log when printed, not when it ends.
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(args.env)
        child, copier = _start(["bash", "-c", args.command], workdir, env)
        code = child.wait()
    finally:
        if child is not None:
            stop_group(child)
        if copier is not None:
            # Every writer is gone with the group, unless one left it: then do not wait long.
            copier.join(STOP_GRACE_SECONDS)
        restore()
        shutil.rmtree(workdir, ignore_errors=True)
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise LauncherError(f"entry point {args.entry!r} failed: its command {how}")
    _write(FINISH.format(entry=args.entry) + "\n")


def _start(
    argv: list[str], workdir: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], threading.Thread]:
    # Its own session and process group, so that stopping it stops everything it started; its
    # output through a pipe, so that it reaches sys.stdout.
    child = subprocess.Popen(
        argv,
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert child.stdout is not None
    copier = threading.Thread(target=_copy_output, args=(child.stdout,), name="launcher-output")
    copier.daemon = True
    copier.start()
    return child, copier


def main(argv: Iterable[str]) -> None:
    """``argv`` is ``sys.argv``: the launcher's own path, then its parameters."""
    argv = list(argv)
    run(parse(argv[1:]), argv[0] if argv else "")


if __name__ == "__main__":
    main(sys.argv)
