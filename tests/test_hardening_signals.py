"""Hardening: Ctrl-C (SIGINT) and a CI runner's SIGTERM at each phase of a Databricks session.

Each case runs ``pytest --mlproject --databricks`` as a subprocess against the fake workspace
in this process, and times the signal by watching requests arrive at the workspace
(``log.arrived``), with latency on the request of that phase to hold the window open:

- packing: before the first request (the project is large enough to take a moment);
- uploading: while the first ``workspace/import`` is under way;
- submitting: while ``runs/submit`` is under way (the signal is held until the run id is
  known, so the run can be cancelled);
- waiting: while the runs are going, under ``-n 2``, signalling the whole process group (a
  terminal's Ctrl-C) or only the controller (how some CI runners stop a job).

After each: no run is left active, nothing was submitted twice, what was stored is whole
(content-addressed files hash to their names, pytest's cache files parse), and the next
session passes. Waiting without xdist is covered by tests/test_databricks_e2e.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import databricks.sdk
import pytest

from pytest_mlproject.testing import FakeWorkspace

assert databricks.sdk.WorkspaceClient is not None  # loaded before any pytester run

TOKEN = "dapi-signals-0123456789abcdef012345"
SPEC = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": 0}
#: Each phase is held open this long by latency on its request: wide enough to hit.
WINDOW = 1.5
#: Not a timed assertion: how long to wait for the session to reach a phase at all.
REACH = 90.0


@pytest.fixture
def fake(
    connect_fake: Callable[[str], FakeWorkspace], monkeypatch: pytest.MonkeyPatch
) -> FakeWorkspace:
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)
    return connect_fake(TOKEN)


def make_project(root: Path, seconds: float, large: bool = False) -> None:
    project = root / "demo"
    project.mkdir()
    entries = "".join(f"  e{i}:\n    command: python slow.py {seconds}\n" for i in range(3))
    (project / "MLproject").write_text("entry_points:\n" + entries)
    (project / "slow.py").write_text("import sys, time\ntime.sleep(float(sys.argv[1]))\n")
    if large:  # packing takes a moment: many small files to walk, read and compress
        data = project / "data"
        data.mkdir()
        for index in range(3000):
            (data / f"part-{index:05d}.txt").write_text(f"row {index}\n" * 200)
    (root / "cluster.json").write_text(json.dumps(SPEC))


class Session:
    """``pytest --mlproject --databricks`` in a process group of its own, output collected."""

    def __init__(self, root: Path, *args: str) -> None:
        command = [
            sys.executable,
            "-m",
            "pytest",
            "--mlproject",
            "--databricks",
            "--databricks-cluster-spec",
            "cluster.json",
            "-k",
            "databricks",
            *args,
        ]
        self.process = subprocess.Popen(
            command,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append(raw.decode("utf-8", "replace"))

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + REACH
        while not condition():
            assert self.process.poll() is None, f"ended before {what}:\n{self.output()}"
            assert time.monotonic() < deadline, f"never reached {what}:\n{self.output()}"
            time.sleep(0.01)

    def signal(self, signum: int, group: bool = False) -> None:
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)

    def end(self) -> int:
        try:
            code = self.process.wait(REACH)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            pytest.fail(f"the session did not end after the signal:\n{self.output()}")
        self._reader.join(10)
        # Killed alone, an xdist controller leaves its workers to notice and clean up:
        # what they do counts too, so wait until they are gone.
        deadline = time.monotonic() + REACH
        while _group_alive(self.process.pid):
            assert time.monotonic() < deadline, "the workers outlived the session"
            time.sleep(0.1)
        return code

    def output(self) -> str:
        return "".join(self.lines)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def assert_nothing_left(fake: FakeWorkspace, root: Path) -> None:
    """No run active, none started twice, every stored file whole."""
    deadline = time.monotonic() + 30  # a cancel is asynchronous: the run ends a poll later
    while fake.active_runs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fake.active_runs() == []
    tokens = [e.body["idempotency_token"] for e in fake.log.calls("POST", "runs/submit") if e.body]
    runs = fake.run_ids()
    assert len(runs) == len(set(tokens)) <= 3
    for stored in (fake.root / "Workspace").rglob("*"):
        if stored.is_file() and stored.name.endswith(".tar.gz"):
            assert hashlib.sha256(stored.read_bytes()).hexdigest() + ".tar.gz" == stored.name
    for cached in (root / ".pytest_cache").rglob("*"):
        if cached.is_file() and cached.parent.name != ".pytest_cache":
            json.loads(cached.read_text())  # whole JSON, not half a write


def next_session_passes(pytester: pytest.Pytester, fake: FakeWorkspace) -> None:
    fake.faults.reset()
    (pytester.path / "demo" / "slow.py").write_text("print('quick now')\n")
    result = pytester.runpytest(
        "--mlproject", "--databricks", "--databricks-cluster-spec", "cluster.json", "-k",
        "databricks",
    )  # fmt: skip
    result.assert_outcomes(passed=3)
    assert fake.active_runs() == []


def interrupted(code: int, signum: int) -> bool:
    """How pytest ends on each signal: Ctrl-C is exit status 2; SIGTERM before our handler
    is installed kills the process (-15), and after it, ends the session like Ctrl-C."""
    return code in (2, -signal.SIGTERM) if signum == signal.SIGTERM else code == 2


@pytest.mark.parametrize(
    ("phase", "signum"),
    [
        ("packing", signal.SIGTERM),
        ("uploading", signal.SIGINT),
        ("submitting", signal.SIGINT),
        ("submitting", signal.SIGTERM),
    ],
    ids=["packing-SIGTERM", "uploading-SIGINT", "submitting-SIGINT", "submitting-SIGTERM"],
)
def test_a_signal_at_each_phase_leaves_nothing_behind(
    pytester: pytest.Pytester, fake: FakeWorkspace, phase: str, signum: int
) -> None:
    make_project(pytester.path, 60, large=phase == "packing")
    if phase == "uploading":
        fake.faults.set(path_pattern="workspace/import", latency=WINDOW)
    elif phase == "submitting":
        fake.faults.set(path_pattern="runs/submit", latency=WINDOW)
    run = Session(pytester.path)
    if phase == "packing":
        run.wait_for(lambda: any("collected" in line for line in run.lines), "collection")
    elif phase == "uploading":
        run.wait_for(lambda: fake.log.arrived("POST", "workspace/import") > 0, "an upload")
    else:
        run.wait_for(lambda: fake.log.arrived("POST", "runs/submit") > 0, "a submit")
    run.signal(signum)
    code = run.end()
    assert interrupted(code, signum), run.output()
    if phase in ("packing", "uploading"):
        assert fake.log.calls("POST", "runs/submit") == []
    if phase == "submitting":
        # The submit under way finished, its run id was kept, and the run was cancelled.
        assert len(fake.run_ids()) == 1
        assert "cancelled run" in run.output()
    assert "Traceback" not in run.output()
    assert_nothing_left(fake, pytester.path)
    next_session_passes(pytester, fake)


@pytest.mark.parametrize(
    ("signum", "group"),
    [(signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["SIGINT-to-the-group", "SIGTERM-to-the-controller"],
)
def test_a_signal_while_waiting_under_xdist_cancels_every_run(
    pytester: pytest.Pytester, fake: FakeWorkspace, signum: int, group: bool
) -> None:
    make_project(pytester.path, 120)
    run = Session(pytester.path, "-n", "2", "-p", "no:cacheprovider")
    run.wait_for(lambda: len(fake.active_runs()) == 3, "three runs going")
    run.signal(signum, group=group)
    code = run.end()
    assert code in (2, -signal.SIGTERM), run.output()
    assert len(fake.log.calls("POST", "runs/cancel")) >= 3
    assert_nothing_left(fake, pytester.path)
    next_session_passes(pytester, fake)
