"""The session's options as plain data: what ``pytest --mlproject`` was asked to do.

The pytest layer fills it from the command line and the ini file
(:func:`pytest_mlproject.plugin.config.parse_config`); ``mlproject-check`` and the checks
that need it (:mod:`pytest_mlproject.descriptor`) use it without pytest.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pytest_mlproject.commands import ParamSpec
    from pytest_mlproject.databricks.clusterspec import ClusterSpec
    from pytest_mlproject.envs import EnvManager

DEFAULT_TIMEOUT = 3600.0
DEFAULT_DATABRICKS_TIMEOUT = 7200.0
DEFAULT_MAX_PARALLEL = 16


class DatabricksConfig(NamedTuple):
    #: ``--databricks``: submit each entry point as a one-time job run.
    submit: bool
    dry_run: bool
    #: The session's cluster spec; projects may name their own in pytest-mlproject.yaml.
    cluster_spec: ClusterSpec | None
    profile: str | None
    experiment_id: str | None
    upload_dir: str | None
    timeout: float
    max_parallel: int
    #: ``--databricks-serverless``: serverless jobs compute wherever the settings name no
    #: compute of their own.
    serverless: bool = False
    #: ``--databricks-environment-version``: the serverless environment version, as a string.
    environment_version: str | None = None


class MLprojectConfig(NamedTuple):
    enabled: bool
    run: bool
    strict: bool
    ignore: frozenset[str]
    #: ``--mlproject-param`` values, then ``mlproject_params``: two layers, first one wins.
    cli_params: tuple[ParamSpec, ...]
    ini_params: tuple[ParamSpec, ...]
    timeout: float
    #: The timeout was given (option or ini), so it wins over pytest-mlproject.yaml.
    timeout_given: bool
    paths: tuple[Path, ...]
    uris: tuple[str, ...]
    version: str | None
    databricks: DatabricksConfig
    #: ``--mlproject-tracking``: record each run in MLflow Tracking.
    tracking: bool = False
    #: ``--mlproject-experiment`` (or, for tracking, ``--databricks-experiment-id``): the
    #: experiment recorded runs go to, a name or an all-digits id; ``None``: MLflow's choice.
    experiment: str | None = None
    #: ``--mlproject-env-manager`` (else ``mlproject_env_manager``); ``None``: each project's
    #: own setting, else ``uv`` when it declares an environment and ``local`` when not.
    env_manager: EnvManager | None = None
    #: ``--mlproject-env-dir`` (else ``mlproject_env_dir``, relative to the ini file);
    #: ``None``: :func:`pytest_mlproject.envs.default_env_dir`.
    env_dir: Path | None = None


def checking_config(
    *,
    strict: bool = False,
    ignore: frozenset[str] = frozenset(),
    cluster_spec: ClusterSpec | None = None,
    profile: str | None = None,
    serverless: bool = False,
    environment_version: str | None = None,
) -> MLprojectConfig:
    """The settings of a session that only checks (plain ``pytest --mlproject``, or
    ``mlproject-check``): nothing run, nothing submitted; a cluster spec turns the Databricks
    rules on."""
    return MLprojectConfig(
        enabled=True,
        run=False,
        strict=strict,
        ignore=ignore,
        cli_params=(),
        ini_params=(),
        timeout=DEFAULT_TIMEOUT,
        timeout_given=False,
        paths=(),
        uris=(),
        version=None,
        databricks=DatabricksConfig(
            submit=False,
            dry_run=False,
            cluster_spec=cluster_spec,
            profile=profile,
            experiment_id=None,
            upload_dir=None,
            timeout=DEFAULT_DATABRICKS_TIMEOUT,
            max_parallel=DEFAULT_MAX_PARALLEL,
            serverless=serverless,
            environment_version=environment_version,
        ),
    )
