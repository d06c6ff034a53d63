"""``--mlproject-tracking``: every run recorded in MLflow Tracking, as ``mlflow run`` records it.

Against a real store: SQLite through the installed MLflow, read back with MLflow's own client.
Databricks items run against the fake workspace (127.0.0.1). Nothing leaves the machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import databricks.sdk
import mlflow
import mlflow.projects.databricks
import pytest
from helpers import git, junit
from mlflow.entities import Param, RunTag
from mlflow.projects import _project_spec
from mlflow.tracking import MlflowClient
from mlflow.utils import mlflow_tags
from packaging.version import Version

from pytest_mlproject import spec, tracking
from pytest_mlproject.plugin import trackingitem
from pytest_mlproject.plugin.config import SESSION_KEY
from pytest_mlproject.testing import FakeWorkspace

# pytester's in-process runs restore sys.modules afterwards: MLflow, its store and the SDK
# must be loaded out here first (the `template_store` fixture loads the store's modules).
assert mlflow.__version__
assert databricks.sdk.WorkspaceClient is not None

# MLflow's own loader and Databricks check (untyped), to hold ours to them.
LOAD_PROJECT: Any = _project_spec.load_project
BEFORE_RUN_VALIDATIONS: Any = mlflow.projects.databricks.before_run_validations
VENV_BIN = Path(sys.executable).parent
# The record copies what the MLflow pinned in the `test` extra does. Older releases differ in
# details (2.10 quotes an extra parameter's name, keeps a Git URL's credentials in its tags and
# reads no `databricks_spark_job`), so a comparison with MLflow's own code needs that MLflow:
# the minimum-versions run in .ci/run has the oldest one the `tracking` extra allows.
mirrors_mlflow = pytest.mark.skipif(
    Version(mlflow.__version__) < Version("3.17"),
    reason=f"compares with MLflow 3.17 (the test extra's pin); this is {mlflow.__version__}",
)
TOKEN = "dapi-tracking-secret-0123456789abcdef"
SPEC = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": 0}

DESCRIPTOR = """\
name: demo
entry_points:
  main:
    parameters:
      alpha: {type: float, default: 0.1}
      greeting: {type: string, default: hello world}
      data: {type: path, default: data.txt}
    command: "python train.py {alpha} {greeting} {data}"
  fails:
    command: "python fail.py"
  slow:
    command: "python slow.py"
  needs:
    parameters:
      n: int
    command: "python train.py {n} x data.txt"
"""

SCRIPTS = {
    "train.py": """\
        import sys

        import mlflow

        mlflow.log_metric("rmse", 0.25)
        print("trained with", sys.argv[1:])
        """,
    "fail.py": """\
        import sys

        import mlflow

        mlflow.log_metric("rmse", 9.0)
        sys.exit("boom: the model diverged")
        """,
    "slow.py": """\
        import pathlib, time

        pathlib.Path("started").write_text("yes")
        time.sleep(60)
        """,
    "data.txt": "forty-two\n",
}


def make_project(root: Path, folder: str = "demo", descriptor: str = DESCRIPTOR) -> Path:
    project = root / folder
    project.mkdir(parents=True, exist_ok=True)
    (project / "MLproject").write_text(descriptor)
    for name, text in SCRIPTS.items():
        (project / name).write_text(textwrap.dedent(text))
    return project


def quiet_client(uri: str) -> MlflowClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return MlflowClient(tracking_uri=uri)


@pytest.fixture(scope="session")
def template_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite store with MLflow's tables, made once (MLflow's migrations take seconds);
    every test gets a copy. Made through every call the plugin makes, so the store's
    modules are loaded outside pytester's in-process runs."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    client = quiet_client(f"sqlite:///{path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        experiment = client.create_experiment("warm-up")
        run = client.create_run(experiment, tags={"a": "b"})
        client.log_batch(run.info.run_id, params=[Param("p", "1")], tags=[RunTag("c", "d")])
        client.set_terminated(run.info.run_id, "KILLED")
        client.search_runs([experiment])
        client.delete_experiment(experiment)
    return path


@pytest.fixture
def store(template_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh store, named by MLFLOW_TRACKING_URI; its URI."""
    path = tmp_path / "store" / "mlflow.db"
    path.parent.mkdir()
    shutil.copy(template_store, path)
    uri = f"sqlite:///{path}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    # `python` is this interpreter, with MLflow, for `mlflow run` and the fake cluster too.
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return uri


