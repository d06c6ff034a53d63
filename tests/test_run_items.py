"""The ``::run`` items as a user meets them: ``pytest --mlproject-run``.

Outcomes and messages, where parameter values come from, time limits and Ctrl-C (no process
left behind), live output, JUnit XML, projects fetched with ``--mlproject-uri`` from Git
repositories made in ``tmp_path``, and pytest-xdist. Nothing here leaves the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from helpers import PYTEST_9, git, gone, junit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def project(
    root: Path, folder: str, descriptor: str, settings: str | None = None, **files: str
) -> Path:
    """A project folder under ``root``: its MLproject, optional pytest-mlproject.yaml, files."""
    directory = root / folder
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "MLproject").write_text(textwrap.dedent(descriptor), encoding="utf-8")
    if settings is not None:
        (directory / "pytest-mlproject.yaml").write_text(
            textwrap.dedent(settings), encoding="utf-8"
        )
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "--mlproject-run", *args)


def read_pid(path: Path) -> int:
    """The pid a command wrote to ``path``, waiting for the command to write it."""
    until = time.monotonic() + 30
    while True:
        text = path.read_text() if path.exists() else ""
        if text.endswith("\n"):
            return int(text)
        assert time.monotonic() < until, f"{path} was never written"
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# Outcomes


def test_a_passing_run_keeps_its_output_in_report_sections(pytester: pytest.Pytester) -> None:
    project(
        pytester.path,
        "p",
        """\
        entry_points:
          main:
            parameters:
              who: {type: string, default: world}
            command: "python hello.py {who}"
        """,
        **{"hello.py": "import os, sys\nprint('hello', sys.argv[1], 'in', os.getcwd())\n"},
    )
    result = run(pytester, "-rA")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*_ p/MLproject::main::run _*",
            "*- Captured stdout (full) call -*",
            f"hello world in {pytester.path / 'p'}",
        ]
    )


def test_a_failing_run_shows_how_it_ended_the_command_and_the_tail(
    pytester: pytest.Pytester,
) -> None:
    project(
        pytester.path,
        "p",
        """\
        entry_points:
          main:
            command: "python fail.py"
        """,
        **{
            "fail.py": """\
                import sys
                for n in range(1, 41):
                    print(f"out {n:02}")
                print("something broke", file=sys.stderr)
                sys.exit(3)
                """
        },
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, failed=1)
    lines = result.outlines
    start = lines.index(next(line for line in lines if "_ p/MLproject::main::run _" in line))
    assert lines[start + 1].startswith("p/MLproject:2: entry point 'main' failed: exit code 3")
    assert lines[start + 2] == "command: python fail.py"
    assert lines[start + 3].startswith(f"ran in: {pytester.path / 'p'} with the current ")
    # The message keeps the last 30 lines of each stream ...
    assert lines[start + 4 : start + 6] == ["--- last 30 lines of stdout ---", "out 11"]
    tail = lines.index("--- last 1 lines of stderr ---")
    assert lines[tail - 1 : tail + 2] == [
        "out 40",
        "--- last 1 lines of stderr ---",
        "something broke",
    ]
    # ... and the report sections all of it.
    section = next(i for i, line in enumerate(lines) if "Captured stdout (full) call" in line)
    assert lines[section + 1 : section + 3] == ["out 01", "out 02"]
    result.stdout.fnmatch_lines(["*Captured stderr (full) call*", "something broke"])
    if PYTEST_9:  # before 9, pytest's short summary leaves out a failure given as plain text
        result.stdout.fnmatch_lines(["FAILED p/MLproject::main::run - p/MLproject:2: entry point*"])
    assert "Traceback" not in result.stdout.str()
    assert "MLprojectFailure" not in result.stdout.str()


def test_a_value_mlflow_refuses_fails_the_run_with_mlflows_message(
    pytester: pytest.Pytester,
) -> None:
    project(
        pytester.path,
        "p",
        """\
        entry_points:
          main:
            parameters:
              data: {type: path, default: data.csv}
            command: "cat {data}"
        """,
        **{"data.csv": "x\n"},
    )
    run(pytester).assert_outcomes(passed=3)
    result = run(pytester, "--mlproject-param", "data=missing.csv")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "p/MLproject:2: Got value missing.csv for parameter data, but no such file or "
            "directory was found."
        ]
    )
    assert "Traceback" not in result.stdout.str()


# ---------------------------------------------------------------------------------------------
# Skips

NEEDS_VALUES = """\
entry_points:
  main:
    command: "echo main"
  train:
    parameters:
      data: path
      epochs: float
      rate: {type: float, default: 0.1}
    command: "echo data={data} epochs={epochs} rate={rate}"
