"""The checks Databricks makes on a ``runs/submit`` body before it accepts the run.

A request the real service would refuse must be refused here too, with the same status and
error code, or a client tested against the fake would break on first contact with Databricks.
"""

from __future__ import annotations

import re
from typing import Any

from pytest_mlproject.testing.errors import invalid

MAX_TASKS = 100
COMPUTE_KEYS = ("new_cluster", "existing_cluster_id", "job_cluster_key", "environment_key")
LIBRARY_KINDS = ("pypi", "whl", "jar", "maven", "requirements", "cran", "egg")
# Task types that run code on a cluster or serverless environment and so need compute; others
# (condition_task, run_job_task, sql_task ...) run without one.
_NEEDS_COMPUTE = ("spark_python_task", "python_wheel_task", "spark_jar_task", "spark_submit_task")
_TASK_KEY = re.compile(r"^[\w\-]{1,100}$")


def task_type(task: dict[str, Any]) -> str:
    """The task's one type key (``spark_python_task``, ``notebook_task`` ...); validated first."""
    return next(key for key in task if key.endswith("_task"))


def _timeout(value: Any, where: str) -> None:
    if value is not None and not (isinstance(value, int) and value >= 0):
        raise invalid(f"{where}timeout_seconds must be a whole number of seconds >= 0: {value!r}")


def _check_libraries(key: str, libraries: Any) -> None:
    if libraries is None:
        return
    if not isinstance(libraries, list):
        raise invalid(f"Task {key}: libraries must be a list")
    for index, library in enumerate(libraries):
        kinds = [k for k in LIBRARY_KINDS if isinstance(library, dict) and k in library]
        if len(kinds) != 1:
            raise invalid(
                f"Task {key}: library {index} must set exactly one of "
                f"{', '.join(LIBRARY_KINDS)}; it sets {', '.join(kinds) or 'none'}"
            )
        kind = kinds[0]
        value = library[kind]
        if kind == "egg":
            raise invalid(
                f"Task {key}: egg libraries are not supported on Databricks Runtime 14.0 and "
                "above; use a wheel (whl) or a PyPI package"
            )
        if kind in ("pypi", "cran") and not (isinstance(value, dict) and value.get("package")):
            raise invalid(f"Task {key}: library {index} ({kind}) needs a package")
        if kind == "maven" and not (isinstance(value, dict) and value.get("coordinates")):
            raise invalid(f"Task {key}: library {index} (maven) needs coordinates")
        if kind in ("whl", "jar", "requirements") and not (isinstance(value, str) and value):
            raise invalid(f"Task {key}: library {index} ({kind}) must be a path")


def _check_compute(task: dict[str, Any], key: str, environments: set[str]) -> None:
    compute = [k for k in COMPUTE_KEYS if task.get(k) not in (None, "", {})]
    if len(compute) > 1:
        raise invalid(
            f"Task {key} must set only one of {', '.join(COMPUTE_KEYS)}; "
            f"it sets {', '.join(compute)}"
        )
    if not compute and task_type(task) in _NEEDS_COMPUTE:
        # A task without compute is a serverless task, which must name an environment.
        raise invalid(
            f"An environment is required for serverless task {key}. Please define one using "
            "`environments` and `environment_key`."
        )
    if "job_cluster_key" in compute:
        raise invalid(
            f"Task {key} refers to job cluster {task['job_cluster_key']!r}, "
            "but one-time runs have no job_clusters"
        )
    if "environment_key" in compute and task["environment_key"] not in environments:
        raise invalid(
            f"Job environment '{task['environment_key']}' used by task {key} is not defined "
            "in field 'environments'."
        )
    if "environment_key" in compute and task.get("libraries"):
        raise invalid(
            "Libraries field is not supported for serverless task, please specify libraries "
            "in environment."
        )
    cluster = task.get("new_cluster")
    if cluster is not None:
        if not isinstance(cluster, dict) or not cluster.get("spark_version"):
            raise invalid(f"Task {key}: new_cluster is missing required field spark_version")
        env_vars = cluster.get("spark_env_vars", {})
        if not isinstance(env_vars, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
        ):
            raise invalid(f"Task {key}: new_cluster.spark_env_vars must map names to strings")