def runs_in(uri: str, experiment: str) -> dict[str, Any]:
    """The runs of ``experiment`` by entry point."""
    client = quiet_client(uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        found = client.get_experiment_by_name(experiment)
        assert found is not None, f"no experiment {experiment!r}"
        runs = client.search_runs([found.experiment_id])
    return {run.data.tags[tracking.ENTRY_POINT]: run for run in runs}


# ---------------------------------------------------------------------------------------------
# Local runs


def test_local_runs_are_recorded_with_their_outcome(pytester: pytest.Pytester, store: str) -> None:
    make_project(pytester.path)
    (pytester.path / "demo" / "pytest-mlproject.yaml").write_text(
        "entry_points:\n  slow:\n    timeout: 1\n"
    )
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "--mlproject-run",
        "--mlproject-tracking",
        "--mlproject-experiment",
        "nightly",
        "--mlproject-param",
        "main:greeting=hi there",
        "--mlproject-param",
        "main:epochs=2",
        "-k",
        "run",
        "--junitxml=out.xml",
    )
    result.assert_outcomes(passed=1, failed=2, skipped=1)
    runs = runs_in(store, "nightly")
    assert sorted(runs) == ["fails", "main", "slow"]  # the skipped item made no run
    main, fails, slow = runs["main"], runs["fails"], runs["slow"]
    assert (main.info.status, fails.info.status, slow.info.status) == (
        "FINISHED",
        "FAILED",  # though the script's own MLflow call ended it FINISHED at exit
        "KILLED",  # its time limit stopped it
    )
    # As `mlflow run` logs them: shell-quoted, the path as given, the extra last.
    assert main.data.params == {
        "alpha": "0.1",
        "greeting": "'hi there'",
        "data": "data.txt",
        "epochs": "2",
    }
    assert main.data.metrics == {"rmse": 0.25}  # logged by the project's own code
    assert fails.data.metrics == {"rmse": 9.0}
    tags = main.data.tags
    assert tags[tracking.SOURCE_TYPE] == "PROJECT"
    assert tags[tracking.SOURCE_NAME] == str(pytester.path / "demo")  # not in a Git repo
    assert tags[tracking.BACKEND] == "local"
    assert tags[tracking.ENV] == "local"
    assert tags[tracking.NODEID] == "demo/MLproject::main::run"
    assert tracking.GIT_COMMIT not in tags
    properties = junit(pytester.path / "out.xml")
    for entry, run in runs.items():
        recorded = properties[f"demo.MLproject.{entry}::run"]
        assert recorded["mlflow_run_id"] == run.info.run_id
        assert "mlflow_run_url" not in recorded  # a local store has no page until `mlflow ui`


def test_an_interrupted_run_is_killed(pytester: pytest.Pytester, store: str) -> None:
    directory = make_project(pytester.path)
    session = pytester.popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--mlproject-run",
            "--mlproject-tracking",
            "--mlproject-experiment",
            "interrupted",
            "-k",
            "slow and run",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        until = time.monotonic() + 60
        while not (directory / "started").exists():
            assert session.poll() is None, session.communicate()[0].decode()
            assert time.monotonic() < until, "the run never started"
            time.sleep(0.05)
        session.send_signal(signal.SIGINT)
        output, _ = session.communicate(timeout=60)
        assert session.returncode == pytest.ExitCode.INTERRUPTED, output.decode()
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
    assert runs_in(store, "interrupted")["slow"].info.status == "KILLED"


