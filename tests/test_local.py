"""Local runs: outcomes, output capture, time limits, process groups, the environment."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import gone

from pytest_mlproject import spec
from pytest_mlproject.commands import MissingParametersError
from pytest_mlproject.local import (
    NotRunnableError,
    RunError,
    child_environment,
    local_skip_reason,
    run_command,
    run_entry_point,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "good"


@pytest.fixture(params=["waitid", "portable"])
def process_api(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test as on Linux, and again as on macOS before Python 3.13 (no ``os.waitid``,
    no ``os.pidfd_open``): both ways must end every process."""
    if request.param == "portable":
        monkeypatch.delattr(os, "waitid", raising=False)
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    return str(request.param)


def test_a_passing_command(tmp_path: Path) -> None:
    result = run_command("echo out; echo err >&2; pwd", tmp_path)
    assert result.ok
    assert result.exit_code == 0
    assert result.stdout == f"out\n{tmp_path}\n"
    assert result.stderr == "err\n"
    assert not result.timed_out
    assert result.cwd == tmp_path
    assert result.command == "echo out; echo err >&2; pwd"
    assert "current interpreter" in result.environment
    assert result.describe().startswith("exit code 0 after ")


def test_a_failing_command_keeps_its_output(tmp_path: Path, process_api: str) -> None:
    result = run_command("echo working; echo 'Traceback: boom' >&2; exit 3", tmp_path)
    assert not result.ok
    assert result.exit_code == 3
    assert result.stdout == "working\n"
    assert "Traceback: boom" in result.stderr
    assert result.describe().startswith("exit code 3")


def test_a_signal_is_reported(tmp_path: Path) -> None:
    result = run_command("exec python -c 'import os, signal; os.kill(os.getpid(), 9)'", tmp_path)
    assert result.exit_code == -signal.SIGKILL
    assert result.describe().startswith("killed by SIGKILL")


def test_stdin_is_empty_so_nothing_waits_for_input(tmp_path: Path) -> None:
    result = run_command("cat; echo done", tmp_path, timeout=10)
    assert result.ok
    assert result.stdout == "done\n"


def test_a_timeout_kills_the_whole_group_grandchildren_included(
    tmp_path: Path, process_api: str
) -> None:
    command = "sleep 300 & echo $! > pid; bash -c 'sleep 300' & wait"
    started = time.monotonic()
    result = run_command(command, tmp_path, timeout=0.5, grace=1)
    assert time.monotonic() - started < 5
    assert result.timed_out
    assert not result.ok
    assert result.describe().startswith("timed out after")
    assert gone(int((tmp_path / "pid").read_text()))


def test_a_command_ignoring_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path, process_api: str
) -> None:
    command = "trap '' TERM; sleep 300 & echo $! > pid; while true; do sleep 0.05; done"
    result = run_command(command, tmp_path, timeout=0.3, grace=0.3)
    assert result.timed_out
    assert result.exit_code == -signal.SIGKILL
    assert gone(int((tmp_path / "pid").read_text()))


def test_background_processes_left_behind_are_ended(tmp_path: Path, process_api: str) -> None:
    # the leftover holds stdout open: without ending it, reading would never finish
    result = run_command("sleep 300 & echo $! > pid; echo started", tmp_path, timeout=30)
    assert result.ok
    assert result.stdout == "started\n"
    assert result.duration < 5
    assert gone(int((tmp_path / "pid").read_text()))


def test_keyboard_interrupt_kills_the_group_and_propagates(
    tmp_path: Path, process_api: str
) -> None:
    main = threading.main_thread().ident
    assert main is not None

    def interrupt() -> None:
        while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text():
            time.sleep(0.001)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_command("sleep 300 & echo $! > pid; wait", tmp_path, timeout=60, grace=1)
    assert time.monotonic() - started < 10
    assert gone(int((tmp_path / "pid").read_text()))


def _running(needle: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "cmdline").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state not in {"Z", "X"}:
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="looks processes up in /proc")
def test_an_interrupt_while_the_command_starts_leaves_nothing_running(tmp_path: Path) -> None:
    main = threading.main_thread().ident
    assert main is not None
    marker = f"1000.{time.time_ns()}"
    for attempt in range(40):
        timer = threading.Timer(attempt / 10_000, signal.pthread_kill, (main, signal.SIGINT))
        started = time.monotonic()
        try:
            timer.start()
            run_command(f"sleep {marker} & wait", tmp_path, timeout=30, grace=1)
        except KeyboardInterrupt:
            timer.join()
        else:  # pragma: no cover
            pytest.fail("not interrupted")
        # promptly, even when the signal landed while the timer's thread ran Python code
        assert time.monotonic() - started < 5
    until = time.monotonic() + 5
    while _running(marker.encode()) and time.monotonic() < until:
        time.sleep(0.02)
    assert _running(marker.encode()) == []


def test_runs_work_from_other_threads(tmp_path: Path) -> None:
    results = []
    worker = threading.Thread(target=lambda: results.append(run_command("echo hi", tmp_path)))
    worker.start()
    worker.join(30)
    assert [r.stdout for r in results] == ["hi\n"]


