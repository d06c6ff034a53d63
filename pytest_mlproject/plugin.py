"""The pytest plugin: options, ini keys, markers and collection. Wiring only.

Everything here is cheap to import: without ``--mlproject`` the plugin registers its options
and markers and does nothing else; the reader, the rules and the pytest nodes are imported
the first time a descriptor is collected.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlproject.config import (
    CONFIG_KEY,
    DEFAULT_TIMEOUT,
    MLprojectConfig,
    parse_config,
)

if TYPE_CHECKING:
    from _pytest.nodes import Collector

# The `databricks_workspace` fixture; its module imports nothing heavy until it is used.
pytest_plugins = ["pytest_mlproject.testing.fixtures"]

MARKERS = {
    "mlproject": "an item made by pytest-mlproject from an MLproject file",
    "mlproject_run": "a local run of an MLproject entry point (--mlproject-run)",
    "databricks": "a Databricks job run of an MLproject entry point (--databricks)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlproject", "MLflow projects (pytest-mlproject)")
    group.addoption(
        "--mlproject",
        action="store_true",
        default=False,
        help="collect every MLproject file under the given paths and check it.",
    )
    group.addoption(
        "--mlproject-run",
        action="store_true",
        default=False,
        help="also run each entry point locally (implies --mlproject).",
    )
    group.addoption(
        "--mlproject-param",
        action="append",
        default=[],
        metavar="[ENTRY:]NAME=VALUE",
        help="a parameter value for every entry point that declares NAME, or for ENTRY only; "
        "repeatable. Ini: mlproject_params (one per line).",
    )
    group.addoption(
        "--mlproject-timeout",
        default=None,
        metavar="SECONDS",
        help=f"time limit of each local run (default {DEFAULT_TIMEOUT:g}). Ini: mlproject_timeout.",
    )
    group.addoption(
        "--mlproject-strict",
        action="store_true",
        default=None,
        help="warnings fail their item too. Ini: mlproject_strict.",
    )
    group.addoption(
        "--mlproject-ignore",
        action="append",
        default=[],
        metavar="CODE",
        help="skip a rule, by code (MLP406) or name (unused-parameter); repeatable. "
        "Ini: mlproject_ignore.",
    )
    group.addoption(
        "--mlproject-uri",
        action="append",
        default=[],
        metavar="URI",
        help="also check a project from a folder or a Git URI (https://host/org/repo#sub/dir); "
        "repeatable.",
    )
    group.addoption(
        "--mlproject-version",
        default=None,
        metavar="REF",
        help="branch, tag or commit to check out for Git URIs given with --mlproject-uri.",
    )
    parser.addini(
        "mlproject_paths",
        "extra paths searched for MLproject files when pytest runs without path arguments "
        "(for repositories whose testpaths point elsewhere).",
        type="paths",
        default=[],
    )
    parser.addini(
        "mlproject_params",
        "parameter values, one [ENTRY:]NAME=VALUE per line (--mlproject-param wins).",
        type="linelist",
        default=[],
    )
    parser.addini("mlproject_timeout", "time limit of each local run, in seconds.", default="")
    parser.addini("mlproject_strict", "warnings fail their item too.", type="bool", default=False)
    parser.addini(
        "mlproject_ignore",
        "rules to skip, by code or name, separated by spaces or lines.",
        type="args",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    settings: MLprojectConfig = parse_config(config)
    config.stash[CONFIG_KEY] = settings
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "mlproject-xdist")
    if settings.enabled:
        _add_mlproject_paths(config, settings)


def _add_mlproject_paths(config: pytest.Config, settings: MLprojectConfig) -> None:
    """Search ``mlproject_paths`` too, unless the user named what to collect."""
    if config.args_source is pytest.Config.ArgsSource.ARGS:
        return
    present = {Path(arg).resolve() for arg in config.args}
    for path in settings.paths:
        if path.resolve() not in present:
            config.args.append(str(path))


def pytest_collect_file(file_path: Path, parent: Collector) -> pytest.Collector | None:
    settings = parent.config.stash.get(CONFIG_KEY, None)
    if settings is None or not settings.enabled:
        return None
    name = file_path.name.lower()
    if name == "mlproject":
        from pytest_mlproject.nodes import MLprojectFile

        return MLprojectFile.from_parent(parent, path=file_path)
    if name in ("mlproject.yaml", "mlproject.yml"):
        from pytest_mlproject.nodes import MisnamedFile

        return MisnamedFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, items: list[pytest.Item]) -> None:
    """Add the projects named with ``--mlproject-uri``, before selection (-k, -m, --lf)."""
    settings = session.config.stash.get(CONFIG_KEY, None)
    if settings is None or not settings.uris:
        return
    from pytest_mlproject.uriitems import uri_items

    items.extend(uri_items(session, settings.uris, settings.version))


class _XdistHooks:
    """Registered only when pytest-xdist is: hand the session id down to the workers."""

    @staticmethod
    def pytest_configure_node(node: Any) -> None:
        from pytest_mlproject.uriitems import SESSION_KEY, session_id

        node.workerinput[SESSION_KEY] = session_id(node.config)