def _check_environments(environments: Any) -> None:
    """``environments``: each with a key and a spec of an environment version (a string
    holding a whole number) and pip requirement lines."""
    if environments is None:
        return
    if not isinstance(environments, list):
        raise invalid("environments must be a list")
    for environment in environments:
        if not isinstance(environment, dict) or not environment.get("environment_key"):
            raise invalid("Missing required field: environments.environment_key")
        spec = environment.get("spec")
        if not isinstance(spec, dict):
            raise invalid(
                f"Missing required field: spec of environment {environment['environment_key']}"
            )
        version = spec.get("environment_version", spec.get("client"))
        if not (isinstance(version, str) and version.isdigit()):
            raise invalid(
                f"Environment {environment['environment_key']}: environment_version must be a "
                f'string holding a whole number, such as "5": {version!r}'
            )
        dependencies = spec.get("dependencies", [])
        if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
            raise invalid(
                f"Environment {environment['environment_key']}: dependencies must be a list "
                "of strings"
            )


def _check_task(task: Any, environments: set[str]) -> str:
    if not isinstance(task, dict):
        raise invalid("Each task must be an object")
    key = task.get("task_key")
    if not key:
        raise invalid("Missing required field: task_key")
    if not isinstance(key, str) or not _TASK_KEY.match(key):
        raise invalid(f"Invalid task_key {key!r}: use at most 100 letters, digits, '_' or '-'")
    types = [k for k in task if k.endswith("_task")]
    if len(types) != 1:
        raise invalid(
            f"Task {key} must have exactly one task type (spark_python_task, notebook_task, "
            f"python_wheel_task ...); it has {', '.join(types) or 'none'}"
        )
    body = task[types[0]]
    if not isinstance(body, dict):
        raise invalid(f"Task {key}: {types[0]} must be an object")
    if types[0] == "spark_python_task":
        if not isinstance(body.get("python_file"), str) or not body["python_file"]:
            raise invalid(f"Task {key}: missing required field spark_python_task.python_file")
        parameters = body.get("parameters", [])
        if not isinstance(parameters, list) or not all(isinstance(p, str) for p in parameters):
            raise invalid(f"Task {key}: spark_python_task.parameters must be a list of strings")
    if task.get("run_if", "ALL_SUCCESS") != "ALL_SUCCESS":
        # Refused rather than ignored: running such a task on the wrong condition would give
        # results Databricks never would.
        raise invalid(f"Task {key}: the fake workspace only supports run_if ALL_SUCCESS")
    _check_compute(task, key, environments)
    _check_libraries(key, task.get("libraries"))
    _timeout(task.get("timeout_seconds"), f"Task {key}: ")
    return key


def ordered_tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tasks in an order that runs every task after what it depends on; refuses cycles."""
    by_key = {t["task_key"]: t for t in tasks}
    done: list[dict[str, Any]] = []
    placed: set[str] = set()
    visiting: list[str] = []

    def place(key: str) -> None:
        if key in placed:
            return
        if key in visiting:
            cycle = " -> ".join([*visiting[visiting.index(key) :], key])
            raise invalid(f"The tasks' depends_on form a cycle: {cycle}")
        visiting.append(key)
        for dependency in by_key[key].get("depends_on") or []:
            place(dependency["task_key"])
        visiting.pop()
        placed.add(key)
        done.append(by_key[key])

    for task in tasks:
        place(task["task_key"])
    return done


def validate_submit(body: Any) -> None:
    """Raise the :class:`ApiError` Databricks would answer, or return for a runnable body."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object")
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise invalid("A one-time run needs at least one task in tasks")
    if len(tasks) > MAX_TASKS:
        raise invalid(
            f"A one-time run can have at most {MAX_TASKS} tasks; this one has {len(tasks)}"
        )
    token = body.get("idempotency_token")
    if token is not None and not (isinstance(token, str) and 0 < len(token) <= 64):
        raise invalid("idempotency_token must be a string of at most 64 characters")
    _timeout(body.get("timeout_seconds"), "")
    _check_environments(body.get("environments"))
    environments = {
        str(e["environment_key"])
        for e in body.get("environments") or []
        if isinstance(e, dict) and e.get("environment_key")
    }
    keys = [_check_task(task, environments) for task in tasks]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise invalid(f"Task keys must be unique; repeated: {', '.join(duplicates)}")
    for task in tasks:
        depends_on = task.get("depends_on") or []
        if not isinstance(depends_on, list):
            raise invalid(f"Task {task['task_key']}: depends_on must be a list")
        for dependency in depends_on:
            upstream = dependency.get("task_key") if isinstance(dependency, dict) else None
            if upstream not in keys or upstream == task["task_key"]:
                raise invalid(
                    f"Task {task['task_key']} depends on {upstream!r}, which is not another "
                    "task of this run"
                )
    ordered_tasks(tasks)
