"""The Databricks client layer, through the real databricks-sdk against the fake workspace."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ours

from pytest_mlproject.databricks.credentials import Secrets, display_host
from pytest_mlproject.databricks.runstate import RunOutput, RunState, parse_run
from pytest_mlproject.databricks.workspace import (
    MAX_WORKSPACE_IMPORT_BYTES,
    CredentialsError,
    DatabricksError,
    RunNotFoundError,
    UploadTooLargeError,
    Workspace,
    cluster_path,
    configured_host,
)
from pytest_mlproject.problems import MLprojectError
from pytest_mlproject.testing import FakeWorkspace

pytest_plugins = ["pytest_mlproject.plugin.workspace_fixtures"]

# Distinctive, so that finding it anywhere it must not be is unambiguous.
PLANTED = "dapi" + "5ec7e75ec7e75ec7e75ec7e75ec7e75e"
WRONG = "dapi" + "0bad0bad0bad0bad0bad0bad0bad0bad"
WAYS = (
    "DATABRICKS_HOST",
    "DATABRICKS_TOKEN",
    "--databricks-profile",
    "~/.databrickscfg",
    "DATABRICKS_CLIENT_ID",
    "DATABRICKS_CLIENT_SECRET",
    "ARM_CLIENT_ID",
    "ARM_USE_MSI",
    "az login",
    "databricks auth login",
)
CLUSTER = {"spark_version": "15.4.x-scala2.12", "num_workers": 0}


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No credentials from the machine running the tests: no variables, an empty home."""
    for name in list(os.environ):
        if name.startswith(("DATABRICKS_", "ARM_", "AZURE_", "GOOGLE_")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def workspace(databricks_workspace: FakeWorkspace) -> Iterator[Workspace]:
    connected = Workspace.connect(host=databricks_workspace.host, token=databricks_workspace.token)
    yield connected
    connected.close()


def api_calls(fake: FakeWorkspace, path: str = "") -> list[Any]:
    """Logged requests our client makes (not the SDK's own probes and discovery requests)."""
    return [e for e in ours(fake.log) if path in e.path]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def payload(python_file: str, **cluster: Any) -> dict[str, Any]:
    return {
        "run_name": "pytest-mlproject test",
        "idempotency_token": uuid.uuid4().hex,
        "tasks": [
            {
                "task_key": "main",
                "spark_python_task": {"python_file": python_file, "parameters": ["a b"]},
                "new_cluster": {**CLUSTER, **cluster},
            }
        ],
    }


def put_script(workspace: Workspace, name: str, source: str) -> str:
    folder = workspace.home_upload_dir()
    workspace.upload(folder, name, textwrap.dedent(source).encode())
    return workspace.cluster_path(folder, name)


def wait(workspace: Workspace, run_id: int, timeout: float = 30.0) -> RunState:
    deadline = time.monotonic() + timeout
    while not (state := workspace.get_run(run_id)).terminal:
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} still {state.describe()} after {timeout} s")
        time.sleep(0.02)
    return state


