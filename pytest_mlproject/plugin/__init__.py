"""The pytest plugin: options, ini keys, markers and collection. Wiring only.

Everything here is cheap to import: without ``--mlproject`` the plugin registers its options
and markers and does nothing else; the reader, the rules and the pytest nodes are imported
the first time a descriptor is collected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pytest_mlproject.options import DEFAULT_TIMEOUT, MLprojectConfig
from pytest_mlproject.plugin.config import (
    CONFIG_KEY,
    COORDINATOR_KEY,
    github_actions,
    parse_config,
    summary_path,
)

# The fixtures, as names of this module, which is how pytest finds a plugin's fixtures; their
# modules import nothing heavy until a test uses them. Not through `pytest_plugins`: since
# pytest 9.2, pytest looks each name given there up among the entry points of every installed
# distribution first, a scan that cost about 4 ms a name with 80 distributions, on every run.
from pytest_mlproject.plugin.databricks_fixtures import mlproject_databricks
from pytest_mlproject.plugin.fixtures import mlproject
from pytest_mlproject.plugin.workspace_fixtures import databricks_workspace

__all__ = ["databricks_workspace", "mlproject", "mlproject_databricks"]

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
        "--mlproject-env-manager",
        default=None,
        metavar="{uv,virtualenv,local}",
        help="how a local run gets its Python environment, as `mlflow run --env-manager`: uv "
        "builds the one the project declares (the default when it declares one), virtualenv "
        "builds it with venv and pip (for machines without uv), local uses "
        "this interpreter. Ini: mlproject_env_manager.",
    )
    group.addoption(
        "--mlproject-env-dir",
        default=None,
        metavar="PATH",
        help="where built environments are kept (default "
        "$XDG_CACHE_HOME/pytest-mlproject/envs). Ini: mlproject_env_dir.",
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
    group.addoption(
        "--mlproject-tracking",
        action="store_true",
        default=None,
        help="record each run in MLflow Tracking, as `mlflow run` does (needs MLflow: "
        "pip install 'pytest-mlproject[tracking]'). Ini: mlproject_tracking.",
    )
    group.addoption(
        "--mlproject-experiment",
        default=None,
        metavar="NAME_OR_ID",
        help="MLflow experiment of the recorded runs: a name (created if missing) or an "
        "all-digits id (default: MLflow's). Ini: mlproject_experiment.",
    )
    group.addoption(
        "--mlproject-summary",
        default=None,
        metavar="PATH",
        help="append a Markdown summary of the session to PATH, e.g. $GITHUB_STEP_SUMMARY. "
        "Ini: mlproject_summary.",
    )
    _add_databricks_options(parser, group)
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
    parser.addini(
        "mlproject_env_manager",
        "how a local run gets its environment: uv, virtualenv or local.",
        default="",
    )
    parser.addini("mlproject_env_dir", "where built environments are kept.", default="")
    parser.addini("mlproject_summary", "append a Markdown summary to this file.", default="")
    parser.addini("mlproject_strict", "warnings fail their item too.", type="bool", default=False)
    parser.addini(
        "mlproject_ignore",
        "rules to skip, by code or name, separated by spaces or lines.",
        type="args",
        default=[],
    )
    parser.addini(
        "mlproject_tracking", "record each run in MLflow Tracking.", type="bool", default=False
    )
    parser.addini(
        "mlproject_experiment", "MLflow experiment name or id of recorded runs.", default=""
    )


#: Set when another plugin owns ``--databricks``: only the alias is ours then.
_DATABRICKS_TAKEN: list[str] = []


def _add_databricks_options(parser: pytest.Parser, group: Any) -> None:
    help_text = (
        "submit each entry point as a one-time Databricks job run on a new cluster "
        "(implies --mlproject)."
    )
    try:
        group.addoption(
            "--databricks",
            "--mlproject-databricks",
            action="store_true",
            default=False,
            dest="mlproject_databricks",
            help=help_text,
        )
    except ValueError:  # another plugin already defines --databricks
        _DATABRICKS_TAKEN.append("--databricks")
        group.addoption(
            "--mlproject-databricks",
            action="store_true",
            default=False,
            dest="mlproject_databricks",
            help=help_text,
        )
    group.addoption(
        "--databricks-cluster-spec",
        default=None,
        metavar="PATH_OR_JSON",
        help="new-cluster spec for the runs: a JSON file or inline JSON, either a bare "
        'new-cluster object or {"new_cluster": {...}, "libraries": [...]}. '
        "Ini: databricks_cluster_spec.",
    )
    group.addoption(
        "--databricks-serverless",
        action="store_true",
        default=None,
        help="run on serverless jobs compute instead of a new cluster, wherever "
        "pytest-mlproject.yaml names no compute of its own. Ini: databricks_serverless.",
    )
    group.addoption(
        "--databricks-environment-version",
        default=None,
        metavar="N",
        help="serverless environment version (default: from the project's Python: 3.10 -> 1, "
        "3.11 -> 2, else 5). Ini: databricks_environment_version.",
    )
    group.addoption(
        "--databricks-profile",
        default=None,
        metavar="NAME",
        help="profile in ~/.databrickscfg; otherwise the SDK's default auth chain "
        "(DATABRICKS_HOST/DATABRICKS_TOKEN, OAuth, Azure...). Ini: databricks_profile.",
    )
    group.addoption(
        "--databricks-experiment-id",
        default=None,
        metavar="ID",
        help="MLflow experiment the runs log to (MLFLOW_EXPERIMENT_ID, with "
        "MLFLOW_TRACKING_URI=databricks). Ini: databricks_experiment_id.",
    )
    group.addoption(
        "--databricks-upload-dir",
        default=None,
        metavar="PATH",
        help="workspace folder or /Volumes/... folder for project archives (default: "
        "/Workspace/Users/<you>/.pytest-mlproject). Ini: databricks_upload_dir.",
    )
    group.addoption(
        "--databricks-timeout",
        default=None,
        metavar="SECONDS",
        help="time limit of each run, on Databricks and for waiting here; the run is "
        "cancelled after it (default 7200). Ini: databricks_timeout.",
    )
    group.addoption(
        "--databricks-max-parallel",
        default=None,
        metavar="N",
        help="most runs in flight at once in the whole session, a cost guard (default 16). "
        "Ini: databricks_max_parallel.",
    )
    group.addoption(
        "--databricks-dry-run",
        action="store_true",
        default=False,
        help="build and print every runs/submit payload, make no request (implies --databricks).",
    )
    for name, text in (
        ("databricks_cluster_spec", "new-cluster spec for Databricks runs: a JSON file or JSON."),
        ("databricks_profile", "profile in ~/.databrickscfg for Databricks runs."),
        ("databricks_experiment_id", "MLflow experiment id for Databricks runs."),
        ("databricks_upload_dir", "workspace or /Volumes folder for project archives."),
        ("databricks_timeout", "time limit of each Databricks run, in seconds."),
        ("databricks_max_parallel", "most Databricks runs in flight at once."),
        ("databricks_environment_version", "serverless environment version for Databricks runs."),
    ):
        parser.addini(name, text, default="")
    parser.addini(
        "databricks_serverless",
        "run Databricks runs on serverless jobs compute.",
        type="bool",
        default=False,
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    if _DATABRICKS_TAKEN:
        return (
            "pytest-mlproject: --databricks belongs to another plugin here; "
            "use --mlproject-databricks to submit entry points to Databricks"
        )
    return None


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    settings: MLprojectConfig = parse_config(config)
    config.stash[CONFIG_KEY] = settings
    if settings.databricks.submit:
        from pytest_mlproject.plugin.reporting import DatabricksSummary

        config.pluginmanager.register(DatabricksSummary(), "mlproject-databricks-summary")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "mlproject-xdist")
    if settings.enabled:
        _add_mlproject_paths(config, settings)
        summary = summary_path(config)
        if summary is not None or github_actions():  # else the reporting module is not needed
            from pytest_mlproject.plugin.reporting import configure_reporting

            configure_reporting(config, summary)


def _add_mlproject_paths(config: pytest.Config, settings: MLprojectConfig) -> None:
    """Search ``mlproject_paths`` too, unless the user named what to collect."""
    if config.args_source is pytest.Config.ArgsSource.ARGS:
        return
    present = {Path(arg).resolve() for arg in config.args}
    for path in settings.paths:
        if path.resolve() not in present:
            config.args.append(str(path))


#: Folders reached through a link, and the path that first reached each.
_FOLLOWED_LINKS = pytest.StashKey[dict[Path, Path]]()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Follow a symbolic link to a folder only where it leads to new ground, and at most once.

    pytest follows links to folders. A link to an ancestor (``up -> ..``) makes the walk
    grow without end; two folders linking to each other do too, and with two links each
    the walk doubles at every level (it never ended). A link to a folder searched anyway
    collects its projects twice (twice the Databricks runs), and a link out of the rootdir
    would make a pull request check, run and upload files from elsewhere on the machine.
    With ``--mlproject``, where whole repositories are searched, such links are left out.
    """
    settings = config.stash.get(CONFIG_KEY, None)
    # os.path: pytest asks for every file and folder it walks, and most are not links.
    if settings is None or not settings.enabled or not os.path.islink(collection_path):
        return None
    try:
        target = collection_path.resolve(strict=True)
        parent = collection_path.parent.resolve(strict=True)
    except (OSError, RuntimeError):  # a broken link or a loop of links
        return True
    if not target.is_dir():
        return None
    if target == parent or target in parent.parents:
        return True
    if any(_inside(target, folder) for folder in _searched(config)):
        return True  # the walk reaches it under its own name
    if any(target == folder.resolve() for folder in collection_path.parents):
        return True  # back into a folder on the way here, through other links
    if not _inside(target, config.rootpath.resolve()):
        return True
    followed = config.stash.setdefault(_FOLLOWED_LINKS, {})
    return followed.setdefault(target, collection_path) != collection_path or None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _searched(config: pytest.Config) -> list[Path]:
    """The folders pytest was asked to search, resolved."""
    base = config.invocation_params.dir
    paths = (Path(base, arg.split("::", 1)[0]) for arg in config.args)
    return [path.resolve() for path in paths if path.is_dir()]


