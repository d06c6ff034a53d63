"""The one place that talks to a Databricks workspace: connect, upload, submit, poll, cancel.

Transport, authentication and retries are the official SDK's (``databricks-sdk``): every call
goes through its ``ApiClient.do``, which retries 429, 503 and connection errors within a retry
budget. Jobs calls send and read raw JSON, because the SDK's typed request classes drop the
cluster fields they do not know. ``databricks.sdk`` is imported only inside :meth:`connect` and
the methods, never when this module is imported: it takes over a second to load.

Every failure is a :class:`DatabricksError` whose message names what failed and never shows a
secret: the token and any other credential the configuration holds, and every header value
the SDK authenticated with, are replaced by ``***`` in messages (and in run logs).
"""

from __future__ import annotations

import base64
import dataclasses
import re
import threading
import urllib.parse
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pytest_mlproject import redact
from pytest_mlproject.databricks.credentials import (
    CREDENTIAL_WAYS,
    Secrets,
    configured_host,
    display_host,
    remember_configured_secrets,
    scheme_hint,
    without_our_settings,
)
from pytest_mlproject.databricks.runstate import RunOutput, RunState, parse_run
from pytest_mlproject.problems import MLprojectError

if TYPE_CHECKING:
    from databricks.sdk.core import ApiClient, Config
    from requests import PreparedRequest

__all__ = [
    "MAX_VOLUME_UPLOAD_BYTES",
    "MAX_WORKSPACE_IMPORT_BYTES",
    "CredentialsError",
    "DatabricksError",
    "RunNotFoundError",
    "RunOutput",
    "RunState",
    "UploadTooLargeError",
    "Workspace",
    "cluster_path",
    "configured_host",
    "parse_run",
]

#: ``workspace/import`` refuses larger files (MAX_NOTEBOOK_SIZE_EXCEEDED, 10485760 bytes).
MAX_WORKSPACE_IMPORT_BYTES = 10 * 1024 * 1024
#: The Files API takes one ``PUT`` of up to 5 GiB.
MAX_VOLUME_UPLOAD_BYTES = 5 * 1024 * 1024 * 1024
#: Top-level workspace folders a user can write under.
WORKSPACE_ROOTS = ("Users", "Shared")
JOBS = "/api/2.2/jobs/runs"

_AUTH_HEADER_WORDS = ("authorization", "token", "secret")
_MESSAGE_LIMIT = 600
_DNS_FAILURES = (
    "Name or service not known",
    "nodename nor servname",
    "getaddrinfo failed",
    "Temporary failure in name resolution",
    "No address associated",
)


