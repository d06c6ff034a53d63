"""GitHub annotations and the Markdown summary, through pytester sessions: checks, local runs,
Databricks runs on the fake workspace, and pytest-xdist."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import databricks.sdk
import pytest

from pytest_mlproject.plugin.reporting import RULES_URL, annotation, annotation_path
from pytest_mlproject.problems import Problem
from pytest_mlproject.testing import FakeWorkspace

# pytester's in-process runs restore sys.modules afterwards; the SDK (and requests) must be
# loaded before them, or the next import builds a second copy whose classes do not match.
assert databricks.sdk.WorkspaceClient is not None

TOKEN = "dapi-reporting-secret-0123456789"
SPEC = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": 0}

DEMO = """\
name: demo
entry_points:
  main:
    parameters:
      greeting: {type: string, default: hello}
    command: "python main.py {greeting}"
  fails:
    command: "python fail.py"
  needs:
    parameters:
      data: path
    command: "python main.py {data}"
"""
# An error on `main` (line 4), a warning on `other` (line 7).
MIXED = """\
name: mixed
entry_points:
  main:
    command: "python main.py {missing}"
  other:
    parameters:
      unused: {type: string, default: x}
    command: "python main.py x"
"""
SCRIPTS = {
    "main.py": "import sys\nprint('main says', sys.argv[1])\n",
    "fail.py": "import sys\nsys.exit('boom: the model diverged')\n",
}


def make(root: Path, folder: str, descriptor: str) -> None:
    for name, text in {"MLproject": descriptor, **SCRIPTS}.items():
        (root / folder / name).parent.mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_text(text, encoding="utf-8")


@pytest.fixture
def session(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """Two projects: one with runs that pass, fail and skip, one with problems."""
    for name in ("GITHUB_ACTIONS", "GITHUB_WORKSPACE", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)
    make(pytester.path, "demo", DEMO)
    make(pytester.path, "mixed", MIXED)
    return pytester


@pytest.fixture
def workspace(connect_fake: Callable[[str], FakeWorkspace]) -> FakeWorkspace:
    return connect_fake(TOKEN)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--mlproject", "-p", "no:cacheprovider", *args)


# --- annotations --------------------------------------------------------------------------


def test_workflow_commands_escape_as_github_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))
    path = tmp_path / "a,b:c" / "MLproject"
    problem = Problem(path, 3, "MLP501", "100% wrong:\nsecond line\r, third")
    assert annotation(problem, failing=True) == (
        "::error file=a%2Cb%3Ac/MLproject,line=3,title=MLP501 undeclared-placeholder"
        "::100%25 wrong:%0Asecond line%0D, third"
    )
    assert annotation(problem, failing=False).startswith("::warning file=")


def test_annotation_paths_are_relative_to_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path / "repo"))
    assert annotation_path(tmp_path / "repo" / "p" / "MLproject") == "p/MLproject"
    assert annotation_path(tmp_path / "elsewhere") == (tmp_path / "elsewhere").as_posix()
    monkeypatch.delenv("GITHUB_WORKSPACE")
    monkeypatch.chdir(tmp_path)
    assert annotation_path("p/MLproject") == "p/MLproject"


ANNOTATIONS = [
    "::error file=mixed/MLproject,line=4,title=MLP501 undeclared-placeholder::placeholder "
    "`{missing}` in entry point 'main' is not a declared parameter; MLflow fails with "
    "KeyError: 'missing' when it runs: declare `missing` under `parameters`, or write "
    "`{{missing}}` for literal braces",
    "::warning file=mixed/MLproject,line=7,title=MLP406 unused-parameter::parameter "
    "'unused' of entry point 'other' is never used in its command, so its value is "
    "dropped: add `{unused}` to the command or remove it",
]


def test_problems_are_annotated_under_github_actions(
    session: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(session.path))
    result = run(session)
    result.assert_outcomes(passed=6, failed=1, warnings=1)
    assert [line for line in result.outlines if line.startswith("::")] == ANNOTATIONS
    result.stdout.fnmatch_lines(["*= GitHub annotations =*"])


def test_strict_annotates_warnings_as_errors(
    session: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = run(session, "--mlproject-strict")
    assert [line.split(" ")[0] for line in result.outlines if line.startswith("::")] == [
        "::error",
        "::error",
    ]


def test_no_annotations_outside_github_actions(session: pytest.Pytester) -> None:
    result = run(session)
    assert not [line for line in result.outlines if line.startswith("::")]
    assert "GitHub annotations" not in result.stdout.str()


# --- the summary --------------------------------------------------------------------------


def _without_durations(text: str) -> str:
    return re.sub(r"\d+(\.\d+)? (s|min)\b", "T", text)


def test_summary_of_checks_runs_and_databricks_runs(
    session: pytest.Pytester, workspace: FakeWorkspace
) -> None:
    (session.path / "cluster.json").write_text(json.dumps(SPEC), encoding="utf-8")
    summary = session.path / "summary.md"
    summary.write_text("# Earlier step\n\n", encoding="utf-8")
    result = run(
        session,
        "--mlproject-run",
        "--databricks",
        "--databricks-cluster-spec",
        "cluster.json",
        "--mlproject-summary",
        str(summary),
    )
    result.assert_outcomes(passed=10, failed=3, skipped=4, warnings=1)
    text = summary.read_text("utf-8")
    assert text.startswith("# Earlier step\n\n## MLflow projects\n\n")  # appended
    assert "2 projects, 5 entry points: 3 failed, 10 passed, 4 skipped in " in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[:3] == [
        "| project | entry point | check | run | databricks |",
        "| --- | --- | --- | --- | --- |",
        "| `demo/MLproject` | *(descriptor)* | ✅ passed |  |  |",
    ]
    fails, main, needs, mixed, broken, other = map(_without_durations, table[3:9])
    url = re.escape(workspace.host)
    assert re.fullmatch(
        r"\|  \| `fails` \| ✅ passed \| ❌ failed, exit 1, T \| "
        rf"❌ failed, cluster 15\.4\.x-scala2\.12, FAILED, \[run \d+\]\({url}[^)]*\), T \|",
        fails,
    ), fails
    assert re.fullmatch(
        r"\|  \| `main` \| ✅ passed \| ✅ passed, exit 0, T \| "
        rf"✅ passed, cluster 15\.4\.x-scala2\.12, SUCCESS, \[run \d+\]\({url}[^)]*\), T \|",
        main,
    ), main
    assert needs.startswith("|  | `needs` | ✅ passed | ⏭️ skipped, No value given ")
    assert "--mlproject-param" in needs
    assert mixed == "| `mixed/MLproject` | *(descriptor)* | ✅ passed |  |  |"
    assert broken.startswith("|  | `main` | ❌ failed | ⏭️ skipped, the entry point has errors")
    assert other.startswith(
        "|  | `other` | ✅ passed | ✅ passed, exit 0, T | ✅ passed, cluster 15.4.x-scala2.12, "
        "SUCCESS"
    )
    assert text.endswith(
        "### Problems by rule\n\n"
        "| rule | problems | fails its item |\n"
        "| --- | --- | --- |\n"
        "| [MLP406 unused-parameter](https://github.com/pytest-mlproject/pytest-mlproject/"
        "blob/main/docs/rules.md#mlp406-unused-parameter) | 1 | no |\n"
        "| [MLP501 undeclared-placeholder](https://github.com/pytest-mlproject/pytest-mlproject/"
        "blob/main/docs/rules.md#mlp501-undeclared-placeholder) | 1 | yes |\n\n"
    )
    assert TOKEN not in text


XDIST_SUMMARY = """\
## MLflow projects