@mirrors_mlflow
def test_the_same_record_as_mlflow_run(pytester: pytest.Pytester, store: str) -> None:
    """One project run by `mlflow run --env-manager local` and by the plugin: the same
    parameters and project tags, but for the differences docs/tracking.md lists."""
    root = pytester.path
    make_project(root, "proj")
    git(root, "init", "-q", "-b", "main")
    git(root, "remote", "add", "origin", "https://someone:s3cret@example.com/org/repo.git")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "project")
    commit = git(root, "rev-parse", "HEAD")
    cli = subprocess.run(
        [
            str(VENV_BIN / "mlflow"),
            "run",
            ".",
            "-e",
            "main",
            "--env-manager",
            "local",
            "--experiment-name",
            "compare",
            "-P",
            "greeting=hi there",
            "-P",
            "epochs=2",
        ],
        cwd=root / "proj",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    theirs = runs_in(store, "compare")["main"]
    pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "--mlproject-run",
        "--mlproject-tracking",
        "--mlproject-experiment",
        "compare",
        "--mlproject-param",
        "main:greeting=hi there",
        "--mlproject-param",
        "main:epochs=2",
        "-k",
        "main and run",
    ).assert_outcomes(passed=1)
    client = quiet_client(store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        both = client.search_runs([theirs.info.experiment_id])
    ours = next(run for run in both if run.info.run_id != theirs.info.run_id)

    assert ours.data.params == theirs.data.params
    assert ours.data.metrics == theirs.data.metrics == {"rmse": 0.25}
    assert ours.info.status == theirs.info.status == "FINISHED"
    their_tags, our_tags = dict(theirs.data.tags), dict(ours.data.tags)
    # Random names on both sides: neither gives --run-name.
    assert their_tags.pop("mlflow.runName")
    assert our_tags.pop("mlflow.runName")
    only_ours = {key: our_tags.pop(key) for key in set(our_tags) - set(their_tags)}
    assert only_ours == {tracking.ENV: "local", tracking.NODEID: "proj/MLproject::main::run"}
    assert our_tags == their_tags
    assert their_tags[tracking.SOURCE_NAME] == f"file://{root}#proj"
    assert their_tags[tracking.GIT_COMMIT] == commit
    assert their_tags[tracking.GIT_REPO_URL] == "https://example.com/org/repo.git"


def test_nothing_of_mlflow_is_imported_without_tracking(pytester: pytest.Pytester) -> None:
    make_project(pytester.path, descriptor="entry_points:\n  main:\n    command: 'true'\n")
    pytester.makeconftest(
        """
        import sys

        def pytest_unconfigure(config):
            loaded = sorted(
                name for name in sys.modules
                if name.startswith(("mlflow", "sqlalchemy", "alembic"))
            )
            print("LOADED:", loaded)
        """
    )
    result = pytester.runpytest_subprocess(
        "-s", "-p", "no:cacheprovider", "--mlproject", "--mlproject-run"
    )
    result.assert_outcomes(passed=3)
    assert "LOADED: []" in result.outlines


# ---------------------------------------------------------------------------------------------
# Options


def test_the_experiment_needs_tracking(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--mlproject-run", "--mlproject-experiment", "x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mlproject-experiment*add --mlproject-tracking*"])


def test_an_ini_experiment_waits_for_tracking(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmlproject_experiment = nightly\n")
    make_project(pytester.path, descriptor="entry_points:\n  main:\n    command: 'true'\n")
    pytester.runpytest("--mlproject").assert_outcomes(passed=2)


def test_two_different_experiments_are_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "--mlproject-tracking",
        "--mlproject-experiment",
        "nightly",
        "--databricks-experiment-id",
        "123",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'nightly'*'123' disagree*give only --mlproject-experiment*"])


def test_tracking_from_the_ini_file_and_the_databricks_experiment(
    pytester: pytest.Pytester, store: str
) -> None:
    client = quiet_client(store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        experiment = client.create_experiment("by-id")
    pytester.makeini("[pytest]\nmlproject_tracking = true\n")
    make_project(pytester.path)
    pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "--mlproject-run",
        "--databricks-experiment-id",
        experiment,
        "-k",
        "main and run",
    ).assert_outcomes(passed=1)
    assert runs_in(store, "by-id")["main"].info.status == "FINISHED"


def test_without_mlflow_tracking_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec

    def without_mlflow(name: str, package: str | None = None) -> Any:
        return None if name == "mlflow" else find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_mlflow)
    result = pytester.runpytest("--mlproject-run", "--mlproject-tracking")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--mlproject-tracking records runs with MLflow, which is not installed: pip install*"]
    )


def test_a_store_that_cannot_be_used_fails_the_runs(
    pytester: pytest.Pytester, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    make_project(pytester.path)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--mlproject-run", "--mlproject-tracking", "-k", "main or fails"
    )
    result.assert_outcomes(passed=2, failed=2)  # the ::check items pass
    result.stdout.fnmatch_lines(
        ["*demo/MLproject:3: MLflow Tracking: cannot use the store nosuchscheme://nowhere*"]
    )


# ---------------------------------------------------------------------------------------------
# Databricks runs


@pytest.fixture
def workspace(connect_fake: Callable[[str], FakeWorkspace]) -> FakeWorkspace:
    return connect_fake(TOKEN)


def run_databricks(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    (pytester.path / "cluster.json").write_text(json.dumps(SPEC))
    return pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "--databricks",
        "--databricks-cluster-spec",
        "cluster.json",
        "--mlproject-tracking",
        "--mlproject-experiment",
        "on-databricks",
        "-k",
        "databricks and (main or fails)",
        *args,
    )


def test_a_local_store_is_refused_for_databricks_before_any_request(
    pytester: pytest.Pytester, store: str, workspace: FakeWorkspace
) -> None:
    make_project(pytester.path)
    result = run_databricks(pytester)
    result.assert_outcomes(failed=2)
    # MLflow's words (test_databricks_refusal_is_mlflows_message), before any request.
    result.stdout.fnmatch_lines(
        [
            "*demo/MLproject:3: When running on Databricks, the MLflow tracking URI must be of "
            f"the form 'databricks' or 'databricks://profile'*Got local tracking URI {store}.*"
        ]
    )
    assert workspace.log.entries() == []
    client = quiet_client(store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert client.get_experiment_by_name("on-databricks") is None


def test_databricks_runs_are_recorded(
    pytester: pytest.Pytester,
    store: str,
    workspace: FakeWorkspace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fake cluster is this machine, so it can reach the SQLite store: allowed here only.
    monkeypatch.setattr(tracking, "cluster_tracking_uri", lambda uri: uri)
    make_project(pytester.path)
    run_databricks(pytester, "--junitxml=out.xml").assert_outcomes(passed=1, failed=1)
    runs = runs_in(store, "on-databricks")
    main, fails = runs["main"], runs["fails"]
    assert (main.info.status, fails.info.status) == ("FINISHED", "FAILED")
    assert main.data.metrics == {"rmse": 0.25}  # logged on the "cluster"
    assert main.data.params == {"alpha": "0.1", "greeting": "'hello world'", "data": "data.txt"}
    properties = junit(pytester.path / "out.xml")["demo.MLproject.main::databricks"]
    assert properties["mlflow_run_id"] == main.info.run_id
    tags = main.data.tags
    assert tags[tracking.BACKEND] == "databricks"
    assert tags[mlflow_tags.MLFLOW_DATABRICKS_RUN_URL] == properties["databricks_run_page_url"]
    assert tags[mlflow_tags.MLFLOW_DATABRICKS_SHELL_JOB_RUN_ID] == properties["databricks_run_id"]
    assert tags[mlflow_tags.MLFLOW_DATABRICKS_WEBAPP_URL] == workspace.host
    submitted = {
        entry.body["run_name"]: entry.body["tasks"][0]["new_cluster"]["spark_env_vars"]
        for entry in workspace.log.calls("POST", "runs/submit")
        if entry.body
    }
    assert submitted["demo: main (pytest-mlproject)"] == {
        "MLFLOW_RUN_ID": main.info.run_id,
        "MLFLOW_TRACKING_URI": store,
        "MLFLOW_EXPERIMENT_ID": main.info.experiment_id,
    }


# ---------------------------------------------------------------------------------------------
# The core, against MLflow's own code


def test_tag_keys_are_mlflows() -> None:
    assert tracking.USER == mlflow_tags.MLFLOW_USER
    assert tracking.SOURCE_NAME == mlflow_tags.MLFLOW_SOURCE_NAME
    assert tracking.SOURCE_TYPE == mlflow_tags.MLFLOW_SOURCE_TYPE
    assert tracking.GIT_COMMIT == mlflow_tags.MLFLOW_GIT_COMMIT
    assert tracking.GIT_REPO_URL == mlflow_tags.MLFLOW_GIT_REPO_URL
    assert tracking.GIT_BRANCH == mlflow_tags.MLFLOW_GIT_BRANCH
    assert tracking.ENTRY_POINT == mlflow_tags.MLFLOW_PROJECT_ENTRY_POINT
    assert tracking.BACKEND == mlflow_tags.MLFLOW_PROJECT_BACKEND
    assert tracking.ENV == mlflow_tags.MLFLOW_PROJECT_ENV
    assert tracking.DATABRICKS_RUN_URL == mlflow_tags.MLFLOW_DATABRICKS_RUN_URL
    assert tracking.DATABRICKS_JOB_RUN_ID == mlflow_tags.MLFLOW_DATABRICKS_SHELL_JOB_RUN_ID
    assert tracking.DATABRICKS_WEBAPP_URL == mlflow_tags.MLFLOW_DATABRICKS_WEBAPP_URL


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"greeting": "it's; rm -rf /", "alpha": "2"},
        {"data": "sub dir/x.txt", "extra key": "a b", "n": "3"},
    ],
)
@mirrors_mlflow
def test_logged_parameters_are_mlflows(tmp_path: Path, values: dict[str, str]) -> None:
    (tmp_path / "MLproject").write_text(
        "entry_points:\n"
        "  main:\n"
        "    parameters:\n"
        "      alpha: {type: float, default: 0.1}\n"
        "      greeting: {type: string, default: 'hello world'}\n"
        "      data: {type: path, default: data.txt}\n"
        "      flag: {type: bool, default: true}\n"
        "      site: {type: uri, default: 'https://example.com/x'}\n"
        "    command: python x.py\n"
    )
    theirs = LOAD_PROJECT(str(tmp_path)).get_entry_point("main")
    declared, extra = theirs.compute_parameters(values, storage_dir=None)
    entry = spec.load(tmp_path / "MLproject").entry_point("main")
    assert tracking.logged_parameters(entry, values) == {**declared, **extra}


