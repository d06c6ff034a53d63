"""The coordinator on its own: deadlines, cancelling at the end, parallelism and shares."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_mlproject.databricks import session
from pytest_mlproject.databricks.job import Job, Upload
from pytest_mlproject.databricks.workspace import Workspace
from pytest_mlproject.testing import FakeWorkspace

TOKEN = "dapi-session-test"


@pytest.fixture
def fake() -> Iterator[FakeWorkspace]:
    workspace = FakeWorkspace(token=TOKEN).start()
    # A launcher that sleeps: uploaded once, run by every job.
    (workspace.root / "Workspace" / "Shared").mkdir(parents=True, exist_ok=True)
    yield workspace
    workspace.stop()


def coordinator(fake: FakeWorkspace, lines: list[str], limit: int = 4) -> session.Coordinator:
    return session.Coordinator(
        profile=None,
        upload_dir="/Workspace/Shared/tests",
        max_parallel=limit,
        echo=lines.append,
        connect=lambda: Workspace.connect(host=fake.host, token=TOKEN),
    )


def job(name: str, seconds: float, timeout: float = 0) -> Job:
    script = f"import time\ntime.sleep({seconds})\nprint('done {name}')\n".encode()
    body = {
        "run_name": name,
        "idempotency_token": f"token-{name}-{time.time_ns()}",
        "timeout_seconds": int(timeout),
        "tasks": [
            {
                "task_key": "mlproject",
                "new_cluster": {"spark_version": "15.4.x-scala2.12", "num_workers": 0},
                "spark_python_task": {"python_file": f"{name}.py", "parameters": []},
            }
        ],
    }
    return Job(
        nodeid=name,
        label=name,
        body=body,
        uploads=(Upload(f"{name}.py", script),),
        timeout=timeout or 3600,
    )


def test_a_run_past_its_deadline_is_cancelled(fake: FakeWorkspace) -> None:
    fake.faults.set(pending_polls=10_000)
    lines: list[str] = []
    runs = coordinator(fake, lines)
    stuck = job("stuck", 0)
    runs.start([stuck])
    runs.wait(stuck, deadline=time.monotonic() + 1)
    assert stuck.error == "no result within 3600 s (--databricks-timeout); the run was cancelled"
    assert any(
        line.startswith(f"Databricks: cancelled run {stuck.run_id} (stuck)") for line in lines
    )
    runs.close()
    assert fake.wait_idle() == []


def test_close_cancels_what_is_still_running(fake: FakeWorkspace) -> None:
    lines: list[str] = []
    runs = coordinator(fake, lines)
    jobs = [job(f"long{i}", 60) for i in range(3)]
    runs.start(jobs)
    assert len(fake.active_runs()) == 3
    runs.close("the test ended")
    assert fake.wait_idle() == []
    assert all(j.error == "cancelled: the test ended" for j in jobs)
    assert sum("cancelled run" in line for line in lines) == 3


def test_at_most_max_parallel_in_flight(fake: FakeWorkspace) -> None:
    lines: list[str] = []
    runs = coordinator(fake, lines, limit=2)
    jobs = [job(f"short{i}", 0.3) for i in range(5)]
    runs.start(jobs)
    peak = 0
    while not all(j.done.is_set() for j in jobs):
        peak = max(peak, len(fake.active_runs()))
        time.sleep(0.02)
    runs.close()
    assert peak <= 2
    assert all(j.state is not None and j.state.passed for j in jobs)


def test_a_job_an_item_waits_for_goes_first(fake: FakeWorkspace) -> None:
    """With one slot, jobs wait in order; the one an item now waits for jumps the queue."""
    lines: list[str] = []
    runs = coordinator(fake, lines, limit=1)
    first, second, third = job("first", 0.5), job("second", 0.1), job("third", 0.1)
    runs.start([first, second, third])
    assert runs.ensure(job("third", 0.1)) is third
    for each in (first, third, second):
        runs.wait(each, deadline=time.monotonic() + 60)
    assert second.submitted_at is not None
    assert third.submitted_at is not None
    assert third.submitted_at < second.submitted_at
    runs.close()


def test_a_submit_under_way_counts_against_the_cap(fake: FakeWorkspace) -> None:
    """With one slot, a job that reaches the coordinator while another is being submitted
    (a slow answer) waits for that run to end: the cap counts submissions not yet answered."""
    lines: list[str] = []
    runs = coordinator(fake, lines, limit=1)
    fake.faults.set(latency=1.0, path_pattern="runs/submit")
    first, second = job("first", 0.2), job("second", 0.2)
    runs.start([first, second])
    # The poller submits `second` when `first` ends; its answer takes a second. Meanwhile:
    deadline = time.monotonic() + 30
    while fake.log.arrived("POST", "runs/submit") < 2:
        assert time.monotonic() < deadline, "second was never submitted"
        time.sleep(0.01)
    third = runs.ensure(job("third", 0.2))
    for each in (first, second, third):
        runs.wait(each, deadline=time.monotonic() + 60)
    runs.close()
    fake.faults.reset()
    submits = [entry.at for entry in fake.log.calls("POST", "runs/submit")]
    assert second.run_id is not None
    second_ended = (fake.client().jobs.get_run(second.run_id).end_time or 0) / 1000
    assert len(submits) == 3
    assert submits[2] > second_ended, "third was submitted while second was in flight"


def test_grace_before_cancelling() -> None:
    assert session.grace(2) == 7
    assert session.grace(600) == 630
    assert session.grace(7200) == 7260


@pytest.mark.parametrize(
    ("worker", "count", "limit", "expected"),
    [
        ("", "", 16, (0, 1, 16)),
        ("gw1", "4", 16, (1, 4, 4)),
        ("gw0", "3", 16, (0, 3, 6)),
        ("gw2", "4", 1, (2, 4, 1)),
    ],
)
def test_xdist_share(
    monkeypatch: pytest.MonkeyPatch,
    worker: str,
    count: str,
    limit: int,
    expected: tuple[int, int, int],
) -> None:
    # A pytest started inside a worker inherits these variables without being a worker.
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw7")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "8")
    workerinput = {"workerid": worker, "workercount": int(count)} if worker else None
    assert session.share(limit, workerinput) == expected


@pytest.mark.parametrize(("limit", "workers"), [(16, 3), (16, 5), (7, 2), (16, 16), (5, 8)])
def test_xdist_shares_add_up_to_the_limit(limit: int, workers: int) -> None:
    shares = [
        session.share(limit, {"workerid": f"gw{index}", "workercount": workers})[2]
        for index in range(workers)
    ]
    # Never more than the limit, but every worker can have one run.
    assert sum(shares) == max(limit, workers)
    assert min(shares) >= 1


class _Recorder:
    """Stands in for a Workspace in the controller's clean-up: records what it is asked."""

    def __init__(self) -> None:
        self.cancelled: list[int] = []

    def cancel(self, run_id: int) -> bool:
        self.cancelled.append(run_id)
        return True

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *args: object) -> None:
        return None


def test_controller_cancels_only_runs_no_worker_saw_end(tmp_path: Path) -> None:
    ledger = tmp_path / "runs.txt"
    ledger.write_text("submitted 1\nsubmitted 2\nended 1\nsubmitted 3\nended 3\n")
    recorder = _Recorder()
    lines: list[str] = []
    session.cancel_left_behind(ledger, lines.append, lambda: recorder)  # type: ignore[arg-type,return-value]
    assert recorder.cancelled == [2]
    assert lines == ["Databricks: cancelled run 2: no worker was left to wait for it"]
    assert not ledger.exists()


def test_controller_does_not_connect_when_every_run_ended(tmp_path: Path) -> None:
    ledger = tmp_path / "runs.txt"
    ledger.write_text("submitted 1\nended 1\n")

    def connect() -> Workspace:
        raise AssertionError("connected although every run had ended")

    session.cancel_left_behind(ledger, print, connect)
    assert not ledger.exists()