"""


def test_missing_parameters_skip_the_run_and_the_reason_says_how_to_give_them(
    pytester: pytest.Pytester,
) -> None:
    project(pytester.path, "p", NEEDS_VALUES, **{"small.csv": "x\n"})
    result = run(pytester, "-rs")
    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED [1] p/MLproject:4: No value given for missing parameters: 'data', "
            "'epochs'; give them with --mlproject-param 'train:data=VALUE', the ini key "
            "mlproject_params, or pytest-mlproject.yaml beside the MLproject file"
        ]
    )
    result = run(
        pytester,
        "--mlproject-param",
        "train:data=small.csv",
        "--mlproject-param",
        "epochs=1",
        "-rA",
    )
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines([f"data={pytester.path / 'p' / 'small.csv'} epochs=1 rate=0.1"])


def test_docker_env_projects_are_not_run_locally(pytester: pytest.Pytester) -> None:
    project(
        pytester.path,
        "p",
        """\
        docker_env:
          image: registry.example.com/trainer:1.2
        entry_points:
          main:
            command: "echo never"
        """,
    )
    result = run(pytester, "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED [[]1] p/MLproject:4: docker_env project: its commands need the Docker image "
            "(registry.example.com/trainer:1.2)*run it with `mlflow run` instead"
        ]
    )


def test_entry_points_skipped_in_the_settings_file(pytester: pytest.Pytester) -> None:
    project(
        pytester.path,
        "p",
        """\
        entry_points:
          main:
            command: "echo main"
          gpu:
            command: "exit 1"
          report:
            command: "exit 1"
        """,
        settings="""\
        entry_points:
          gpu:
            skip: needs a GPU
          report:
            skip: true
        """,
    )
    result = run(pytester, "-rs")
    result.assert_outcomes(passed=5, skipped=2)
    result.stdout.fnmatch_lines_random(
        [
            "SKIPPED [1] p/MLproject:4: needs a GPU",
            "SKIPPED [1] p/MLproject:6: skipped in pytest-mlproject.yaml",
        ]
    )


def test_an_entry_point_with_errors_is_not_run(pytester: pytest.Pytester) -> None:
    project(
        pytester.path,
        "p",
        """\
        entry_points:
          main:
            command: "echo {undeclared}"
        """,
    )
    result = run(pytester, "-rs")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]1] p/MLproject:2: the entry point has errors*::check*"]
    )


# ---------------------------------------------------------------------------------------------
# Parameter values: --mlproject-param, then mlproject_params, then pytest-mlproject.yaml


def test_where_values_come_from_and_which_wins(pytester: pytest.Pytester) -> None:
    project(
        pytester.path,
        "p",
        """\
        entry_points:
          main:
            parameters:
              a: {type: string, default: default}
              b: {type: string, default: default}
              c: {type: string, default: default}
              d: {type: string, default: default}
            command: "echo a={a} b={b} c={c} d={d}"
          other:
            parameters:
              a: {type: string, default: default}
            command: "echo other a={a}"
        """,
        settings="""\
        parameters:
          a: settings
          b: settings
          c: settings
        entry_points:
          other:
            parameters:
              a: settings-scoped
              extra: "x y"
        """,
    )
    pytester.makeini(
        """\
        [pytest]
        mlproject_params =
            a=ini
            b=ini
            other:a=ini-scoped
        """
    )
    result = run(pytester, "-rA")
    result.assert_outcomes(passed=5)
    # A stronger layer wins; within a layer, ENTRY:NAME wins over NAME; an entry-scoped value
    # the entry point does not declare is passed as --NAME VALUE.
    result.stdout.fnmatch_lines_random(
        ["a=ini b=ini c=settings d=default", "other a=ini-scoped --extra x y"]
    )
    # A value on the command line wins over every other layer, even over a scoped value there.
    result = run(pytester, "--mlproject-param", "a=cli", "-rA")
    result.stdout.fnmatch_lines_random(
        ["a=cli b=ini c=settings d=default", "other a=cli --extra x y"]
    )
    result = run(pytester, "--mlproject-param", "other:a=cli-scoped", "-rA")
    result.stdout.fnmatch_lines_random(
        ["a=ini b=ini c=settings d=default", "other a=cli-scoped --extra x y"]
    )


def test_a_repeated_parameter_is_a_usage_error(pytester: pytest.Pytester) -> None:
    project(pytester.path, "p", NEEDS_VALUES)
    result = run(pytester, "--mlproject-param", "epochs=1", "--mlproject-param", "epochs=2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*Repeated parameter: 'epochs'*"])


# ---------------------------------------------------------------------------------------------
# Time limits and Ctrl-C: nothing the command started is left running

# The command (bash) is the child; `sleep` is its child, a grandchild of pytest.
SLEEPER = """\
entry_points:
  main:
    command: "echo $$ > child.pid; sleep 300 & echo $! > grandchild.pid; wait"
