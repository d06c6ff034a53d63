"""The REST endpoints of the fake workspace: request in, response out, no HTTP plumbing.

Paths, parameters, bodies and status codes follow Databricks' REST reference (Jobs 2.2, with the
2.1 paths some SDK versions still use; Workspace, Files and DBFS 2.0; SCIM ``Me``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from email.utils import formatdate
from typing import Any

from pytest_mlproject.testing.errors import ApiError, invalid
from pytest_mlproject.testing.runs import Runs
from pytest_mlproject.testing.storage import DEFAULT_DBFS_READ, Storage, decode_base64


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    # The parsed JSON body, or None when there was none (or it was not JSON).
    data: Any = None
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        if not isinstance(self.data, dict):
            raise ApiError(
                400, "MALFORMED_REQUEST", "Invalid JSON given in the body of the request"
            )
        return self.data

    def form(self) -> dict[str, bytes]:
        """The fields of a ``multipart/form-data`` body, as the SDK's ``workspace.upload`` sends."""
        head = f"Content-Type: {self.headers.get('content-type', '')}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + self.body)
        if not message.is_multipart():
            raise invalid("Expected a JSON or multipart/form-data body")
        fields: dict[str, bytes] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = payload
        return fields


@dataclass
class Response:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(value).encode())


def empty_response(status: int = 204) -> Response:
    return Response(status, b"", {})


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> Response:
    response = json_response(error.body(), error.status)
    response.headers.update(headers or {})
    return response


def _true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


Handler = Callable[[Request], Response]
_JOBS = r"/api/2\.[12]/jobs/runs/"


