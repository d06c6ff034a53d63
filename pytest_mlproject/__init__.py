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
    from pytest_mlproject.problems import (
        RULES,
        MLprojectError,
        MLprojectWarning,
        Problem,
        Rule,
        Severity,
    )
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
}

__all__ = [
    "RULES",
    "EntryPoint",
    "MLprojectError",
    "MLprojectWarning",
    "Parameter",
    "Problem",
    "Project",
    "Rule",
    "Severity",
    "check",
    "load",
    "read",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_mlproject' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
