"""The HTTP side of the fake workspace: a threaded server on 127.0.0.1, auth, faults, the log.

:class:`FakeWorkspace` is the one public entry point: ``start()`` it (or use it as a context
manager), point ``databricks-sdk`` at ``host`` with ``token``, and ``stop()`` it, which kills
every run still going and removes its temporary directory.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
import shutil
import socket
import socketserver
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pytest_mlproject.testing.api import Api, Request, Response, error_response, json_response
from pytest_mlproject.testing.errors import ApiError
from pytest_mlproject.testing.faults import Fault, Faults
from pytest_mlproject.testing.model import Leftover, Site
from pytest_mlproject.testing.requestlog import RequestLog
from pytest_mlproject.testing.runs import Runs
from pytest_mlproject.testing.storage import Storage

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

_INJECTED = {
    429: ("REQUEST_LIMIT_EXCEEDED", "Too many requests. Please wait a moment and try again."),
    500: ("INTERNAL_ERROR", "Internal error injected by the fake workspace."),
    503: ("TEMPORARILY_UNAVAILABLE", "The service is temporarily unavailable."),
}
_NO_AUTH_PATHS = ("/.well-known/databricks-config",)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Set right after binding: the runs need the host, so the port, for their page URLs.
    api: Api

    def __init__(self, workspace: FakeWorkspace) -> None:
        self.workspace = workspace
        # Set when stopping: wakes requests sleeping on injected latency.
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves its own name (getfqdn), a DNS round trip for nothing.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = int(self.server_address[1])

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (a timeout, a stop) is no error of the server's.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """End kept-alive connections, whose handler threads would otherwise wait on them."""
        self.stopping.set()
        with self._connections_lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request log records every call, without the token."""

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers, up to the blank line
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        workspace = self.server.workspace
        url = urlsplit(self.path)
        body = self._read_body()
        request = Request(
            method=self.command,
            path=unquote(url.path),
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        if body and "json" in request.headers.get("content-type", "json"):
            try:
                request.data = json.loads(body)
            except ValueError:
                request.data = None
        workspace.log.arrive(request.method, request.path)
        latency, fault = workspace.faults.for_request(request.path)
        if latency:
            self.server.stopping.wait(latency)
        response = self._respond(request, fault)

        def record(status: int | None) -> None:
            workspace.log.record(
                request.method,
                request.path,
                query=request.query,
                body=request.data,
                body_size=len(body),
                status=status,
                fault=fault.kind if fault else None,
            )

        if response is None:
            record(None)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        record(response.status)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if "Content-Length" not in response.headers:
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _respond(self, request: Request, fault: Fault | None) -> Response | None:
        """The answer, or ``None`` to drop the connection without one."""
        if fault is not None and fault.kind == "error":
            code, message = _INJECTED.get(fault.status, ("INJECTED_ERROR", "Injected error."))
            headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            return self._echo(
                request, error_response(ApiError(fault.status, code, message), headers)
            )
        response = self._echo(request, self._answer(request))
        # A dropped connection loses the answer, not the request: a client that retries a
        # submit without an idempotency_token starts a second run, as it would on Databricks.
        return None if fault is not None else response

    def _echo(self, request: Request, response: Response) -> Response:
        """With ``echo_auth_in_errors``, quote the Authorization header in an error's message."""
        if response.status < 400 or not self.server.workspace.faults.echo_auth_in_errors:
            return response
        try:
            body = json.loads(response.body)
        except ValueError:
            return response
        if isinstance(body, dict):
            quoted = request.headers.get("authorization", "(none)")
            body["message"] = f"{body.get('message', '')} [request Authorization: {quoted}]"
            response.body = json.dumps(body).encode()
            response.headers.pop("Content-Length", None)
        return response

    def _answer(self, request: Request) -> Response:
        if request.path in _NO_AUTH_PATHS:
            # No host metadata: the SDK then falls back to what its Config was given.
            return error_response(ApiError(404, "NOT_FOUND", "Not found."))
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            message = "Credential was not sent or was of an unsupported type for this API."
            return error_response(ApiError(401, "UNAUTHENTICATED", message))
        given = authorization[len("Bearer ") :].encode()
        if not hmac.compare_digest(given, self.server.workspace.token.encode()):
            return error_response(ApiError(401, "UNAUTHENTICATED", "Invalid access token."))
        try:
            return self.server.api.dispatch(request)
        except ApiError as error:
            return error_response(error)
        except Exception as exc:  # a bug in the fake: answer like a broken server, keep serving
            return json_response(
                {"error_code": "INTERNAL_ERROR", "message": f"Fake workspace bug: {exc!r}"}, 500
            )

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_PATCH = _handle


class FakeWorkspace:
    """A fake Databricks workspace on ``http://127.0.0.1:<free port>`` that runs what it is given.

    Attributes: ``host``, ``token``, ``faults`` (:class:`Faults`), ``log`` (:class:`RequestLog`),
    ``root`` (the temporary directory mirroring ``/Workspace``, ``/Volumes`` and ``/dbfs``),
    ``user_name``, ``workspace_id`` and ``task_host``.

    ``task_host`` says how a ``spark_python_task`` file runs: ``"databricks"`` (the default) as
    a Databricks driver runs it, ``exec``-ed in a Python host, without ``__file__``, any
    ``SystemExit`` a failure, a cancel an interrupt; ``"process"`` as ``python FILE``, the
    fake's earlier way. See "How runs run" in docs/fixtures.md.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        seed: int = 0,
        user_name: str = "someone@example.com",
        workspace_id: int = 1234567890123456,
        task_host: Literal["databricks", "process"] = "databricks",
    ) -> None:
        if task_host not in ("databricks", "process"):
            raise ValueError(f"task_host must be 'databricks' or 'process', not {task_host!r}")
        self.task_host = task_host
        self.token = token or "dapi" + secrets.token_hex(16)
        self.faults = Faults(seed)
        self.log = RequestLog((self.token,))
        self.user_name = user_name
        self.workspace_id = workspace_id
        self._server: _Server | None = None
        self._runs: Runs | None = None
        self._root: Path | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        if self._server is None:
            raise RuntimeError("The fake workspace is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def root(self) -> Path:
        if self._root is None:
            raise RuntimeError("The fake workspace is not started")
        return self._root

    def start(self) -> FakeWorkspace:
        if self._server is not None:
            raise RuntimeError("The fake workspace is already started")
        root = Path(tempfile.mkdtemp(prefix="fake-databricks-"))
        try:
            storage = Storage(root, f"/Users/{self.user_name}")
            server = self._server = _Server(self)
            site = Site(self.host, self.workspace_id, self.user_name)
            runs = Runs(storage, self.faults, root, site, self.task_host)
            server.api = Api(storage, runs, self.user_name, self.workspace_id)
        except BaseException:
            self._server = None
            shutil.rmtree(root, ignore_errors=True)
            raise
        self._runs, self._root = runs, root
        self._thread = threading.Thread(
            target=server.serve_forever,
            # How long stop() may wait for the accept loop to notice: short, it is a test server.
            kwargs={"poll_interval": 0.01},
            name=f"fake-databricks-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, kill every run still going, remove the temporary directory."""
        server, runs, root, thread = self._server, self._runs, self._root, self._thread
        if server is None or runs is None or root is None or thread is None:
            return  # not started, or stopped already
        server.shutdown()
        server.close_connections()
        server.server_close()  # waits for the requests under way, so none writes after rmtree
        thread.join()
        runs.shutdown()
        shutil.rmtree(root, ignore_errors=True)
        # The runs stay readable: active_runs() after stop() tells that none was left going.
        self._server = self._root = self._thread = None

    def __enter__(self) -> FakeWorkspace:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def active_runs(self) -> list[int]:
        """Ids of the runs that have not ended yet."""
        if self._runs is None:
            return []
        return self._runs.active()

    def wait_idle(self, timeout: float = 30.0) -> list[int]:
        """Wait until no run is active, at most ``timeout`` seconds; the runs still active.

        A cancel is asynchronous, on Databricks as here: the run ends a moment after the
        request is answered. Check "nothing left running" with ``wait_idle() == []``."""
        deadline = time.monotonic() + timeout
        while self.active_runs() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.active_runs()

    def leftovers(self, run_id: int) -> list[Leftover]:
        """The processes of run ``run_id`` (a run or a task run) that were still alive when its
        task ended, or when a cancel or timeout had stopped its host: the fake killed them, as
        tearing down the cluster would, but a task should not leave any. Read from the
        workspace's own state; ``KeyError`` for a run it never had. A cancelled run ends a
        moment after ``runs/cancel`` answers: wait for its end (``wait_idle()``) first."""
        if self._runs is None:
            raise KeyError(run_id)
        return self._runs.leftovers(run_id)

    def log_so_far(self, task_run_id: int) -> str:
        """What task run ``task_run_id`` has printed so far, whole, while it runs or after:
        ``runs/get-output`` only answers once it ended, and with the last 5 MB."""
        if self._runs is None:
            raise RuntimeError("The fake workspace is not started")
        return self._runs.log_so_far(task_run_id)

    def environments(self, run_id: int) -> dict[str, list[str]]:
        """The pip requirement lines of each environment run ``run_id`` declared (serverless
        runs), by environment key, as submitted; ``KeyError``-like ``ApiError`` for no such
        run. Read from the workspace's own state, no request."""
        if self._runs is None:
            raise RuntimeError("The fake workspace is not started")
        return self._runs.environments(run_id)

    def run_ids(self) -> list[int]:
        """Ids of every run submitted, ended or not, read from the workspace's own state: no
        request is made, so injected faults cannot get in the way of a test's final count."""
        if self._runs is None:
            return []
        return self._runs.ids()

    def client(self, *, retry_timeout_seconds: int = 10, **options: Any) -> WorkspaceClient:
        """A ``databricks-sdk`` client for this workspace, with a short retry budget.

        ``databricks.sdk`` is imported here, not at module import: it takes about 1.5 s.
        """
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.config import Config

        config = Config(
            host=self.host,
            token=self.token,
            auth_type="pat",
            retry_timeout_seconds=retry_timeout_seconds,
            **options,
        )
        return WorkspaceClient(config=config)
