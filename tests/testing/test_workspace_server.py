"""The server itself: auth, endpoints, the request log, loopback only, clean start and stop."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from databricks.sdk.errors import NotFound, Unauthenticated
from helpers import gone

from pytest_mlproject.testing import FakeWorkspace
from pytest_mlproject.testing.requestlog import REDACTED, LoggedRequest

if TYPE_CHECKING:
    from workspace_helpers import Harness

pytest_plugins = ["pytest_mlproject.plugin.workspace_fixtures", "workspace_helpers"]


def _port(workspace: FakeWorkspace) -> int:
    return int(workspace.host.rsplit(":", 1)[1])


def _raw(
    workspace: FakeWorkspace,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", _port(workspace), timeout=10)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_every_api_call_needs_the_token(databricks_workspace: FakeWorkspace) -> None:
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.config import Config

    config = Config(
        host=databricks_workspace.host, token="wrong", auth_type="pat", retry_timeout_seconds=5
    )
    with pytest.raises(Unauthenticated, match="Invalid access token"):
        WorkspaceClient(config=config).current_user.me()
    missing = _raw(databricks_workspace, "GET", "/api/2.2/jobs/runs/list")
    assert missing.status == 401
    assert [e.status for e in databricks_workspace.log.calls(path_contains="/api/")] == [401, 401]


def test_host_metadata_is_absent_and_unknown_endpoints_are_404(harness: Harness) -> None:
    # The SDK probes this while building its config, without credentials.
    probe = _raw(harness.workspace, "GET", "/.well-known/databricks-config")
    assert probe.status == 404
    with pytest.raises(NotFound, match=r"No API found for 'GET /api/2\.0/clusters/list'"):
        harness.client.api_client.do("GET", "/api/2.0/clusters/list")


def test_current_user_is_a_scim_me(harness: Harness) -> None:
    me = harness.client.current_user.me()

    assert me.user_name == harness.workspace.user_name
    assert me.active is True
    assert me.emails
    assert me.emails[0].value == harness.workspace.user_name
    headers = {"Authorization": f"Bearer {harness.workspace.token}"}
    answer = _raw(harness.workspace, "GET", "/api/2.0/preview/scim/v2/Me", headers)
    assert answer.getheader("X-Databricks-Org-Id") == str(harness.workspace.workspace_id)


def test_it_listens_on_loopback_only(databricks_workspace: FakeWorkspace) -> None:
    port = _port(databricks_workspace)
    assert databricks_workspace.host == f"http://127.0.0.1:{port}"
    listening = []
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                listening.append(local.rsplit(":", 1)[0])
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp to read listening sockets from")
    assert listening == ["0100007F"]  # 127.0.0.1, and nothing on IPv6


def test_the_log_records_every_call_in_order_without_the_token(harness: Harness) -> None:
    workspace = harness.workspace
    workspace.log.clear()
    token = workspace.token
    # A request this test does not list, standing for the ones the SDK makes of its own accord
    # (host metadata, the Files API's endpoint discovery, and whatever a later release adds).
    with pytest.raises(NotFound):
        harness.client.api_client.do("GET", "/api/2.0/some/future/discovery")
    script = harness.put_script("env.py", "print(1)")
    run_id = harness.submit(harness.task(script, env={"DATABRICKS_TOKEN": token}))
    harness.client.jobs.get_run(run_id)
    harness.client.files.upload("/Volumes/c/s/v/blob.bin", io.BytesIO(b"12345"))
    _raw(workspace, "GET", f"/api/2.0/workspace/get-status?path=/{token}", {"X-Token": token})

    made = [
        ("POST", "/api/2.0/workspace/mkdirs", 200),
        ("POST", "/api/2.0/workspace/import", 200),
        ("POST", "/api/2.x/jobs/runs/submit", 200),
        ("GET", "/api/2.x/jobs/runs/get", 200),
        ("PUT", "/api/2.0/fs/files/Volumes/c/s/v/blob.bin", 204),
        ("GET", "/api/2.0/workspace/get-status", 401),
    ]

    # Each request the test made is logged once, in order, with its answer; the SDK's own
    # requests may be anywhere among them.
    # The SDK's release decides its Jobs API: 2.1 in 0.40 (our floor), 2.2 later; the fake
    # serves both.
    def endpoint(entry: LoggedRequest) -> tuple[str, str]:
        return entry.method, re.sub(r"^/api/2\.[12]/jobs/", "/api/2.x/jobs/", entry.path)

    endpoints = {(method, path) for method, path, _ in made}
    logged = [e for e in workspace.log if endpoint(e) in endpoints]
    assert [(*endpoint(e), e.status) for e in logged] == made
    submit, get, upload, probe = logged[2:]
    cluster = submit.body["tasks"][0]["new_cluster"]
    assert cluster["spark_env_vars"] == {"DATABRICKS_TOKEN": REDACTED}
    assert get.query == {"run_id": str(run_id)}
    assert (upload.body, upload.body_size) == (None, 5)
    assert probe.query == {"path": f"/{REDACTED}"}
    # Every request is logged, the ones nobody listed too, and none of them holds the token.
    assert ("GET", "/api/2.0/some/future/discovery", 404) in [
        (e.method, e.path, e.status) for e in workspace.log
    ]
    assert token not in repr(workspace.log.entries())


def test_files_endpoint_discovery_is_not_served(harness: Harness) -> None:
    """A workspace that does not serve ``GET /api/2.0/fs/endpoints`` answers 404, which
    databricks-sdk (0.167 and later) takes as "use the built-in endpoints"."""
    with pytest.raises(NotFound):
        harness.client.api_client.do("GET", "/api/2.0/fs/endpoints")
    harness.client.files.upload("/Volumes/c/s/v/after.bin", io.BytesIO(b"ok"))
    contents = harness.client.files.download("/Volumes/c/s/v/after.bin").contents
    assert contents is not None
    assert contents.read() == b"ok"


def test_a_chunked_upload_is_read_whole(harness: Harness) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", _port(harness.workspace), timeout=10)
    headers = {"Authorization": f"Bearer {harness.workspace.token}"}
    chunks = iter([b"chunked ", b"body"])
    connection.request(
        "PUT", "/api/2.0/fs/files/Volumes/c/s/v/chunked.txt", chunks, headers, encode_chunked=True
    )
    assert connection.getresponse().status == 204
    connection.close()

    contents = harness.client.files.download("/Volumes/c/s/v/chunked.txt").contents
    assert contents is not None
    assert contents.read() == b"chunked body"


def test_the_client_helper_has_a_short_retry_budget(databricks_workspace: FakeWorkspace) -> None:
    client = databricks_workspace.client(retry_timeout_seconds=3)
    assert client.config.retry_timeout_seconds == 3
    assert client.config.host == databricks_workspace.host


def test_start_and_stop_are_explicit() -> None:
    workspace = FakeWorkspace(token="dapi-fixed", seed=3)
    with pytest.raises(RuntimeError, match="not started"):
        _ = workspace.host
    with pytest.raises(RuntimeError, match="not started"):
        _ = workspace.root
    assert workspace.active_runs() == []
    with workspace:
        assert workspace.token == "dapi-fixed"
        with pytest.raises(RuntimeError, match="already started"):
            workspace.start()
    workspace.stop()  # a second stop does nothing


def test_stop_leaves_no_process_thread_file_or_socket_behind(harness: Harness) -> None:
    workspace = harness.workspace
    pid_file = workspace.root / "pid"
    script = harness.put_script(
        "sleep.py",
        "import os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(60)",
    )
    harness.submit(harness.task(script, parameters=[str(pid_file)]))
    harness.until(lambda: pid_file.exists() and pid_file.read_text() != "")
    pid, root, port = int(pid_file.read_text()), workspace.root, _port(workspace)
    # A request still waiting on injected latency must not hold the stop up.
    workspace.faults.latency = 60
    pending = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    pending.request("GET", "/api/2.0/preview/scim/v2/Me")

    workspace.stop()

    with contextlib.suppress(OSError, http.client.HTTPException):
        pending.getresponse().read()
    pending.close()
    assert not root.exists()
    assert gone(pid, within=0)
    assert workspace.active_runs() == []
    assert not [t.name for t in threading.enumerate() if t.name.startswith("fake-databricks")]
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=5).connect()


def test_the_fixture_cleans_up_after_a_users_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import base64, json, time

        def test_leaves_a_run_going(databricks_workspace, tmp_path):
            w = databricks_workspace.client()
            path = f"/Users/{databricks_workspace.user_name}/s.py"
            source = b"import os, sys, time\\nopen(sys.argv[1], 'w').write(str(os.getpid()))"
            source += b"\\ntime.sleep(60)"
            content = base64.b64encode(source).decode()
            w.api_client.do("POST", "/api/2.0/workspace/import",
                            body={"path": path, "content": content, "format": "RAW"})
            pid_file = tmp_path / "pid"
            task = {"task_key": "t", "new_cluster": {"spark_version": "15.4.x-scala2.12"},
                    "spark_python_task": {"python_file": path, "parameters": [str(pid_file)]}}
            w.api_client.do("POST", "/api/2.2/jobs/runs/submit", body={"tasks": [task]})
            deadline = time.monotonic() + 20
            while not (pid_file.exists() and pid_file.read_text()):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            state = {"root": str(databricks_workspace.root), "pid": int(pid_file.read_text())}
            with open("state.json", "w") as out:
                json.dump(state, out)
        """
    )
    result = pytester.runpytest_inprocess("-p", "pytest_mlproject.plugin.workspace_fixtures")

    result.assert_outcomes(passed=1)
    state = json.loads((pytester.path / "state.json").read_text())
    assert not Path(state["root"]).exists()
    assert gone(state["pid"], within=0)


