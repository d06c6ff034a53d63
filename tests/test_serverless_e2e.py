"""``pytest --mlproject --databricks --databricks-serverless`` end to end, through the real SDK,
against the fake workspace: what is submitted, what runs, what the user sees."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import databricks.sdk
import pytest

from pytest_mlproject.testing import FakeWorkspace

# As in test_databricks_e2e.py: the SDK is loaded before pytester's in-process runs.
assert databricks.sdk.WorkspaceClient is not None

TOKEN = "dapi-serverless-secret-0123456789abcdef"
SPEC = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": 0}

DESCRIPTOR = """\
name: demo
python_env: python_env.yaml
entry_points:
  main:
    parameters:
      greeting: {type: string, default: hello}
    command: "python main.py {greeting}"
  fails:
    command: "python fail.py"
"""

FILES = {
    "python_env.yaml": (
        "python: '3.11'\ndependencies:\n  - pyyaml==6.0.1\n  - -r requirements.txt\n"
    ),
    "requirements.txt": "packaging>=21\n",
    "main.py": (
        "import os, sys\n"
        "print('main says', sys.argv[1])\n"
        "print('tracking', os.environ.get('MLFLOW_TRACKING_URI'))\n"
        "print('experiment', os.environ.get('MLFLOW_EXPERIMENT_ID'))\n"
    ),
    "fail.py": "import sys\nprint('about to fail')\nsys.exit('boom: the model diverged')\n",
}


@pytest.fixture
def workspace(connect_fake: Callable[[str], FakeWorkspace]) -> FakeWorkspace:
    return connect_fake(TOKEN)


def make_project(root: Path, descriptor: str = DESCRIPTOR, **extra: str) -> Path:
    project = root / "demo"
    for name, text in {"MLproject": descriptor, **FILES, **extra}.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(textwrap.dedent(text))
    (root / "cluster.json").write_text(json.dumps(SPEC))
    return project


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(
        "--mlproject", "--databricks", "-p", "no:cacheprovider", "-k", "databricks", *args
    )


def submits(fake: FakeWorkspace) -> list[dict[str, Any]]:
    return [call.body for call in fake.log.calls("POST", "runs/submit")]


def properties(path: Path) -> dict[str, dict[str, str]]:
    tree = ET.parse(path)
    return {
        str(case.get("classname")).rsplit(".", 1)[-1]: {
            str(p.get("name")): str(p.get("value")) for p in case.iter("property")
        }
        for case in tree.iter("testcase")
    }


def test_every_entry_point_runs_serverless(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    make_project(pytester.path)
    result = run(
        pytester,
        "--databricks-serverless",
        "--databricks-experiment-id",
        "4242",
        "--junitxml=out.xml",
        "-rA",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*demo/MLproject:*: entry point 'fails' on Databricks, run *: *FAILED*",
            "*boom: the model diverged*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["main says hello", "tracking databricks", "experiment 4242"], consecutive=True
    )
    result.stdout.fnmatch_lines(
        ["*= Databricks runs =*", "PASSED  SUCCESS*serverless, environment 2*::main::databricks"]
    )
    assert TOKEN not in result.stdout.str()

    bodies = submits(workspace)
    assert len(bodies) == 2
    for body in bodies:
        (task,) = body["tasks"]
        (environment,) = body["environments"]
        assert task["environment_key"] == environment["environment_key"]
        assert not {"new_cluster", "existing_cluster_id", "libraries"} & set(task)
        spec = environment["spec"]
        assert spec["environment_version"] == "2"  # python_env pins 3.11
        deps = spec["dependencies"]
        assert deps[0] == "pyyaml==6.0.1"
        assert deps[1].startswith("-r /Workspace/Users/")
        assert deps[1].endswith(".txt")
        assert deps[2:] == ["mlflow-skinny"]  # the project names no MLflow
        parameters = task["spark_python_task"]["parameters"]
        assert "MLFLOW_TRACKING_URI=databricks" in parameters
        assert "MLFLOW_EXPERIMENT_ID=4242" in parameters
        assert "spark_env_vars" not in json.dumps(body)
    expected = {"mlproject": bodies[0]["environments"][0]["spec"]["dependencies"]}
    assert [workspace.environments(run_id) for run_id in workspace.run_ids()] == [expected] * 2

    found = properties(pytester.path / "out.xml")
    assert found["main"]["databricks_compute"] == "serverless, environment 2"
    assert found["main"]["databricks_result_state"] == "SUCCESS"


def test_settings_choose_serverless_and_one_entry_point_keeps_its_cluster(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    settings = """\
    databricks:
      serverless: true
      environment_version: "4"
      dependencies: ["mlflow-skinny==2.18.0"]
    entry_points:
      fails:
        databricks:
          cluster_spec: cluster.json
    """
    make_project(
        pytester.path, **{"pytest-mlproject.yaml": settings, "cluster.json": json.dumps(SPEC)}
    )
    result = run(pytester, "--junitxml=out.xml")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*SUCCESS*serverless, environment 4*::main::databricks"])
    result.stdout.fnmatch_lines(["*FAILED*cluster 15.4.x-scala2.12*::fails::databricks"])
    # The settings ask for version 4 (Python 3.12) of a project that pins 3.11.
    result.stdout.fnmatch_lines(["*MLP715 the project pins Python 3.11, which serverless*"])
    by_compute = {("environments" in body): body for body in submits(workspace)}
    serverless, cluster = by_compute[True], by_compute[False]
    assert serverless["environments"][0]["spec"]["environment_version"] == "4"
    deps = serverless["environments"][0]["spec"]["dependencies"]
    assert deps[-1] == "mlflow-skinny==2.18.0"  # named by the settings: nothing added
    assert "mlflow-skinny" not in deps
    assert cluster["tasks"][0]["new_cluster"]["spark_version"] == "15.4.x-scala2.12"
    found = properties(pytester.path / "out.xml")
    assert found["fails"]["databricks_compute"] == "cluster 15.4.x-scala2.12"


def test_an_r_entry_point_is_refused_before_any_request(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    descriptor = """\
    name: demo
    entry_points:
      main:
        command: "Rscript train.R"
    """
    make_project(
        pytester.path,
        descriptor,
        **{
            "train.R": "print('hi')\n",
            "pytest-mlproject.yaml": "databricks:\n  serverless: true\n",
        },
    )
    result = pytester.runpytest("--mlproject", "--databricks", "-p", "no:cacheprovider", "-rs")
    # The refusal fails the entry point's ::check; its Databricks run is skipped for it.
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*MLproject:4: MLP713 entry point 'main' runs R*"])
    result.stdout.fnmatch_lines(["SKIPPED*the entry point has errors*"])
    assert workspace.log.entries() == []
    # Plain --mlproject says it too, with no credentials needed.
    checked = pytester.runpytest("--mlproject", "-p", "no:cacheprovider")
    checked.assert_outcomes(passed=1, failed=1)
    checked.stdout.fnmatch_lines(["*MLP713*serverless jobs compute runs Python only*"])


def test_a_workspace_without_serverless_fails_the_items_with_what_to_do(
    pytester: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    workspace.faults.serverless_enabled = False
    make_project(pytester.path)
    result = run(pytester, "--databricks-serverless")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*could not submit the run: *Serverless compute for jobs is not enabled*",
        ]
    )
    assert "ask a workspace admin to enable serverless compute for jobs" in result.stdout.str()
    assert "give this entry point a cluster spec" in result.stdout.str()
    assert workspace.run_ids() == []


def test_dry_run_shows_the_serverless_payload(pytester: pytest.Pytester) -> None:
    make_project(pytester.path)
    result = pytester.runpytest(
        "--mlproject",
        "--databricks-dry-run",
        "--databricks-serverless",
        "--databricks-environment-version",
        "3",
        "-p",
        "no:cacheprovider",
        "-k",
        "main and databricks",
    )
    result.assert_outcomes(passed=1)
    output = result.stdout.str()
    assert '"environment_version": "3"' in output
    assert '"environment_key": "mlproject"' in output
    assert '"-r /Workspace/Users/<you>/.pytest-mlproject/requirements-' in output
    assert "new_cluster" not in output


def test_both_session_computes_are_a_usage_error(pytester: pytest.Pytester) -> None:
    make_project(pytester.path)
    result = run(pytester, "--databricks-serverless", "--databricks-cluster-spec", "cluster.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--databricks-serverless and --databricks-cluster-spec*"])


def test_a_bad_environment_version_is_a_usage_error(pytester: pytest.Pytester) -> None:
    make_project(pytester.path)
    result = run(pytester, "--databricks-serverless", "--databricks-environment-version", "v5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'v5' is not a serverless environment version*"])


def test_without_compute_the_message_offers_serverless(pytester: pytest.Pytester) -> None:
    make_project(pytester.path)
    result = run(pytester, "--databricks-dry-run", "-k", "main and databricks")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no cluster spec*--databricks-serverless*"])


@pytest.mark.parametrize(
    ("python", "version", "warned"),
    [("3.10", "1", False), ("3.12", "5", False), ("3.9", "5", True)],
)
def test_environment_version_follows_the_declared_python(
    pytester: pytest.Pytester, python: str, version: str, warned: bool
) -> None:
    make_project(
        pytester.path,
        **{"python_env.yaml": f"python: '{python}'\ndependencies: [mlflow-skinny]\n"},
    )
    result = pytester.runpytest(
        "--mlproject",
        "--databricks-dry-run",
        "--databricks-serverless",
        "-p",
        "no:cacheprovider",
        "-k",
        "spec or (main and databricks)",
    )
    output = result.stdout.str()
    assert f'"environment_version": "{version}"' in output
    assert output.count('"mlflow-skinny"') == 1  # named by the project: not added again
    assert ("MLP715" in output) is warned
    if warned:
        result.stdout.fnmatch_lines(["*MLP715 the project pins Python 3.9*1 (Python 3.10)*"])


def test_serverless_and_a_cluster_spec_in_one_block_is_mlp803(pytester: pytest.Pytester) -> None:
    settings = "databricks:\n  serverless: true\n  cluster_spec: cluster.json\n"
    make_project(
        pytester.path, **{"pytest-mlproject.yaml": settings, "cluster.json": json.dumps(SPEC)}
    )
    result = pytester.runpytest("--mlproject", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*pytest-mlproject.yaml:3: MLP803 `databricks` has both `serverless: true` and a*"]
    )


def test_the_ini_key_turns_serverless_on(pytester: pytest.Pytester) -> None:
    make_project(pytester.path)
    pytester.makeini("[pytest]\ndatabricks_serverless = true\ndatabricks_environment_version = 4\n")
    result = pytester.runpytest(
        "--mlproject", "--databricks-dry-run", "-p", "no:cacheprovider", "-k", "main and databricks"
    )
    result.assert_outcomes(passed=1)
    assert '"environment_version": "4"' in result.stdout.str()
