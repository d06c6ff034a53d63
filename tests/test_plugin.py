"""The pytest layer as a user meets it: collection, node ids, outcomes, options and ini keys."""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import needs_pytest_9

GOOD = """\
name: good
entry_points:
  main:
    parameters:
      alpha: {type: float, default: 0.5}
    command: "python train.py --alpha {alpha}"
  evaluate:
    command: "python train.py --evaluate"
"""

# One error (undeclared placeholder) on `main`, one warning (unused parameter) on `other`.
MIXED = """\
name: mixed
entry_points:
  main:
    command: "python train.py {missing}"
  other:
    parameters:
      unused: {type: string, default: x}
    command: "python train.py"
"""


def project(
    pytester: pytest.Pytester, folder: str, descriptor: str, name: str = "MLproject"
) -> Path:
    directory = pytester.path / folder
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(textwrap.dedent(descriptor), encoding="utf-8")
    (directory / "train.py").write_text("", encoding="utf-8")
    return directory


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_items_and_node_ids(pytester: pytest.Pytester) -> None:
    project(pytester, "a", GOOD)
    project(pytester, "b/nested", GOOD, name="MLProject")
    result = run(pytester, "--mlproject", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    ids = [line for line in result.outlines if "::" in line]
    assert ids == [
        "a/MLproject::spec",
        "a/MLproject::main::check",
        "a/MLproject::evaluate::check",
        "b/nested/MLProject::spec",
        "b/nested/MLProject::main::check",
        "b/nested/MLProject::evaluate::check",
    ]


def test_without_the_option_nothing_is_collected(pytester: pytest.Pytester) -> None:
    project(pytester, "a", MIXED)
    result = run(pytester)
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_nothing_heavy_is_imported_without_the_option(pytester: pytest.Pytester) -> None:
    project(pytester, "a", GOOD)
    pytester.makeconftest(
        """
        import sys

        def pytest_unconfigure(config):
            loaded = sorted(
                name for name in sys.modules
                if name.startswith(("pytest_mlproject.", "yaml", "git", "databricks"))
            )
            print("LOADED:", loaded)
        """
    )
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    loaded = next(line for line in result.outlines if line.startswith("LOADED:"))
    assert loaded == (
        "LOADED: ['pytest_mlproject.options', 'pytest_mlproject.plugin', "
        "'pytest_mlproject.plugin.config', "
        "'pytest_mlproject.plugin.databricks_fixtures', 'pytest_mlproject.plugin.fixtures', "
        "'pytest_mlproject.plugin.workspace_fixtures']"
    )


def test_a_conftest_may_name_the_fixture_modules(pytester: pytest.Pytester) -> None:
    # The plugin has imported them already; pytest would warn that they cannot be rewritten.
    pytester.makeconftest(
        """
        pytest_plugins = [
            "pytest_mlproject.plugin.fixtures",
            "pytest_mlproject.plugin.workspace_fixtures",
            "pytest_mlproject.plugin.databricks_fixtures",
        ]
        """
    )
    pytester.makepyfile(
        """
        def test_fixtures(mlproject):
            assert mlproject.load is not None
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*Warning*")


def test_outcomes_errors_fail_and_warnings_warn(pytester: pytest.Pytester) -> None:
    project(pytester, "p", MIXED)
    result = run(pytester, "--mlproject", "-rA")
    result.assert_outcomes(passed=2, failed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*_ p/MLproject::main::check _*",
            "p/MLproject:4: MLP501 placeholder `{missing}` in entry point 'main' is not a "
            "declared parameter*",
            "*p/MLproject:7: MLprojectWarning: MLP406 parameter 'unused' of entry point "
            "'other' is never used*",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert "raise MLprojectFailure" not in result.stdout.str()


@pytest.mark.parametrize(
    "args",
    [
        ["--mlproject-strict"],
        ["-W", "error::pytest_mlproject.MLprojectWarning"],
        ["-W", "error"],
    ],
    ids=["strict", "W-error-category", "W-error"],
)
def test_warnings_can_fail_the_item_cleanly(pytester: pytest.Pytester, args: list[str]) -> None:
    project(pytester, "p", MIXED)
    result = run(pytester, "--mlproject", *args)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["p/MLproject:7: MLP406 parameter 'unused'*"])
    assert "Traceback" not in result.stdout.str()


def test_strict_from_ini(pytester: pytest.Pytester) -> None:
    project(pytester, "p", MIXED)
    pytester.makeini("[pytest]\nmlproject_strict = true\n")
    run(pytester, "--mlproject").assert_outcomes(passed=1, failed=2)


def test_unreadable_descriptor_is_a_failing_item_and_others_still_run(
    pytester: pytest.Pytester,
) -> None:
    project(pytester, "broken", "name: [unclosed\n")
    project(pytester, "good", GOOD)
    result = run(pytester, "--mlproject")
    result.assert_outcomes(passed=3, failed=1, errors=0)
    result.stdout.fnmatch_lines(["broken/MLproject:2: MLP101 invalid YAML: *"])


def test_ignore_by_code_and_name_and_ini(pytester: pytest.Pytester) -> None:
    project(pytester, "p", MIXED)
    result = run(pytester, "--mlproject", "--mlproject-ignore", "MLP501", "-W", "error")
    result.assert_outcomes(passed=2, failed=1)
    result = run(
        pytester,
        "--mlproject",
        "--mlproject-ignore",
        "undeclared-placeholder",
        "--mlproject-ignore=unused-parameter",
        "-W",
        "error",
    )
    result.assert_outcomes(passed=3)
    pytester.makeini("[pytest]\nmlproject_ignore = MLP501 mlp406\n")
    run(pytester, "--mlproject", "-W", "error").assert_outcomes(passed=3)


def test_unknown_rule_is_a_usage_error(pytester: pytest.Pytester) -> None:
    project(pytester, "p", GOOD)
    result = run(pytester, "--mlproject", "--mlproject-ignore", "MLP999")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown rule 'MLP999'*docs/rules.md*"])


@needs_pytest_9  # [tool.pytest] with native TOML values is new in pytest 9
def test_pytest9_native_toml_config(pytester: pytest.Pytester) -> None:
    project(pytester, "p", MIXED)
    pytester.makepyprojecttoml(
        """
        [tool.pytest]
        mlproject_ignore = ["MLP501", "unused-parameter"]
        mlproject_strict = true
        """
    )
    run(pytester, "--mlproject").assert_outcomes(passed=3)


def test_mlproject_paths_when_testpaths_point_elsewhere(pytester: pytest.Pytester) -> None:
    project(pytester, "projects/a", GOOD)
    pytester.mkdir("tests")
    pytester.makepyfile(**{"tests/test_x.py": "def test_x(): pass"})
    pytester.makeini("[pytest]\ntestpaths = tests\nmlproject_paths = projects\n")
    result = run(pytester, "--mlproject")
    result.assert_outcomes(passed=4)
    # Paths given on the command line win: only what the user named is collected.
    run(pytester, "--mlproject", "tests").assert_outcomes(passed=1)
    # Without --mlproject the extra paths are not searched.
    run(pytester).assert_outcomes(passed=1)


def test_selection_with_k_and_marker(pytester: pytest.Pytester) -> None:
    project(pytester, "p", MIXED)
    run(pytester, "--mlproject", "-k", "other").assert_outcomes(passed=1, warnings=1)
    run(pytester, "--mlproject", "-m", "mlproject", "--strict-markers").assert_outcomes(
        passed=2, failed=1, warnings=1
    )
    result = run(pytester, "--mlproject", "p/MLproject::main::check")
    result.assert_outcomes(failed=1)


def test_last_failed_replays_only_the_failing_item(pytester: pytest.Pytester) -> None:
    project(pytester, "p", MIXED)
    pytester.runpytest("--mlproject").assert_outcomes(passed=2, failed=1, warnings=1)
    result = pytester.runpytest("--mlproject", "--lf")
    result.assert_outcomes(failed=1, deselected=2)


def test_strict_config_and_markers(pytester: pytest.Pytester) -> None:
    project(pytester, "p", GOOD)
    pytester.makeini("[pytest]\nstrict = true\n")
    run(pytester, "--mlproject").assert_outcomes(passed=3)


def test_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    project(pytester, "p", MIXED)
    result = run(pytester, "-p", "no:mlproject")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result = run(pytester, "-p", "no:mlproject", "--mlproject")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_junit_xml_has_the_problem_and_properties(pytester: pytest.Pytester) -> None:
    project(pytester, "p", MIXED)
    run(pytester, "--mlproject", "--junitxml=out.xml", "-o", "junit_family=xunit1")
    tree = ET.parse(pytester.path / "out.xml")
    cases = {f"{case.get('classname')}::{case.get('name')}": case for case in tree.iter("testcase")}
    assert set(cases) == {
        "p.MLproject::spec",
        "p.MLproject.main::check",
        "p.MLproject.other::check",
    }
    failure = cases["p.MLproject.main::check"].find("failure")
    assert failure is not None
    assert "p/MLproject:4: MLP501" in (failure.get("message") or "")
    properties = {
        prop.get("name"): prop.get("value")
        for prop in cases["p.MLproject.other::check"].iter("property")
    }
    assert properties == {"mlproject_problems": "MLP406"}


def test_xdist(pytester: pytest.Pytester) -> None:
    for index in range(4):
        project(pytester, f"p{index}", MIXED)
    result = run(pytester, "--mlproject", "-n", "2")
    result.assert_outcomes(passed=8, failed=4)


@pytest.mark.parametrize(
    ("entry", "node"),
    [("spec", "%73pec"), ("a::b", "a%3A%3Ab"), ("x[1]", "x%5B1%5D"), ("50%", "50%25")],
)
def test_awkward_entry_point_names_get_stable_node_ids(
    pytester: pytest.Pytester, entry: str, node: str
) -> None:
    project(
        pytester,
        "p",
        f"""\
        entry_points:
          main:
            command: python train.py
          "{entry}":
            command: python train.py
        """,
    )
    result = run(pytester, "--mlproject", "--collect-only", "-q")
    assert f"p/MLproject::{node}::check" in result.outlines
    run(pytester, "--mlproject", f"p/MLproject::{node}::check").assert_outcomes(passed=1)


def test_misnamed_descriptor_warns(pytester: pytest.Pytester) -> None:
    project(pytester, "p", GOOD, name="MLproject.yaml")
    result = run(pytester, "--mlproject")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*MLP107 MLflow only reads a file named exactly `MLproject`*"])


def test_problems_about_an_environment_file_name_that_file(pytester: pytest.Pytester) -> None:
    directory = project(
        pytester,
        "p",
        """\
        python_env: python_env.yaml
        entry_points:
          main:
            command: python train.py
        """,
    )
    (directory / "python_env.yaml").write_text("python: 3.10\ndependencies: [numpy]\n")
    result = run(pytester, "--mlproject")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        ["p/python_env.yaml:1: MLP308 `python: 3.10` is read by YAML as the float 3.1*"]
    )
