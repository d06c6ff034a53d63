"""The session's settings, read once from the command line and the ini file.

Kept apart from the hooks (``plugin/__init__.py``) so the nodes can use the settings without
importing the hooks, and validated up front: a wrong option is one clear usage error at
start-up, not a failure in every item.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlproject.options import (
    DEFAULT_DATABRICKS_TIMEOUT,
    DEFAULT_MAX_PARALLEL,
    DEFAULT_TIMEOUT,
    DatabricksConfig,
    MLprojectConfig,
)

if TYPE_CHECKING:
    from pytest_mlproject.commands import ParamSpec
    from pytest_mlproject.databricks.session import Coordinator
    from pytest_mlproject.envs import EnvManager

CONFIG_KEY = pytest.StashKey[MLprojectConfig]()
#: The session's Databricks coordinator, once the first Databricks item has started it.
COORDINATOR_KEY: pytest.StashKey[Coordinator] = pytest.StashKey()
#: In an xdist worker's ``workerinput``: the controller's ``--dist`` (workers see ``no``).
DIST_KEY = "mlproject_dist"
#: In an xdist worker's ``workerinput``: the session id (:func:`session_id`).
SESSION_KEY = "mlproject_session_id"


def session_id(config: pytest.Config) -> str:
    """One id per test session, shared by xdist workers (the controller hands its own down)."""
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None and SESSION_KEY in workerinput:
        return str(workerinput[SESSION_KEY])
    if not hasattr(config, "_mlproject_session_id"):
        config._mlproject_session_id = uuid.uuid4().hex  # type: ignore[attr-defined]
    return str(config._mlproject_session_id)  # type: ignore[attr-defined]


def parse_config(config: pytest.Config) -> MLprojectConfig:
    option = config.option
    run = bool(option.mlproject_run)
    databricks = parse_databricks(config)
    enabled = bool(option.mlproject) or run or bool(option.mlproject_uri) or databricks.submit
    strict = option.mlproject_strict
    if strict is None:
        strict = bool(config.getini("mlproject_strict"))
    ignore = [*config.getini("mlproject_ignore"), *option.mlproject_ignore]
    cli_params: tuple[ParamSpec, ...] = ()
    ini_params: tuple[ParamSpec, ...] = ()
    ini_lines = [line.strip() for line in config.getini("mlproject_params") if line.strip()]
    # The parser pulls in the reader, which neither a plain pytest run nor a check without
    # parameters needs.
    if enabled and (option.mlproject_param or ini_lines):
        from pytest_mlproject.commands import ParameterError, parse_param_specs

        try:
            cli_params = parse_param_specs(option.mlproject_param, "--mlproject-param")
            ini_params = parse_param_specs(ini_lines, "mlproject_params")
        except ParameterError as exc:
            raise pytest.UsageError(str(exc)) from None
    timeout_text = option.mlproject_timeout or config.getini("mlproject_timeout") or ""
    tracking, experiment = parse_tracking(config, databricks)
    return MLprojectConfig(
        enabled=enabled,
        run=run,
        strict=bool(strict),
        ignore=frozenset(rule_codes(ignore)),
        cli_params=cli_params,
        ini_params=ini_params,
        timeout=parse_timeout(
            str(timeout_text), "--mlproject-timeout / mlproject_timeout", DEFAULT_TIMEOUT
        ),
        timeout_given=bool(str(timeout_text).strip()),
        paths=tuple(Path(p) for p in config.getini("mlproject_paths")),
        uris=tuple(option.mlproject_uri),
        version=option.mlproject_version,
        databricks=databricks,
        tracking=tracking,
        experiment=experiment,
        env_manager=parse_env_manager(config),
        env_dir=parse_env_dir(config),
    )


def parse_env_manager(config: pytest.Config) -> EnvManager | None:
    text = _option(config, "mlproject_env_manager", "mlproject_env_manager")
    if text is None:
        return None
    from pytest_mlproject.envs import check_env_manager
    from pytest_mlproject.problems import MLprojectError

    try:
        return check_env_manager(text, "--mlproject-env-manager / mlproject_env_manager")
    except MLprojectError as exc:
        raise pytest.UsageError(str(exc)) from None


def parse_env_dir(config: pytest.Config) -> Path | None:
    """``--mlproject-env-dir`` from the shell's folder, ``mlproject_env_dir`` from the ini
    file's; ``~`` expanded."""
    if config.option.mlproject_env_dir:
        base, text = config.invocation_params.dir, str(config.option.mlproject_env_dir)
    else:
        text = str(config.getini("mlproject_env_dir") or "").strip()
        base = config.inipath.parent if config.inipath else config.invocation_params.dir
    if not text:
        return None
    return Path(base) / Path(text).expanduser()