@mirrors_mlflow
def test_a_spark_python_file_logs_no_parameters_as_in_mlflow(tmp_path: Path) -> None:
    """MLflow's get_entry_point gives None for it, so its run logs no parameters."""
    (tmp_path / "MLproject").write_text("databricks_spark_job:\n  python_file: job.py\n")
    (tmp_path / "job.py").write_text("")
    assert LOAD_PROJECT(str(tmp_path)).get_entry_point("main") is None
    entry = spec.load(tmp_path / "MLproject").entry_point("main")
    assert tracking.logged_parameters(entry, {"alpha": "1"}) == {}


def test_databricks_refusal_is_mlflows_message() -> None:
    for uri in ("sqlite:///tmp/mlflow.db", "file:///tmp/mlruns", "postgresql://db/x"):
        with pytest.raises(mlflow.exceptions.ExecutionException) as theirs:
            BEFORE_RUN_VALIDATIONS(uri, {})
        with pytest.raises(tracking.TrackingError) as ours:
            tracking.cluster_tracking_uri(uri)
        assert str(ours.value) == theirs.value.message
    assert tracking.cluster_tracking_uri("databricks://prod") == "databricks"
    assert tracking.cluster_tracking_uri("https://mlflow.example.com") == (
        "https://mlflow.example.com"
    )


