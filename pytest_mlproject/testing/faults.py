"""Fault injection: the knobs a test turns to make the fake workspace misbehave like a real one.

Every knob can be changed while the server runs, from any thread. Request faults (errors,
dropped connections, latency) are drawn per request from a seeded random generator, so a test
that sends the same requests in the same order sees the same faults. Run faults are copied into
each run when it is submitted, so changing them later never changes a run already under way.
"""

from __future__ import annotations

import random
import re
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

RunOutcome = Literal["INTERNAL_ERROR", "SKIPPED"]
StateFields = Literal["both", "state", "status"]

_DEFAULTS: dict[str, Any] = {
    "error_rate": 0.0,
    "error_status": 429,
    "retry_after": None,
    "drop_rate": 0.0,
    "latency": 0.0,
    "path_pattern": None,
    "pending_polls": 0,
    "cluster_start_seconds": 0.0,
    "run_outcome": None,
    "state_fields": "both",
    "echo_auth_in_errors": False,
    "serverless_enabled": True,
}


@dataclass(frozen=True)
class Fault:
    """What the server does instead of answering: an error status, or closing the connection."""

    kind: Literal["error", "drop"]
    status: int = 0
    retry_after: int | None = None


@dataclass(frozen=True)
class RunBehaviour:
    """The run faults in force when a run was submitted."""

    pending_polls: int = 0
    cluster_start_seconds: float = 0.0
    outcome: RunOutcome | None = None


def _check(name: str, value: Any) -> None:
    """Refuse a bad knob value at once, in the test that set it, not later in a server thread."""
    if name == "serverless_enabled" and not isinstance(value, bool):
        raise ValueError(f"serverless_enabled must be True or False, not {value!r}")
    rate = name in ("error_rate", "drop_rate")
    if rate and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a number between 0 and 1, not {value!r}")
    if name == "error_status" and not (isinstance(value, int) and 400 <= value <= 599):
        raise ValueError(f"error_status must be an HTTP error status such as 429 or 503: {value!r}")
    if name == "retry_after" and not (value is None or (isinstance(value, int) and value >= 0)):
        raise ValueError(f"retry_after must be None (no header) or whole seconds >= 0: {value!r}")
    if name in ("latency", "cluster_start_seconds") and not (
        isinstance(value, (int, float)) and value >= 0
    ):
        raise ValueError(f"{name} must be seconds >= 0, not {value!r}")
    if name == "pending_polls" and not (isinstance(value, int) and value >= 0):
        raise ValueError(f"pending_polls must be a whole number >= 0, not {value!r}")
    if name == "path_pattern" and value is not None:
        re.compile(value)
    if name == "run_outcome" and value not in (None, "INTERNAL_ERROR", "SKIPPED"):
        raise ValueError(f"run_outcome must be None, 'INTERNAL_ERROR' or 'SKIPPED': {value!r}")
    if name == "state_fields" and value not in ("both", "state", "status"):
        raise ValueError(f"state_fields must be 'both', 'state' or 'status': {value!r}")
    if name == "echo_auth_in_errors" and not isinstance(value, bool):
        raise ValueError(f"echo_auth_in_errors must be True or False, not {value!r}")


class Faults:
    """The fault knobs of one fake workspace.

    Request faults apply to ``/api/...`` requests whose path matches ``path_pattern`` (a regular
    expression, searched; ``None`` matches all):

    - ``error_rate``: share of requests answered ``error_status`` (429, 500, 503 ...).
    - ``retry_after``: seconds sent in ``Retry-After`` with those errors; ``None`` sends no header.
    - ``drop_rate``: share of requests whose connection is closed without an answer.
    - ``latency``: seconds added before every answer.

    Run faults, fixed per run at submission:

    - ``pending_polls``: the run stays PENDING until ``runs/get`` has asked about it this often.
    - ``cluster_start_seconds``: each task stays PENDING at least this long (a slow cluster).
    - ``run_outcome``: ``"INTERNAL_ERROR"`` or ``"SKIPPED"`` ends the run so, without executing it.

    And ``state_fields``: which run-state fields answers carry, ``"both"``, ``"state"`` or
    ``"status"``; and ``echo_auth_in_errors``: error answers quote the request's
    ``Authorization`` header in their message, as careless proxies and servers do, to test that
    a client never shows its token. ``serverless_enabled=False``: a workspace without
    serverless jobs compute, which answers a submit naming an environment with 400
    ``INVALID_PARAMETER_VALUE``.
    """

    error_rate: float
    error_status: int
    retry_after: int | None
    drop_rate: float
    latency: float
    path_pattern: str | None
    pending_polls: int
    cluster_start_seconds: float
    run_outcome: RunOutcome | None
    state_fields: StateFields
    echo_auth_in_errors: bool
    serverless_enabled: bool
    _lock: threading.Lock
    _random: random.Random
    _scripted: deque[Fault]

    def __init__(self, seed: int = 0) -> None:
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "_random", random.Random(seed))
        object.__setattr__(self, "_scripted", deque())
        self.reset()

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _DEFAULTS:
            raise AttributeError(f"Faults has no knob {name!r}; knobs: {', '.join(_DEFAULTS)}")
        self.set(**{name: value})

    def set(self, **knobs: Any) -> None:
        """Change several knobs at once, so no request sees half of the change."""
        for name, value in knobs.items():
            if name not in _DEFAULTS:
                raise AttributeError(f"Faults has no knob {name!r}; knobs: {', '.join(_DEFAULTS)}")
            _check(name, value)
        with self._lock:
            for name, value in knobs.items():
                object.__setattr__(self, name, value)

    def reset(self) -> None:
        """Back to a well-behaved workspace; scripted faults are forgotten too."""
        with self._lock:
            self._scripted.clear()
        self.set(**_DEFAULTS)

    def reseed(self, seed: int) -> None:
        with self._lock:
            self._random.seed(seed)

    def fail_next(self, count: int, *, status: int = 429, retry_after: int | None = 0) -> None:
        """Answer the next ``count`` matching requests with ``status``, before any random share."""
        _check("error_status", status)
        _check("retry_after", retry_after)
        with self._lock:
            self._scripted.extend([Fault("error", status, retry_after)] * count)

    def drop_next(self, count: int) -> None:
        """Close the connection of the next ``count`` matching requests without answering."""
        with self._lock:
            self._scripted.extend([Fault("drop")] * count)

    def for_request(self, path: str) -> tuple[float, Fault | None]:
        """The latency and the fault (if any) for one request, drawn once, under the lock."""
        if not path.startswith("/api/"):
            return 0.0, None
        with self._lock:
            if self.path_pattern is not None and not re.search(self.path_pattern, path):
                return 0.0, None
            if self._scripted:
                return self.latency, self._scripted.popleft()
            draw = self._random.random()
            if draw < self.drop_rate:
                return self.latency, Fault("drop")
            if draw < self.drop_rate + self.error_rate:
                return self.latency, Fault("error", self.error_status, self.retry_after)
            return self.latency, None

    def run_behaviour(self) -> RunBehaviour:
        with self._lock:
            return RunBehaviour(self.pending_polls, self.cluster_start_seconds, self.run_outcome)

    def __repr__(self) -> str:
        knobs = ", ".join(f"{name}={getattr(self, name)!r}" for name in _DEFAULTS)
        return f"Faults({knobs})"