2 projects, 5 entry points: 2 failed, 8 passed, 2 skipped in T

| project | entry point | check | run |
| --- | --- | --- | --- |
| `demo/MLproject` | *(descriptor)* | ✅ passed |  |
|  | `fails` | ✅ passed | ❌ failed, exit 1, T |
|  | `main` | ✅ passed | ✅ passed, exit 0, T |
|  | `needs` | ✅ passed | ⏭️ skipped, NEEDS |
| `mixed/MLproject` | *(descriptor)* | ✅ passed |  |
|  | `main` | ❌ failed | ⏭️ skipped, HAS ERRORS |
|  | `other` | ✅ passed | ✅ passed, exit 0, T |

### Problems by rule

| rule | problems | fails its item |
| --- | --- | --- |
| [MLP406 unused-parameter](RULES#mlp406-unused-parameter) | 1 | no |
| [MLP501 undeclared-placeholder](RULES#mlp501-undeclared-placeholder) | 1 | yes |

"""


def test_xdist_annotates_and_summarises_from_the_workers_reports(
    session: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller has no items: problems, outcomes and run properties all come from the
    workers' reports."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(session.path))
    summary = session.path / "summary.md"
    result = run(session, "-n", "2", "--mlproject-run", "--mlproject-summary", str(summary))
    result.assert_outcomes(passed=8, failed=2, skipped=2)
    assert [line for line in result.outlines if line.startswith("::")] == ANNOTATIONS
    text = _without_durations(summary.read_text("utf-8")).replace(RULES_URL, "RULES")
    needs = re.search(r"`needs` \| ✅ passed \| ⏭️ skipped, (.*) \|", text)
    assert needs is not None
    assert needs.group(1).startswith("No value given for missing parameters: 'data'")
    has_errors = "the entry point has errors, so it cannot run: see its ::check item"
    assert text.replace(needs.group(1), "NEEDS").replace(has_errors, "HAS ERRORS") == (
        XDIST_SUMMARY
    )


def test_the_ini_key_expands_variables_and_is_relative_to_the_ini_file(
    session: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    session.makeini("[pytest]\nmlproject_summary = $GITHUB_STEP_SUMMARY\n")
    run(session).assert_outcomes(passed=6, failed=1, warnings=1)  # unset: no summary
    assert not list(session.path.glob("*GITHUB*"))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", "reports/step.md")
    sub = session.path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    session.runpytest("--mlproject", "-p", "no:cacheprovider", str(session.path))
    assert "## MLflow projects" in (session.path / "reports" / "step.md").read_text("utf-8")


def test_no_summary_without_mlproject(session: pytest.Pytester) -> None:
    summary = session.path / "summary.md"
    session.makepyfile("def test_ok(): pass")
    session.runpytest("-p", "no:cacheprovider", "--mlproject-summary", str(summary))
    assert not summary.exists()


def test_a_summary_with_nothing_collected(session: pytest.Pytester) -> None:
    summary = session.path / "summary.md"
    empty = session.path / "empty"
    empty.mkdir()
    run(session, str(empty), "--mlproject-summary", str(summary))
    assert summary.read_text("utf-8") == (
        "## MLflow projects\n\nNo MLproject file was collected.\n\n"
    )


def test_an_unwritable_summary_is_a_usage_error(session: pytest.Pytester) -> None:
    (session.path / "file").write_text("", encoding="utf-8")
    result = run(session, "--mlproject-summary", str(session.path / "file" / "summary.md"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mlproject-summary: cannot write *summary.md*"])