def parse_tracking(config: pytest.Config, databricks: DatabricksConfig) -> tuple[bool, str | None]:
    """``--mlproject-tracking`` and the experiment. With tracking, ``--mlproject-experiment``
    and ``--databricks-experiment-id`` are one setting: either names the experiment of every
    recorded run, and both at once must agree."""
    option = config.option
    tracking = option.mlproject_tracking
    if tracking is None:
        tracking = bool(config.getini("mlproject_tracking"))
    experiment = _option(config, "mlproject_experiment", "mlproject_experiment")
    if not tracking:
        if option.mlproject_experiment:  # an ini value may wait for a nightly --mlproject-tracking
            raise pytest.UsageError(
                "--mlproject-experiment names the MLflow experiment recorded runs go to; "
                "add --mlproject-tracking (ini mlproject_tracking = true) to record them"
            )
        return False, None
    from pytest_mlproject.tracking import missing_mlflow

    missing = missing_mlflow()
    if missing is not None:
        raise pytest.UsageError(missing)
    other = databricks.experiment_id
    if experiment is not None and other is not None and experiment != other:
        raise pytest.UsageError(
            f"--mlproject-experiment {experiment!r} and --databricks-experiment-id {other!r} "
            "disagree; with --mlproject-tracking they are one setting (the experiment of "
            "every recorded run): give only --mlproject-experiment"
        )
    return True, experiment or other


def _option(config: pytest.Config, name: str, ini: str) -> str | None:
    """An option's value, else its ini twin's, else ``None`` (empty counts as not given)."""
    value = getattr(config.option, name, None)
    if value is None or value == "":
        value = config.getini(ini)
    text = str(value).strip() if value is not None else ""
    return text or None


def parse_databricks(config: pytest.Config) -> DatabricksConfig:
    option = config.option
    dry_run = bool(option.databricks_dry_run)
    submit = bool(option.mlproject_databricks) or dry_run
    spec_text = _option(config, "databricks_cluster_spec", "databricks_cluster_spec")
    cluster_spec = None
    if spec_text is not None:
        from pytest_mlproject.databricks.clusterspec import SpecError, parse

        try:
            base = config.inipath.parent if config.inipath else config.invocation_params.dir
            if option.databricks_cluster_spec:  # a path on the command line is the shell's
                base = config.invocation_params.dir
            cluster_spec = parse(spec_text, base=Path(base))
        except SpecError as exc:
            raise pytest.UsageError(f"--databricks-cluster-spec: {exc}") from None
    timeout = parse_timeout(
        _option(config, "databricks_timeout", "databricks_timeout") or "",
        "--databricks-timeout / databricks_timeout",
        DEFAULT_DATABRICKS_TIMEOUT,
    )
    parallel_text = _option(config, "databricks_max_parallel", "databricks_max_parallel")
    try:
        max_parallel = int(parallel_text) if parallel_text else DEFAULT_MAX_PARALLEL
    except ValueError:
        max_parallel = 0
    if max_parallel < 1:
        raise pytest.UsageError(
            f"--databricks-max-parallel / databricks_max_parallel: {parallel_text!r} is not a "
            "whole number of runs, 1 or more"
        )
    serverless = option.databricks_serverless
    if serverless is None:
        serverless = bool(config.getini("databricks_serverless"))
    if serverless and cluster_spec is not None:
        raise pytest.UsageError(
            "--databricks-serverless and --databricks-cluster-spec (or their ini keys "
            "databricks_serverless, databricks_cluster_spec) were both given: choose one for "
            "the session; pytest-mlproject.yaml can still give one entry point the other"
        )
    version = _option(config, "databricks_environment_version", "databricks_environment_version")
    if version is not None:
        from pytest_mlproject.databricks.serverless import VersionError, check_version

        try:
            version = check_version(version)
        except VersionError as exc:
            raise pytest.UsageError(
                f"--databricks-environment-version / databricks_environment_version: {exc}"
            ) from None
    return DatabricksConfig(
        submit=submit,
        dry_run=dry_run,
        cluster_spec=cluster_spec,
        profile=_option(config, "databricks_profile", "databricks_profile"),
        experiment_id=_option(config, "databricks_experiment_id", "databricks_experiment_id"),
        upload_dir=_option(config, "databricks_upload_dir", "databricks_upload_dir"),
        timeout=timeout,
        max_parallel=max_parallel,
        serverless=bool(serverless),
        environment_version=version,
    )


def rule_codes(values: list[str]) -> set[str]:
    """Rule codes for ``--mlproject-ignore`` values given as codes or names, any case."""
    if not any(value.strip() for value in values):
        return set()
    # Only now: a session without --mlproject need not import the rule catalogue.
    from pytest_mlproject.problems import RULES

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


def parse_timeout(text: str, what: str, default: float) -> float:
    if not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise pytest.UsageError(f"{what}: {text!r} is not a number of seconds greater than 0")
    return value


def github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def summary_path(config: pytest.Config) -> Path | None:
    """Where to append the summary. ``$VARIABLES`` are expanded, so the ini file can say
    ``$GITHUB_STEP_SUMMARY``; a path that names an unset variable means no summary."""
    text = config.option.mlproject_summary or str(config.getini("mlproject_summary") or "")
    text = os.path.expandvars(text.strip())
    if not text or re.search(r"\$\w|\$\{", text):
        return None
    path = Path(text)
    base = config.invocation_params.dir
    if config.option.mlproject_summary is None and config.inipath is not None:
        base = config.inipath.parent  # an ini path is relative to the ini file
    return base / path
