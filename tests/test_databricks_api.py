"""``submit_entry_point`` and the ``mlproject_databricks`` fixture, against the fake workspace."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import databricks.sdk
import pytest

from pytest_mlproject.commands import ParameterError
from pytest_mlproject.databricks import launcher, payload
from pytest_mlproject.databricks.api import PreflightError, submit_entry_point
from pytest_mlproject.databricks.workspace import CredentialsError, Workspace
from pytest_mlproject.problems import MLprojectError
from pytest_mlproject.testing import FakeWorkspace

# pytester's in-process runs restore sys.modules afterwards: load the SDK before them.
assert databricks.sdk.WorkspaceClient is not None

TOKEN = "dapi-api-secret-0123456789abcdef"
SPEC = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": 0}

DESCRIPTOR = """\
name: demo
python_env: python_env.yaml
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
      seconds: {type: float, default: 60}
    command: "python slow.py {seconds}"
  needs:
    parameters:
      n: float
    command: "python main.py {n} data/input.txt"
  outside:
    parameters:
      data: {type: path, default: ../cluster.json}
    command: "python main.py x {data}"
"""

FILES = {
    "MLproject": DESCRIPTOR,
    "python_env.yaml": "python: '3.11'\ndependencies:\n  - -r requirements.txt\n  - six\n",
    "requirements.txt": "numpy\n",
    "main.py": "import sys\nprint('main says', sys.argv[1], open(sys.argv[2]).read().strip())\n",
    "fail.py": "import sys\nprint('about to fail')\nsys.exit('boom: the model diverged')\n",
    "slow.py": "import sys, time\ntime.sleep(float(sys.argv[1]))\n",
    "data/input.txt": "forty-two\n",
}


@pytest.fixture
def fake(connect_fake: Callable[[str], FakeWorkspace]) -> FakeWorkspace:
    return connect_fake(TOKEN)


def make_project(root: Path, **extra: str) -> Path:
    project = root / "demo"
    for name, text in {**FILES, **extra}.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    (root / "cluster.json").write_text(json.dumps(SPEC))
    return project


def test_a_passing_run(fake: FakeWorkspace, tmp_path: Path) -> None:
    project = make_project(tmp_path)
    lines: list[str] = []
    result = submit_entry_point(
        project, "main", {"greeting": "hi"}, cluster_spec=SPEC, echo=lines.append
    )
    assert result.passed, result.describe()
    assert (result.state, result.result_state) == ("TERMINATED", "SUCCESS")
    assert "main says hi forty-two" in result.logs
    assert result.command == "python main.py hi data/input.txt"
    assert str(result.run_page_url).startswith(fake.host)
    assert len(result.archive_sha256) == 64
    assert result.run_duration_ms is not None
    assert result.client_error is None
    assert any(f"submitted run {result.run_id}" in line for line in lines)
    # The project's dependencies went along: its requirements file, uploaded, and six.
    [submit] = fake.log.calls("POST", "runs/submit")
    assert submit.body is not None
    libraries = submit.body["tasks"][0]["libraries"]
    assert {"pypi": {"package": "six"}} in libraries
    [requirements] = [lib["requirements"] for lib in libraries if "requirements" in lib]
    assert requirements.startswith("/Workspace/Users/someone@example.com/.pytest-mlproject/")
    assert fake.active_runs() == []


def test_a_success_without_the_launcher_does_not_pass(
    fake: FakeWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host that does not run the task file as __main__: the launcher runs nothing, and the
    # run ends SUCCESS.
    source = (
        Path(launcher.__file__)
        .read_text()
        .replace('if __name__ == "__main__":', 'if __name__ == "__not_main__":')
    )
    monkeypatch.setattr(payload, "launcher_source", lambda: ("silent.py", source.encode()))
    project = make_project(tmp_path)

    result = submit_entry_point(project, "main", cluster_spec=SPEC)

    assert result.result_state == "SUCCESS"
    assert not result.passed
    assert result.client_error == (
        "the run ended SUCCESS, but its log lacks the launcher's start line "
        "(launcher: entry point 'main': running in ...): the launcher never ran the entry "
        "point (was the task file not run as the main program?)"
    )


def test_a_failing_run(fake: FakeWorkspace, tmp_path: Path) -> None:
    project = make_project(tmp_path)
    result = submit_entry_point(project, "fails", cluster_spec=tmp_path / "cluster.json")
    assert not result.passed
    assert result.result_state == "FAILED"
    assert result.termination_code == "RUN_EXECUTION_ERROR"
    assert result.error
    text = result.describe()
    assert text.startswith(f"demo::fails on Databricks, run {result.run_id}: TERMINATED FAILED")
    assert "run page: http://127.0.0.1:" in text
    assert "boom: the model diverged" in text
    assert TOKEN not in text


def test_the_runs_own_timeout(fake: FakeWorkspace, tmp_path: Path) -> None:
    project = make_project(tmp_path)
    result = submit_entry_point(project, "slow", cluster_spec=SPEC, timeout=1)
    assert not result.passed
    assert result.result_state == "TIMEDOUT"
    assert fake.active_runs() == []


@pytest.mark.parametrize("exception", [KeyboardInterrupt, RuntimeError])
def test_the_run_is_cancelled_when_the_wait_ends_early(
    fake: FakeWorkspace, tmp_path: Path, exception: type[BaseException]
) -> None:
    project = make_project(tmp_path)
    lines: list[str] = []

    def echo(line: str) -> None:
        lines.append(line)
        if "submitted run" in line:
            raise exception("stop")

    with pytest.raises(exception):
        submit_entry_point(project, "slow", cluster_spec=SPEC, echo=echo)
    assert fake.wait_idle() == []
    assert any(line.startswith("Databricks: cancelled run") for line in lines)


def test_a_given_workspace_is_used_and_left_open(fake: FakeWorkspace, tmp_path: Path) -> None:
    project = make_project(tmp_path)
    with Workspace.connect(host=fake.host, token=TOKEN) as workspace:
        first = submit_entry_point(
            project, "main", cluster_spec=SPEC, workspace=workspace, upload_dir="/Shared/x"
        )
        imports = len(fake.log.calls("POST", "workspace/import"))
        second = submit_entry_point(
            project, "main", cluster_spec=SPEC, workspace=workspace, upload_dir="/Shared/x"
        )
        assert first.passed
        assert second.passed
        assert first.run_id != second.run_id
        # Nothing uploaded twice: the same archive, the same launcher, the same requirements.
        assert len(fake.log.calls("POST", "workspace/import")) == imports == 3
        assert workspace.get_run(int(second.run_id or 0)).passed


def test_the_projects_own_cluster_spec(fake: FakeWorkspace, tmp_path: Path) -> None:
    project = make_project(
        tmp_path,
        **{
            "pytest-mlproject.yaml": "databricks:\n  cluster_spec: cluster.json\n",
            "cluster.json": json.dumps(SPEC),
        },
    )
    assert submit_entry_point(project, "main").passed


def test_no_cluster_spec_at_all(fake: FakeWorkspace, tmp_path: Path) -> None:
    project = make_project(tmp_path)
    with pytest.raises(MLprojectError, match="no cluster spec"):
        submit_entry_point(project)
    assert fake.log.entries() == []


def test_what_databricks_refuses_is_refused_before_any_request(
    fake: FakeWorkspace, tmp_path: Path
) -> None:
    project = make_project(tmp_path)
    with pytest.raises(PreflightError) as caught:
        submit_entry_point(project, cluster_spec={**SPEC, "existing_cluster_id": "1"})
    assert [p.code for p in caught.value.problems] == ["MLP701"]
    assert "nothing was uploaded" in str(caught.value)
    with pytest.raises(PreflightError, match="MLP707"):
        submit_entry_point(project, "outside", cluster_spec=SPEC)
    with pytest.raises(MLprojectError, match="outside the project folder"):
        submit_entry_point(
            project,
            "main",
            cluster_spec=SPEC,
            parameters={"data": str(tmp_path / "cluster.json")},
        )
    assert fake.log.entries() == []


def test_parameter_problems_raise_before_any_request(fake: FakeWorkspace, tmp_path: Path) -> None:
    project = make_project(tmp_path)
    with pytest.raises(ParameterError, match="No value given for missing parameters: 'n'"):
        submit_entry_point(project, "needs", cluster_spec=SPEC)
    with pytest.raises(MLprojectError, match="Could not find nope"):
        submit_entry_point(project, "nope", cluster_spec=SPEC)
    assert fake.log.entries() == []


def test_bad_credentials_are_one_error_and_nothing_is_uploaded(
    fake: FakeWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path)
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-wrong")
    with pytest.raises(CredentialsError, match="refused the credentials") as caught:
        submit_entry_point(project, cluster_spec=SPEC)
    assert "dapi-wrong" not in str(caught.value)
    assert fake.log.calls("POST", "workspace/import") == []


def test_a_script_entry_point_and_a_project_without_mlproject(
    fake: FakeWorkspace, tmp_path: Path
) -> None:
    project = tmp_path / "bare"
    project.mkdir()
    (project / "hello.py").write_text("print('hello from a bare folder')\n")
    result = submit_entry_point(project, "hello.py", cluster_spec=SPEC)
    assert result.passed, result.describe()
    assert "hello from a bare folder" in result.logs


# --- the fixture -----------------------------------------------------------------------------

TEST_FILE = """
def test_main(mlproject_databricks):
    result = mlproject_databricks.submit("demo", "main", {"greeting": "hi"})
    assert result.passed, result.describe()
    assert "main says hi forty-two" in result.logs
    assert mlproject_databricks.results == [result]