def test_output_is_bounded_keeping_head_and_tail(tmp_path: Path) -> None:
    command = "python -c \"import sys; sys.stdout.write('h' * 1000 + 'x' * 200000 + 'TAIL')\""
    result = run_command(command, tmp_path, max_output=1000, tail_output=100)
    assert result.stdout.startswith("h" * 1000 + "\n[... ")
    assert result.stdout.endswith("x" * 96 + "TAIL")
    assert result.stdout_dropped == 200004 - 100
    assert len(result.stdout) < 1300


def test_a_character_split_between_head_and_tail_survives(tmp_path: Path) -> None:
    result = run_command("printf 'ab\\xc3\\xa9'", tmp_path, max_output=3, tail_output=10)
    assert result.stdout == "abé"


def test_large_output_on_both_streams_does_not_deadlock(tmp_path: Path, process_api: str) -> None:
    command = (
        'python -c "import sys\nfor i in range(2000): '
        "sys.stdout.write('o' * 1000); sys.stderr.write('e' * 1000)\""
    )
    result = run_command(command, tmp_path, timeout=30)
    assert result.ok
    assert len(result.stdout) == len(result.stderr) == 2_000_000


def test_output_can_be_echoed_live(tmp_path: Path) -> None:
    echo = io.StringIO()
    result = run_command(
        "printf 'caf\\xc3'; printf '\\xa9 ok\\n'; echo err >&2", tmp_path, echo=echo
    )
    assert result.stdout == "café ok\n"
    assert sorted(echo.getvalue().splitlines()) == ["café ok", "err"]


def test_path_starts_with_the_interpreters_folder(tmp_path: Path) -> None:
    result = run_command('echo "$PATH"; command -v python', tmp_path)
    bindir = os.path.dirname(sys.executable)
    path, python = result.stdout.splitlines()
    assert path.split(os.pathsep)[0] == bindir
    assert python == os.path.join(bindir, "python")


def test_child_environment() -> None:
    env = child_environment({"X": "1"}, base={"PATH": "/usr/bin", "Y": "2"})
    assert env == {
        "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin",
        "X": "1",
        "Y": "2",
    }
    assert child_environment(base={"PATH": env["PATH"]})["PATH"] == env["PATH"]
    assert child_environment(base={})["PATH"] == os.path.dirname(sys.executable)


def test_the_callers_environment_is_passed_and_summarised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://user:token@mlflow.example")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "42")
    result = run_command(
        'echo "$MLFLOW_TRACKING_URI $MLFLOW_EXPERIMENT_ID $EXTRA"', tmp_path, env={"EXTRA": "x"}
    )
    assert result.stdout == "https://user:token@mlflow.example 42 x\n"
    assert dict(result.env) == {
        "MLFLOW_TRACKING_URI": "https://***@mlflow.example",
        "MLFLOW_EXPERIMENT_ID": "42",
    }


def test_a_missing_folder_is_a_run_error(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="cannot start"):
        run_command("true", tmp_path / "missing")


def _project(tmp_path: Path, text: str) -> spec.Project:
    (tmp_path / "MLproject").write_text(text)
    return spec.load(tmp_path)


def test_run_entry_point_renders_and_runs_in_the_project_folder(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        "entry_points:\n  main:\n    parameters:\n      who: {type: string, default: you}\n"
        "    command: 'pwd; echo hello {who}'\n",
    )
    result = run_entry_point(project, parameters={"who": "a; b", "n": "1"}, commit="abc")
    assert result.ok
    assert result.command == "pwd; echo hello 'a; b' --n 1"
    assert result.stdout == f"{tmp_path}\nhello a; b --n 1\n"
    assert result.entry_point == "main"
    assert result.commit == "abc"


def test_run_entry_point_refuses_missing_parameters(tmp_path: Path) -> None:
    project = _project(
        tmp_path, "entry_points:\n  main:\n    parameters: {a: float}\n    command: 'echo {a}'\n"
    )
    with pytest.raises(MissingParametersError):
        run_entry_point(project)


def test_docker_projects_are_not_run(tmp_path: Path) -> None:
    project = _project(
        tmp_path, "docker_env: {image: my-image}\nentry_points:\n  main: {command: 'true'}\n"
    )
    reason = local_skip_reason(project)
    assert reason is not None
    assert "my-image" in reason
    with pytest.raises(NotRunnableError, match="docker_env"):
        run_entry_point(project)


@pytest.mark.parametrize(
    ("name", "entry_point", "expected"),
    [
        ("greeter", "main", "Hello, world!"),
        ("multistep", "main", "rows: 3"),
        ("multistep", "summarize", "rows: 4"),
    ],
)
def test_the_good_fixtures_run(name: str, entry_point: str, expected: str) -> None:
    project = spec.load(FIXTURES / name)
    assert local_skip_reason(project) is None
    result = run_entry_point(project, entry_point, base_dir=project.directory, timeout=60)
    assert result.ok, result.stderr
    assert expected in result.stdout
    assert "python_env.yaml was not installed" in result.environment