"""


@pytest.mark.parametrize(
    ("args", "ini", "settings_timeout"),
    [
        (["--mlproject-timeout", "0.5"], "", 300),
        ([], "mlproject_timeout = 0.5", 300),
        ([], "", 0.5),
    ],
    ids=["option-wins-over-settings", "ini-wins-over-settings", "settings"],
)
def test_a_run_that_times_out_is_killed_with_its_children(
    pytester: pytest.Pytester, args: list[str], ini: str, settings_timeout: float
) -> None:
    directory = project(
        pytester.path,
        "p",
        SLEEPER,
        settings=f"entry_points:\n  main:\n    timeout: {settings_timeout}\n",
    )
    pytester.makeini(f"[pytest]\n{ini}\n")
    result = run(pytester, *args)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "p/MLproject:2: entry point 'main' failed: timed out after * s (limit 0.5 s); its "
            "processes were killed",
        ]
    )
    assert gone(int((directory / "child.pid").read_text()))
    assert gone(int((directory / "grandchild.pid").read_text()))


def test_the_option_wins_over_a_shorter_limit_in_the_settings_file(
    pytester: pytest.Pytester,
) -> None:
    project(
        pytester.path,
        "p",
        'entry_points:\n  main:\n    command: "sleep 0.5; echo finished"\n',
        settings="entry_points:\n  main:\n    timeout: 0.1\n",
    )
    run(pytester).assert_outcomes(passed=2, failed=1)
    run(pytester, "--mlproject-timeout", "120").assert_outcomes(passed=3)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_during_a_run_ends_the_command_and_its_children(
    pytester: pytest.Pytester, signum: signal.Signals
) -> None:
    # SIGTERM is how CI runners cancel a job: the command, in a session of its own, would
    # never see it.
    directory = project(pytester.path, "p", SLEEPER)
    session = pytester.popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--mlproject-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    pids: list[int] = []
    try:
        pids = [read_pid(directory / "child.pid"), read_pid(directory / "grandchild.pid")]
        session.send_signal(signum)
        output, _ = session.communicate(timeout=60)
        assert session.returncode == pytest.ExitCode.INTERRUPTED, output.decode()
        assert "KeyboardInterrupt" in output.decode()
        assert all(gone(pid) for pid in pids)
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
        for pid in [pid for pid in pids if not gone(pid, within=0)]:  # nor after a failure
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# What a run shows and records


def test_output_is_shown_as_it_comes_with_s(pytester: pytest.Pytester) -> None:
    project(
        pytester.path,
        "p",
        'entry_points:\n  main:\n    command: "echo first live line; echo to stderr >&2"\n',
    )
    result = run(pytester, "-s")
    result.assert_outcomes(passed=3)
    # Between the progress dots: printed while the item ran, not in a report afterwards.
    result.stdout.fnmatch_lines(["p/MLproject ..first live line", "to stderr", ".*"])
    # Without -s it is captured.
    result = run(pytester)
    assert "first live line" not in result.stdout.str()


def test_junit_xml_records_the_command_exit_code_duration_and_commit(
    pytester: pytest.Pytester,
) -> None:
    project(
        pytester.path,
        "p",
        """\
        entry_points:
          main:
            parameters:
              n: {type: float, default: 2}
            command: "echo {n}"
          broken:
            command: "exit 4"
        """,
    )
    git(pytester.path, "init", "-q", "-b", "main")
    git(pytester.path, "add", "p")
    git(pytester.path, "commit", "-q", "-m", "project")
    commit = git(pytester.path, "rev-parse", "HEAD")
    run(pytester, "--junitxml=out.xml").assert_outcomes(passed=4, failed=1)
    cases = junit(pytester.path / "out.xml")
    main, broken = cases["p.MLproject.main::run"], cases["p.MLproject.broken::run"]
    assert main["command"] == "echo 2"
    assert main["exit_code"] == "0"
    assert float(main["duration"]) >= 0
    assert main["git_commit"] == commit
    assert main["environment"].startswith(f"the current interpreter, {sys.executable}")
    assert broken["command"] == "exit 4"
    assert broken["exit_code"] == "4"
    assert broken["git_commit"] == commit
    assert cases["p.MLproject.main::check"] == {}


# ---------------------------------------------------------------------------------------------
# Projects from Git repositories: --mlproject-uri


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A repository with the project in ``models/demo``: tag v1, then a second commit on main."""
    repo = tmp_path / "origin"
    demo = project(
        repo,
        "models/demo",
        'entry_points:\n  main:\n    command: "cat marker.txt"\n',
        **{"marker.txt": "version one\n"},
    )
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    git(repo, "tag", "v1")
    (demo / "marker.txt").write_text("version two\n")
    git(repo, "commit", "-q", "-am", "two")
    return repo