def test_run_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", "adb-1.azuredatabricks.net")
    assert tracking.run_url("https://u:p@mlflow.example.com/", "3", "abc") == (
        "https://mlflow.example.com/#/experiments/3/runs/abc"
    )
    assert tracking.run_url("databricks", "3", "abc") == (
        "https://adb-1.azuredatabricks.net/ml/experiments/3/runs/abc"
    )
    monkeypatch.delenv("DATABRICKS_HOST")
    config = tmp_path / "databrickscfg"
    config.write_text("[prod]\nhost = https://prod.cloud.databricks.com/\n")
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(config))
    assert tracking.run_url("databricks://prod", "3", "abc") == (
        "https://prod.cloud.databricks.com/ml/experiments/3/runs/abc"
    )
    assert tracking.run_url("databricks://nosuchprofile", "3", "abc") is None
    assert tracking.run_url("sqlite:////tmp/mlflow.db", "3", "abc") is None


def test_local_stores_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert tracking.absolute_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.absolute_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert tracking.absolute_uri("sqlite:///:memory:") == "sqlite:///:memory:"
    assert tracking.absolute_uri("mlruns") == (tmp_path / "mlruns").as_uri()
    for uri in ("databricks", "databricks://p", "https://h/", "postgresql://u@h/db"):
        assert tracking.absolute_uri(uri) == uri


