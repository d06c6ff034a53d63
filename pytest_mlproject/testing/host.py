"""The Python host of one ``spark_python_task`` run in the fake workspace: it runs the task
file the way a Databricks driver does, not as ``python file.py``.

``python host.py RESULT LOG FILE [PARAMETER]...``, started by the executor in the run's
driver folder (not the file's folder). Databricks reads the file and runs
``exec(compile(source, path, "exec"))`` in its own Python process (see "How runs run" in
docs/fixtures.md for the reports this follows), so here:

- ``sys.argv`` is ``[FILE, PARAMETER...]``; the code runs as ``__main__`` without ``__file__``;
- only what goes through ``sys.stdout`` / ``sys.stderr`` reaches the log: descriptors 1 and 2
  lead nowhere, so a child process writing to them directly is lost;
- a normal end is a success; any ``SystemExit``, ``sys.exit(0)`` included, is a failure, as is
  an uncaught exception (its last line the error, its traceback the error trace);
- the host ends with ``os._exit``: no ``atexit`` handler runs.

The outcome goes to RESULT as JSON (``error``, ``error_trace``); no RESULT means the host died.
Standard library only, and nothing from pytest_mlproject: the task's code shares this process.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import sys
import traceback
import types
from typing import Any


class _Capture(io.TextIOWrapper):
    """The host's capture of ``sys.stdout`` / ``sys.stderr``: like a notebook's, it has no
    descriptor to hand to a child (``Popen(stdout=sys.stdout)`` fails)."""

    def fileno(self) -> int:
        raise io.UnsupportedOperation("the task's output is captured: it has no file descriptor")


def _outcome(code: types.CodeType) -> dict[str, Any]:
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    try:
        exec(code, main.__dict__)
    except SystemExit as exc:
        return {"error": f"SystemExit: {exc.code}", "error_trace": None}
    except BaseException as exc:
        # Without the host's own frame: the trace starts in the task's file.
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        trace = "".join(traceback.format_exception(type(exc), exc, tb))
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return {
            "error": error.splitlines()[-1] if error else type(exc).__name__,
            "error_trace": trace,
        }
    return {"error": None, "error_trace": None}


def main() -> None:
    result_path, log_path, path, *parameters = sys.argv[1:]
    log = _Capture(
        open(log_path, "ab", buffering=0),  # noqa: SIM115 - open until os._exit
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
        write_through=True,
    )
    sys.stdout = sys.stderr = log
    # What is written to the descriptors themselves (a child inheriting them) is not captured.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.argv = [path, *parameters]
    sys.path[0] = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, "rb") as file:
            code = compile(file.read(), path, "exec")
    except BaseException as exc:  # a syntax error fails the task like any other error
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        outcome: dict[str, Any] = {"error": error.splitlines()[-1], "error_trace": error}
    else:
        outcome = _outcome(code)
    with contextlib.suppress(BaseException):  # the task may have closed it
        log.flush()
    with open(result_path + ".tmp", "w", encoding="utf-8") as out:
        json.dump(outcome, out)
    os.rename(result_path + ".tmp", result_path)
    os._exit(0)


if __name__ == "__main__":
    main()