def shown(error: BaseException) -> str:
    """Everything a traceback of ``error`` would show, chained exceptions included."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


# -- connecting -------------------------------------------------------------------------------


def test_connect_checks_the_credentials_and_learns_the_user(
    databricks_workspace: FakeWorkspace,
) -> None:
    fake = databricks_workspace
    with Workspace.connect(host=fake.host, token=fake.token) as workspace:
        assert (workspace.host, workspace.user_name) == (fake.host, fake.user_name)
        assert workspace.auth_type == "pat"
        assert workspace.home_upload_dir() == f"/Workspace/Users/{fake.user_name}/.pytest-mlproject"
        assert [(e.method, e.path) for e in api_calls(fake)] == [
            ("GET", "/api/2.0/preview/scim/v2/Me")
        ]
        assert workspace.requests == 1
        assert workspace.bytes_uploaded == 0
    with pytest.raises(DatabricksError, match="closed"):
        workspace.get_run(1)
    assert workspace.requests == 1


def test_connect_with_a_profile_from_the_config_file(
    databricks_workspace: FakeWorkspace, clean_environment: Path
) -> None:
    (clean_environment / ".databrickscfg").write_text(
        f"[DEFAULT]\nhost = https://wrong.example.com\n\n"
        f"[fake]\nhost = {databricks_workspace.host}\ntoken = {databricks_workspace.token}\n"
    )
    with Workspace.connect("fake") as workspace:
        assert workspace.user_name == databricks_workspace.user_name


def test_no_credentials_at_all_names_the_ways_to_give_them() -> None:
    with pytest.raises(CredentialsError) as caught:
        Workspace.connect(connect_timeout=2)
    message = str(caught.value)
    assert message.startswith("Cannot configure Databricks credentials")
    for way in WAYS:
        assert way in message
    assert "retry_timeout_seconds" not in message  # our own settings would only puzzle
    assert isinstance(caught.value, MLprojectError)


def test_a_profile_that_is_not_there_is_named(clean_environment: Path) -> None:
    (clean_environment / ".databrickscfg").write_text("[other]\nhost = https://x.example.com\n")
    with pytest.raises(CredentialsError, match="has no missing profile"):
        Workspace.connect("missing", connect_timeout=2)


def test_a_wrong_token_is_refused_without_showing_it(databricks_workspace: FakeWorkspace) -> None:
    fake = databricks_workspace
    fake.faults.echo_auth_in_errors = True
    with pytest.raises(CredentialsError) as caught:
        Workspace.connect(host=fake.host, token=WRONG, connect_timeout=2)
    error = caught.value
    assert error.status == 401
    assert f"Databricks at {fake.host} refused the credentials" in str(error)
    assert "Invalid access token" in str(error)
    assert "DATABRICKS_TOKEN" in str(error)
    assert WRONG not in shown(error)
    assert "[request Authorization: ***]" in str(error)  # the server did echo it; we scrubbed it
    assert "retry_timeout_seconds" not in str(error)


def test_without_the_sdk_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "databricks.sdk.core", None)  # import raises ImportError
    with pytest.raises(CredentialsError, match=r"pip install 'pytest-mlproject\[databricks\]'"):
        Workspace.connect(host="https://example.invalid", token="dapi-x")


def test_an_unreachable_host_fails_fast_and_says_so() -> None:
    host = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(CredentialsError) as caught:
        # Two refused tries, each followed by 1-2 s of the SDK's back-off, fit in 4 s.
        Workspace.connect(host=host, token=PLANTED, connect_timeout=4)
    message = str(caught.value)
    assert f"Cannot reach Databricks at {host}" in message
    assert "connection refused" in message
    assert caught.value.transient
    assert PLANTED not in shown(caught.value)


def test_a_host_without_scheme_is_explained(databricks_workspace: FakeWorkspace) -> None:
    bare = databricks_workspace.host.removeprefix("http://")
    with pytest.raises(CredentialsError) as caught:
        Workspace.connect(host=bare, token=databricks_workspace.token, connect_timeout=2)
    message = str(caught.value)
    assert f"Cannot reach Databricks at https://{bare}" in message
    assert "TLS" in message
    assert f"taken as https://{bare}" in message
    assert f"http://{bare}" in message


def test_configuration_errors_never_show_secrets(
    databricks_workspace: FakeWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two auth methods at once: the SDK refuses, listing what it found.
    monkeypatch.setenv("DATABRICKS_HOST", databricks_workspace.host)
    monkeypatch.setenv("DATABRICKS_TOKEN", PLANTED)
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", "some-client")
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", WRONG)
    with pytest.raises(CredentialsError) as caught:
        Workspace.connect(connect_timeout=2)
    assert "more than one authorization method" in str(caught.value)
    assert PLANTED not in shown(caught.value)
    assert WRONG not in shown(caught.value)


# -- configured_host ----------------------------------------------------------------------------

CONFIG_FILE = """\
[__settings__]
default_profile = {default}

[DEFAULT]
host = https://default.example.com

[dev]
host = dev.example.com
token = dapi-not-read

