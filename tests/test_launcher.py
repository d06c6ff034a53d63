"""The launcher run the way Databricks runs a task file: by the fake workspace's Databricks host
(``exec`` in a Python process, no ``__file__``, any ``SystemExit`` a failure, a cancel an
interrupt), through databricks-sdk."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.jobs import Run, SubmitTask
from databricks.sdk.service.workspace import ImportFormat
from helpers import gone

from pytest_mlproject.databricks import archive, launcher
from pytest_mlproject.testing import FakeWorkspace

#: Writes its pid and a grandchild's (same process group) to argv[1], then waits: it stops
#: only when killed. It ignores SIGTERM, so the launcher must come to SIGKILL.
SLEEPER = """\
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(sys.argv[1] + ".tmp", "w") as out:
    out.write(f"{os.getpid()} {child.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
print("sleeping", flush=True)
time.sleep(120)
"""


def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.02)


class Cluster:
    """Uploads the launcher and a project to the fake workspace and runs entry points there."""

    def __init__(self, workspace: FakeWorkspace, tmp_path: Path) -> None:
        self.workspace = workspace
        self.client: WorkspaceClient = workspace.client(retry_timeout_seconds=30)
        self.folder = f"/Users/{workspace.user_name}/launch"
        self.client.workspace.mkdirs(self.folder)
        self.project = tmp_path / "project"
        self.project.mkdir()
        (self.project / "MLproject").write_text("entry_points:\n  main:\n    command: 'true'\n")

    def put(self, name: str, data: bytes) -> str:
        path = f"{self.folder}/{name}"
        self.client.workspace.upload(path, data, format=ImportFormat.AUTO, overwrite=True)
        return f"/Workspace{path}"

    def submit(
        self,
        command: str,
        files: dict[str, str] | None = None,
        *,
        launcher_source: bytes | None = None,
        bare_archive: bool = False,
    ) -> int:
        for name, text in (files or {}).items():
            (self.project / name).write_text(text)
        packed = archive.pack(self.project)
        stored = self.put(packed.name, packed.data)
        script = self.put("launcher.py", launcher_source or Path(launcher.__file__).read_bytes())
        parameters = launcher.arguments(
            archive=packed.name if bare_archive else stored, entry="main", command=command
        )
        task = {
            "task_key": "mlproject",
            "new_cluster": {"spark_version": "15.4.x-scala2.12", "num_workers": 0},
            "spark_python_task": {"python_file": script, "parameters": parameters},
        }
        waiter = self.client.jobs.submit(run_name="launcher", tasks=[SubmitTask.from_dict(task)])
        return int(waiter.bind()["run_id"])

    def wait(self, run_id: int) -> Run:
        assert self.workspace.wait_idle(60) == []
        return self.client.jobs.get_run(run_id)

    def task_id(self, run_id: int) -> int:
        run = self.client.jobs.get_run(run_id)
        assert run.tasks
        assert run.tasks[0].run_id is not None
        return run.tasks[0].run_id

    def result(self, run: Run) -> str | None:
        assert run.state is not None
        return run.state.result_state.value if run.state.result_state else None


@pytest.fixture
def cluster(databricks_workspace: FakeWorkspace, tmp_path: Path) -> Cluster:
    assert databricks_workspace.task_host == "databricks"
    return Cluster(databricks_workspace, tmp_path)


def test_a_successful_entry_point_succeeds_with_its_output(cluster: Cluster) -> None:
    train = "import sys\nprint('trained')\nprint('a warning', file=sys.stderr)\n"
    run_id = cluster.submit("python train.py", {"train.py": train})
    run = cluster.wait(run_id)

    assert cluster.result(run) == "SUCCESS"
    output = cluster.client.jobs.get_run_output(cluster.task_id(run_id))
    lines = (output.logs or "").splitlines()
    assert lines[0].startswith("launcher: entry point 'main': running in ")
    assert lines[0].endswith(": python train.py")
    assert lines[1:] == ["trained", "a warning", "launcher: entry point 'main': finished"]
    assert output.error is None
    assert cluster.workspace.leftovers(run_id) == []


def test_a_failing_entry_point_fails_naming_it_and_its_exit_code(cluster: Cluster) -> None:
    run_id = cluster.submit("echo about to fail; exit 3")
    run = cluster.wait(run_id)

    assert cluster.result(run) == "FAILED"
    output = cluster.client.jobs.get_run_output(cluster.task_id(run_id))
    assert output.error == (
        "LauncherError: entry point 'main' failed: its command exited with code 3"
    )
    assert "about to fail\n" in (output.logs or "")
    assert "finished" not in (output.logs or "")


def test_a_grandchilds_output_reaches_the_log(cluster: Cluster) -> None:
    spawn = (
        "import subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', 'print(\"from the grandchild\")'], check=True)\n"
    )
    run_id = cluster.submit("python spawn.py", {"spawn.py": spawn})

    assert cluster.result(cluster.wait(run_id)) == "SUCCESS"
    logs = cluster.client.jobs.get_run_output(cluster.task_id(run_id)).logs or ""
    assert "from the grandchild\n" in logs


def test_output_streams_as_it_comes_and_the_log_keeps_the_last_5_mb(
    cluster: Cluster, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    chatty = (
        "import os, sys, time\n"
        "sys.stdout.write('x' * 6_000_000 + '\\nhalfway\\n')\n"
        "sys.stdout.flush()\n"
        "while not os.path.exists(sys.argv[1]):\n"
        "    time.sleep(0.01)\n"
        "print('end')\n"
    )
    run_id = cluster.submit(f"python chatty.py {go}", {"chatty.py": chatty})
    task_id = cluster.task_id(run_id)

    # The command is still waiting, and what it printed is in the log already.
    until(lambda: "halfway\n" in cluster.workspace.log_so_far(task_id))
    assert cluster.workspace.active_runs() == [run_id]
    go.touch()
    run = cluster.wait(run_id)

    assert cluster.result(run) == "SUCCESS"
    output = cluster.client.jobs.get_run_output(task_id)
    assert output.logs_truncated is True
    assert len(output.logs or "") == 5 * 1024 * 1024
    assert (output.logs or "").endswith("x\nhalfway\nend\nlauncher: entry point 'main': finished\n")


def test_bytes_that_are_not_utf8_are_shown_replaced(cluster: Cluster) -> None:
    run_id = cluster.submit("printf 'caf\\351 ok\\n'")

    assert cluster.result(cluster.wait(run_id)) == "SUCCESS"
    logs = cluster.client.jobs.get_run_output(cluster.task_id(run_id)).logs or ""
    assert "caf\ufffd ok\n" in logs


def test_a_user_script_keeps_its_dunder_file(cluster: Cluster) -> None:
    script = "import os\nprint('I am', os.path.basename(__file__))\n"
    run_id = cluster.submit("python uses_file.py", {"uses_file.py": script})

    assert cluster.result(cluster.wait(run_id)) == "SUCCESS"
    assert "I am uses_file.py\n" in (
        cluster.client.jobs.get_run_output(cluster.task_id(run_id)).logs or ""
    )


def test_a_bare_archive_name_is_found_beside_the_launcher(cluster: Cluster) -> None:
    run_id = cluster.submit("echo found", bare_archive=True)

    assert cluster.result(cluster.wait(run_id)) == "SUCCESS"
    assert "found\n" in (cluster.client.jobs.get_run_output(cluster.task_id(run_id)).logs or "")


def _cancel_sleeper(cluster: Cluster, tmp_path: Path, source: bytes | None) -> tuple[int, Run]:
    pids = tmp_path / "pids"
    run_id = cluster.submit(
        f"python sleeper.py {pids}", {"sleeper.py": SLEEPER}, launcher_source=source
    )
    until(pids.exists)
    cluster.client.jobs.cancel_run(run_id)
    run = cluster.wait(run_id)
    assert cluster.result(run) == "CANCELED"
    return run_id, run


def test_a_cancel_leaves_nothing_running(cluster: Cluster, tmp_path: Path) -> None:
    run_id, _ = _cancel_sleeper(cluster, tmp_path, None)

    assert cluster.workspace.leftovers(run_id) == []
    command, grandchild = (int(p) for p in (tmp_path / "pids").read_text().split())
    assert gone(command)
    assert gone(grandchild)


def test_a_launcher_that_does_not_stop_its_command_would_leave_it_running(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The check above can fail: the same launcher without its clean-up leaks the command.
    source = Path(launcher.__file__).read_text()
    no_cleanup = "def stop_group(child, grace=0.0):\n    pass\n\n\n"
    at = source.index('if __name__ == "__main__":')
    leaky = (source[:at] + no_cleanup + source[at:]).encode()

    run_id, _ = _cancel_sleeper(cluster, tmp_path, leaky)

    command, grandchild = (int(p) for p in (tmp_path / "pids").read_text().split())
    assert {left.pid for left in cluster.workspace.leftovers(run_id)} >= {command, grandchild}
