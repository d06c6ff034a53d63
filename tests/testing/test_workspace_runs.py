"""One-time runs on the fake workspace, through databricks-sdk: every way a run can end."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from databricks.sdk.errors import InvalidParameterValue, ResourceDoesNotExist
from databricks.sdk.service.jobs import GitSource, JobEnvironment
from databricks.sdk.service.workspace import ImportFormat
from helpers import gone

if TYPE_CHECKING:
    from workspace_helpers import Harness

pytest_plugins = ["pytest_mlproject.plugin.workspace_fixtures", "workspace_helpers"]


def test_success_runs_the_file_with_parameters_env_and_companion_files(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI_SECRET", "must not reach the cluster")
    script = harness.put_script(
        "main.py",
        """
        import os, sys
        # Databricks defines no __file__ for a task file: its path is sys.argv[0].
        here = os.path.dirname(sys.argv[0])
        print("args", sys.argv[1:])
        print("FOO", os.environ.get("FOO"), "CI_SECRET", os.environ.get("CI_SECRET"))
        print(open(os.path.join(here, "data.txt")).read())
        """,
    )
    client, workspace = harness.client, harness.workspace
    data = f"{harness.home}/project/data.txt"
    client.workspace.upload(data, b"companion file", format=ImportFormat.AUTO, overwrite=True)
    parameters = ["x", "{{job.run_id}}", "{{task.run_id}}"]
    run_id = harness.submit(harness.task(script, parameters=parameters, env={"FOO": "bar"}))
    run = harness.wait_for_end(run_id)

    assert (harness.life_cycle(run), harness.result(run)) == ("TERMINATED", "SUCCESS")
    assert harness.termination(run) == ("SUCCESS", "")
    task_run_id = harness.task_id(run)
    assert task_run_id != run_id
    assert run.run_page_url == (
        f"{workspace.host}/?o={workspace.workspace_id}#job/{run.job_id}/run/{run_id}"
    )
    assert run.start_time
    assert run.end_time
    assert run.end_time >= run.start_time
    output = client.jobs.get_run_output(task_run_id)
    assert output.logs == (
        f"args ['x', '{run_id}', '{task_run_id}']\nFOO bar CI_SECRET None\ncompanion file\n"
    )
    assert output.logs_truncated is False
    assert output.error is None
    assert output.metadata is not None
    assert output.metadata.job_run_id == run_id
    with pytest.raises(InvalidParameterValue, match="multiple tasks is not supported"):
        client.jobs.get_run_output(run_id)
    by_task_id = client.jobs.get_run(task_run_id)
    assert (by_task_id.run_id, by_task_id.job_run_id) == (task_run_id, run_id)


def test_the_life_cycle_moves_forward(harness: Harness, tmp_path: Path) -> None:
    harness.workspace.faults.pending_polls = 1
    go = tmp_path / "go"
    script = harness.put_script(
        "waits.py", "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.01)"
    )
    run_id = harness.submit(harness.task(script, parameters=[str(go)]))
    seen: list[str] = []

    def reached(state: str) -> bool:
        seen.append(harness.life_cycle(harness.client.jobs.get_run(run_id)))
        return seen[-1] == state

    harness.until(lambda: reached("RUNNING"))
    go.touch()
    harness.until(lambda: reached("TERMINATED"))

    order = ["PENDING", "RUNNING", "TERMINATING", "TERMINATED"]
    assert seen[0] == "PENDING"
    assert seen == sorted(seen, key=order.index)


def test_failure_reports_the_error_its_trace_and_the_logs(harness: Harness) -> None:
    script = harness.put_script("fail.py", "print('before')\nraise ValueError('boom')\n")
    run = harness.run(harness.task(script))

    assert harness.result(run) == "FAILED"
    code, message = harness.termination(run)
    assert code == "RUN_EXECUTION_ERROR"
    assert message.startswith("Task main failed with message")
    output = harness.client.jobs.get_run_output(harness.task_id(run))
    assert output.error == "ValueError: boom"
    assert (output.error_trace or "").startswith("Traceback (most recent call last):")
    assert (output.logs or "").startswith("before\n")


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("raise SystemExit(3)", "SystemExit: 3"),
        ("import sys\nprint('done')\nsys.exit(0)", "SystemExit: 0"),
        ("import sys; sys.exit('no data')", "SystemExit: no data"),
    ],
    ids=["code 3", "code 0", "message"],
)
def test_any_system_exit_fails_the_task_as_on_databricks(
    harness: Harness, source: str, error: str
) -> None:
    run = harness.run(harness.task(harness.put_script("exit.py", source)))

    assert harness.result(run) == "FAILED"
    output = harness.client.jobs.get_run_output(harness.task_id(run))
    assert output.error == error
    assert output.error_trace is None


def test_a_task_file_has_no_dunder_file(harness: Harness) -> None:
    source = "import os\nprint(os.path.dirname(__file__))\n"
    run = harness.run(harness.task(harness.put_script("here.py", source)))

    assert harness.result(run) == "FAILED"
    output = harness.client.jobs.get_run_output(harness.task_id(run))
    assert output.error == "NameError: name '__file__' is not defined"
    assert 'here.py", line 2, in <module>' in (output.error_trace or "")


def test_the_task_runs_as_main_in_the_driver_folder_and_only_python_output_is_logged(
    harness: Harness, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    script = harness.put_script(
        "hosted.py",
        """
        import atexit, os, subprocess, sys
        atexit.register(lambda: open(sys.argv[1], "a").write("atexit ran\\n"))
        print("name", __name__)
        print("folder is the file's", os.getcwd() == os.path.dirname(sys.argv[0]))
        print("to stderr", file=sys.stderr)
        os.write(1, b"fd 1 directly\\n")
        subprocess.run([sys.executable, "-c", "print('a child on the inherited fd 1')"])
        piped = subprocess.run(
            [sys.executable, "-c", "print('a piped child')"], capture_output=True, text=True
        )
        print(piped.stdout, end="")
        try:
            subprocess.run(["true"], stdout=sys.stdout)
        except Exception as exc:
            print("no fileno:", type(exc).__name__)
        """,
    )
    run = harness.run(harness.task(script, parameters=[str(marks)]))

    assert harness.result(run) == "SUCCESS"
    logs = harness.client.jobs.get_run_output(harness.task_id(run)).logs
    assert logs == (
        "name __main__\nfolder is the file's False\nto stderr\na piped child\n"
        "no fileno: UnsupportedOperation\n"
    )
    assert not marks.exists()


def test_with_task_host_process_the_file_runs_as_a_plain_python_process(
    tmp_path: Path,
) -> None:
    from workspace_helpers import Harness

    from pytest_mlproject.testing import FakeWorkspace

    source = "import os, sys\nprint(os.path.basename(__file__))\nos.write(1, b'fd 1\\n')\n"
    with FakeWorkspace(task_host="process") as workspace:
        harness = Harness(workspace)
        ok = harness.run(harness.task(harness.put_script("plain.py", source)))
        failed = harness.run(harness.task(harness.put_script("exit.py", "raise SystemExit(3)")))
        zero = harness.run(harness.task(harness.put_script("zero.py", "import sys; sys.exit(0)")))

        assert harness.client.jobs.get_run_output(harness.task_id(ok)).logs == "plain.py\nfd 1\n"
        output = harness.client.jobs.get_run_output(harness.task_id(failed))
        assert output.error == "The Python process exited with code 3"
        assert harness.result(zero) == "SUCCESS"


def test_task_host_must_be_one_the_fake_knows() -> None:
    from pytest_mlproject.testing import FakeWorkspace

    with pytest.raises(ValueError, match="task_host must be 'databricks' or 'process'"):
        FakeWorkspace(task_host="ipython")  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["task", "run"])
def test_timeout_seconds_ends_the_run_timedout(harness: Harness, where: str) -> None:
    script = harness.put_script("slow.py", "import time\nprint('started')\ntime.sleep(60)\n")
    if where == "task":
        run = harness.run(harness.task(script, timeout_seconds=1))
    else:
        run = harness.run(harness.task(script), timeout_seconds=1)

    assert harness.result(run) == "TIMEDOUT"
    assert run.state is not None
    assert run.state.user_cancelled_or_timedout is True
    assert run.tasks
    assert run.tasks[0].state is not None
    assert run.tasks[0].state.result_state is not None
    assert run.tasks[0].state.result_state.value == "TIMEDOUT"


def test_cancel_interrupts_the_task_and_reports_what_it_left_running(
    harness: Harness, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    script = harness.put_script(
        "forks.py",
        """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(sys.argv[1] + ".tmp", "w") as out:
            out.write(f"{os.getpid()} {child.pid}")
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            open(sys.argv[1] + ".interrupted", "w").close()
            raise
        """,
    )
    run_id = harness.submit(harness.task(script, parameters=[str(pids)]))
    harness.until(pids.exists)
    assert harness.workspace.active_runs() == [run_id]
    harness.until(lambda: harness.life_cycle(harness.client.jobs.get_run(run_id)) == "RUNNING")

    harness.client.jobs.cancel_run(run_id)
    run = harness.wait_for_end(run_id)

    assert harness.result(run) == "CANCELED"
    assert harness.termination(run)[0] == "USER_CANCELED"
    assert Path(f"{pids}.interrupted").exists()
    task_pid, child_pid = (int(p) for p in pids.read_text().split())
    # The task did not stop its child: the fake says so, and kills it.
    leftovers = harness.workspace.leftovers(run_id)
    assert [left.pid for left in leftovers] == [child_pid]
    assert "time.sleep(60)" in leftovers[0].command
    assert harness.workspace.leftovers(harness.task_id(run)) == leftovers
    harness.until(lambda: gone(task_pid, within=0) and gone(child_pid, within=0))
    assert harness.workspace.active_runs() == []


def test_a_task_that_ignores_the_interrupt_is_killed_after_the_grace(
    harness: Harness, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    script = harness.put_script(
        "stubborn.py",
        """
        import os, signal, sys, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        open(sys.argv[1], "w").write(str(os.getpid()))
        time.sleep(60)
        """,
    )
    run_id = harness.submit(harness.task(script, parameters=[str(pid_file)]))
    harness.until(lambda: pid_file.exists() and pid_file.read_text() != "")

    harness.client.jobs.cancel_run(run_id)
    run = harness.wait_for_end(run_id)

    assert harness.result(run) == "CANCELED"
    assert gone(int(pid_file.read_text()), within=0)
    assert harness.workspace.leftovers(run_id) == []


def test_leftovers_of_an_unknown_run_is_an_error(harness: Harness) -> None:
    with pytest.raises(KeyError):
        harness.workspace.leftovers(424242)


def test_cancel_while_pending_never_starts_the_task(harness: Harness) -> None:
    harness.workspace.faults.cluster_start_seconds = 60
    run_id = harness.submit(harness.task(harness.put_script("never.py", "print('ran')")))
    harness.client.jobs.cancel_run(run_id)
    run = harness.wait_for_end(run_id)

    assert harness.result(run) == "CANCELED"
    assert harness.client.jobs.get_run_output(harness.task_id(run)).logs is None


def test_a_retried_submit_with_the_same_idempotency_token_returns_the_same_run(
    harness: Harness,
) -> None:
    task = harness.task(harness.put_script("once.py", "print('once')"))
    first = harness.submit(task, idempotency_token="token-1")
    again = harness.submit(task, idempotency_token="token-1")
    other = harness.submit(task, idempotency_token="token-2")

    assert first == again != other
    listed = {r.run_id for r in harness.client.jobs.list_runs()}
    assert listed == {first, other}


def test_multi_task_runs_follow_depends_on_and_skip_downstream_of_a_failure(
    harness: Harness,
) -> None:
    good = harness.put_script("good.py", "print('good')")
    bad = harness.put_script("bad.py", "raise RuntimeError('no')")
    run = harness.run(
        harness.task(bad, key="prepare"),
        harness.task(good, key="train", depends_on=[{"task_key": "prepare"}]),
        harness.task(good, key="independent"),
    )

    assert harness.result(run) == "FAILED"
    assert harness.termination(run)[1].startswith("Task prepare failed with message")
    results = {
        t.task_key: t.state.result_state.value
        for t in run.tasks or []
        if t.state and t.state.result_state
    }
    assert results == {"prepare": "FAILED", "train": "UPSTREAM_FAILED", "independent": "SUCCESS"}
    with pytest.raises(InvalidParameterValue, match="individual task run"):
        harness.client.jobs.get_run_output(run.run_id or 0)


def test_unknown_runs_answer_like_databricks(harness: Harness) -> None:
    jobs = harness.client.jobs
    # 400 INVALID_PARAMETER_VALUE "Run N does not exist"; the SDK turns it into
    # ResourceDoesNotExist for runs/get and runs/get-output.
    for lookup in (jobs.get_run, jobs.get_run_output):
        with pytest.raises(ResourceDoesNotExist, match="Run 424242 does not exist"):
            lookup(424242)
    for change in (jobs.cancel_run, jobs.delete_run):
        with pytest.raises(InvalidParameterValue, match="Run 424242 does not exist"):
            change(424242)


def test_delete_only_finished_runs_and_forget_them(harness: Harness) -> None:
    harness.workspace.faults.cluster_start_seconds = 60
    task = harness.task(harness.put_script("short.py", "print(1)"))
    run_id = harness.submit(task, idempotency_token="delete-me")
    with pytest.raises(InvalidParameterValue, match="still active"):
        harness.client.jobs.delete_run(run_id)
    harness.client.jobs.cancel_run(run_id)
    harness.wait_for_end(run_id)

    harness.client.jobs.delete_run(run_id)

    with pytest.raises(ResourceDoesNotExist):
        harness.client.jobs.get_run(run_id)
    with pytest.raises(InvalidParameterValue, match="was deleted"):
        harness.submit(task, idempotency_token="delete-me")


def test_list_runs_pages_and_filters(harness: Harness) -> None:
    jobs = harness.client.jobs
    task = harness.task(harness.put_script("quick.py", "print(1)"))
    finished = [harness.submit(task) for _ in range(3)]
    for run_id in finished:
        harness.wait_for_end(run_id)
    harness.workspace.faults.cluster_start_seconds = 60
    active = harness.submit(task)

    assert [r.run_id for r in jobs.list_runs(limit=2)] == [active, *reversed(finished)]
    pages = harness.workspace.log.calls("GET", "/jobs/runs/list")
    assert [p.query.get("page_token") for p in pages] == [None, "2"]
    assert [r.run_id for r in jobs.list_runs(active_only=True)] == [active]
    completed = list(jobs.list_runs(completed_only=True, expand_tasks=True))
    assert [r.run_id for r in completed] == list(reversed(finished))
    assert [len(r.tasks or []) for r in completed] == [1, 1, 1]
    with pytest.raises(InvalidParameterValue):
        list(jobs.list_runs(active_only=True, completed_only=True))


def test_a_missing_library_file_fails_like_a_cluster_library_install(harness: Harness) -> None:
    script = harness.put_script("uses_libs.py", "print('libs')")
    requirements = harness.put_script("requirements.txt", "mlflow-skinny\n")
    present = [{"requirements": requirements}, {"pypi": {"package": "numpy==2.0"}}]
    wheel = f"/Workspace{harness.home}/project/dist/missing-1.0-py3-none-any.whl"

    ok = harness.run(harness.task(script, libraries=present))
    broken = harness.run(harness.task(script, libraries=[*present, {"whl": wheel}]))

    assert harness.result(ok) == "SUCCESS"
    assert harness.result(broken) == "FAILED"
    code, message = harness.termination(broken)
    assert code == "LIBRARY_INSTALLATION_ERROR"
    assert "missing-1.0-py3-none-any.whl" in message
    output = harness.client.jobs.get_run_output(harness.task_id(broken))
    assert (output.error or "").startswith("Library installation failed")


@pytest.mark.parametrize(
    ("task", "code"),
    [
        (
            {"notebook_task": {"notebook_path": "/Users/x/nb"}, "existing_cluster_id": "1-2-3"},
            "INVALID_RUN_CONFIGURATION",
        ),
        (
            {
                "python_wheel_task": {"package_name": "p", "entry_point": "e"},
                "environment_key": "d",
            },
            "INVALID_RUN_CONFIGURATION",
        ),
        (
            {"spark_python_task": {"python_file": "/Users/x/absent.py"}, "environment_key": "d"},
            "RESOURCE_NOT_FOUND",
        ),
        (
            {"spark_python_task": {"python_file": "s3://bucket/job.py"}, "environment_key": "d"},
            "RESOURCE_NOT_FOUND",
        ),
        (
            {
                "spark_python_task": {"python_file": "job.py", "source": "GIT"},
                "environment_key": "d",
            },
            "REPOSITORY_CHECKOUT_FAILED",
        ),
    ],
    ids=["notebook_task", "wheel_task", "missing_file", "cloud_uri", "git_source"],
)
def test_what_the_fake_cannot_execute_never_succeeds(
    harness: Harness, task: dict[str, Any], code: str
) -> None:
    environment = {"environment_key": "d", "spec": {"client": "1"}}
    options: dict[str, Any] = {"environments": [JobEnvironment.from_dict(environment)]}
    if code == "REPOSITORY_CHECKOUT_FAILED":
        git = {"git_url": "https://example.com/r.git", "git_provider": "gitHub", "git_branch": "x"}
        options["git_source"] = GitSource.from_dict(git)

    run = harness.run({"task_key": "t", **task}, **options)

    assert harness.result(run) == "FAILED"
    assert harness.termination(run)[0] == code


def test_a_notebook_is_not_a_python_file(harness: Harness) -> None:
    notebook = harness.put_script("nb.py", "# Databricks notebook source\nprint(1)\n")
    # AUTO made it a notebook, named without its extension.
    run = harness.run(harness.task(notebook.removesuffix(".py")))

    code, message = harness.termination(run)
    assert code == "INVALID_RUN_CONFIGURATION"
    assert "is a notebook" in message


def test_logs_keep_the_last_5_mb(harness: Harness) -> None:
    source = "import sys\nsys.stdout.write('x' * 6_000_000)\nprint('END')\n"
    run = harness.run(harness.task(harness.put_script("chatty.py", source)))

    output = harness.client.jobs.get_run_output(harness.task_id(run))
    assert output.logs_truncated is True
    assert len(output.logs or "") == 5 * 1024 * 1024
    assert (output.logs or "").endswith("xEND\n")


def test_files_in_volumes_and_dbfs_run_beside_their_companions(harness: Harness) -> None:
    client = harness.client
    source = (
        b"import os, sys\nprint(open(os.path.join(os.path.dirname(sys.argv[0]), 'c.txt')).read())\n"
    )
    client.files.upload("/Volumes/main/default/code/job/run.py", io.BytesIO(source))
    client.files.upload("/Volumes/main/default/code/job/c.txt", io.BytesIO(b"from a volume"))
    with client.dbfs.open("dbfs:/jobs/run.py", write=True) as out:
        out.write(source)
    with client.dbfs.open("/jobs/c.txt", write=True) as out:
        out.write(b"from dbfs")

    for python_file, expected in [
        ("/Volumes/main/default/code/job/run.py", "from a volume\n"),
        ("dbfs:/jobs/run.py", "from dbfs\n"),
    ]:
        run = harness.run(harness.task(python_file))
        assert client.jobs.get_run_output(harness.task_id(run)).logs == expected


def test_parameters_naming_stored_files_reach_them(harness: Harness) -> None:
    client = harness.client
    client.files.upload("/Volumes/main/default/code/v.txt", io.BytesIO(b"in a volume"))
    with client.dbfs.open("dbfs:/jobs/d.txt", write=True) as out:
        out.write(b"in dbfs")
    workspace_file = harness.put_script("w.txt", "in the workspace")
    source = "import sys\nfor path in sys.argv[1:]:\n    print(open(path).read())\n"
    parameters = [workspace_file, "/Volumes/main/default/code/v.txt", "/dbfs/jobs/d.txt"]

    run = harness.run(harness.task(harness.put_script("read.py", source), parameters=parameters))

    assert harness.result(run) == "SUCCESS"
    logs = harness.client.jobs.get_run_output(harness.task_id(run)).logs
    assert logs == "in the workspace\nin a volume\nin dbfs\n"


def test_jobs_2_1_paths_are_served_too(harness: Harness) -> None:
    api = harness.client.api_client
    task = harness.task(harness.put_script("v21.py", "print(21)"))
    run_id = api.do("POST", "/api/2.1/jobs/runs/submit", body={"tasks": [task]})["run_id"]

    def ended() -> bool:
        run = api.do("GET", "/api/2.1/jobs/runs/get", query={"run_id": run_id})
        assert isinstance(run, dict)
        return bool(run["state"]["life_cycle_state"] == "TERMINATED")

    harness.until(ended)


def test_runs_execute_concurrently(harness: Harness, tmp_path: Path) -> None:
    # Each run waits for the other's mark: they can only both succeed if they run at once.
    script = harness.put_script(
        "meet.py",
        """
        import os, sys, time
        open(sys.argv[1], "w").close()
        deadline = time.monotonic() + 20
        while not os.path.exists(sys.argv[2]):
            assert time.monotonic() < deadline, "the other run never started"
            time.sleep(0.01)
        """,
    )
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    first = harness.submit(harness.task(script, parameters=[a, b]))
    second = harness.submit(harness.task(script, parameters=[b, a]))

    assert [harness.result(harness.wait_for_end(r)) for r in (first, second)] == ["SUCCESS"] * 2


def test_the_task_runs_with_this_python(harness: Harness) -> None:
    run = harness.run(
        harness.task(harness.put_script("py.py", "import sys; print(sys.executable)"))
    )

    logs = harness.client.jobs.get_run_output(harness.task_id(run)).logs or ""
    assert re.fullmatch(re.escape(sys.executable) + r"\n", logs)