def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """A folder holding a broken link named MLproject: pytest skips links that lead nowhere,
    so such a folder gets a collector that also reports the link as a failing descriptor."""
    settings = parent.config.stash.get(CONFIG_KEY, None)
    if settings is None or not settings.enabled or (path / "__init__.py").exists():
        return None
    try:
        broken = any(
            entry.name.lower() == "mlproject" and entry.is_symlink() and not entry.is_file()
            for entry in os.scandir(path)
        )
    except OSError:
        return None
    if not broken:
        return None
    from pytest_mlproject.plugin.collect import DirWithBrokenDescriptor

    return DirWithBrokenDescriptor.from_parent(parent, path=path)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    settings = parent.config.stash.get(CONFIG_KEY, None)
    if settings is None or not settings.enabled:
        return None
    name = file_path.name.lower()
    if name == "mlproject":
        from pytest_mlproject.plugin.collect import MLprojectFile

        return MLprojectFile.from_parent(parent, path=file_path)
    if name in ("mlproject.yaml", "mlproject.yml"):
        from pytest_mlproject.plugin.collect import MisnamedFile

        return MisnamedFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, items: list[pytest.Item]) -> None:
    """Add the projects named with ``--mlproject-uri``, before selection (-k, -m, --lf)."""
    settings = session.config.stash.get(CONFIG_KEY, None)
    if settings is None or not settings.uris:
        return
    from pytest_mlproject.plugin.uriitems import uri_items

    items.extend(uri_items(session, settings.uris, settings.version))