def test_git_uri_tags_and_branches(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "f").write_text("x")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "x")
    git(tmp_path, "branch", "feature")
    git(tmp_path, "tag", "v1")
    uri = "https://user:token@example.com/org/repo#models/churn@feature"
    tags = tracking.project_tags(
        tracking.ProjectOrigin(tmp_path, git_uri=uri, version="feature", commit="abc"),
        "main",
        "local",
    )
    assert tags[tracking.SOURCE_NAME] == "https://example.com/org/repo#models/churn"
    assert tags[tracking.GIT_REPO_URL] == "https://example.com/org/repo"
    assert tags[tracking.GIT_COMMIT] == "abc"
    assert tags[tracking.GIT_BRANCH] == "feature"
    for version in ("v1", git(tmp_path, "rev-parse", "HEAD")):
        origin = tracking.ProjectOrigin(tmp_path, git_uri=uri, version=version)
        assert tracking.GIT_BRANCH not in tracking.project_tags(origin, "main", "local")


def test_experiments_by_name_and_id(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tags = {tracking.SOURCE_TYPE: "PROJECT"}
    first = tracking.Tracker("team/nightly").start(tags, {"a": "1"})
    again = tracking.Tracker("team/nightly").start(tags, {})
    assert first.experiment_id == again.experiment_id != "0"
    assert tracking.Tracker("0").start(tags, {}).experiment_name == "Default"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    from_env = tracking.Tracker().start(tags, {})
    assert from_env.experiment_name == "from-env"
    assert from_env.env()["MLFLOW_EXPERIMENT_NAME"] == "from-env"
    missing = tracking.Tracker("4242")
    for _ in range(2):  # the second time from what the first one learned
        with pytest.raises(tracking.TrackingError, match="experiment id 4242 in sqlite:///"):
            missing.start(tags, {})
    assert missing.runs == []


def test_a_database_store_without_sqlalchemy_says_what_to_install(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec

    def without_sqlalchemy(name: str, package: str | None = None) -> Any:
        return None if name == "sqlalchemy" else find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_sqlalchemy)
    with pytest.raises(tracking.TrackingError, match=r"SQLAlchemy and alembic.*\[tracking\]"):
        tracking.Tracker("x").start({}, {})


def test_runs_left_open_are_killed_on_close(store: str) -> None:
    runs = tracking.Tracker("closing")
    open_run = runs.start({}, {})
    ended = runs.start({}, {})
    runs.end(ended, tracking.FAILED)
    assert runs.close() == []
    client = quiet_client(store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert client.get_run(open_run.run_id).info.status == "KILLED"
        assert client.get_run(ended.run_id).info.status == "FAILED"


def test_xdist_workers_name_the_same_run_for_a_databricks_item(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers prepare the same item (one submits its share, the other runs it): the
    second adopts the first one's run, ends it, and the first leaves it ended at exit."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    config = SimpleNamespace(workerinput={SESSION_KEY: uuid.uuid4().hex})
    item: Any = SimpleNamespace(nodeid="demo/MLproject::main::databricks", config=config)
    submitter, runner = tracking.Tracker("shared"), tracking.Tracker("shared")
    created = trackingitem._one_per_session(item, submitter, lambda: submitter.start({}, {}))

    def twice() -> tracking.TrackedRun:
        raise AssertionError("a second run for the same item")

    adopted = trackingitem._one_per_session(item, runner, twice)
    assert adopted.run_id == created.run_id
    runner.end(adopted, tracking.FINISHED)
    assert submitter.close() == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert quiet_client(store).get_run(created.run_id).info.status == "FINISHED"
