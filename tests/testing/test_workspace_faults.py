"""Fault injection: each knob, seen through databricks-sdk (which retries 429 and 503)."""

from __future__ import annotations

import http.client
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from databricks.sdk.errors import InternalError, OperationFailed
from databricks.sdk.service.jobs import BaseRun, Run, RunTask, SubmitTask

from pytest_mlproject.testing import Faults

if TYPE_CHECKING:
    from workspace_helpers import Harness

pytest_plugins = ["pytest_mlproject.plugin.workspace_fixtures", "workspace_helpers"]


def _statuses(harness: Harness, path: str) -> list[int | None]:
    return [entry.status for entry in harness.workspace.log.calls(path_contains=path)]


@pytest.mark.parametrize(
    ("status", "retry_after"), [(429, 0), (429, None), (503, 0)], ids=["429", "429-bare", "503"]
)
def test_throttling_and_unavailability_are_retried_by_the_sdk(
    harness: Harness, status: int, retry_after: int | None
) -> None:
    harness.workspace.faults.fail_next(1, status=status, retry_after=retry_after)

    assert harness.client.current_user.me().user_name == harness.workspace.user_name
    assert _statuses(harness, "/Me") == [status, 200]
    assert harness.workspace.log.calls(path_contains="/Me")[0].fault == "error"


def test_retry_after_is_sent_only_when_set(harness: Harness) -> None:
    faults = harness.workspace.faults
    port = int(harness.workspace.host.rsplit(":", 1)[1])
    faults.fail_next(1, status=429, retry_after=7)
    faults.fail_next(1, status=429, retry_after=None)
    answers = []
    for _ in range(2):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/api/2.0/preview/scim/v2/Me")
        response = connection.getresponse()
        answers.append((response.status, response.getheader("Retry-After"), response.read()))
        connection.close()

    assert [a[:2] for a in answers] == [(429, "7"), (429, None)]
    assert b'"error_code": "REQUEST_LIMIT_EXCEEDED"' in answers[0][2]


def test_a_500_is_not_retried(harness: Harness) -> None:
    harness.workspace.faults.fail_next(1, status=500)

    with pytest.raises(InternalError):
        harness.client.current_user.me()
    assert _statuses(harness, "/Me") == [500]


def test_a_dropped_connection_is_retried(harness: Harness) -> None:
    harness.workspace.faults.drop_next(1)

    harness.client.current_user.me()

    entries = harness.workspace.log.calls(path_contains="/Me")
    assert [(e.status, e.fault) for e in entries] == [(None, "drop"), (200, None)]


@pytest.mark.parametrize("token", ["once", None])
def test_a_dropped_answer_to_submit_shows_why_idempotency_tokens_matter(
    harness: Harness, token: str | None
) -> None:
    task = harness.task(harness.put_script("drop.py", "print(1)"))
    harness.workspace.faults.path_pattern = "/runs/submit"
    harness.workspace.faults.drop_next(1)

    run_id = harness.submit(task, idempotency_token=token)

    runs = [r.run_id for r in harness.client.jobs.list_runs()]
    # The first submit was carried out and only its answer lost; the SDK sent it again.
    assert runs == ([run_id] if token else [run_id, run_id - 2])
    assert _statuses(harness, "/runs/submit") == [None, 200]


def test_a_share_of_requests_fail_and_the_sdk_still_gets_through(harness: Harness) -> None:
    harness.workspace.faults.set(error_rate=0.3, error_status=503, retry_after=0, drop_rate=0.1)

    for _ in range(6):
        harness.client.current_user.me()

    statuses = _statuses(harness, "/Me")
    assert statuses.count(200) == 6
    assert len(statuses) > 6


def test_the_random_share_is_deterministic_for_a_seed() -> None:
    def draws(faults: Faults) -> list[str | None]:
        faults.set(error_rate=0.3, drop_rate=0.2)
        return [getattr(faults.for_request("/api/x")[1], "kind", None) for _ in range(50)]

    first, again, other = draws(Faults(seed=7)), draws(Faults(seed=7)), draws(Faults(seed=8))
    assert first == again != other
    assert {"error", "drop", None} == set(first)
    reseeded = Faults(seed=8)
    reseeded.reseed(7)
    assert draws(reseeded) == first


def test_path_pattern_limits_request_faults(harness: Harness) -> None:
    faults = harness.workspace.faults
    faults.path_pattern = r"/jobs/runs/list$"
    faults.fail_next(1, status=429, retry_after=0)

    harness.client.current_user.me()
    list(harness.client.jobs.list_runs())

    assert _statuses(harness, "/Me") == [200]
    assert _statuses(harness, "/runs/list") == [429, 200]