class _XdistHooks:
    """Registered only when pytest-xdist is: hand the session id, and how items are shared
    out (``--dist``, which xdist resets to ``no`` on the workers), down to the workers."""

    @staticmethod
    def pytest_configure_node(node: Any) -> None:
        from pytest_mlproject.plugin.config import DIST_KEY, SESSION_KEY, session_id

        node.workerinput[SESSION_KEY] = session_id(node.config)
        node.workerinput[DIST_KEY] = str(node.config.getoption("dist", "no"))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Cancel every Databricks run still active: after -x, Ctrl-C, SIGTERM or a crash."""
    config = session.config
    stopped = (
        bool(session.shouldstop)
        or bool(session.shouldfail)  # -x and --maxfail
        or session.exitstatus == pytest.ExitCode.INTERRUPTED
    )
    runs = config.stash.get(COORDINATOR_KEY, None)
    if runs is not None:
        why = "the session stopped early" if stopped else "the session ended before it finished"
        # An xdist worker that ends normally leaves other workers' runs to them.
        worker = getattr(config, "workerinput", None) is not None
        runs.close(why, handed_over=worker and not stopped)
    settings = config.stash.get(CONFIG_KEY, None)
    if (
        settings is not None
        and settings.databricks.submit
        and not settings.databricks.dry_run
        and config.pluginmanager.has_plugin("dsession")
    ):
        _cancel_what_workers_left(config)


def _cancel_what_workers_left(config: pytest.Config) -> None:
    """On the xdist controller: every worker is done, so any run still active is orphaned."""
    from pytest_mlproject.databricks.session import cancel_left_behind, ledger_path
    from pytest_mlproject.databricks.workspace import Workspace
    from pytest_mlproject.plugin.config import session_id
    from pytest_mlproject.plugin.databricksitem import terminal_echo

    ledger = ledger_path(session_id(config))
    if ledger.exists():
        profile = config.stash[CONFIG_KEY].databricks.profile
        cancel_left_behind(ledger, terminal_echo(config), lambda: Workspace.connect(profile))
