"""``pytest --mlproject --databricks`` end to end, through the real SDK, against the fake
workspace (a real HTTP server on 127.0.0.1 that runs what is submitted)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import databricks.sdk
import pytest

from pytest_mlproject.databricks import launcher, payload
from pytest_mlproject.testing import FakeWorkspace

# pytester's in-process runs restore sys.modules afterwards; the SDK (and requests) must be
# loaded before them, or the next import builds a second copy whose classes do not match.
assert databricks.sdk.WorkspaceClient is not None

TOKEN = "dapi-e2e-secret-0123456789abcdef"
SPEC = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": 0}

DESCRIPTOR = """\
name: demo
entry_points:
  main:
    parameters:
      greeting: {type: string, default: hello}
      data: {type: path, default: data/input.txt}
    command: "python main.py {greeting} {data}"
  fails:
    command: "python fail.py"
  slow:
    parameters:
      seconds: {type: float, default: 2}
    command: "python slow.py {seconds}"
"""

SCRIPTS = {
    "main.py": "import sys\nprint('main says', sys.argv[1], open(sys.argv[2]).read().strip())\n",
    "fail.py": "import sys\nprint('about to fail')\nsys.exit('boom: the model diverged')\n",
    "slow.py": "import sys, time\ntime.sleep(float(sys.argv[1]))\nprint('slept')\n",
    "data/input.txt": "forty-two\n",
}


@pytest.fixture
def workspace(connect_fake: Callable[[str], FakeWorkspace]) -> FakeWorkspace:
    return connect_fake(TOKEN)


def make_project(root: Path, descriptor: str = DESCRIPTOR, **extra: str) -> Path:
    project = root / "demo"
    for name, text in {"MLproject": descriptor, **SCRIPTS, **extra}.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(textwrap.dedent(text) if name == "MLproject" else text)
    (root / "cluster.json").write_text(json.dumps(SPEC))
    return project


def run(pytester: pytest.Pytester, *args: str, select: str = "") -> pytest.RunResult:
    """``pytest --mlproject --databricks`` on the Databricks items (``select``: a -k filter)."""
    return pytester.runpytest(
        "--mlproject",
        "--databricks",
        "--databricks-cluster-spec",
        "cluster.json",
        "-p",
        "no:cacheprovider",
        "-k",
        f"databricks and ({select})" if select else "databricks",
        *args,
    )


def submitted_runs(fake: FakeWorkspace) -> list[int]:
    """From the workspace's state, not its API: some tests leave faults on."""
    return fake.run_ids()


def test_pass_fail_and_slow_in_one_session(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    make_project(pytester.path)
    result = run(pytester, "--junitxml=out.xml")
    result.assert_outcomes(passed=2, failed=1)
    output = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*demo/MLproject:*: entry point 'fails' on Databricks, run *: TERMINATED FAILED*",
            "run page: http://127.0.0.1:*",
            "*boom: the model diverged*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["*= Databricks runs =*", "PASSED  SUCCESS*demo/MLproject::main::databricks"]
    )
    assert workspace.active_runs() == []
    assert len(submitted_runs(workspace)) == 3
    tree = ET.parse(pytester.path / "out.xml")
    properties = {
        (case.get("name"), case.get("classname")): {
            p.get("name"): p.get("value") for p in case.iter("property")
        }
        for case in tree.iter("testcase")
    }
    main = properties[("databricks", "demo.MLproject.main")]
    assert main["databricks_result_state"] == "SUCCESS"
    assert str(main["databricks_run_page_url"]).startswith(workspace.host)
    assert len(str(main["archive_sha256"])) == 64
    assert TOKEN not in (pytester.path / "out.xml").read_text()
    assert TOKEN not in output


