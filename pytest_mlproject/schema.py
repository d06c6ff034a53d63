"""A JSON Schema for MLproject files, generated from the model the checks use.

Editors (through yaml-language-server) validate and complete a descriptor with it as you type.
The keys come from the constants in :mod:`~pytest_mlproject.spec` and
:mod:`~pytest_mlproject.checks`, so the schema and the checks cannot drift apart: adding a key
there without a description here fails generation, and a test keeps the shipped
``mlproject.schema.json`` equal to what :func:`generate` returns. After changing either,
regenerate it::

    python -m pytest_mlproject.schema --write

What it rejects is what ``pytest --mlproject`` reports as an error about the descriptor's
shape (MLP201-MLP208, MLP301, MLP303-MLP307), all of which make MLflow refuse the file or crash
on it. Unknown keys are allowed, as in MLflow (the checks warn about them: MLP209). Where MLflow
silently ignores an empty value of the wrong kind (``docker_env: {}``, ``python_env: false``)
the schema asks for the right kind, since such a value is a mistake. It is draft-07, as
SchemaStore asks, and gives every property a description.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_mlproject.checks import COMMON_TYPES, DOCUMENTATION_KEYS, DOCUMENTED_TYPES
from pytest_mlproject.spec import ENTRY_POINT_KEYS, ENV_KEYS, PARAMETER_KEYS, TOP_LEVEL_KEYS

SCHEMA_ID = "https://json.schemastore.org/mlproject.json"
SCHEMA_FILE = Path(__file__).with_name("mlproject.schema.json")
#: The names SchemaStore's catalog should match: the spellings MLflow reads in practice.
FILE_MATCH = ("MLproject", "mlproject", "MLProject")
DOCS = "https://mlflow.org/docs/latest/projects.html"

_ONE_ENVIRONMENT = "Give only one of python_env, conda_env and docker_env."
_DOCUMENTATION = "Ignored by MLflow: free text for the readers of the project."

TOP_LEVEL: dict[str, str] = {
    "name": "Name of the project, for display. Without it, MLflow uses the folder's name.",
    "entry_points": (
        "Commands the project can run, by name. `mlflow run` runs `main` unless given "
        "`-e NAME`; a script such as `train.py` or `run.sh` runs without being declared here."
    ),
    "python_env": (
        "Path of a python_env file (`python`, `build_dependencies`, `dependencies`), relative "
        "to the project folder; MLflow builds a virtualenv from it. With no environment key, "
        "MLflow uses `python_env.yaml`, else `conda.yaml`, beside the MLproject file. "
        + _ONE_ENVIRONMENT
    ),
    "conda_env": (
        "Path of a conda environment file, relative to the project folder; MLflow creates a "
        "conda environment from it. " + _ONE_ENVIRONMENT
    ),
    "docker_env": "Run the entry points in a Docker container. " + _ONE_ENVIRONMENT,
    "databricks_spark_job": (
        "Run the project as a Databricks Spark job: give `python_file` or entry points (not "
        "both), and no environment key."
    ),
}
ENTRY_POINT: dict[str, str] = {
    "command": (
        "Shell command run in the project folder. Each `{name}` is replaced by the value of "
        "parameter `name`, shell-quoted; write literal braces twice: `{{` and `}}`."
    ),
    "parameters": (
        "Parameters of the entry point, by name: a type name (`alpha: float`) or a mapping "
        "with `type` and `default`. A parameter without a default is required."
    ),
}
PARAMETER: dict[str, str] = {
    "type": (
        "How MLflow treats the value: `string` (the default), `float`, `path` (a local file, "
        "or a URI downloaded to one) or `uri` (needs a scheme such as `s3://`). Any other "
        "name is accepted and treated as `string`."
    ),
    "default": "Value used when a run gives none. Without a default the parameter is required.",
}
DOCKER_ENV: dict[str, str] = {
    "image": "Docker image to run in: a name such as `python:3.11-slim`, or a registry URI.",
    "volumes": "Volumes to mount, as for `docker run -v`: `/host/path:/container/path`.",
    "environment": (
        "Environment variables of the container: a name copies the variable from the host, "
        'a `["NAME", "value"]` pair sets it.'
    ),
}
SPARK_JOB: dict[str, str] = {
    "python_file": "Python file run as the Spark job, relative to the project folder.",
    "parameters": "Command-line arguments passed to `python_file`.",
    "python_libraries": "pip requirements installed on the cluster for the job.",
}


def _properties(
    names: Iterable[str], schemas: Mapping[str, dict[str, Any]], descriptions: Mapping[str, str]
) -> dict[str, Any]:
    """The schemas of ``names``, in sorted order, each with its description.

    A name the model knows but the schema does not (or one without a description) is a
    KeyError here, so a new key in ``spec`` or ``checks`` cannot be forgotten.
    """
    return {name: {"description": descriptions[name], **schemas[name]} for name in sorted(names)}


def _documentation_keys() -> dict[str, Any]:
    return {key: {"description": _DOCUMENTATION} for key in sorted(DOCUMENTATION_KEYS)}


def _or_null(*schemas: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [*schemas, {"type": "null"}]}


_STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}


def generate() -> dict[str, Any]:
    """The schema, as a JSON-ready dict."""
    top = _properties(
        TOP_LEVEL_KEYS,
        {
            "name": {},
            "entry_points": {
                "type": "object",
                "additionalProperties": {"$ref": "#/definitions/entryPoint"},
            },
            "python_env": _or_null({"type": "string"}),
            "conda_env": _or_null({"type": "string"}),
            "docker_env": _or_null({"$ref": "#/definitions/dockerEnv"}),
            "databricks_spark_job": _or_null({"$ref": "#/definitions/databricksSparkJob"}),
        },
        TOP_LEVEL,
    )
    entry_point = _properties(
        ENTRY_POINT_KEYS,
        {
            "command": {"type": "string"},
            "parameters": {
                "type": "object",
                "additionalProperties": {"$ref": "#/definitions/parameter"},
            },
        },
        ENTRY_POINT,
    )
    parameter = _properties(
        PARAMETER_KEYS,
        {
            # The known names are offered for completion; any other string is valid (MLP402
            # only warns about it).
            "type": {
                "anyOf": [{"enum": sorted(DOCUMENTED_TYPES | COMMON_TYPES)}, {"type": "string"}]
            },
            "default": {},
        },
        PARAMETER,
    )
    docker = _properties(
        DOCKER_ENV,
        {
            "image": {"type": "string", "minLength": 1},
            "volumes": _or_null(_STRINGS),
            # MLflow reads a pair as [name, value] and lets YAML type the value (`[PORT, 8080]`).
            "environment": _or_null(
                {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "array"}]}}
            ),
        },
        DOCKER_ENV,
    )
    spark_job = _properties(
        SPARK_JOB,
        {
            "python_file": {"type": "string"},
            "parameters": _or_null(_STRINGS),  # left empty: MLflow sends no parameters
            # Left empty (null), MLflow fails to iterate it; "" and a mapping's keys it iterates.
            "python_libraries": {"anyOf": [_STRINGS, {"const": ""}, {"type": "object"}]},
        },
        SPARK_JOB,
    )
    # MLflow refuses a descriptor with two environment keys, whatever their values: each
    # key, when present, forbids the others.
    one_environment = {
        key: {"type": "object", "properties": {other: False for other in ENV_KEYS if other != key}}
        for key in sorted(ENV_KEYS)
    }
    # MLflow's refusals for a Spark job (MLP311): python_file or entry points, not both; no
    # environment key; no `path` parameter.
    path_parameter = {
        "anyOf": [
            {"const": "path"},
            {"type": "object", "required": ["type"], "properties": {"type": {"const": "path"}}},
        ]
    }
    spark_job_rules = {
        "if": {
            "required": ["databricks_spark_job"],
            "properties": {"databricks_spark_job": {"type": "object"}},
        },
        "then": {
            "not": {"anyOf": [{"required": [key]} for key in sorted(ENV_KEYS)]},
            "oneOf": [
                {
                    "properties": {
                        "databricks_spark_job": {
                            "required": ["python_file"],
                            "properties": {"python_file": {"type": "string"}},
                        }
                    }
                },
                {
                    "required": ["entry_points"],
                    "properties": {"entry_points": {"minProperties": 1}},
                },
            ],
            "properties": {
                "entry_points": {
                    "additionalProperties": {
                        "properties": {
                            "parameters": {"additionalProperties": {"not": path_parameter}}
                        }
                    }
                }
            },
        },
    }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "$comment": (
            "Generated by pytest-mlproject (python -m pytest_mlproject.schema) from the model "
            "its checks use; change the generator, not this file."
        ),
        "title": "MLflow MLproject file",
        "description": (
            "An MLflow project descriptor: the project's name, its environment and its entry "
            f"points.\n{DOCS}"
        ),
        "type": "object",
        "properties": {**top, **_documentation_keys()},
        "additionalProperties": True,
        "dependencies": one_environment,
        **spark_job_rules,
        "definitions": {
            "entryPoint": {
                "description": "An entry point: the command to run and the parameters it takes.",
                "type": "object",
                "properties": {**entry_point, **_documentation_keys()},
                "required": ["command"],
                "additionalProperties": True,
            },
            "parameter": {
                "description": "A parameter: a type name, or a mapping with `type` and `default`.",
                "anyOf": [
                    {
                        "description": "The type of a required parameter (it has no default).",
                        "type": "string",
                    },
                    {
                        "description": "The type and default value of the parameter.",
                        "type": "object",
                        "properties": {**parameter, **_documentation_keys()},
                        "additionalProperties": True,
                    },
                ],
            },
            "dockerEnv": {
                "description": "The Docker image, and the volumes and variables it runs with.",
                "type": "object",
                "properties": docker,
                "required": ["image"],
                "additionalProperties": True,
            },
            "databricksSparkJob": {
                "description": "The Python file and libraries of a Databricks Spark job.",
                "type": "object",
                "properties": spark_job,
                "additionalProperties": True,
            },
        },
    }


def render() -> str:
    """The schema as the text of ``mlproject.schema.json``."""
    return json.dumps(generate(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_mlproject.schema",
        description="Print the MLproject JSON Schema, or write or check the shipped copy.",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"write {SCHEMA_FILE.name}")
    action.add_argument("--check", action="store_true", help=f"fail if {SCHEMA_FILE.name} is stale")
    options = parser.parse_args(argv)
    text = render()
    if options.write:
        SCHEMA_FILE.write_text(text, encoding="utf-8")
    elif options.check:
        if SCHEMA_FILE.read_text(encoding="utf-8") != text:
            print(f"{SCHEMA_FILE} is stale: run python -m pytest_mlproject.schema --write")
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