class DatabricksError(MLprojectError):
    """A Databricks call failed.

    ``error_code`` is the server's, when it answered, and ``status`` the HTTP status of the SDK's
    error class for it (Databricks answers some "does not exist" errors 400, which the SDK files
    as 404); ``transient`` says the same call may well succeed later (throttling,
    unavailability, the network).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.transient = transient


class CredentialsError(DatabricksError):
    """No usable credentials, or the host cannot be reached or refuses them."""


class UploadTooLargeError(DatabricksError):
    """The file is over the limit of where it was to be stored; raised before any request."""


class RunNotFoundError(DatabricksError):
    """The run id names no run (Databricks: 400 INVALID_PARAMETER_VALUE "Run N does not exist";
    other servers: 404)."""


def _short(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- upload locations -----------------------------------------------------------------------------


def _location(directory: str, name: str) -> tuple[bool, str]:
    """``(is_volume, canonical directory)``: ``/Volumes/c/s/v/...`` or ``/Users/...`` (workspace
    folders without their ``/Workspace`` prefix, the form every workspace API has accepted)."""
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise DatabricksError(f"Cannot upload {name!r}: a file name without '/' is needed")
    if not isinstance(directory, str) or not directory.startswith("/"):
        if isinstance(directory, str) and directory.lower().startswith("dbfs:"):
            reason = "DBFS is legacy and often disabled for uploads"
        else:
            reason = "it is not an absolute path"
        raise DatabricksError(
            f"Cannot upload to {directory!r}: {reason}. Use a workspace folder "
            "(/Workspace/Users/<you>/...) or a Unity Catalog volume "
            "(/Volumes/<catalog>/<schema>/<volume>/...) as --databricks-upload-dir."
        )
    parts = [part for part in directory.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise DatabricksError(f"Cannot upload to {directory!r}: '.' and '..' are not allowed")
    if parts[:1] == ["Volumes"]:
        if len(parts) < 4:
            raise DatabricksError(
                f"Cannot upload to {directory!r}: a volume path is "
                "/Volumes/<catalog>/<schema>/<volume>[/<folder>...]"
            )
        return True, "/" + "/".join(parts)
    if parts[:1] == ["Workspace"]:
        parts = parts[1:]
    if not parts or parts[0] not in WORKSPACE_ROOTS or len(parts) < 2:
        raise DatabricksError(
            f"Cannot upload to {directory!r}: not a workspace folder or volume. Use "
            "/Workspace/Users/<you>/... , /Workspace/Shared/... or "
            "/Volumes/<catalog>/<schema>/<volume>/... as --databricks-upload-dir."
        )
    return False, "/" + "/".join(parts)


def cluster_path(directory: str, name: str) -> str:
    """How a cluster (and a job's ``python_file``) names ``directory/name`` once uploaded:
    ``/Workspace/Users/...`` for workspace files, ``/Volumes/...`` for volume files. Both are
    plain files on the cluster's file system."""
    is_volume, folder = _location(directory, name)
    return f"{folder}/{name}" if is_volume else f"/Workspace{folder}/{name}"


# -- the SDK's failures, in our words -------------------------------------------------------------


def _status_of(error: BaseException) -> int | None:
    from databricks.sdk.errors import platform

    for status, kind in platform.STATUS_CODE_MAPPING.items():
        if isinstance(error, kind):
            return int(status)
    return None


def _network_reason(error: BaseException) -> str | None:
    """A short reason for a failure below HTTP, or ``None`` when ``error`` is not one."""
    import requests

    text = str(error)
    if isinstance(error, requests.exceptions.SSLError):
        detail = re.search(r"\[SSL[^\]]*\][^(')\"]*", text)
        return f"the TLS handshake failed ({detail.group(0).strip() if detail else 'SSL error'})"
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return "no connection could be made before the timeout"
    if isinstance(error, requests.exceptions.ReadTimeout):
        return "the server did not answer before the timeout"
    if isinstance(error, requests.exceptions.ConnectionError):
        if "refused" in text.lower():
            return "connection refused"
        if any(name in text for name in _DNS_FAILURES):
            return "the host name does not resolve"
        if any(word in text for word in ("RemoteDisconnected", "reset by peer", "aborted")):
            return "the server closed the connection without answering"
        return f"the connection failed ({_short(text, 200)})"
    if isinstance(error, requests.exceptions.RequestException):
        return f"the request failed ({type(error).__name__}: {_short(text, 200)})"
    return None


# -- the client -----------------------------------------------------------------------------------


class Workspace:
    """A connected Databricks workspace. Make one with :meth:`connect`; thread-safe.

    ``requests`` counts the HTTP requests this object sent (every attempt, retries included,
    from the identity check in :meth:`connect` on; not the SDK's host-metadata probe), and
    ``bytes_uploaded`` the bytes of the files it stored.
    """

    host: str
    user_name: str
    auth_type: str
    requests: int
    bytes_uploaded: int

    def __init__(self, config: Config, secrets: Secrets) -> None:
        from databricks.sdk.core import ApiClient

        self._config = config
        self._secrets = secrets
        self._api: ApiClient = ApiClient(config)
        self._lock = threading.Lock()
        self._folders: set[str] = set()
        self._closed = False
        self.host = str(config.host)
        self.auth_type = str(config.auth_type or "")
        self.user_name = ""
        self.requests = 0
        self.bytes_uploaded = 0

    # -- connecting -----------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        profile: str | None = None,
        *,
        connect_timeout: float = 20.0,
        retry_timeout: float = 120.0,
        **config: Any,
    ) -> Workspace:
        """Authenticate with the SDK's unified auth and check the credentials with one call.

        ``profile`` names a ``~/.databrickscfg`` profile; ``config`` goes to the SDK's ``Config``
        (``host``, ``token``, ``auth_type`` ...). Any failure is one :class:`CredentialsError`
        saying what failed and how to provide credentials, within about ``connect_timeout``
        seconds whatever the network does. Later calls retry throttling, unavailability and
        connection errors for up to ``retry_timeout`` seconds each.
        """
        try:
            # Here rather than in the thread: a slow first import must not eat the deadline.
            import databricks.sdk.core  # noqa: F401
        except ImportError:
            raise CredentialsError(
                "Cannot connect to Databricks: the Databricks SDK (databricks-sdk) is not "
                "installed; install it with: pip install 'pytest-mlproject[databricks]'"
            ) from None
        # Besides the credentials the SDK uses: every secret-named variable of this process,
        # which a run's log or a server's message may well quote back (a parameter value,
        # spark_env_vars), and which a local run's output never shows either.
        secrets = Secrets()
        secrets.add(*redact.secret_values())
        outcome: list[Workspace | BaseException] = []

        def attempt() -> None:
            try:
                outcome.append(
                    cls._connect(profile, connect_timeout, retry_timeout, config, secrets)
                )
            except CredentialsError as error:
                outcome.append(error)
            except Exception as error:  # a surprise from the SDK: still one CredentialsError
                reason = _short(secrets.scrub(f"{type(error).__name__}: {error}"))
                outcome.append(CredentialsError(f"Cannot connect to Databricks: {reason}"))
            except BaseException as error:  # handed to the caller's thread
                outcome.append(error)

        # The SDK has paths with long or no timeouts (OAuth discovery, Azure tenant lookup, CLI
        # subprocesses); a thread with a deadline keeps the promise whatever path is taken.
        thread = threading.Thread(target=attempt, name="pytest-mlproject-connect", daemon=True)
        thread.start()
        deadline = connect_timeout + 3.0
        thread.join(deadline)
        if not outcome:
            host = config.get("host") or configured_host(profile)
            raise CredentialsError(
                f"Cannot reach Databricks at {display_host(host)}: no answer within "
                f"{deadline:g} s.\n{scheme_hint(host, None)}{CREDENTIAL_WAYS}",
                transient=True,
            )
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result

    @classmethod
    def _connect(
        cls,
        profile: str | None,
        connect_timeout: float,
        retry_timeout: float,
        options: Mapping[str, Any],
        secrets: Secrets,
    ) -> Workspace:
        from databricks.sdk.core import Config

        options = dict(options)
        options.pop("retry_timeout_seconds", None)  # retry_timeout is the one knob for that
        http_timeout = options.pop("http_timeout_seconds", None)
        written_host = options.get("host") or configured_host(profile)
        remember_configured_secrets(secrets, profile, options)
        request_timeout = max(1.0, connect_timeout / 4)
        try:
            # The SDK probes <host>/.well-known/databricks-config while building the Config,
            # retrying for retry_timeout_seconds (300 s by default): best effort, so a short try.
            config = Config(
                profile=profile,
                retry_timeout_seconds=1,
                http_timeout_seconds=request_timeout,
                **options,
            )
        except Exception as error:
            reason = _short(secrets.scrub(without_our_settings(str(error))))
            raise CredentialsError(
                f"Cannot configure Databricks credentials: {reason}\n{CREDENTIAL_WAYS}"
            ) from None
        for attribute in Config.attributes():
            if getattr(attribute, "sensitive", False):
                secrets.add(getattr(config, attribute.name, None))

        config.retry_timeout_seconds = max(1, int(connect_timeout / 4))
        workspace = cls(config, secrets)
        try:
            me = workspace._do("GET", "/api/2.0/preview/scim/v2/Me", "Checking the credentials")
        except DatabricksError as error:
            workspace.close()
            raise _credentials_failure(error, config.host, written_host) from None
        user_name = me.get("userName")
        if not isinstance(user_name, str) or not user_name:
            workspace.close()
            raise CredentialsError(
                f"Databricks at {display_host(config.host)} did not say who the credentials "
                f"belong to (no userName from /api/2.0/preview/scim/v2/Me).\n{CREDENTIAL_WAYS}"
            )
        workspace.user_name = user_name
        # From now on: the long retry budget, and the SDK's own request timeout (or the caller's).
        config.retry_timeout_seconds = max(1, int(retry_timeout))
        config.http_timeout_seconds = http_timeout or 60.0
        workspace._replace_api()
        return workspace

    def _replace_api(self) -> None:
        from databricks.sdk.core import ApiClient

        old, self._api = self._api, ApiClient(self._config)
        _close_api(old)

    # -- requests -------------------------------------------------------------------------------

    def _authenticate(self, request: PreparedRequest) -> PreparedRequest:
        """The SDK's authentication for each attempt, counted; the header values become secrets."""
        with self._lock:
            self.requests += 1
        for name, value in self._config.authenticate().items():
            request.headers[name] = value
            if any(word in name.lower() for word in _AUTH_HEADER_WORDS):
                self._secrets.add(value, value.split(" ", 1)[-1])
        return request

    def _do(
        self,
        method: str,
        path: str,
        what: str,
        *,
        query: dict[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        response_headers: list[str] | None = None,
    ) -> dict[str, Any]:
        if self._closed:
            raise DatabricksError(f"{what}: the connection to Databricks is closed")
        sent = {"Accept": "application/json", **(headers or {})}
        # Config.workspace_id (unified hosts) exists only in newer SDK releases than our floor.
        workspace_id = getattr(self._config, "workspace_id", None)
        if workspace_id:
            sent["X-Databricks-Workspace-Id"] = str(workspace_id)
        try:
            answer = self._api.do(
                method,
                path,
                query=query,
                headers=sent,
                body=dict(body) if body is not None else None,
                data=data,
                auth=self._authenticate,
                response_headers=response_headers,
            )
        except Exception as error:
            raise self._failure(error, what, path) from None
        return answer if isinstance(answer, dict) else {}

    def _failure(self, error: Exception, what: str, path: str) -> DatabricksError:
        reason, status, code, transient = self._explain(error)
        kind: type[DatabricksError] = DatabricksError
        if status == 401:
            kind = CredentialsError
        elif path.startswith(JOBS) and (
            status == 404 or (status == 400 and "does not exist" in reason)
        ):
            kind = RunNotFoundError
        return kind(f"{what}: {reason}", status=status, error_code=code, transient=transient)

    def _explain(self, error: BaseException) -> tuple[str, int | None, str | None, bool]:
        """``(reason, HTTP status, error code, transient)`` for an exception from the SDK."""
        from databricks.sdk.errors.base import DatabricksError as SdkError

        scrub = self._secrets.scrub
        if isinstance(error, SdkError):
            status = _status_of(error)
            code = error.error_code
            # The status is the one the SDK's error class stands for: it keeps no response.
            said = code or (f"HTTP {status}" if status else "an error")
            text = _short(scrub(without_our_settings(str(error))))
            reason = f"Databricks answered {said}: {text}"
            return reason, status, code, status in (429, 500, 502, 503, 504)
        if isinstance(error, TimeoutError):  # the SDK's retry budget ran out
            budget = self._config.retry_timeout_seconds or 300
            last = error.__cause__ or error.__context__
            if last is None:
                return f"gave up after {budget} s of retries", None, None, True
            reason, status, code, _ = self._explain(last)
            return f"gave up after {budget} s of retries; last: {reason}", status, code, True
        network = _network_reason(error)
        if network is not None:
            return scrub(network), None, None, True
        return f"{type(error).__name__}: {_short(scrub(str(error)))}", None, None, False

    # -- uploads --------------------------------------------------------------------------------

    def home_upload_dir(self) -> str:
        """The default upload folder: ``/Workspace/Users/<user name>/.pytest-mlproject``."""
        return f"/Workspace/Users/{self.user_name}/.pytest-mlproject"

    def cluster_path(self, directory: str, name: str) -> str:
        """See :func:`cluster_path`."""
        return cluster_path(directory, name)

    def upload(self, directory: str, name: str, data: bytes) -> bool:
        """Store ``data`` as ``directory/name`` unless a file of that name and size is there.

        Names are content hashes, so a file already there is the same file: ``False`` (skipped,
        one request). ``directory`` is a workspace folder (``/Workspace/...``, ``/Users/...``,
        ``/Shared/...``; at most 10 MB per file) or a Unity Catalog volume folder
        (``/Volumes/<catalog>/<schema>/<volume>/...``).
        """
        is_volume, folder = _location(directory, name)
        where = cluster_path(directory, name)
        if is_volume:
            stored = self._upload_to_volume(folder, name, data, where)
        else:
            stored = self._upload_to_workspace(folder, name, data, where)
        if stored:
            with self._lock:
                self.bytes_uploaded += len(data)
        return stored

    def _upload_to_workspace(self, folder: str, name: str, data: bytes, where: str) -> bool:
        if len(data) > MAX_WORKSPACE_IMPORT_BYTES:
            raise UploadTooLargeError(
                f"Cannot upload {where}: {len(data)} bytes is over the workspace files import "
                f"limit of {MAX_WORKSPACE_IMPORT_BYTES} bytes (10 MB). Upload to a Unity Catalog "
                "volume instead: --databricks-upload-dir /Volumes/<catalog>/<schema>/<volume>/..."
            )
        path = f"{folder}/{name}"
        try:
            status = self._do(
                "GET", "/api/2.0/workspace/get-status", f"Looking for {where}", query={"path": path}
            )
        except DatabricksError as error:
            if error.status != 404:
                raise
        else:
            if status.get("object_type") == "FILE" and status.get("size") in (None, len(data)):
                return False
        if folder not in self._folders:
            self._do(
                "POST", "/api/2.0/workspace/mkdirs", f"Creating {folder}", body={"path": folder}
            )
            self._folders.add(folder)
        # RAW: always a plain file; SOURCE (and AUTO, for some contents) would make a notebook,
        # which a spark_python_task cannot run.
        body = {
            "path": path,
            "format": "RAW",
            "content": base64.b64encode(data).decode("ascii"),
            "overwrite": True,
        }
        self._do("POST", "/api/2.0/workspace/import", f"Uploading {where}", body=body)
        return True

    def _upload_to_volume(self, folder: str, name: str, data: bytes, where: str) -> bool:
        if len(data) > MAX_VOLUME_UPLOAD_BYTES:
            raise UploadTooLargeError(
                f"Cannot upload {where}: {len(data)} bytes is over the Files API limit of "
                f"{MAX_VOLUME_UPLOAD_BYTES} bytes (5 GiB) for one upload"
            )
        url = "/api/2.0/fs/files" + urllib.parse.quote(f"{folder}/{name}")
        try:
            found = self._do(
                "HEAD", url, f"Looking for {where}", response_headers=["content-length"]
            )
        except DatabricksError as error:
            if error.status != 404:
                raise
        else:
            size = found.get("content-length")
            if size is None or str(size) == str(len(data)):
                return False
        # The volume itself must exist; folders inside it are created (like mkdir -p).
        if folder.count("/") > 3 and folder not in self._folders:
            self._do(
                "PUT", "/api/2.0/fs/directories" + urllib.parse.quote(folder), f"Creating {folder}"
            )
            self._folders.add(folder)
        self._do(
            "PUT",
            url,
            f"Uploading {where}",
            query={"overwrite": "true"},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return True

    # -- runs -----------------------------------------------------------------------------------

    def submit(self, payload: Mapping[str, Any]) -> int:
        """``runs/submit`` with ``payload`` as given; the run id.

        The SDK retries throttling, unavailability and lost connections; the payload's
        ``idempotency_token`` makes a retried submit return the run the first one started. A
        payload without one gets a random one, so that this holds for it too.
        """
        body = dict(payload)
        body.setdefault("idempotency_token", uuid.uuid4().hex)
        answer = self._do(
            "POST", f"{JOBS}/submit", "Submitting a run (jobs/runs/submit)", body=body
        )
        run_id = answer.get("run_id")
        if isinstance(run_id, bool) or not isinstance(run_id, int):
            raise DatabricksError(f"jobs/runs/submit answered without a run id: {answer!r}"[:300])
        return run_id

    def get_run(self, run_id: int) -> RunState:
        """``runs/get``, read by :func:`parse_run`; :class:`RunNotFoundError` for no such run."""
        answer = self._do(
            "GET", f"{JOBS}/get", f"Reading run {run_id} (jobs/runs/get)", query={"run_id": run_id}
        )
        state = parse_run(answer)
        return dataclasses.replace(
            state, run_id=state.run_id or run_id, message=self._secrets.scrub(state.message)
        )

    def get_output(self, task_run_id: int) -> RunOutput:
        """``runs/get-output`` of a task run (``RunState.task_run_id``), secrets scrubbed."""
        answer = self._do(
            "GET",
            f"{JOBS}/get-output",
            f"Reading the output of task run {task_run_id} (jobs/runs/get-output)",
            query={"run_id": task_run_id},
        )
        scrub = self._secrets.scrub

        def text(key: str) -> str | None:
            value = answer.get(key)
            return scrub(value) if isinstance(value, str) and value else None

        return RunOutput(
            logs=text("logs") or "",
            logs_truncated=answer.get("logs_truncated") is True,
            error=text("error"),
            error_trace=text("error_trace"),
        )

    def cancel(self, run_id: int) -> bool:
        """Ask Databricks to cancel a run that is still going; ``True`` if that was asked.

        ``False``, without an error, for a run that does not exist or has already ended:
        Databricks accepts a cancel of an ended run as a no-op, so the run is read first (two
        requests). Cancelling is asynchronous: the run may still be going when this returns.
        """
        try:
            if self.get_run(run_id).terminal:
                return False
            self._do(
                "POST",
                f"{JOBS}/cancel",
                f"Cancelling run {run_id} (jobs/runs/cancel)",
                body={"run_id": run_id},
            )
        except RunNotFoundError:
            return False
        except DatabricksError as error:
            if error.status == 404:
                return False
            raise
        return True

    # -- the end --------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the connections; later calls raise :class:`DatabricksError`."""
        self._closed = True
        _close_api(self._api)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Workspace {self.host} as {self.user_name or '?'}>"


def _close_api(api: Any) -> None:
    """Close the SDK client's HTTP session, if this SDK version keeps it where we look."""
    session = getattr(getattr(api, "_api_client", None), "_session", None)
    close = getattr(session, "close", None)
    if callable(close):
        close()


def _credentials_failure(
    error: DatabricksError, host: str | None, written_host: str | None
) -> CredentialsError:
    what = "Checking the credentials: "
    detail = error.args[0][len(what) :] if error.args[0].startswith(what) else error.args[0]
    shown = display_host(host)
    if error.status in (401, 403):
        head = f"Databricks at {shown} refused the credentials: {detail}"
    elif error.status is None and error.transient:
        head = f"Cannot reach Databricks at {shown}: {detail}"
    else:
        head = f"Databricks at {shown} did not confirm the credentials: {detail}"
    hint = scheme_hint(written_host or host, error.__context__)
    return CredentialsError(
        f"{head}\n{hint}{CREDENTIAL_WAYS}",
        status=error.status,
        error_code=error.error_code,
        transient=error.transient,
    )