def test_runs_are_concurrent_not_serial(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    descriptor = (
        "entry_points:\n"
        + "".join(f"  e{i}:\n    command: python slow.py 2\n" for i in range(4))
        + "  main:\n    command: python slow.py 2\n"
    )
    make_project(pytester.path, descriptor)
    run(pytester).assert_outcomes(passed=5)
    # All five were submitted before the first one had finished: the first read of a run's
    # output (which only follows its end) comes after the last submit.
    calls = [e.path for e in workspace.log.entries()]
    submits = [i for i, path in enumerate(calls) if path.endswith("runs/submit")]
    outputs = [i for i, path in enumerate(calls) if path.endswith("runs/get-output")]
    assert len(submits) == 5
    assert max(submits) < min(outputs)


def test_max_parallel_bounds_the_runs_in_flight(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    descriptor = (
        "entry_points:\n"
        + "".join(f"  e{i}:\n    command: python slow.py 0.5\n" for i in range(3))
        + "  main:\n    command: python slow.py 0.5\n"
    )
    make_project(pytester.path, descriptor)
    run(pytester, "--databricks-max-parallel", "1").assert_outcomes(passed=4)
    starts = [e.at for e in workspace.log.calls("POST", "runs/submit")]
    assert len(starts) == 4
    assert starts == sorted(starts)


def test_retries_never_start_a_second_run(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    make_project(pytester.path)
    workspace.faults.set(error_rate=0.3, error_status=503, drop_rate=0.1, path_pattern="jobs")
    result = run(pytester)
    result.assert_outcomes(passed=2, failed=1)
    assert len(submitted_runs(workspace)) == 3
    tokens = {
        e.body["idempotency_token"] for e in workspace.log.calls("POST", "runs/submit") if e.body
    }
    assert len(tokens) == 3


def test_the_runs_own_timeout_ends_it(pytester: pytest.Pytester, workspace: FakeWorkspace) -> None:
    make_project(pytester.path)
    result = run(
        pytester, "--mlproject-param", "slow:seconds=60", "--databricks-timeout", "2", select="slow"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*entry point 'slow' on Databricks, run *: *TIMEDOUT*"])
    assert workspace.active_runs() == []


@pytest.mark.parametrize("outcome", ["SKIPPED", "INTERNAL_ERROR"])
def test_runs_without_a_result_fail_without_hanging(
    pytester: pytest.Pytester, workspace: FakeWorkspace, outcome: str
) -> None:
    make_project(pytester.path)
    workspace.faults.set(run_outcome=outcome)
    result = run(pytester, select="main")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*{outcome}*"])


@pytest.mark.parametrize("fields", ["state", "status"])
def test_servers_that_send_one_kind_of_state(
    pytester: pytest.Pytester, workspace: FakeWorkspace, fields: str
) -> None:
    make_project(pytester.path)
    workspace.faults.set(state_fields=fields)
    run(pytester).assert_outcomes(passed=2, failed=1)


def test_unchanged_project_is_not_uploaded_again(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    make_project(pytester.path)
    run(pytester, select="main").assert_outcomes(passed=1)
    first = workspace.log.calls("POST", "workspace/import")
    assert len(first) == 2  # the launcher and the archive
    workspace.log.clear()
    run(pytester, select="main").assert_outcomes(passed=1)
    assert workspace.log.calls("POST", "workspace/import") == []


def test_preflight_refusals_make_no_request(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    make_project(pytester.path)
    (pytester.path / "cluster.json").write_text(json.dumps({**SPEC, "existing_cluster_id": "1"}))
    result = run(pytester)
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*MLP701*new cluster*"])
    assert workspace.log.entries() == []


def test_docker_projects_are_refused_before_any_request(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    make_project(pytester.path, "docker_env: {image: x}\n" + DESCRIPTOR)
    result = run(pytester, select="main")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*MLP706 Running docker-based projects on Databricks*"])
    assert workspace.log.entries() == []


def test_missing_parameters_skip(pytester: pytest.Pytester, workspace: FakeWorkspace) -> None:
    make_project(
        pytester.path,
        "entry_points:\n  main:\n    parameters: {n: float}\n    command: python main.py {n}\n",
    )
    result = run(pytester, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*No value given for missing parameters: 'n'*--mlproject-param*"])
    assert workspace.log.entries() == []


def test_dry_run_prints_payloads_and_calls_nothing(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    make_project(pytester.path)
    result = run(pytester, "--databricks-dry-run", select="main")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*Databricks dry run: runs/submit payloads*",
            '*"python_file": "/Workspace/Users/<you>/.pytest-mlproject/mlproject-launcher-*.py"*',
        ]
    )
    assert workspace.log.entries() == []
    assert TOKEN not in result.stdout.str()


def test_missing_credentials_are_one_clear_message(
    pytester: pytest.Pytester, workspace: FakeWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(pytester.path)
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-wrong")
    result = run(pytester)
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        [
            "*refused the credentials*",
            "*DATABRICKS_HOST*DATABRICKS_TOKEN*",
            "*--databricks-profile NAME*",
            "*refused the credentials*(how to give credentials: see above)",
        ]
    )
    failures = result.stdout.str().split("short test summary info")[0]
    assert failures.count("--databricks-profile NAME") == 1
    assert workspace.log.calls("POST", "workspace/import") == []
    assert "dapi-wrong" not in result.stdout.str()


def test_the_archive_holds_no_secret(pytester: pytest.Pytester, workspace: FakeWorkspace) -> None:
    make_project(pytester.path, **{".databrickscfg": f"token = {TOKEN}\n", ".env": TOKEN})
    run(pytester, select="main").assert_outcomes(passed=1)
    archives = list(workspace.root.rglob("*.tar.gz"))
    assert len(archives) == 1
    with tarfile.open(archives[0]) as tar:
        names = tar.getnames()
        data = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]
    assert ".env" not in names
    assert ".databrickscfg" not in names
    assert TOKEN.encode() not in data


def test_xdist(pytester: pytest.Pytester, workspace: FakeWorkspace) -> None:
    make_project(pytester.path)
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=2, failed=1)
    assert len(submitted_runs(workspace)) == 3
    assert workspace.active_runs() == []


def test_xdist_worker_ending_first_leaves_other_workers_runs_alone(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    # --dist loadfile gives each descriptor to one worker. The worker with the one quick
    # project submits its share, which includes runs of the other project, and runs out of
    # items while the other worker still waits on them: they must not be cancelled.
    make_project(pytester.path, "entry_points:\n  main:\n    command: python slow.py 0.1\n")
    (pytester.path / "demo").rename(pytester.path / "a_quick")
    descriptor = (
        "entry_points:\n"
        + "".join(f"  e{i}:\n    command: python slow.py 2\n" for i in range(5))
        + "  main:\n    command: python slow.py 2\n"
    )
    make_project(pytester.path, descriptor)
    result = run(pytester, "-n", "2", "--dist", "loadfile")
    result.assert_outcomes(passed=7)
    assert len(submitted_runs(workspace)) == 7
    assert workspace.active_runs() == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_cancels_every_active_run(
    pytester: pytest.Pytester, workspace: FakeWorkspace, signum: int
) -> None:
    """Ctrl-C, or a CI runner cancelling the job."""
    make_project(pytester.path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--mlproject",
        "--databricks",
        "--databricks-cluster-spec",
        "cluster.json",
        "-p",
        "no:cacheprovider",
        "-k",
        "slow and databricks",
        "--mlproject-param",
        "slow:seconds=120",
    ]
    process = subprocess.Popen(
        command, cwd=pytester.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while not workspace.active_runs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workspace.active_runs(), "the run was never submitted"
    process.send_signal(signum)
    out, _ = process.communicate(timeout=60)
    assert b"cancelled run" in out, out.decode()
    assert workspace.wait_idle() == []


def test_path_values_travel_inside_the_archive(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    make_project(pytester.path)
    result = run(pytester, "-rA", select="main")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*main says hello forty-two*"])


def test_dry_run_shows_the_paths_a_real_submit_sends(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    make_project(pytester.path)
    result = run(pytester, "--databricks-dry-run", "--databricks-upload-dir", "/Users/me/x/")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        ['*"python_file": "/Workspace/Users/me/x/mlproject-launcher-*.py"*']
    )
    result = run(pytester, "--databricks-dry-run", "--databricks-upload-dir", "dbfs:/tmp/x")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*Cannot upload to 'dbfs:/tmp/x': DBFS is legacy*"])
    assert workspace.log.entries() == []


SPARK_JOB = """\
name: demo
databricks_spark_job:
  python_libraries: [six]
entry_points:
  main:
    command: "python main.py hi data/input.txt"
  shell:
    command: "python3 main.py hi data/input.txt"
"""


def test_spark_job_commands_mlflow_refuses_fail_before_any_request(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    make_project(pytester.path, SPARK_JOB)
    result = pytester.runpytest(
        "--mlproject", "--databricks", "--databricks-cluster-spec", "cluster.json", "-rs",
        "-p", "no:cacheprovider", "-k", "shell",
    )  # fmt: skip
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*_ demo/MLproject::shell::check _*",
            "*MLP711 Databricks spark job only supports 'python' command*'python3'*",
            "SKIPPED*demo/MLproject:7: the entry point has errors*",
        ]
    )
    assert workspace.log.entries() == []


def test_a_spark_job_installs_its_python_libraries(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    make_project(pytester.path, SPARK_JOB)
    result = run(pytester, select="main")
    result.assert_outcomes(passed=1)
    (run_id,) = submitted_runs(workspace)
    (task,) = workspace.client().jobs.get_run(run_id).tasks or []
    assert [library.pypi.package for library in task.libraries or [] if library.pypi] == ["six"]


def test_under_dist_loadfile_every_entry_point_is_in_flight_together(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    """xdist sends all items of a descriptor to one worker; that worker submits them all
    before waiting, not each one after the previous run ended."""
    slow = "".join(f"  slow{i}:\n    command: python slow.py 2\n" for i in range(4))
    make_project(pytester.path, "entry_points:\n" + slow)
    result = run(pytester, "-n", "2", "--dist", "loadfile")
    result.assert_outcomes(passed=4)
    submitted = [entry.at for entry in workspace.log.calls("POST", "runs/submit")]
    client = workspace.client()
    ended = [
        (client.jobs.get_run(run_id).end_time or 0) / 1000 for run_id in submitted_runs(workspace)
    ]
    assert len(submitted) == len(ended) == 4
    assert max(submitted) < min(ended), "an entry point was submitted only after a run ended"


def test_a_success_without_the_launcher_is_a_failure(
    pytester: pytest.Pytester, workspace: FakeWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host that does not run the task file as __main__: the launcher runs nothing, and the
    # run ends SUCCESS. The item must not pass.
    source = (
        Path(launcher.__file__)
        .read_text()
        .replace('if __name__ == "__main__":', 'if __name__ == "__not_main__":')
    )
    monkeypatch.setattr(payload, "launcher_source", lambda: ("silent.py", source.encode()))
    make_project(pytester.path)

    result = run(pytester, "-rA", select="main")

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*demo/MLproject:*: entry point 'main' on Databricks, run *: the run ended SUCCESS, "
            "but its log lacks the launcher's start line (launcher: entry point 'main': "
            "running in ...): the launcher never ran the entry point*",
            "FAILED  SUCCESS*demo/MLproject::main::databricks",
        ]
    )


def test_a_spark_job_python_file_is_submitted_as_main(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    """`mlflow run -b databricks` submits the file with its parameters and ignores -P."""
    make_project(
        pytester.path,
        "databricks_spark_job:\n  python_file: echo.py\n  parameters: ['--name', 'a b']\n"
        "  python_libraries: [six]\n",
        **{"echo.py": "import sys\nprint('argv', sys.argv[1:])\n"},
    )
    result = run(pytester, "--mlproject-param", "ignored=1", "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*demo/MLproject::main::databricks*", "*argv ?'--name', 'a b'?"])
    (run_id,) = submitted_runs(workspace)
    (task,) = workspace.client().jobs.get_run(run_id).tasks or []
    assert [library.pypi.package for library in task.libraries or [] if library.pypi] == ["six"]