def test_latency_delays_every_answer(harness: Harness) -> None:
    harness.workspace.faults.latency = 0.2
    started = time.monotonic()
    harness.client.current_user.me()
    # A floor, not a timing assertion: the server sleeps at least this long before answering.
    assert time.monotonic() - started >= 0.2


def test_a_run_stays_pending_for_the_polls_asked(harness: Harness) -> None:
    harness.workspace.faults.pending_polls = 3
    run_id = harness.submit(harness.task(harness.put_script("p.py", "print(1)")))
    harness.workspace.faults.pending_polls = 0  # runs keep the faults they were submitted with

    seen = [harness.life_cycle(harness.client.jobs.get_run(run_id)) for _ in range(3)]

    assert seen == ["PENDING"] * 3
    assert harness.result(harness.wait_for_end(run_id)) == "SUCCESS"


def test_a_slow_cluster_start_keeps_tasks_pending(harness: Harness) -> None:
    harness.workspace.faults.cluster_start_seconds = 0.3
    run = harness.run(harness.task(harness.put_script("slow_start.py", "print(1)")))

    assert harness.result(run) == "SUCCESS"
    assert run.tasks
    # A floor again: the task cannot leave PENDING before its cluster has "started".
    assert (run.tasks[0].setup_duration or 0) >= 300


def test_a_run_can_end_in_internal_error(harness: Harness) -> None:
    harness.workspace.faults.run_outcome = "INTERNAL_ERROR"
    task = harness.task(harness.put_script("broken.py", "print(1)"))
    run = harness.run(task)

    assert (harness.life_cycle(run), harness.result(run)) == ("INTERNAL_ERROR", None)
    assert harness.termination(run)[0] == "INTERNAL_ERROR"
    # The SDK's own waiter raises on INTERNAL_ERROR.
    waiter = harness.client.jobs.submit(run_name="w", tasks=[SubmitTask.from_dict(task)])
    with pytest.raises(OperationFailed, match="INTERNAL_ERROR"):
        waiter.result(timeout=timedelta(seconds=30))


def test_a_run_can_be_skipped(harness: Harness) -> None:
    harness.workspace.faults.run_outcome = "SKIPPED"
    run = harness.run(harness.task(harness.put_script("skipped.py", "print(1)")))

    assert (harness.life_cycle(run), harness.result(run)) == ("SKIPPED", None)
    assert harness.termination(run)[0] == "SKIPPED"
    assert run.tasks
    assert run.tasks[0].state is not None
    assert run.tasks[0].state.life_cycle_state is not None
    assert run.tasks[0].state.life_cycle_state.value == "SKIPPED"


@pytest.mark.parametrize("fields", ["state", "status", "both"])
def test_answers_carry_state_status_or_both(harness: Harness, fields: str) -> None:
    harness.workspace.faults.set(state_fields=fields)
    run = harness.run(harness.task(harness.put_script("fields.py", "print(1)")))
    listed = next(iter(harness.client.jobs.list_runs(expand_tasks=True)))

    shown_runs: list[Run | BaseRun | RunTask] = [run, listed, *(run.tasks or [])]
    for shown in shown_runs:
        assert (shown.state is not None) == (fields in ("state", "both"))
        assert (shown.status is not None) == (fields in ("status", "both"))
    if fields != "state":
        assert harness.termination(run)[0] == "SUCCESS"


def test_knobs_are_checked_when_set() -> None:
    faults = Faults()
    for name, value in [
        ("error_rate", 1.5),
        ("drop_rate", -0.1),
        ("error_status", 200),
        ("retry_after", -1),
        ("latency", -1),
        ("pending_polls", 1.5),
        ("run_outcome", "FAILED"),
        ("state_fields", "neither"),
    ]:
        with pytest.raises(ValueError, match=name):
            setattr(faults, name, value)
    with pytest.raises(AttributeError, match="no knob 'error_share'"):
        faults.set(error_share=0.1)
    with pytest.raises(AttributeError, match="no knob"):
        faults.errors = 1
    faults.set(error_rate=1.0, latency=3)
    faults.fail_next(2)
    faults.reset()
    assert faults.for_request("/api/x") == (0.0, None)
    assert "error_rate=0.0" in repr(faults)


def test_knobs_can_change_while_requests_are_served(harness: Harness) -> None:
    run = harness.run(harness.task(harness.put_script("busy.py", "print(1)")))
    assert run.run_id is not None
    failures: list[BaseException] = []
    stop = threading.Event()

    def poll() -> None:
        try:
            while not stop.is_set():
                shown = harness.client.jobs.get_run(run.run_id or 0)
                assert shown.state is not None or shown.status is not None
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for thread in threads:
        thread.start()
    for fields in ["state", "status", "both"] * 30:
        harness.workspace.faults.set(state_fields=fields, latency=0.001)
    stop.set()
    for thread in threads:
        thread.join()

    assert failures == []
