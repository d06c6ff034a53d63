"""Hardening: a bad day on the network never turns into a false red, a false green, a second
run, a run left running, or a leaked secret.

``pytest --mlproject --databricks`` against the fake workspace (a real HTTP server on
127.0.0.1) with its fault knobs turned. Every case checks the same four things: each item
ends as its run really ended, no run was started twice (one idempotency token, and one run,
per item), no run is left active, and no secret shows anywhere a user or CI keeps output.
Already covered elsewhere, and not repeated here: 503s and dropped connections on the jobs
API, runs ending SKIPPED or INTERNAL_ERROR, the run's own timeout, SIGINT and SIGTERM while
waiting, wrong credentials from the start (tests/test_databricks_e2e.py); a run stuck
pending past its deadline (tests/test_databricks_session.py); a server quoting the token
back to a bare Workspace (tests/test_databricks_workspace.py). The long sweep of the same
faults, many sessions each, is benchmarks/reliability.py; its figures are in
docs/reliability.md.
"""

from __future__ import annotations

import json
import tarfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import databricks.sdk
import pytest

from pytest_mlproject.databricks import session
from pytest_mlproject.databricks.job import Job, Upload
from pytest_mlproject.databricks.workspace import Workspace
from pytest_mlproject.testing import FakeWorkspace

# pytester's in-process runs restore sys.modules afterwards; the SDK (and requests) must be
# loaded before them, or the next import builds a second copy whose classes do not match.
assert databricks.sdk.WorkspaceClient is not None

TOKEN = "dapi-hardening-0123456789abcdef0123"
PROFILE_TOKEN = "dapi-profile-fedcba9876543210fedc"
PLANTED = "planted-registry-secret-55aa55aa"
PROJECT_TOKEN = "dapi0123456789abcdef0123456789abcdef"
SPEC = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": 0}

DESCRIPTOR = """\
name: demo
entry_points:
  main:
    parameters:
      greeting: {type: string, default: hello}
    command: "python main.py {greeting}"
  other:
    command: "python main.py other"
  fails:
    command: "python fail.py"
"""
SCRIPTS = {
    "main.py": "import sys\nprint('main says', sys.argv[1])\n",
    "fail.py": "import sys\nprint('about to fail')\nsys.exit('boom: the model diverged')\n",
    "slow.py": "import sys, time\ntime.sleep(float(sys.argv[1]))\nprint('slept')\n",
}
#: (item, how it really ends) for DESCRIPTOR
EXPECTED = {"main": "passed", "other": "passed", "fails": "failed"}


@pytest.fixture
def fake(connect_fake: Callable[[str], FakeWorkspace]) -> FakeWorkspace:
    return connect_fake(TOKEN)


def make_project(root: Path, descriptor: str = DESCRIPTOR, **extra: str) -> Path:
    project = root / "demo"
    for name, text in {"MLproject": descriptor, **SCRIPTS, **extra}.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(textwrap.dedent(text) if name == "MLproject" else text)
    (root / "cluster.json").write_text(json.dumps(SPEC))
    return project


def run(pytester: pytest.Pytester, *args: str, cache: bool = False) -> pytest.RunResult:
    return pytester.runpytest(
        "--mlproject",
        "--databricks",
        "--databricks-cluster-spec",
        "cluster.json",
        *(() if cache else ("-p", "no:cacheprovider")),
        "-k",
        "databricks",
        "-rA",
        *args,
    )


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """Each Databricks item's outcome, by entry point, from the short summary (-rA)."""
    found = {}
    for line in result.outlines:
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED") and rest.startswith("demo/MLproject::"):
            entry = rest.split("::")[1]
            found[entry] = word.lower()
    return found


def assert_no_harm(fake: FakeWorkspace, items: int) -> None:
    """One run per item (one token each, none started twice), and none left active."""
    deadline = time.monotonic() + 30  # runs cancelled just now end within a poll or two
    while fake.active_runs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fake.active_runs() == []
    tokens = [
        entry.body["idempotency_token"]
        for entry in fake.log.calls("POST", "runs/submit")
        if isinstance(entry.body, dict)
    ]
    runs = fake.run_ids()  # not through the API: the faults are still on
    assert len(set(tokens)) == len(runs) == items, (tokens, runs)


# ---------------------------------------------------------------------------------------------
# Request faults on every path (the e2e tests fault the jobs API only)