class Api:
    """Routes requests to the storage and the runs of one workspace."""

    def __init__(self, storage: Storage, runs: Runs, user_name: str, workspace_id: int) -> None:
        self._storage = storage
        self._runs = runs
        self._user_name = user_name
        self._workspace_id = workspace_id
        routes: list[tuple[str, str, Handler]] = [
            ("POST", _JOBS + "submit", lambda r: json_response(runs.submit(r.json()))),
            ("GET", _JOBS + "get", lambda r: json_response(runs.get(r.query.get("run_id")))),
            ("GET", _JOBS + "get-output", self._get_output),
            ("POST", _JOBS + "cancel", self._cancel),
            ("POST", _JOBS + "delete", self._delete),
            ("GET", _JOBS + "list", lambda r: json_response(runs.list_runs(r.query))),
            ("POST", "/api/2.0/workspace/import", self._import),
            ("POST", "/api/2.0/workspace/mkdirs", self._mkdirs),
            ("GET", "/api/2.0/workspace/get-status", self._workspace_status),
            ("POST", "/api/2.0/workspace/delete", self._workspace_delete),
            ("PUT", "/api/2.0/fs/files(?P<path>/.*)", self._volume_put),
            ("GET", "/api/2.0/fs/files(?P<path>/.*)", self._volume_get),
            ("HEAD", "/api/2.0/fs/files(?P<path>/.*)", self._volume_get),
            ("PUT", "/api/2.0/fs/directories(?P<path>/.*)", self._volume_mkdirs),
            ("HEAD", "/api/2.0/fs/directories(?P<path>/.*)", self._volume_directory),
            ("POST", "/api/2.0/dbfs/put", self._dbfs_put),
            ("POST", "/api/2.0/dbfs/create", self._dbfs_create),
            ("POST", "/api/2.0/dbfs/add-block", self._dbfs_add_block),
            ("POST", "/api/2.0/dbfs/close", self._dbfs_close),
            ("GET", "/api/2.0/dbfs/get-status", self._dbfs_status),
            ("GET", "/api/2.0/dbfs/read", self._dbfs_read),
            ("GET", "/api/2.0/preview/scim/v2/Me", self._me),
        ]
        self._routes = [(m, re.compile(p), h) for m, p, h in routes]

    def dispatch(self, request: Request) -> Response:
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                request.params = match.groupdict()
                return handler(request)
        message = f"No API found for '{request.method} {request.path}'"
        raise ApiError(404, "ENDPOINT_NOT_FOUND", message)

    # -- jobs -------------------------------------------------------------------------------

    def _get_output(self, request: Request) -> Response:
        return json_response(self._runs.get_output(request.query.get("run_id")))

    def _cancel(self, request: Request) -> Response:
        self._runs.cancel(request.json().get("run_id"))
        return json_response({})

    def _delete(self, request: Request) -> Response:
        self._runs.delete(request.json().get("run_id"))
        return json_response({})

    # -- workspace --------------------------------------------------------------------------

    def _import(self, request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = request.form()
            fields = {k: v.decode("utf-8", errors="replace") for k, v in form.items()}
            content = form.get("content", b"")
            options: dict[str, Any] = dict(fields)
        else:
            options = request.json()
            content = decode_base64(options.get("content"), "content")
        self._storage.workspace_import(
            options.get("path"),
            content,
            options.get("format"),
            options.get("language"),
            _true(options.get("overwrite")),
        )
        return json_response({})

    def _mkdirs(self, request: Request) -> Response:
        self._storage.workspace_mkdirs(request.json().get("path"))
        return json_response({})

    def _workspace_status(self, request: Request) -> Response:
        return json_response(self._storage.workspace_status(request.query.get("path")))

    def _workspace_delete(self, request: Request) -> Response:
        body = request.json()
        self._storage.workspace_delete(body.get("path"), _true(body.get("recursive")))
        return json_response({})

    # -- Unity Catalog volumes (Files API) ----------------------------------------------------

    def _volume_put(self, request: Request) -> Response:
        overwrite = request.query.get("overwrite", "true").lower() != "false"
        self._storage.volume_put(request.params["path"], request.body, overwrite)
        return empty_response()

    def _volume_get(self, request: Request) -> Response:
        disk = self._storage.volume_file(request.params["path"])
        data = disk.read_bytes()
        headers = {
            "Content-Type": "application/octet-stream",
            "Last-Modified": formatdate(disk.stat().st_mtime, usegmt=True),
            "Content-Length": str(len(data)),
        }
        wanted = request.headers.get("range")
        if not wanted:
            return Response(200, data, headers)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
        if not match or int(match.group(1)) >= max(len(data), 1):
            headers.update({"Content-Range": f"bytes */{len(data)}", "Content-Length": "0"})
            return Response(416, b"", headers)
        start = int(match.group(1))
        end = min(int(match.group(2) or len(data) - 1), len(data) - 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        headers["Content-Length"] = str(end + 1 - start)
        return Response(206, data[start : end + 1], headers)

    def _volume_mkdirs(self, request: Request) -> Response:
        self._storage.volume_mkdirs(request.params["path"])
        return empty_response()

    def _volume_directory(self, request: Request) -> Response:
        self._storage.volume_directory(request.params["path"])
        return Response(200, b"", {})

    # -- DBFS -------------------------------------------------------------------------------

    def _dbfs_put(self, request: Request) -> Response:
        body = request.json()
        data = decode_base64(body.get("contents"), "contents")
        self._storage.dbfs_put(body.get("path"), data, _true(body.get("overwrite")))
        return json_response({})

    def _dbfs_create(self, request: Request) -> Response:
        body = request.json()
        handle = self._storage.dbfs_create(body.get("path"), _true(body.get("overwrite")))
        return json_response({"handle": handle})

    def _dbfs_add_block(self, request: Request) -> Response:
        body = request.json()
        data = decode_base64(body.get("data"), "data")
        self._storage.dbfs_add_block(body.get("handle"), data)
        return json_response({})

    def _dbfs_close(self, request: Request) -> Response:
        self._storage.dbfs_close(request.json().get("handle"))
        return json_response({})

    def _dbfs_status(self, request: Request) -> Response:
        return json_response(self._storage.dbfs_status(request.query.get("path")))

    def _dbfs_read(self, request: Request) -> Response:
        query = request.query
        try:
            offset = int(query.get("offset", 0))
            length = int(query.get("length", DEFAULT_DBFS_READ))
        except ValueError:
            raise invalid("offset and length must be whole numbers") from None
        return json_response(self._storage.dbfs_read(query.get("path"), offset, length))

    # -- identity ---------------------------------------------------------------------------

    def _me(self, request: Request) -> Response:
        user = self._user_name
        response = json_response(
            {
                "schemas": [
                    "urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:workspace:2.0:User",
                ],
                "id": "4242424242424242",
                "userName": user,
                "displayName": user.split("@")[0],
                "active": True,
                "emails": [{"value": user, "type": "work", "primary": True}],
                "name": {"givenName": user.split("@")[0]},
                "groups": [{"display": "users", "type": "direct", "value": "1"}],
            }
        )
        # The SDK reads the workspace id of a cluster's SQL path from this header.
        response.headers["X-Databricks-Org-Id"] = str(self._workspace_id)
        return response
