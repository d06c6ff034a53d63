"""Check, run and submit MLflow projects from pytest.

The core (everything importable from here) knows nothing about pytest; the pytest layer lives
in :mod:`pytest_mlproject.plugin`. Names are imported on first use, so that loading the
plugin costs nothing until a descriptor is collected. The plugin has no test code of its
own, so pytest need not rewrite its asserts: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mlproject.checks import check
    from pytest_mlproject.commands import (
        CommandError,
        MissingParametersError,
        ParameterError,
        ParamSpec,
        parse_param_specs,
        render_command,
        user_parameters,
    )
    from pytest_mlproject.databricks.api import DatabricksResult, submit_entry_point
    from pytest_mlproject.local import NotRunnableError, RunResult, run_command, run_entry_point
    from pytest_mlproject.problems import (
        RULES,
        MLprojectError,
        MLprojectWarning,
        Problem,
        Rule,
        Severity,
    )
    from pytest_mlproject.settings import Settings, read_settings
    from pytest_mlproject.sources import Source, SourceError, git_commit, resolve_source
    from pytest_mlproject.spec import EntryPoint, Parameter, Project, load, read

_EXPORTS = {
    "check": "pytest_mlproject.checks",
    "RULES": "pytest_mlproject.problems",
    "MLprojectError": "pytest_mlproject.problems",
    "MLprojectWarning": "pytest_mlproject.problems",
    "Problem": "pytest_mlproject.problems",
    "Rule": "pytest_mlproject.problems",
    "Severity": "pytest_mlproject.problems",
    "EntryPoint": "pytest_mlproject.spec",
    "Parameter": "pytest_mlproject.spec",
    "Project": "pytest_mlproject.spec",
    "load": "pytest_mlproject.spec",
    "read": "pytest_mlproject.spec",
    "CommandError": "pytest_mlproject.commands",
    "MissingParametersError": "pytest_mlproject.commands",
    "ParameterError": "pytest_mlproject.commands",
    "ParamSpec": "pytest_mlproject.commands",
    "parse_param_specs": "pytest_mlproject.commands",
    "render_command": "pytest_mlproject.commands",
    "user_parameters": "pytest_mlproject.commands",
    "NotRunnableError": "pytest_mlproject.local",
    "RunResult": "pytest_mlproject.local",
    "run_command": "pytest_mlproject.local",
    "run_entry_point": "pytest_mlproject.local",
    "Settings": "pytest_mlproject.settings",
    "read_settings": "pytest_mlproject.settings",
    "Source": "pytest_mlproject.sources",
    "SourceError": "pytest_mlproject.sources",
    "git_commit": "pytest_mlproject.sources",
    "resolve_source": "pytest_mlproject.sources",
    "DatabricksResult": "pytest_mlproject.databricks.api",
    "submit_entry_point": "pytest_mlproject.databricks.api",
}

__all__ = [
    "RULES",
    "CommandError",
    "DatabricksResult",
    "EntryPoint",
    "MLprojectError",
    "MLprojectWarning",
    "MissingParametersError",
    "NotRunnableError",
    "ParamSpec",
    "Parameter",
    "ParameterError",
    "Problem",
    "Project",
    "Rule",
    "RunResult",
    "Settings",
    "Severity",
    "Source",
    "SourceError",
    "check",
    "git_commit",
    "load",
    "parse_param_specs",
    "read",
    "read_settings",
    "render_command",
    "resolve_source",
    "run_command",
    "run_entry_point",
    "submit_entry_point",
    "user_parameters",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_mlproject' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
