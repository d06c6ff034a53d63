"""Every Databricks run of a pytest process, in flight together, watched by one poller.

The first ``::databricks`` item to run starts the :class:`Coordinator` with every selected
Databricks item of the session (this worker's share of them under pytest-xdist). It connects
once, uploads each archive once, and submits up to ``--databricks-max-parallel`` runs at
once; a poller thread follows them all and submits the next as slots free up. Each item then
only waits for its own run, so N entry points take about as long as the slowest.

Every run this process submits is its to finish: a run past its deadline is cancelled, and
at the end of the session (also after Ctrl-C, SIGTERM or ``-x``) every run still active is
cancelled, and the terminal says which.

Runs are submitted with an idempotency token made from the session id and the item's node
id: a retried submit returns the run already started, and an xdist worker that runs an item
another worker submitted gets that run back instead of starting a second one.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from pytest_mlproject.databricks.job import FIRST_POLL_INTERVAL, Job
from pytest_mlproject.databricks.workspace import (
    CredentialsError,
    DatabricksError,
    RunState,
    Workspace,
)

#: Polling starts fast (runs on a warm pool start in seconds) and backs off to at most
#: this many seconds; ``PYTEST_MLPROJECT_MAX_POLL_INTERVAL`` changes it.
MAX_POLL_INTERVAL = 30.0
#: How long the poller keeps trying when the workspace does not answer, per run.
LOST_CONTACT_AFTER = 600.0
#: Tries at connecting when the workspace answers the identity check with a server error.
CONNECT_ATTEMPTS = 3


class Coordinator:
    """Submits, follows and cancels the runs of one pytest process."""

    def __init__(
        self,
        *,
        profile: str | None,
        upload_dir: str | None,
        max_parallel: int,
        echo: Callable[[str], None],
        connect: Callable[[], Workspace] | None = None,
        close_workspace: bool = True,
        ledger: Path | None = None,
    ) -> None:
        self.profile = profile
        self.upload_dir = upload_dir
        self.max_parallel = max_parallel
        self._echo = echo
        # One stuck call must not stall the poller for every run: the SDK retries each call
        # for at most this long, and the poller gives up on a run after LOST_CONTACT_AFTER.
        self._connect = connect or (lambda: Workspace.connect(profile, retry_timeout=30.0))
        self.workspace: Workspace | None = None
        #: ``False`` when ``connect`` hands over a workspace its caller goes on using.
        self._close_workspace = close_workspace
        #: Under xdist, a file every worker appends its run ids to, so the controller can
        #: cancel what a worker left behind when it ended before another worker's item did.
        self.ledger = ledger
        self.connect_error: str | None = None
        self.connect_error_shown = False
        self.jobs: dict[str, Job] = {}
        self._waiting: list[Job] = []
        #: Submissions sent and not answered yet: they count against the cap too, or the
        #: main thread and the poller could each take the last slot.
        self._submitting = 0
        self._lock = threading.RLock()
        self._messages: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._uploaded: set[str] = set()
        self._previous_sigterm: Any = None
        self.started = False
        self.max_interval = float(
            os.environ.get("PYTEST_MLPROJECT_MAX_POLL_INTERVAL") or MAX_POLL_INTERVAL
        )

    # --- starting ---------------------------------------------------------------------

    def start(self, jobs: list[Job]) -> None:
        """Connect, upload and submit ``jobs`` (as many as the limit allows). Main thread."""
        self.started = True
        with self._lock:
            for job in jobs:
                self.jobs.setdefault(job.nodeid, job)
        if not jobs:
            return
        try:
            self.workspace = self._connect_retrying()
        except CredentialsError as exc:
            self.connect_error = str(exc)
            for job in jobs:
                self._finish(job, error=self.connect_error)
            return
        if self.upload_dir is None:
            self.upload_dir = self.workspace.home_upload_dir()
        self._install_sigterm()
        for job in jobs:
            self._enqueue(job)
        self._submit_waiting()
        self._poller = threading.Thread(
            target=self._poll_loop, name="mlproject-poller", daemon=True
        )
        self._poller.start()

    def _connect_retrying(self) -> Workspace:
        """Connect, trying again when the workspace answered with a server error (500, 502,
        504: the SDK retries only throttling, 503 and the network), so that one bad answer
        to the identity check does not fail every item of the session."""
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                return self._connect()
            except CredentialsError as exc:
                server_error = exc.status is not None and exc.status >= 500
                if not server_error or attempt == CONNECT_ATTEMPTS - 1:
                    raise
                time.sleep(2**attempt)
        raise AssertionError("unreachable")

    def ensure(self, job: Job, *, first: bool = True) -> Job:
        """The job for an item this process did not start with (xdist: another worker's
        share). Submitting it again returns the run already started, thanks to its token.
        ``first``: ahead of the jobs waiting for a free slot (an item waits for it now)."""
        with self._lock:
            known = self.jobs.get(job.nodeid)
            if known is not None and first and known in self._waiting:
                # An item waits for it now: it goes before jobs no item waits for yet.
                self._waiting.remove(known)
                self._waiting.insert(0, known)
            if known is not None:
                return known
            self.jobs[job.nodeid] = job
        if self.connect_error is not None:
            self._finish(job, error=self.connect_error)
        elif self.workspace is None:
            self.start([job])
        else:
            self._enqueue(job, first=first)
            self._submit_waiting()
        return job

    def _enqueue(self, job: Job, first: bool = False) -> None:
        with self._lock:
            if first:
                self._waiting.insert(0, job)
            else:
                self._waiting.append(job)

    def _in_flight(self) -> int:
        return sum(
            1 for job in self.jobs.values() if job.run_id is not None and not job.done.is_set()
        )

    def _submit_waiting(self) -> None:
        while True:
            with self._lock:
                # Once the session is stopping, a run submitted now would only be cancelled.
                busy = self._in_flight() + self._submitting
                if self._stop.is_set() or busy >= self.max_parallel:
                    return
                now = time.monotonic()
                job = next((j for j in self._waiting if j._next_poll <= now), None)
                if job is None:  # nothing waiting, or only jobs waiting to try again
                    return
                self._waiting.remove(job)
                self._submitting += 1
            try:
                self._submit(job)
            finally:
                with self._lock:
                    self._submitting -= 1

    def _submit(self, job: Job) -> None:
        workspace = self.workspace
        assert workspace is not None
        assert self.upload_dir is not None
        try:
            for upload in job.uploads:
                if upload.name not in self._uploaded:
                    sent = workspace.upload(self.upload_dir, upload.name, upload.data)
                    self._uploaded.add(upload.name)
                    if sent:
                        self._say(f"uploaded {upload.name} to {self.upload_dir}")
            body = self._body(job, workspace)
            with _interrupts_deferred():
                # Ctrl-C between the server starting the run and us learning its id would
                # leave a run nobody cancels: the interrupt waits until the id is kept.
                run_id = workspace.submit(body)
                with self._lock:
                    job.run_id = run_id
                    job.submitted_at = time.monotonic()
                self._record(run_id)
        except DatabricksError as exc:
            if not self._retry_later(job, exc):
                self._finish(job, error=f"could not submit the run: {exc}{_next_step(job, exc)}")
            return
        state: RunState | None
        try:
            state = workspace.get_run(run_id)
        except DatabricksError:
            # The run exists: the poller asks again, as it does for every run, instead of
            # giving up on a run that would then go on with nobody to cancel it.
            state = None
        with self._lock:
            job.state = state
            job._failing_since = None
            job._interval = FIRST_POLL_INTERVAL
            job._next_poll = time.monotonic() + FIRST_POLL_INTERVAL
        link = (state.run_page_url if state is not None else None) or f"run {run_id}"
        self._say(f"{job.label}: submitted run {run_id}: {link}")

    def _retry_later(self, job: Job, error: DatabricksError) -> bool:
        """Queue ``job`` again after a transient failure to upload or submit (a 500, a lost
        connection, throttling past the SDK's retries), for up to ``LOST_CONTACT_AFTER``.

        Safe: the uploads are content-addressed and overwrite, and the submit carries the
        job's idempotency token, so trying again never starts a second run. Without this, a
        moment of trouble on the network failed an entry point that was fine.
        """
        if not error.transient or isinstance(error, CredentialsError) or self._stop.is_set():
            return False
        now = time.monotonic()
        job._failing_since = job._failing_since or now
        if now - job._failing_since > LOST_CONTACT_AFTER:
            return False
        job._interval = min(job._interval * 2, self.max_interval)
        job._next_poll = now + job._interval
        with self._lock:
            self._waiting.append(job)
        self._say(f"{job.label}: trying again in {job._interval:g} s: {error}")
        return True

    def _body(self, job: Job, workspace: Workspace) -> dict[str, Any]:
        """The submit body with the launcher's location filled in."""
        from pytest_mlproject.databricks.payload import placed

        assert self.upload_dir is not None
        return placed(job.body, self.upload_dir)

    # --- waiting ----------------------------------------------------------------------

    def wait(self, job: Job, deadline: float | None = None) -> Job:
        """Block until ``job`` ends, printing what happens meanwhile. Main thread only.

        Past ``deadline`` (a ``time.monotonic()`` value; by default the job's own timeout
        from its submission), the run is cancelled and the job fails as timed out.
        """
        job.awaited = True
        while not job.done.wait(0.2):
            self.flush()
            if job.submitted_at is None:
                with self._lock:
                    gone = self._poller is None or not self._poller.is_alive()
                    queued = job in self._waiting
                if gone and not queued:
                    self._finish(job, error="the run was never submitted")
                continue
            limit = deadline if deadline is not None else job.submitted_at + grace(job.timeout)
            if time.monotonic() > limit:
                if self._cancel(job, f"timed out after {job.timeout:g} s"):
                    self._finish(
                        job,
                        error=f"no result within {job.timeout:g} s (--databricks-timeout); "
                        "the run was cancelled",
                    )
                else:  # it ended meanwhile: report how, from its final state
                    self._poll(job)
                    self._finish(job, error=None if job.done.is_set() else "no result in time")
        self.flush()
        return job

    def flush(self) -> None:
        """Print the messages the poller queued. Main thread only."""
        while True:
            try:
                self._echo(self._messages.get_nowait())
            except queue.Empty:
                return

    def _say(self, message: str) -> None:
        if threading.current_thread() is threading.main_thread():
            self._echo(f"Databricks: {message}")
        else:
            self._messages.put(f"Databricks: {message}")

    # --- polling ----------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                active = [
                    j for j in self.jobs.values() if j.run_id is not None and not j.done.is_set()
                ]
                waiting = bool(self._waiting)
            if not active and not waiting:
                if self._stop.wait(0.2):
                    return
                continue
            now = time.monotonic()
            for job in active:
                if job._next_poll <= now and not self._stop.is_set():
                    self._poll(job)
            self._submit_waiting()
            due = min((j._next_poll for j in active), default=now + 0.2)
            self._stop.wait(max(0.05, min(due - time.monotonic(), 1.0)))

    def _poll(self, job: Job) -> None:
        workspace = self.workspace
        assert workspace is not None
        assert job.run_id is not None
        now = time.monotonic()
        try:
            state = workspace.get_run(job.run_id)
        except CredentialsError as exc:
            self._finish(job, error=f"the workspace stopped accepting our credentials: {exc}")
            return
        except DatabricksError as exc:
            job._failing_since = job._failing_since or now
            if now - job._failing_since > LOST_CONTACT_AFTER:
                self._finish(job, error=f"lost contact with the workspace: {exc}")
            else:
                job._next_poll = now + min(job._interval, self.max_interval)
            return
        job._failing_since = None
        previous = job.state
        job.state = state
        if previous is None or (previous.life_cycle, previous.result) != (
            state.life_cycle,
            state.result,
        ):
            self._say(f"{job.label}: run {job.run_id} is {state.describe()}")
            job._interval = min(FIRST_POLL_INTERVAL, self.max_interval)
        else:
            job._interval = min(job._interval * 1.5, self.max_interval)
        if state.terminal:
            if state.task_run_id is not None:  # the run's own output, passed or not
                try:
                    job.output = workspace.get_output(state.task_run_id)
                except DatabricksError as exc:
                    job._output_failing_since = job._output_failing_since or now
                    if exc.transient and now - job._output_failing_since <= LOST_CONTACT_AFTER:
                        job._next_poll = now + min(job._interval, self.max_interval)
                        return  # ask again at the next poll, rather than lose the log
                    job.output = None  # the failure still shows its state and message
            self._finish(job)
            return
        jitter = random.uniform(0.9, 1.1)  # many runs should not poll in lock-step
        job._next_poll = now + job._interval * jitter

    def _finish(self, job: Job, error: str | None = None) -> None:
        with self._lock:
            if job.done.is_set():
                return
            if job.run_id is not None and job.state is not None and job.state.terminal:
                self._record(job.run_id, "ended")
            if error is not None:
                job.error = error
            job.finished_at = time.monotonic()
            if job in self._waiting:
                self._waiting.remove(job)
            job.done.set()

    # --- cancelling -------------------------------------------------------------------

    def _cancel(self, job: Job, why: str) -> bool:
        """Cancel the job's run if it is still going; ``True`` if it was."""
        workspace = self.workspace
        if workspace is None or job.run_id is None or job.done.is_set() or job.cancelled:
            return False
        job.cancelled = True
        try:
            cancelled = workspace.cancel(job.run_id)
        except DatabricksError as exc:
            self._echo(f"Databricks: could not cancel run {job.run_id} ({job.label}): {exc}")
            return False
        if cancelled:
            self._echo(f"Databricks: cancelled run {job.run_id} ({job.label}): {why}")
        return cancelled

    def close(
        self, why: str = "the session ended before it finished", *, handed_over: bool = False
    ) -> None:
        """Cancel every run still active, stop polling, and restore SIGTERM. Main thread.

        ``handed_over``: this is an xdist worker ending normally. A run it submitted for an
        item another worker runs is that worker's to wait for, so it is left alone; the
        controller cancels whatever is still active once every worker is done.
        """
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=10)
            if self._poller.is_alive():
                # A request is still under way, maybe a submit: the run it starts must be
                # known before the runs are cancelled. The SDK's retry budget bounds it.
                self._echo("Databricks: waiting for a request under way before cancelling")
                self._poller.join()
        with self._lock:
            active = [j for j in self.jobs.values() if j.run_id is not None and not j.done.is_set()]
            for job in self._waiting:
                self._finish(job, error=why)
        for job in active:
            if handed_over and not job.awaited:
                continue
            self._cancel(job, why)
            self._finish(job, error=f"cancelled: {why}")
        self.flush()
        if self.workspace is not None and self._close_workspace:
            self.workspace.close()
        self._restore_sigterm()

    def _record(self, run_id: int, event: str = "submitted") -> None:
        if self.ledger is None:
            return
        # One short line with O_APPEND: whole on every POSIX file system we run on.
        with self.ledger.open("a", encoding="ascii") as ledger:
            ledger.write(f"{event} {run_id}\n")

    def _install_sigterm(self) -> None:
        """SIGTERM (a CI runner stopping the job) ends the session like Ctrl-C does, so the
        runs are cancelled on the way out instead of left running."""
        if threading.current_thread() is not threading.main_thread():
            return

        def interrupt(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        self._previous_sigterm = signal.signal(signal.SIGTERM, interrupt)

    def _restore_sigterm(self) -> None:
        if (
            self._previous_sigterm is not None
            and threading.current_thread() is threading.main_thread()
        ):
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None


def ledger_path(session_id: str) -> Path:
    """The run ledger of an xdist session, shared by its controller and workers."""
    folder = Path(tempfile.gettempdir()) / f"pytest-mlproject-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / f"runs-{session_id}.txt"


def cancel_left_behind(
    ledger: Path, echo: Callable[[str], None], connect: Callable[[], Workspace]
) -> None:
    """On the xdist controller, once every worker is done: cancel the runs still active."""
    submitted: set[int] = set()
    ended: set[int] = set()
    try:
        for line in ledger.read_text("ascii").splitlines():
            event, _, number = line.partition(" ")
            (ended if event == "ended" else submitted).add(int(number))
    except (OSError, ValueError):
        return
    finally:
        ledger.unlink(missing_ok=True)
    run_ids = sorted(submitted - ended)
    if not run_ids:
        return  # every run was seen to its end: no need to connect at all
    try:
        workspace = connect()
    except DatabricksError as exc:
        echo(f"Databricks: could not check the session's runs {run_ids}: {exc}")
        return
    with workspace:
        for run_id in run_ids:
            try:
                if workspace.cancel(run_id):
                    echo(f"Databricks: cancelled run {run_id}: no worker was left to wait for it")
            except DatabricksError as exc:
                echo(f"Databricks: could not cancel run {run_id}: {exc}")


def grace(timeout: float) -> float:
    """How long to wait for a run before cancelling it: its own timeout, which Databricks
    enforces, plus a little (5%, at least 5 s, at most a minute) for Databricks to end it
    and say so itself."""
    return timeout + min(60.0, max(5.0, timeout * 0.05))


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in caught[:1]:
            signal.raise_signal(signum)


def share(limit: int, workerinput: Mapping[str, Any] | None = None) -> tuple[int, int, int]:
    """This process's part of the work under pytest-xdist: (worker index, workers, limit).

    Each worker submits the items whose position modulo the number of workers is its own,
    and keeps at most its share of ``--databricks-max-parallel`` in flight. The shares add
    up to the limit (rounding up for every worker would overshoot it: 3 workers and a limit
    of 16 would allow 18), except that every worker may have one run, so a limit below the
    number of workers allows one run per worker.

    ``workerinput`` is what xdist gives a worker's config (``None`` elsewhere). It is read
    rather than the PYTEST_XDIST_* variables, which a pytest session started from inside a
    worker (pytester, a subprocess) inherits without being a worker itself.
    """
    workerinput = workerinput or {}
    worker = str(workerinput.get("workerid", ""))
    count = int(workerinput.get("workercount", 1) or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    base, extra = divmod(limit, count)
    return index, count, max(1, base + (1 if index < extra else 0))


def _next_step(job: Job, error: DatabricksError) -> str:
    """What to do when the workspace refuses a serverless run (serverless jobs compute not
    enabled, or anything else it will not run there)."""
    if not job.body.get("environments") or error.transient or isinstance(error, CredentialsError):
        return ""
    return (
        "; serverless jobs compute was refused: ask a workspace admin to enable serverless "
        "compute for jobs, or give this entry point a cluster spec (entry_points: ENTRY: "
        "databricks: cluster_spec: ... in pytest-mlproject.yaml, or --databricks-cluster-spec "
        "without --databricks-serverless)"
    )