[community]
host = https://community.cloud.databricks.com
"""


@pytest.mark.parametrize(
    ("env", "default", "profile", "expected"),
    [
        ({}, "", None, "https://default.example.com"),
        ({}, "", "dev", "dev.example.com"),
        ({}, "community", None, "https://community.cloud.databricks.com"),
        ({"DATABRICKS_CONFIG_PROFILE": "dev"}, "community", None, "dev.example.com"),
        (
            {"DATABRICKS_CONFIG_PROFILE": "dev"},
            "",
            "community",
            "https://community.cloud.databricks.com",
        ),
        ({"DATABRICKS_HOST": "https://env.example.com"}, "", "dev", "https://env.example.com"),
        ({}, "", "absent", None),
    ],
)
def test_configured_host(
    clean_environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    env: dict[str, str],
    default: str,
    profile: str | None,
    expected: str | None,
) -> None:
    (clean_environment / ".databrickscfg").write_text(CONFIG_FILE.format(default=default))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert configured_host(profile) == expected


def test_configured_host_reads_the_file_databricks_config_file_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert configured_host() is None  # no file at all
    elsewhere = tmp_path / "cfg"
    elsewhere.write_text("[DEFAULT]\nhost = https://else.example.com\n[p]\ntoken = x\n")
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(elsewhere))
    assert configured_host() == "https://else.example.com"
    assert configured_host("p") is None  # DEFAULT is not merged into profiles, as in the SDK
    elsewhere.write_text("not an ini file [")
    assert configured_host() is None


def test_importing_the_module_and_configured_host_leave_the_sdk_unloaded(
    clean_environment: Path,
) -> None:
    (clean_environment / ".databrickscfg").write_text("[DEFAULT]\nhost = https://h.example.com\n")
    code = (
        "import sys\n"
        "from pytest_mlproject.databricks import workspace\n"
        "assert workspace.configured_host() == 'https://h.example.com'\n"
        "assert workspace.cluster_path('/Users/u/x', 'f') == '/Workspace/Users/u/x/f'\n"
        "loaded = [m for m in sys.modules if m.startswith(('databricks', 'requests'))]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


# -- parse_run (no server) --------------------------------------------------------------------

FAILED_STATE = {
    "life_cycle_state": "TERMINATED",
    "result_state": "FAILED",
    "state_message": "Task main failed",
}
FAILED_STATUS = {
    "state": "TERMINATED",
    "termination_details": {
        "code": "RUN_EXECUTION_ERROR",
        "type": "CLIENT_ERROR",
        "message": "Task main failed with message: Workload failed",
    },
}
SKIPPED_STATUS = {"state": "TERMINATED", "termination_details": {"code": "SKIPPED"}}
INTERNAL_STATUS = {"state": "TERMINATED", "termination_details": {"code": "INTERNAL_ERROR"}}


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        pytest.param(
            {"state": FAILED_STATE},
            ("TERMINATED", "FAILED", True, False, "TERMINATED FAILED (Task main failed)"),
            id="state-only-failed",
        ),
        pytest.param(
            {"status": FAILED_STATUS},
            (
                "TERMINATED",
                "FAILED",
                True,
                False,
                "TERMINATED FAILED (RUN_EXECUTION_ERROR: Task main failed with message: "
                "Workload failed)",
            ),
            id="status-only-failed",
        ),
        pytest.param(
            {"state": FAILED_STATE, "status": FAILED_STATUS},
            (
                "TERMINATED",
                "FAILED",
                True,
                False,
                "TERMINATED FAILED (RUN_EXECUTION_ERROR: Task main failed with message: "
                "Workload failed)",
            ),
            id="both-failed",
        ),
        pytest.param(
            {"state": {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS"}},
            ("TERMINATED", "SUCCESS", True, True, "TERMINATED SUCCESS"),
            id="state-only-success",
        ),
        pytest.param(
            {"status": {"state": "TERMINATED", "termination_details": {"code": "SUCCESS"}}},
            ("TERMINATED", "SUCCESS", True, True, "TERMINATED SUCCESS"),
            id="status-only-success",
        ),
        pytest.param(
            {"state": {"life_cycle_state": "SKIPPED", "state_message": "Skipped."}},
            ("SKIPPED", None, True, False, "SKIPPED (Skipped.)"),
            id="state-only-skipped",
        ),
        pytest.param(
            {"status": SKIPPED_STATUS},
            ("TERMINATED", None, True, False, "TERMINATED (SKIPPED)"),
            id="status-only-skipped",
        ),
        pytest.param(
            {"state": {"life_cycle_state": "SKIPPED"}, "status": SKIPPED_STATUS},
            ("SKIPPED", None, True, False, "SKIPPED"),
            id="both-skipped",
        ),
        pytest.param(
            {"state": {"life_cycle_state": "INTERNAL_ERROR", "state_message": "Oops"}},
            ("INTERNAL_ERROR", None, True, False, "INTERNAL_ERROR (Oops)"),
            id="state-only-internal-error",
        ),
        pytest.param(
            {"state": {"life_cycle_state": "INTERNAL_ERROR"}, "status": INTERNAL_STATUS},
            ("INTERNAL_ERROR", None, True, False, "INTERNAL_ERROR"),
            id="both-internal-error",
        ),
        pytest.param(
            {
                "status": {
                    "state": "TERMINATED",
                    "termination_details": {"code": "CANCELED", "message": "Run timed out."},
                }
            },
            (
                "TERMINATED",
                "TIMEDOUT",
                True,
                False,
                "TERMINATED TIMEDOUT (CANCELED: Run timed out.)",
            ),
            id="status-only-timeout",
        ),
        pytest.param(
            {
                "status": {
                    "state": "TERMINATED",
                    "termination_details": {"code": "USER_CANCELED", "type": "SUCCESS"},
                }
            },
            ("TERMINATED", "CANCELED", True, False, "TERMINATED CANCELED (USER_CANCELED)"),
            id="status-only-user-canceled",
        ),
        pytest.param(
            {"state": {"life_cycle_state": "RUNNING"}, "status": {"state": "RUNNING"}},
            ("RUNNING", None, False, False, "RUNNING"),
            id="running",
        ),
        pytest.param(
            {"status": {"state": "QUEUED"}},
            ("QUEUED", None, False, False, "QUEUED"),
            id="queued",
        ),
        pytest.param(
            {"state": {"life_cycle_state": "WAITING_FOR_RETRY"}},
            ("WAITING_FOR_RETRY", None, False, False, "WAITING_FOR_RETRY"),
            id="waiting-for-retry",
        ),
        pytest.param(
            {"state": {"life_cycle_state": "TERMINATING"}, "status": {"state": "TERMINATED"}},
            ("TERMINATED", None, True, False, "TERMINATED"),
            id="either-says-ended",
        ),
        pytest.param(
            {"state": {"life_cycle_state": "BRAND_NEW_STATE", "result_state": "SUCCESS"}},
            ("BRAND_NEW_STATE", None, False, False, "BRAND_NEW_STATE"),
            id="unknown-life-cycle",
        ),
        pytest.param({}, ("UNKNOWN", None, False, False, "UNKNOWN"), id="empty"),
        pytest.param(
            {"state": "TERMINATED", "status": ["x"], "tasks": "no", "run_id": "x"},
            ("UNKNOWN", None, False, False, "UNKNOWN"),
            id="wrong-types",
        ),
    ],
)
def test_parse_run(run: dict[str, Any], expected: tuple[Any, ...]) -> None:
    state = parse_run(run)
    assert (state.life_cycle, state.result, state.terminal, state.passed, state.describe()) == (
        expected
    )


def test_parse_run_reads_ids_links_and_times() -> None:
    state = parse_run(
        {
            "run_id": 7,
            "run_page_url": "https://h/?o=1#job/2/run/7",
            "setup_duration": 0,
            "execution_duration": 0,
            "run_duration": 5000,
            "tasks": [{"run_id": 8, "setup_duration": 3000, "execution_duration": 1500}],
            "status": FAILED_STATUS,
        }
    )
    assert state == RunState(
        run_id=7,
        life_cycle="TERMINATED",
        result="FAILED",
        terminal=True,
        message="Task main failed with message: Workload failed",
        termination_code="RUN_EXECUTION_ERROR",
        termination_type="CLIENT_ERROR",
        run_page_url="https://h/?o=1#job/2/run/7",
        task_run_id=8,
        setup_ms=3000,
        execution_ms=1500,
        run_duration_ms=5000,
    )
    bare = parse_run({"state": FAILED_STATE})
    assert (bare.run_id, bare.task_run_id, bare.setup_ms, bare.run_duration_ms) == (
        0,
        None,
        None,
        None,
    )
    assert (bare.termination_code, bare.termination_type, bare.run_page_url) == (None, None, None)


def test_describe_is_one_short_line() -> None:
    message = "line one\n  line two\t" + "x" * 1000
    line = parse_run({"state": {**FAILED_STATE, "state_message": message}}).describe()
    assert "\n" not in line
    assert line.startswith("TERMINATED FAILED (line one line two xxx")
    assert line.endswith("...)")
    assert len(line) < 600


# -- uploads -----------------------------------------------------------------------------------


def test_upload_to_a_workspace_folder_once(
    workspace: Workspace, databricks_workspace: FakeWorkspace
) -> None:
    fake = databricks_workspace
    folder = workspace.home_upload_dir() + "/archives"
    data = b"\x1f\x8b archive bytes"
    assert workspace.upload(folder, "abc123.tar.gz", data) is True
    assert workspace.bytes_uploaded == len(data)
    where = workspace.cluster_path(folder, "abc123.tar.gz")
    assert where == f"/Workspace/Users/{fake.user_name}/.pytest-mlproject/archives/abc123.tar.gz"
    assert (fake.root / where.lstrip("/")).read_bytes() == data
    [imported] = api_calls(fake, "/workspace/import")
    # Sent without the /Workspace prefix, the form every workspace API accepts, as a plain file.
    assert imported.body["path"] == where.removeprefix("/Workspace")
    assert imported.body["format"] == "RAW"
    assert imported.body["overwrite"] is True

    fake.log.clear()
    assert workspace.upload(folder, "abc123.tar.gz", data) is False
    assert workspace.bytes_uploaded == len(data)
    assert [(e.method, e.path) for e in api_calls(fake)] == [
        ("GET", "/api/2.0/workspace/get-status")
    ]
    # The same folder given as /Users/...: the same file, still there.
    assert workspace.upload(folder.removeprefix("/Workspace"), "abc123.tar.gz", data) is False


def test_a_file_of_another_size_under_the_same_name_is_replaced(
    workspace: Workspace, databricks_workspace: FakeWorkspace
) -> None:
    folder = "/Workspace/Shared/pytest-mlproject"
    assert workspace.upload(folder, "x.py", b"print(1)\n")
    assert workspace.upload(folder, "x.py", b"print('longer')\n")
    assert (databricks_workspace.root / "Workspace/Shared/pytest-mlproject/x.py").read_bytes() == (
        b"print('longer')\n"
    )


def test_upload_to_a_volume_once(workspace: Workspace, databricks_workspace: FakeWorkspace) -> None:
    fake = databricks_workspace
    folder = "/Volumes/main/default/artifacts/pytest mlproject"
    data = os.urandom(64 * 1024)
    assert workspace.upload(folder, "abc.tar.gz", data) is True
    where = workspace.cluster_path(folder, "abc.tar.gz")
    assert where == f"{folder}/abc.tar.gz"
    assert (fake.root / where.lstrip("/")).read_bytes() == data
    assert [(e.method, e.path) for e in api_calls(fake)][-3:] == [
        ("HEAD", f"/api/2.0/fs/files{folder}/abc.tar.gz"),
        ("PUT", f"/api/2.0/fs/directories{folder}"),
        ("PUT", f"/api/2.0/fs/files{folder}/abc.tar.gz"),
    ]
    fake.log.clear()
    assert workspace.upload(folder, "abc.tar.gz", data) is False
    assert [e.method for e in api_calls(fake)] == ["HEAD"]
    assert workspace.bytes_uploaded == len(data)
    # Straight into the volume's root: no folder to create.
    assert workspace.upload("/Volumes/main/default/artifacts", "root.py", b"1")
    assert not api_calls(fake, "/fs/directories/Volumes/main/default/artifacts/root")


def test_an_oversize_workspace_upload_is_refused_before_any_request(
    workspace: Workspace, databricks_workspace: FakeWorkspace
) -> None:
    before = (workspace.requests, len(databricks_workspace.log))
    with pytest.raises(UploadTooLargeError) as caught:
        workspace.upload(
            workspace.home_upload_dir(), "big.tar.gz", b"\0" * (MAX_WORKSPACE_IMPORT_BYTES + 1)
        )
    assert "--databricks-upload-dir /Volumes/<catalog>/<schema>/<volume>" in str(caught.value)
    assert isinstance(caught.value, DatabricksError)
    assert (workspace.requests, len(databricks_workspace.log)) == before
    assert workspace.bytes_uploaded == 0


@pytest.mark.parametrize(
    ("directory", "name", "words"),
    [
        ("dbfs:/tmp/x", "f", "DBFS"),
        ("relative/dir", "f", "absolute"),
        ("/dbfs/tmp/x", "f", "not a workspace folder"),
        ("/tmp/x", "f", "not a workspace folder"),
        ("/Workspace", "f", "not a workspace folder"),
        ("/Volumes/main/default", "f", "/Volumes/<catalog>/<schema>/<volume>"),
        ("/Users/u/../v", "f", "'..'"),
        ("/Users/u", "a/b", "without '/'"),
        ("/Users/u", "", "without '/'"),
    ],
)
def test_unusable_places_are_refused_before_any_request(
    workspace: Workspace, directory: str, name: str, words: str
) -> None:
    before = workspace.requests
    with pytest.raises(DatabricksError, match="Cannot upload") as caught:
        workspace.upload(directory, name, b"x")
    assert words in str(caught.value)
    with pytest.raises(DatabricksError):
        cluster_path(directory, name)
    assert workspace.requests == before


# -- runs --------------------------------------------------------------------------------------


def test_a_failing_run_from_submit_to_output(
    workspace: Workspace, databricks_workspace: FakeWorkspace
) -> None:
    script = put_script(
        workspace,
        "fails.py",
        """
        import sys
        print("argv", sys.argv[1:])
        raise RuntimeError("the model did not converge")
        """,
    )
    run_id = workspace.submit(payload(script))
    [submitted] = api_calls(databricks_workspace, "/jobs/runs/submit")
    assert submitted.path == "/api/2.2/jobs/runs/submit"
    assert submitted.body == payload(script) | {
        "idempotency_token": submitted.body["idempotency_token"]
    }

    state = wait(workspace, run_id)
    assert (state.run_id, state.life_cycle, state.result) == (run_id, "TERMINATED", "FAILED")
    assert not state.passed
    assert state.termination_code == "RUN_EXECUTION_ERROR"
    assert state.describe().startswith("TERMINATED FAILED (RUN_EXECUTION_ERROR: ")
    assert state.run_page_url == (
        f"{databricks_workspace.host}/?o={databricks_workspace.workspace_id}#job/1/run/{run_id}"
    )
    assert state.task_run_id is not None
    assert state.task_run_id != run_id
    assert state.run_duration_ms is not None

    output = workspace.get_output(state.task_run_id)
    assert "argv ['a b']" in output.logs
    assert output.logs_truncated is False
    assert output.error == "RuntimeError: the model did not converge"
    assert output.error_trace is not None
    assert output.error_trace.startswith("Traceback (most recent call last):")


@pytest.mark.parametrize("fields", ["both", "state", "status"])
def test_every_state_shape_reads_the_same(
    workspace: Workspace, databricks_workspace: FakeWorkspace, fields: str
) -> None:
    databricks_workspace.faults.set(state_fields=fields)
    good = workspace.submit(payload(put_script(workspace, "good.py", "print('ok')")))
    bad = workspace.submit(payload(put_script(workspace, "bad.py", "raise SystemExit(3)")))
    good_state, bad_state = wait(workspace, good), wait(workspace, bad)
    assert (good_state.life_cycle, good_state.result, good_state.passed) == (
        "TERMINATED",
        "SUCCESS",
        True,
    )
    assert (bad_state.life_cycle, bad_state.result, bad_state.passed) == (
        "TERMINATED",
        "FAILED",
        False,
    )
    assert workspace.get_output(good_state.task_run_id or 0) == RunOutput("ok\n", False, None, None)


@pytest.mark.parametrize("outcome", ["SKIPPED", "INTERNAL_ERROR"])
@pytest.mark.parametrize("fields", ["both", "state", "status"])
def test_a_run_that_ends_without_a_result_is_terminal_and_fails(
    workspace: Workspace, databricks_workspace: FakeWorkspace, outcome: str, fields: str
) -> None:
    databricks_workspace.faults.set(run_outcome=outcome, state_fields=fields)
    state = wait(workspace, workspace.submit(payload("/Workspace/Shared/none.py")))
    assert (state.terminal, state.result, state.passed) == (True, None, False)
    assert outcome in state.describe()


def test_submit_is_retried_with_the_same_token_and_starts_one_run(
    workspace: Workspace, databricks_workspace: FakeWorkspace
) -> None:
    fake = databricks_workspace
    fake.faults.set(path_pattern="/jobs/runs/submit", pending_polls=10**6)
    fake.faults.drop_next(1)  # the run is started, its answer lost
    fake.faults.fail_next(1, status=429, retry_after=0)
    fake.faults.fail_next(1, status=503, retry_after=0)
    run_id = workspace.submit(payload("/Workspace/Shared/slow.py"))

    submits = api_calls(fake, "/jobs/runs/submit")
    assert [(e.status, e.fault) for e in submits] == [
        (None, "drop"),
        (429, "error"),
        (503, "error"),
        (200, None),
    ]
    assert len({e.body["idempotency_token"] for e in submits}) == 1
    assert fake.active_runs() == [run_id]
    assert workspace.requests == len(api_calls(fake))


def test_a_payload_without_idempotency_token_gets_one(
    workspace: Workspace, databricks_workspace: FakeWorkspace
) -> None:
    fake = databricks_workspace
    fake.faults.set(path_pattern="/jobs/runs/submit", pending_polls=10**6)
    fake.faults.drop_next(1)
    body = payload("/Workspace/Shared/slow.py")
    del body["idempotency_token"]
    run_id = workspace.submit(body)
    assert "idempotency_token" not in body  # the caller's payload is left alone
    tokens = {e.body.get("idempotency_token") for e in api_calls(fake, "/jobs/runs/submit")}
    assert len(tokens) == 1
    assert None not in tokens
    assert fake.active_runs() == [run_id]


def test_unknown_cluster_fields_are_sent_as_given(
    workspace: Workspace, databricks_workspace: FakeWorkspace
) -> None:
    body = payload("/Workspace/Shared/x.py", some_future_field={"kept": True})
    workspace.submit(body)
    [submitted] = api_calls(databricks_workspace, "/jobs/runs/submit")
    assert submitted.body["tasks"][0]["new_cluster"]["some_future_field"] == {"kept": True}


def test_cancel(workspace: Workspace, databricks_workspace: FakeWorkspace) -> None:
    fake = databricks_workspace
    fake.faults.pending_polls = 10**6
    run_id = workspace.submit(payload("/Workspace/Shared/slow.py"))
    assert workspace.cancel(run_id) is True
    state = wait(workspace, run_id)
    assert (state.result, state.termination_code) == ("CANCELED", "USER_CANCELED")

    fake.log.clear()
    assert workspace.cancel(run_id) is False  # ended already: nothing to cancel
    assert workspace.cancel(987654) is False  # no such run
    assert not api_calls(fake, "/jobs/runs/cancel")


def test_a_run_that_does_not_exist(workspace: Workspace) -> None:
    with pytest.raises(RunNotFoundError, match="Run 987654 does not exist"):
        workspace.get_run(987654)
    with pytest.raises(RunNotFoundError):
        workspace.get_output(987654)


def test_a_server_error_is_not_retried_and_is_marked_transient(
    workspace: Workspace, databricks_workspace: FakeWorkspace
) -> None:
    databricks_workspace.faults.fail_next(1, status=500)
    with pytest.raises(DatabricksError) as caught:
        workspace.get_run(1)
    error = caught.value
    assert (error.status, error.error_code, error.transient) == (500, "INTERNAL_ERROR", True)
    assert str(error).startswith(
        "Reading run 1 (jobs/runs/get): Databricks answered INTERNAL_ERROR"
    )


def test_endless_throttling_gives_up_after_the_retry_budget(
    databricks_workspace: FakeWorkspace,
) -> None:
    fake = databricks_workspace
    # The SDK sleeps Retry-After plus up to 1 s between tries: 2 s always allows a second try.
    workspace = Workspace.connect(host=fake.host, token=fake.token, retry_timeout=2)
    fake.faults.set(error_rate=1.0, error_status=429, retry_after=0)
    with pytest.raises(DatabricksError) as caught:
        workspace.get_run(1)
    assert "gave up after 2 s of retries; last: Databricks answered REQUEST_LIMIT_EXCEEDED" in str(
        caught.value
    )
    assert caught.value.transient
    assert workspace.requests == len(api_calls(fake)) > 2


# -- secrets -----------------------------------------------------------------------------------


def test_no_message_or_log_ever_shows_the_token() -> None:
    with FakeWorkspace(token=PLANTED) as fake:
        fake.faults.echo_auth_in_errors = True
        # The knob works: the server does put the header in its answer.
        port = int(fake.host.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request(
            "GET", "/api/2.2/jobs/runs/get?run_id=1", headers={"Authorization": f"Bearer {PLANTED}"}
        )
        assert PLANTED in json.loads(connection.getresponse().read())["message"]
        connection.close()

        workspace = Workspace.connect(host=fake.host, token=PLANTED)
        failures: list[BaseException] = []

        def collect(call: Callable[[], object]) -> None:
            with pytest.raises(DatabricksError) as caught:
                call()
            failures.append(caught.value)

        collect(lambda: workspace.get_run(424242))
        fake.faults.fail_next(1, status=500)
        collect(lambda: workspace.submit(payload("/Workspace/Shared/x.py")))
        fake.faults.fail_next(1, status=403)
        collect(lambda: workspace.get_run(1))
        collect(lambda: workspace.submit({"tasks": "not a list"}))
        impatient = Workspace.connect(host=fake.host, token=PLANTED, retry_timeout=1)
        fake.faults.set(error_rate=1.0, error_status=503, retry_after=0)
        collect(lambda: impatient.get_run(1))
        fake.faults.reset()

        # A run that prints the token (it came with the cluster's environment) ...
        script = put_script(workspace, "leak.py", "import os; print('token', os.environ['T'])")
        state = wait(workspace, workspace.submit(payload(script, spark_env_vars={"T": PLANTED})))
        output = workspace.get_output(state.task_run_id or 0)
        workspace.close()

    assert len(failures) == 5
    for failure in failures:
        text = shown(failure)
        assert PLANTED not in text
        assert "***" in str(failure), str(failure)
    assert "token ***" in output.logs
    assert PLANTED not in repr(output)
    assert PLANTED not in repr(workspace)


def test_scrubbing_knows_the_shapes_of_secrets_it_was_not_told() -> None:
    secrets = Secrets()
    secrets.add("my-client-secret", None, "", "ab")
    text = secrets.scrub(
        f"auth: Bearer eyJhbGciOi.x-y_z~ basic dXNlcjpwYXNz== pat {PLANTED}-2 my-client-secret ab"
    )
    assert text == "auth: Bearer *** basic *** pat *** *** ab"
    assert display_host("https://user:pw@h.example.com:8443") == "https://h.example.com:8443"
    assert display_host(None) == "(no host configured)"