@pytest.mark.parametrize(
    ("status", "rate", "drops"),
    [(429, 0.3, 0.1), (503, 0.3, 0.1), (500, 0.3, 0.0)],
    ids=["429", "503", "500"],
)
def test_a_third_of_all_requests_failing_changes_no_outcome(
    pytester: pytest.Pytester, fake: FakeWorkspace, status: int, rate: float, drops: float
) -> None:
    make_project(pytester.path)
    fake.faults.set(error_rate=rate, error_status=status, retry_after=0, drop_rate=drops)
    result = run(pytester)
    assert outcomes(result) == EXPECTED, result.stdout.str()
    result.stdout.fnmatch_lines(["*entry point 'fails' on Databricks, run *: TERMINATED FAILED*"])
    assert "could not submit" not in result.stdout.str()
    assert "Traceback" not in result.stdout.str()
    assert_no_harm(fake, 3)


@pytest.mark.parametrize(
    ("path", "count"),
    [("scim", 2), ("runs/submit", 2), ("workspace/import", 1), ("runs/get-output", 1)],
)
def test_server_errors_at_each_step_fail_nothing_that_is_fine(
    pytester: pytest.Pytester, fake: FakeWorkspace, path: str, count: int
) -> None:
    """500s, which the SDK does not retry: on the identity check, an upload, a submit, the
    reading of a run's log."""
    make_project(pytester.path)
    fake.faults.set(path_pattern=path)
    fake.faults.fail_next(count, status=500)
    result = run(pytester)
    assert outcomes(result) == EXPECTED, result.stdout.str()
    assert len([e for e in fake.log.entries() if e.status == 500]) == count
    result.stdout.fnmatch_lines(["*run's log*", "*boom: the model diverged*"])
    assert_no_harm(fake, 3)


def test_slow_answers_and_slow_clusters(pytester: pytest.Pytester, fake: FakeWorkspace) -> None:
    make_project(pytester.path)
    fake.faults.set(latency=0.2, cluster_start_seconds=1.0, pending_polls=3)
    result = run(pytester, "-n", "2")
    assert outcomes(result) == EXPECTED, result.stdout.str()
    assert_no_harm(fake, 3)


def test_faults_under_xdist_start_no_second_run(
    pytester: pytest.Pytester, fake: FakeWorkspace
) -> None:
    make_project(pytester.path)
    fake.faults.set(error_rate=0.2, error_status=500, drop_rate=0.1)
    result = run(pytester, "-n", "2")
    assert outcomes(result) == EXPECTED, result.stdout.str()
    assert_no_harm(fake, 3)


# ---------------------------------------------------------------------------------------------
# The workspace going away, and credentials rejected, while runs are in flight


