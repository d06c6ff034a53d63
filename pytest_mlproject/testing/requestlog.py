"""The request log: every call the fake workspace received, in order, for tests to assert on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class LoggedRequest:
    """One request and what it was answered.

    ``body`` is the parsed JSON body (``None`` for raw uploads and empty bodies; ``body_size``
    still says how many bytes came). ``status`` is ``None`` when the connection was dropped on
    purpose, and ``fault`` names the injected fault (``"error"``, ``"drop"``) if there was one.
    """

    method: str
    path: str
    query: dict[str, str]
    body: Any
    body_size: int
    status: int | None
    fault: str | None = None
    at: float = field(default_factory=time.time)


def _redact(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {_redact(k, secrets): _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secrets) for v in value]
    return value


class RequestLog:
    """A thread-safe, append-only list of :class:`LoggedRequest`.

    The token never enters it: a test log is printed on failure and kept as a CI artefact, and a
    run's ``spark_env_vars`` may well carry the same token the client authenticates with.
    """

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self._secrets = tuple(s for s in secrets if s)
        self._lock = threading.Lock()
        self._entries: list[LoggedRequest] = []
        self._arrived: list[tuple[str, str]] = []

    def record(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str],
        body: Any,
        body_size: int,
        status: int | None,
        fault: str | None = None,
    ) -> None:
        entry = LoggedRequest(
            method,
            _redact(path, self._secrets),
            _redact(query, self._secrets),
            _redact(body, self._secrets),
            body_size,
            status,
            fault,
        )
        with self._lock:
            self._entries.append(entry)

    def arrive(self, method: str, path: str) -> None:
        """Note a request as it arrives, before its latency and its answer."""
        with self._lock:
            self._arrived.append((method, _redact(path, self._secrets)))

    def arrived(self, method: str | None = None, path_contains: str = "") -> int:
        """How many requests with this method (any if ``None``) whose path contains
        ``path_contains`` have arrived, answered or not: a test can act while one is under
        way (send a signal during a slow submit), which :meth:`calls`, filled in as each
        request is answered, cannot tell."""
        with self._lock:
            return sum(
                1
                for m, path in self._arrived
                if (method is None or m == method) and path_contains in path
            )

    def entries(self) -> list[LoggedRequest]:
        """A copy, safe to iterate while requests keep arriving."""
        with self._lock:
            return list(self._entries)

    def calls(self, method: str | None = None, path_contains: str = "") -> list[LoggedRequest]:
        """The entries with this method (any if ``None``) whose path contains ``path_contains``."""
        return [
            e
            for e in self.entries()
            if (method is None or e.method == method) and path_contains in e.path
        ]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._arrived.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __iter__(self) -> Iterator[LoggedRequest]:
        return iter(self.entries())

    def __getitem__(self, index: int) -> LoggedRequest:
        with self._lock:
            return self._entries[index]
