"""``runs/submit`` refuses what Databricks refuses, with 400 INVALID_PARAMETER_VALUE."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import pytest
from databricks.sdk.errors import BadRequest, InvalidParameterValue

if TYPE_CHECKING:
    from workspace_helpers import Harness

pytest_plugins = ["pytest_mlproject.plugin.workspace_fixtures", "workspace_helpers"]

CLUSTER = {"spark_version": "15.4.x-scala2.12", "num_workers": 0}
TASK: dict[str, Any] = {
    "task_key": "main",
    "spark_python_task": {"python_file": "/Users/someone@example.com/main.py"},
    "new_cluster": CLUSTER,
}


def _task(**changes: Any) -> dict[str, Any]:
    task = copy.deepcopy(TASK)
    task.update(changes)
    return {key: value for key, value in task.items() if value is not None}


def _library(*libraries: dict[str, Any]) -> dict[str, Any]:
    return {"tasks": [_task(libraries=list(libraries))]}


REFUSED = {
    "no_tasks": ({"run_name": "x"}, "at least one task"),
    "too_many_tasks": (
        {"tasks": [_task(task_key=f"t{i}") for i in range(101)]},
        "at most 100 tasks",
    ),
    "no_task_key": ({"tasks": [_task(task_key=None)]}, "Missing required field: task_key"),
    "bad_task_key": ({"tasks": [_task(task_key="a b")]}, "Invalid task_key"),
    "repeated_task_key": ({"tasks": [_task(), _task()]}, "repeated: main"),
    "no_task_type": ({"tasks": [_task(spark_python_task=None)]}, "it has none"),
    "two_task_types": (
        {"tasks": [_task(notebook_task={"notebook_path": "/x"})]},
        "exactly one task type",
    ),
    "two_computes": ({"tasks": [_task(existing_cluster_id="1-2-3")]}, "only one of"),
    "no_compute": (
        {"tasks": [_task(new_cluster=None)]},
        "An environment is required for serverless task",
    ),
    "job_cluster_key": (
        {"tasks": [_task(new_cluster=None, job_cluster_key="shared")]},
        "one-time runs have no job_clusters",
    ),
    "unknown_environment": (
        {"tasks": [_task(new_cluster=None, environment_key="default")]},
        "is not defined in field 'environments'",
    ),
    "libraries_on_serverless": (
        {
            "tasks": [
                _task(new_cluster=None, environment_key="e", libraries=[{"pypi": {"package": "x"}}])
            ],
            "environments": [{"environment_key": "e", "spec": {"environment_version": "5"}}],
        },
        "Libraries field is not supported for serverless task, please specify libraries in "
        "environment.",
    ),
    "environment_version_not_a_string": (
        {
            "tasks": [_task(new_cluster=None, environment_key="e")],
            "environments": [{"environment_key": "e", "spec": {"environment_version": 5}}],
        },
        "environment_version must be a string",
    ),
    "no_spark_version": ({"tasks": [_task(new_cluster={"num_workers": 0})]}, "spark_version"),
    "env_var_not_a_string": (
        {"tasks": [_task(new_cluster={**CLUSTER, "spark_env_vars": {"A": 1}})]},
        "spark_env_vars",
    ),
    "no_python_file": ({"tasks": [_task(spark_python_task={})]}, "python_file"),
    "parameters_not_strings": (
        {"tasks": [_task(spark_python_task={"python_file": "/x.py", "parameters": [1]})]},
        "list of strings",
    ),
    "library_of_two_kinds": (_library({"whl": "/a.whl", "jar": "/b.jar"}), "exactly one of"),
    "library_of_no_kind": (_library({"wheel": "/a.whl"}), "it sets none"),
    "egg": (_library({"egg": "/Workspace/x.egg"}), "egg libraries are not supported"),
    "pypi_without_package": (_library({"pypi": {"repo": "https://x"}}), "needs a package"),
    "maven_without_coordinates": (_library({"maven": {}}), "needs coordinates"),
    "whl_not_a_path": (_library({"whl": 3}), "must be a path"),
    "unknown_dependency": (
        {"tasks": [_task(depends_on=[{"task_key": "nope"}])]},
        "depends on 'nope'",
    ),
    "cycle": (
        {
            "tasks": [
                _task(task_key="a", depends_on=[{"task_key": "b"}]),
                _task(task_key="b", depends_on=[{"task_key": "a"}]),
            ]
        },
        "cycle: a -> b -> a",
    ),
    "negative_timeout": ({"tasks": [TASK], "timeout_seconds": -1}, "timeout_seconds"),
    "task_timeout_not_a_number": ({"tasks": [_task(timeout_seconds="1")]}, "timeout_seconds"),
    "long_idempotency_token": (
        {"tasks": [TASK], "idempotency_token": "x" * 65},
        "at most 64 characters",
    ),
    "run_if": ({"tasks": [_task(run_if="ALL_DONE")]}, "run_if ALL_SUCCESS"),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_submit_refuses_an_invalid_run(harness: Harness, case: tuple[dict[str, Any], str]) -> None:
    body, message = case
    with pytest.raises(InvalidParameterValue, match=message):
        harness.client.api_client.do("POST", "/api/2.2/jobs/runs/submit", body=body)
    assert harness.workspace.active_runs() == []
    assert harness.workspace.log[-1].status == 400


def test_a_body_that_is_not_a_json_object_is_malformed(harness: Harness) -> None:
    with pytest.raises(BadRequest, match="Invalid JSON"):
        harness.client.api_client.do("POST", "/api/2.2/jobs/runs/submit", data="[1, 2")


@pytest.mark.parametrize(
    "task",
    [
        {"task_key": "nb", "notebook_task": {"notebook_path": "/Users/x/nb"}},
        {"task_key": "if", "condition_task": {"op": "EQUAL_TO", "left": "1", "right": "1"}},
    ],
    ids=["serverless_notebook", "condition"],
)
def test_tasks_that_need_no_compute_are_accepted(harness: Harness, task: dict[str, Any]) -> None:
    run_id = harness.client.api_client.do(
        "POST", "/api/2.2/jobs/runs/submit", body={"tasks": [task]}
    )
    assert isinstance(run_id, dict)
    # Accepted, but the fake does not execute them: they end FAILED, never SUCCESS.
    assert harness.result(harness.wait_for_end(run_id["run_id"])) == "FAILED"
