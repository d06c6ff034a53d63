"""One Databricks run as the session follows it: its submit body, the files it needs
uploaded, and what became of it. Built by :mod:`~pytest_mlproject.databricks.payload`,
submitted and followed by :mod:`~pytest_mlproject.databricks.session`; it imports neither.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mlproject.databricks.runstate import RunOutput, RunState

#: The first poll of a run comes this many seconds after its submission; then it backs off.
FIRST_POLL_INTERVAL = 1.0


@dataclass
class Upload:
    """A file to put beside the launcher: a project archive or a requirements file."""

    name: str
    data: bytes


@dataclass
class Job:
    """One entry point's run, from preparation to its end."""

    nodeid: str
    label: str
    #: The ``runs/submit`` body, complete but for ``{upload_dir}`` placeholders resolved by
    #: :meth:`Coordinator._body`.
    body: Mapping[str, Any]
    uploads: tuple[Upload, ...]
    timeout: float
    run_id: int | None = None
    state: RunState | None = None
    output: RunOutput | None = None
    #: A failure of ours rather than the run's: could not submit, lost contact, timed out.
    error: str | None = None
    cancelled: bool = False
    #: An item of this process waits for it (under xdist, another worker's item may).
    awaited: bool = False
    submitted_at: float | None = None
    finished_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event)
    _next_poll: float = 0.0
    _interval: float = FIRST_POLL_INTERVAL
    _failing_since: float | None = None
    _output_failing_since: float | None = None