@pytest.fixture
def temporary(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder, where clones go without pytest's cache: one of the test's own,
    outside the folder pytester collects."""
    folder = tmp_path_factory.mktemp("temporary")
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))  # for pytest-xdist's workers
    return folder


@pytest.mark.parametrize("cache", ["cacheprovider", "no:cacheprovider"])
def test_a_project_from_a_git_repository_at_a_pinned_version(
    pytester: pytest.Pytester, origin: Path, temporary: Path, cache: str
) -> None:
    pinned = f"file://{origin}#models/demo@v1"
    default = f"file://{origin}#models/demo"
    result = pytester.runpytest(
        *(["-p", "no:cacheprovider"] if cache.startswith("no:") else []),
        "--mlproject-run",
        "--mlproject-uri",
        pinned,
        "--mlproject-uri",
        default,
        "--mlproject-version",
        "main",
        "--junitxml=out.xml",
        "-rA",
    )
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(
        [f"*_ {pinned}/MLproject::main::run _*", "*Captured stdout (full)*", "version one"]
    )
    result.stdout.fnmatch_lines(
        [f"*_ {default}/MLproject::main::run _*", "*Captured stdout (full)*", "version two"]
    )
    runs = [p for name, p in junit(pytester.path / "out.xml").items() if name.endswith("::run")]
    tagged = git(origin, "rev-parse", "v1^{commit}")
    assert [p["git_commit"] for p in runs] == [tagged, git(origin, "rev-parse", "main")]
    # The working copy is left alone; the clone is where the cache is.
    assert git(origin, "status", "--porcelain") == ""
    if cache == "cacheprovider":
        assert (pytester.path / ".pytest_cache" / "d" / "mlproject-sources").is_dir()
    else:
        assert not (pytester.path / ".pytest_cache").exists()
        assert (temporary / f"pytest-mlproject-{os.getuid()}" / "sources").is_dir()


def test_a_uri_that_cannot_be_used_is_one_failing_spec_item(
    pytester: pytest.Pytester, origin: Path, temporary: Path
) -> None:
    project(pytester.path, "local", 'entry_points:\n  main:\n    command: "echo local"\n')
    (origin / "empty").mkdir()
    (origin / "empty" / "README").write_text("no project here\n")
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "empty folder")
    bad = {
        f"file://{origin}#models/missing@v1": "Could not find subdirectory models/missing of *",
        f"file://{origin}#models/demo@v9": "Unable to checkout version 'v9' of git repo *",
        f"file://{origin}#empty": "*no MLproject file in empty; point the URI at a project "
        "folder with #subdir",
        "https://user:s3cret@127.0.0.1:9/org/repo.git#x": "Cannot fetch git repo "
        "https://***@127.0.0.1:9/org/repo.git: *",
    }
    args = [arg for uri in bad for arg in ("--mlproject-uri", uri)]
    result = run(pytester, *args, "--mlproject-version", "main")
    result.assert_outcomes(passed=3, failed=4, errors=0)
    for uri, message in bad.items():
        shown = uri.replace("user:s3cret@", "***@")
        result.stdout.fnmatch_lines([f"*_ {shown}::spec _*", f"*{message}"])
    assert "s3cret" not in result.stdout.str()
    assert "Traceback" not in result.stdout.str()


def test_uri_nodes_are_counted_and_selected_by_their_uri(
    pytester: pytest.Pytester, origin: Path, temporary: Path
) -> None:
    good, bad = f"file://{origin}#models/demo@v1", f"file://{origin}#models/missing@v1"
    args = ("--mlproject-uri", good, "--mlproject-uri", bad)
    result = run(pytester, *args, "--collect-only", "-q")
    assert [line for line in result.outlines if "::" in line] == [
        f"{good}/MLproject::spec",
        f"{good}/MLproject::main::check",
        f"{good}/MLproject::main::run",
        f"{bad}::spec",
    ]
    result.stdout.fnmatch_lines(["4 tests collected*"])
    # -k matches the URI, wherever the checkout lives.
    run(pytester, *args, "-k", "demo").assert_outcomes(passed=3, deselected=1)
    run(pytester, *args, "-k", "missing").assert_outcomes(failed=1, deselected=3)


# ---------------------------------------------------------------------------------------------
# pytest-xdist, and the example projects


def test_several_projects_run_under_xdist(
    pytester: pytest.Pytester, origin: Path, temporary: Path
) -> None:
    for index in range(3):
        project(
            pytester.path,
            f"p{index}",
            f"""\
            entry_points:
              main:
                command: "echo project {index}"
              fails:
                command: "echo broken {index} >&2; exit 1"
            """,
        )
    result = run(
        pytester,
        "-n",
        "2",
        "--mlproject-uri",
        f"file://{origin}#models/demo@v1",
        "--junitxml=out.xml",
    )
    result.assert_outcomes(passed=3 * 4 + 3, failed=3)
    result.stdout.fnmatch_lines_random(
        [f"*p{index}/MLproject:4: entry point 'fails' failed: exit code 1*" for index in range(3)]
    )
    cases = junit(pytester.path / "out.xml")
    commits = {p["git_commit"] for name, p in cases.items() if name.endswith("::run")}
    assert commits == {"", git(origin, "rev-parse", "v1^{commit}")}
    assert (temporary / f"pytest-mlproject-{os.getuid()}" / "sources").is_dir()


def test_the_good_example_projects_really_run(pytester: pytest.Pytester) -> None:
    shutil.copytree(FIXTURES / "good", pytester.path / "good")
    result = run(pytester, "--mlproject-strict", "-rA")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines_random(["Hello, world!", "rows: 3", "rows: 4"])