def test_fails(mlproject_databricks):
    result = mlproject_databricks.submit("demo", "fails", timeout=30)
    assert result.passed, result.describe()
"""


def test_the_fixture_submits_with_the_sessions_options(
    pytester: pytest.Pytester, fake: FakeWorkspace
) -> None:
    make_project(pytester.path)
    pytester.makepyfile(test_submit=TEST_FILE)
    result = pytester.runpytest(
        "--databricks",
        "--databricks-cluster-spec",
        "cluster.json",
        "--databricks-upload-dir",
        "/Shared/from-tests",
        "-p",
        "no:cacheprovider",
        "test_submit.py",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: demo::fails on Databricks, run *: TERMINATED FAILED*",
            "*boom: the model diverged*",
            "*Databricks: demo::fails: submitted run *",
        ]
    )
    assert TOKEN not in result.stdout.str()
    for submit in fake.log.calls("POST", "runs/submit"):
        assert submit.body is not None
        task = submit.body["tasks"][0]
        assert task["spark_python_task"]["python_file"].startswith("/Workspace/Shared/from-tests/")
    timeouts = [e.body["timeout_seconds"] for e in fake.log.calls("POST", "runs/submit") if e.body]
    assert sorted(timeouts) == [30, 7200]
    assert fake.active_runs() == []


CONFIGURED_TEST_FILE = """
import pytest
from pytest_mlproject.commands import MissingParametersError