def test_python_m_serves_until_interrupted(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest_mlproject.testing", "--token", "dapi-by-hand"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        host = lines[0].strip().removeprefix("DATABRICKS_HOST=")
        assert lines[1].strip() == "DATABRICKS_TOKEN=dapi-by-hand"
        root = Path(lines[2].split()[3].rstrip(";"))
        assert root.is_dir()
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.config import Config

        config = Config(host=host, token="dapi-by-hand", auth_type="pat", retry_timeout_seconds=5)
        assert WorkspaceClient(config=config).current_user.me().user_name == "someone@example.com"

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        assert process.stdout.read().strip() == "# stopped"
        assert not root.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(("flag", "result"), [("process", "SUCCESS"), ("databricks", "FAILED")])
def test_python_m_task_host_says_how_task_files_run(tmp_path: Path, flag: str, result: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest_mlproject.testing", "--token", "t", "--task-host", flag],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        host = process.stdout.readline().strip().removeprefix("DATABRICKS_HOST=")
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.config import Config

        config = Config(host=host, token="t", auth_type="pat", retry_timeout_seconds=5)
        api = WorkspaceClient(config=config).api_client
        content = base64.b64encode(b"print(__file__)").decode()
        api.do(
            "POST",
            "/api/2.0/workspace/import",
            body={"path": "/f.py", "content": content, "format": "RAW"},
        )
        task = {
            "task_key": "t",
            "new_cluster": {"spark_version": "15.4.x-scala2.12"},
            "spark_python_task": {"python_file": "/Workspace/f.py"},
        }
        run_id = api.do("POST", "/api/2.2/jobs/runs/submit", body={"tasks": [task]})["run_id"]
        deadline = time.monotonic() + 30
        while "result_state" not in (
            state := api.do("GET", "/api/2.2/jobs/runs/get", query={"run_id": run_id})["state"]
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert state["result_state"] == result
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)


def test_python_m_refuses_an_unknown_task_host() -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "pytest_mlproject.testing", "--task-host", "ipython"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "invalid choice: 'ipython'" in refused.stderr


def test_imports_stay_light() -> None:
    # Fresh interpreters: registering the fixture loads neither the server nor the SDK, and the
    # server (and python -m) load neither pytest nor databricks.sdk.
    fixture_only = (
        "import sys, pytest_mlproject.plugin.workspace_fixtures as f; print(*sys.modules)"
    )
    server_only = "import sys, pytest_mlproject.testing.__main__ as m; print(*sys.modules)"
    loaded = {
        code: subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
        ).stdout.split()
        for code in (fixture_only, server_only)
    }

    assert "pytest_mlproject.testing.server" not in loaded[fixture_only]
    assert "pytest_mlproject.testing.server" in loaded[server_only]
    heavy = {"pytest", "_pytest", "databricks"}
    assert [m for m in loaded[server_only] if m.split(".")[0] in heavy] == []
