"""The session's settings, read once from the command line and the ini file.

Kept apart from ``plugin.py`` so the nodes can use the settings without importing the hooks,
and validated up front: a wrong option is one clear usage error at start-up, not a failure
in every item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_mlproject.problems import RULES

if TYPE_CHECKING:
    from pytest_mlproject.commands import ParamSpec

DEFAULT_TIMEOUT = 3600.0


@dataclass(frozen=True)
class MLprojectConfig:
    enabled: bool
    run: bool
    strict: bool
    ignore: frozenset[str]
    #: ``--mlproject-param`` values, then ``mlproject_params``: two layers, first one wins.
    cli_params: tuple[ParamSpec, ...]
    ini_params: tuple[ParamSpec, ...]
    timeout: float
    paths: tuple[Path, ...]
    uris: tuple[str, ...]
    version: str | None


CONFIG_KEY = pytest.StashKey[MLprojectConfig]()


def parse_config(config: pytest.Config) -> MLprojectConfig:
    option = config.option
    run = bool(option.mlproject_run)
    enabled = bool(option.mlproject) or run or bool(option.mlproject_uri)
    strict = option.mlproject_strict
    if strict is None:
        strict = bool(config.getini("mlproject_strict"))
    ignore = [*config.getini("mlproject_ignore"), *option.mlproject_ignore]
    cli_params: tuple[ParamSpec, ...] = ()
    ini_params: tuple[ParamSpec, ...] = ()
    if enabled:  # the parser pulls in the reader, which a plain pytest run does not need
        from pytest_mlproject.commands import ParameterError, parse_param_specs

        try:
            cli_params = parse_param_specs(option.mlproject_param, "--mlproject-param")
            ini_params = parse_param_specs(
                (line.strip() for line in config.getini("mlproject_params") if line.strip()),
                "mlproject_params",
            )
        except ParameterError as exc:
            raise pytest.UsageError(str(exc)) from None
    timeout_text = option.mlproject_timeout or config.getini("mlproject_timeout") or ""
    return MLprojectConfig(
        enabled=enabled,
        run=run,
        strict=bool(strict),
        ignore=frozenset(rule_codes(ignore)),
        cli_params=cli_params,
        ini_params=ini_params,
        timeout=parse_timeout(str(timeout_text)),
        paths=tuple(Path(p) for p in config.getini("mlproject_paths")),
        uris=tuple(option.mlproject_uri),
        version=option.mlproject_version,
    )


def rule_codes(values: list[str]) -> set[str]:
    """Rule codes for ``--mlproject-ignore`` values given as codes or names, any case."""
    by_name = {rule.name: code for code, rule in RULES.items()}
    codes = set()
    for raw in values:
        for value in raw.replace(",", " ").split():
            code = value.upper() if value.upper() in RULES else by_name.get(value.lower())
            if code is None:
                raise pytest.UsageError(
                    f"--mlproject-ignore / mlproject_ignore: unknown rule {value!r}; "
                    "rules are listed in docs/rules.md (codes like MLP406, or names like "
                    "unused-parameter)"
                )
            codes.add(code)
    return codes


def parse_timeout(text: str) -> float:
    if not text.strip():
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise pytest.UsageError(
            f"--mlproject-timeout / mlproject_timeout: {text!r} is not a number of seconds "
            "greater than 0"
        )
    return value