def test_values_come_from_the_session_and_the_project(mlproject_databricks):
    result = mlproject_databricks.submit("demo", "main")
    assert "main says ciao forty-two" in result.logs, result.describe()
    result = mlproject_databricks.submit("demo", "needs")
    assert "main says 3 forty-two" in result.logs, result.describe()
    with pytest.raises(MissingParametersError):
        mlproject_databricks.submit("demo", "needs", configured=False)
"""


def test_the_fixture_takes_values_as_the_items_do(
    pytester: pytest.Pytester, fake: FakeWorkspace
) -> None:
    settings = "entry_points:\n  needs:\n    parameters:\n      n: '3'\n"
    make_project(pytester.path, **{"pytest-mlproject.yaml": settings})
    pytester.makepyfile(test_values=CONFIGURED_TEST_FILE)
    result = pytester.runpytest(
        "--databricks",
        "--databricks-cluster-spec",
        "cluster.json",
        "--mlproject-param",
        "main:greeting=ciao",
        "-p",
        "no:cacheprovider",
        "-rA",
        "test_values.py",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*Databricks run log of demo::needs*", "*main says 3 forty-two*"])
    assert len(fake.log.calls("POST", "runs/submit")) == 2


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((), "*submits to Databricks: run with --databricks*"),
        (("--databricks-dry-run",), "*nothing is submitted with --databricks-dry-run*"),
    ],
)
def test_the_fixture_skips_unless_asked_to_submit(
    pytester: pytest.Pytester, fake: FakeWorkspace, args: tuple[str, ...], reason: str
) -> None:
    make_project(pytester.path)
    pytester.makepyfile(test_submit=TEST_FILE)
    result = pytester.runpytest(*args, "-rs", "-p", "no:cacheprovider", "test_submit.py")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines([reason])
    assert fake.log.entries() == []


def test_the_fixture_needs_a_cluster_spec(pytester: pytest.Pytester, fake: FakeWorkspace) -> None:
    make_project(pytester.path)
    pytester.makepyfile(test_submit=TEST_FILE)
    result = pytester.runpytest("--databricks", "-p", "no:cacheprovider", "test_submit.py")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*no cluster spec to run demo::main on Databricks*"])
    assert fake.log.entries() == []


def test_a_serverless_run(fake: FakeWorkspace, tmp_path: Path) -> None:
    project = make_project(tmp_path)
    result = submit_entry_point(
        project, "main", {"greeting": "hi"}, serverless=True, environment_version="3"
    )
    assert result.passed, result.describe()
    assert "main says hi forty-two" in result.logs
    [submit] = fake.log.calls("POST", "runs/submit")
    assert submit.body is not None
    [task] = submit.body["tasks"]
    assert "libraries" not in task
    assert "new_cluster" not in task
    [environment] = submit.body["environments"]
    assert task["environment_key"] == environment["environment_key"]
    assert environment["spec"]["environment_version"] == "3"
    six, requirements, mlflow = environment["spec"]["dependencies"]
    assert requirements.startswith("-r /Workspace/Users/someone@example.com/.pytest-mlproject/")
    assert (six, mlflow) == ("six", "mlflow-skinny")


def test_serverless_from_the_projects_settings_and_its_refusals(
    fake: FakeWorkspace, tmp_path: Path
) -> None:
    project = make_project(
        tmp_path,
        **{"pytest-mlproject.yaml": "databricks:\n  serverless: true\n  dependencies: [a:b:1]\n"},
    )
    with pytest.raises(PreflightError) as caught:
        submit_entry_point(project, "main")
    assert "MLP714" in str(caught.value.problems)
    assert fake.log.entries() == []