def test_the_workspace_going_away_fails_the_runs_and_ends_the_session(
    fake: FakeWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short of ten minutes' patience: the poller gives up after LOST_CONTACT_AFTER."""
    monkeypatch.setattr(session, "LOST_CONTACT_AFTER", 1.0)
    lines: list[str] = []
    runs = session.Coordinator(
        profile=None,
        upload_dir="/Workspace/Shared/tests",
        max_parallel=4,
        echo=lines.append,
        connect=lambda: Workspace.connect(host=fake.host, token=TOKEN, retry_timeout=1),
    )
    jobs = [_job(f"long{i}", 60) for i in range(3)]
    runs.start(jobs)
    assert len(fake.active_runs()) == 3
    fake.stop()  # every run is killed with it, as when a workspace is deleted
    for job in jobs:
        runs.wait(job)
        assert job.error is not None
        assert job.error.startswith("lost contact with the workspace")
        assert job.state is None or not job.state.passed
    runs.close("the test ended")
    assert fake.active_runs() == []
    assert not any("Traceback" in line for line in lines)


def _job(name: str, seconds: float) -> Job:
    script = f"import time\ntime.sleep({seconds})\n".encode()
    body = {
        "run_name": name,
        "idempotency_token": f"token-{name}-{time.time_ns()}",
        "timeout_seconds": 3600,
        "tasks": [
            {
                "task_key": "mlproject",
                "new_cluster": SPEC,
                "spark_python_task": {"python_file": f"{name}.py", "parameters": []},
            }
        ],
    }
    return Job(
        nodeid=name,
        label=name,
        body=body,
        uploads=(Upload(f"{name}.py", script),),
        timeout=3600,
    )


def test_credentials_rejected_mid_session_fail_every_item_without_a_second_run(
    pytester: pytest.Pytester, fake: FakeWorkspace
) -> None:
    descriptor = "entry_points:\n" + "".join(
        f"  e{i}:\n    command: python slow.py 5\n" for i in range(3)
    )
    make_project(pytester.path, descriptor)
    fake.faults.set(echo_auth_in_errors=True)

    def revoke() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len([e for e in fake.log.calls("POST", "runs/submit") if e.status == 200]) == 3:
                break
            time.sleep(0.02)
        assert fake.active_runs(), "the runs ended before the credentials were revoked"
        fake.token = "dapi-rotated-" + "0" * 20  # the token the client holds stops working

    revoker = threading.Thread(target=revoke, daemon=True)
    revoker.start()
    result = run(pytester, "--junitxml=out.xml")
    revoker.join()
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*stopped accepting our credentials*"])
    shown = result.stdout.str() + result.stderr.str() + (pytester.path / "out.xml").read_text()
    assert TOKEN not in shown
    # Nothing can be cancelled without credentials; the runs end by themselves (their own
    # timeout_seconds bounds them on Databricks), and none was submitted twice.
    fake.token = TOKEN
    assert_no_harm(fake, 3)


# ---------------------------------------------------------------------------------------------
# Secrets: the environment, a profile file, project files, a server quoting them back


@pytest.mark.parametrize("auth", ["environment", "profile"])
def test_no_secret_shows_anywhere_output_is_kept(
    pytester: pytest.Pytester,
    fake: FakeWorkspace,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    auth: str,
) -> None:
    used = TOKEN
    args: list[str] = []
    if auth == "profile":
        used = PROFILE_TOKEN
        fake.token = PROFILE_TOKEN
        config = tmp_path / "databrickscfg"
        config.write_text(f"[ci]\nhost = {fake.host}\ntoken = {PROFILE_TOKEN}\n")
        monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(config))
        monkeypatch.delenv("DATABRICKS_TOKEN")
        monkeypatch.delenv("DATABRICKS_HOST")
        args = ["--databricks-profile", "ci"]
    monkeypatch.setenv("MODEL_REGISTRY_PASSWORD", PLANTED)
    secrets = (used, PLANTED, PROJECT_TOKEN)
    project = make_project(
        pytester.path,
        DESCRIPTOR.replace("python fail.py", "python fail.py {secret}").replace(
            "  fails:\n", "  fails:\n    parameters: {secret: string}\n"
        ),
        **{
            ".env": f"DATABRICKS_TOKEN={PROJECT_TOKEN}\n",
            ".databrickscfg": f"[DEFAULT]\ntoken = {PROJECT_TOKEN}\n",
            "notes.txt": "see .env\n",
            "fail.py": "import sys\nprint('the secret is', sys.argv[1])\nsys.exit(sys.argv[1])\n",
        },
    )
    (project / "link-to-env").symlink_to(".env")
    # A server that quotes the Authorization header in its errors, and errors on the way.
    fake.faults.set(echo_auth_in_errors=True)
    fake.faults.set(path_pattern="runs/submit|import")
    fake.faults.fail_next(3, status=500)
    result = run(
        pytester,
        *args,
        "--junitxml=out.xml",
        "--mlproject-param",
        f"fails:secret={PLANTED} {used}",
        "-o",
        "junit_logging=all",
        cache=True,
    )
    assert outcomes(result) == EXPECTED, result.stdout.str()
    result.stdout.fnmatch_lines(["*the secret is *** ****"])
    kept = {
        "terminal": result.stdout.str() + result.stderr.str(),
        "junit": (pytester.path / "out.xml").read_text(),
        "cache": "".join(
            path.read_text(errors="replace")
            for path in (pytester.path / ".pytest_cache").rglob("*")
            if path.is_file()
        ),
    }
    archives = list(fake.root.rglob("*.tar.gz"))
    assert len(archives) == 1
    with tarfile.open(archives[0]) as tar:
        kept["archive"] = "".join(
            tar.extractfile(m).read().decode(errors="replace")  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        )
        assert not {".env", ".databrickscfg", "link-to-env"} & set(tar.getnames())
    uploaded = [p for p in (fake.root / "Workspace").rglob("*") if p.is_file()]
    assert len(uploaded) == 2  # the launcher and the archive, nothing else
    kept["uploads"] = "".join(
        path.read_text(errors="replace") for path in uploaded if not path.name.endswith(".gz")
    )
    for where, text in kept.items():
        for secret in secrets:
            assert secret not in text, f"{secret[:8]}... shows in {where}"
    assert_no_harm(fake, 3)


def test_the_dry_run_masks_secrets_from_the_environment(
    pytester: pytest.Pytester, fake: FakeWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PLANTED)
    make_project(pytester.path)
    spec = {**SPEC, "spark_env_vars": {"SERVICE_PASSWORD": PLANTED}}
    (pytester.path / "cluster.json").write_text(json.dumps(spec))
    result = run(
        pytester,
        "--databricks-dry-run",
        "--junitxml=out.xml",
        "--mlproject-param",
        f"main:greeting={PLANTED}",
    )
    result.assert_outcomes(passed=3)
    shown = result.stdout.str() + (pytester.path / "out.xml").read_text()
    assert '"SERVICE_PASSWORD": "***"' in result.stdout.str()
    assert PLANTED not in shown
    assert fake.log.entries() == []
