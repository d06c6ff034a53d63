"""The ``mlproject`` fixture, as a user's own tests use it, and the core API it stands on."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from helpers import git

DEMO = """\
name: demo
entry_points:
  main:
    parameters:
      n: {type: float, default: 2}
      data: {type: path, default: data.csv}
    command: "python count.py {n} {data}"
  fail:
    command: "python -c 'import sys; print(\\"partial work\\"); sys.exit(\\"it broke\\")'"
"""

COUNT = """\
import sys

print(*range(1, int(float(sys.argv[1])) + 1))
print(open(sys.argv[2]).read().strip())
"""


def demo(root: Path, folder: str = "projects/demo", settings: str | None = None) -> Path:
    directory = root / folder
    directory.mkdir(parents=True)
    (directory / "MLproject").write_text(DEMO)
    (directory / "count.py").write_text(COUNT)
    (directory / "data.csv").write_text("the data\n")
    if settings is not None:
        (directory / "pytest-mlproject.yaml").write_text(textwrap.dedent(settings))
    return directory


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # The test modules made here are named test_fixture_*: pytester runs in this process,
    # where the names of this suite's own modules (test_limits ...) are taken.
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_load_check_render_and_run_a_project(pytester: pytest.Pytester) -> None:
    directory = demo(pytester.path)
    pytester.makeini("[pytest]\n")
    pytester.mkdir("tests")
    pytester.makepyfile(
        **{
            "tests/test_fixture_demo.py": f"""
            from pytest_mlproject import Project
            from pytest_mlproject.plugin.fixtures import MLprojectFixture


            def test_demo(mlproject: MLprojectFixture) -> None:
                project = mlproject.load("projects/demo")  # from the rootdir
                assert isinstance(project, Project)
                assert project.name == "demo"
                assert mlproject.check(project) == []
                assert mlproject.check("projects/demo/MLproject") == []
                data = {str(directory / "data.csv")!r}
                assert mlproject.render(project) == f"python count.py 2 {{data}}"
                assert mlproject.render("projects/demo", "main", {{"n": 3}}).startswith(
                    "python count.py 3 "
                )
                # A script name is an entry point too, as for `mlflow run -e count.py`.
                assert mlproject.render(project, "count.py", {{"x": 1}}) == (
                    "python count.py --x 1"
                )
                result = mlproject.run(project, parameters={{"n": 3}})
                assert result.ok, result.stderr
                assert result.stdout == "1 2 3\\nthe data\\n"
                assert result.cwd == project.directory
                assert mlproject.results == [result]
            """
        }
    )
    # Started from a subfolder: relative paths still start at the rootdir.
    os.chdir(pytester.path / "tests")
    run(pytester).assert_outcomes(passed=1)


def test_a_failing_assertion_shows_the_runs_output(pytester: pytest.Pytester) -> None:
    demo(pytester.path)
    pytester.makepyfile(
        test_fixture_fail="""
        def test_fail(mlproject):
            result = mlproject.run("projects/demo", "fail")
            assert result.exit_code == 1
            assert result.ok, result.describe()
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E       AssertionError: exit code 1 after *",
            "*- Captured stdout of demo::fail call -*",
            "partial work",
            "*- Captured stderr of demo::fail call -*",
            "it broke",
        ]
    )


def test_check_reports_what_the_items_report(pytester: pytest.Pytester) -> None:
    directory = pytester.path / "p"
    directory.mkdir()
    (directory / "MLproject").write_text(
        "entry_points:\n"
        "  main:\n"
        '    command: "python train.py {missing}"\n'
        "  other:\n"
        "    parameters:\n"
        "      unused: {type: string, default: x}\n"
        '    command: "python train.py"\n'
    )
    (directory / "train.py").write_text("")
    (directory / "pytest-mlproject.yaml").write_text("paramters: {}\n")
    pytester.makepyfile(
        test_fixture_problems="""
        import pytest


        def codes(problems):
            return [p.code for p in problems]


        def test_check(mlproject):
            assert codes(mlproject.check("p")) == ["MLP501", "MLP406", "MLP802"]
            assert codes(mlproject.check("p", ignore=["unused-parameter", "mlp802"])) == [
                "MLP501"
            ]
            problem = mlproject.check(mlproject.load("p"))[0]
            assert problem.is_error
            assert problem.line == 3
            assert "placeholder `{missing}`" in problem.message


        def test_unreadable(mlproject, tmp_path):
            (tmp_path / "MLproject").write_text("name: [unclosed\\n")
            assert codes(mlproject.check(tmp_path)) == ["MLP101"]


        def test_unknown_rule(mlproject):
            with pytest.raises(ValueError, match="unknown rule 'MLP999'"):
                mlproject.check("p", ignore=["MLP999"])
        """
    )
    run(pytester).assert_outcomes(passed=3)
    # The session's --mlproject-ignore applies too, as it does to the items.
    result = run(pytester, "--mlproject-ignore", "MLP501", "-k", "test_check")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["E       AssertionError: assert ['MLP406', 'MLP802'] == ['MLP501', 'MLP406', 'MLP802']"]
    )


def test_values_come_from_the_same_places_as_for_run_items(pytester: pytest.Pytester) -> None:
    directory = pytester.path / "p"
    directory.mkdir()
    (directory / "MLproject").write_text(
        "entry_points:\n"
        "  main:\n"
        "    parameters:\n"
        "      a: string\n"
        "      b: string\n"
        "      c: string\n"
        "      d: {type: string, default: default}\n"
        '    command: "echo {a} {b} {c} {d}"\n'
    )
    (directory / "pytest-mlproject.yaml").write_text(
        "parameters:\n  a: settings\n  b: settings\n  c: settings\n"
    )
    pytester.makeini("[pytest]\nmlproject_params =\n    a=ini\n    b=ini\n")
    pytester.makepyfile(
        test_fixture_values="""
        import pytest
        from pytest_mlproject import MissingParametersError


        def test_configured(mlproject):
            assert mlproject.parameters("p") == {"a": "cli", "b": "ini", "c": "settings"}
            assert mlproject.render("p") == "echo cli ini settings default"
            assert mlproject.render("p", parameters={"a": "mine", "d": 4}) == (
                "echo mine ini settings 4"
            )
            assert mlproject.run("p").stdout == "cli ini settings default\\n"


        def test_explicit_only(mlproject):
            values = {"a": 1, "b": 2, "c": 3}
            assert mlproject.render("p", parameters=values, configured=False) == (
                "echo 1 2 3 default"
            )
            with pytest.raises(MissingParametersError, match="'b', 'c'"):
                mlproject.run("p", parameters={"a": 1}, configured=False)
        """
    )
    # No --mlproject: the fixture reads the options itself.
    run(pytester, "--mlproject-param", "a=cli").assert_outcomes(passed=2)
    result = run(pytester, "--mlproject", "--mlproject-param", "a=cli", "test_fixture_values.py")
    result.assert_outcomes(passed=2)


def test_time_limits_docker_env_and_the_environment(pytester: pytest.Pytester) -> None:
    (pytester.path / "slow").mkdir()
    (pytester.path / "slow" / "MLproject").write_text(
        'entry_points:\n  main:\n    command: "sleep 0.5; echo done; echo $MY_API_TOKEN"\n'
    )
    (pytester.path / "slow" / "pytest-mlproject.yaml").write_text(
        "entry_points:\n  main:\n    timeout: 0.1\n"
    )
    (pytester.path / "boxed").mkdir()
    (pytester.path / "boxed" / "MLproject").write_text(
        "docker_env: {image: trainer}\nentry_points:\n  main:\n    command: echo\n"
    )
    pytester.makepyfile(
        test_fixture_limits="""
        import pytest
        from pytest_mlproject import NotRunnableError


        def test_settings_limit(mlproject):
            result = mlproject.run("slow")
            assert result.timed_out
            assert result.timeout == 0.1


        def test_own_limit_and_environment(mlproject):
            result = mlproject.run("slow", timeout=60, env={"MY_API_TOKEN": "s3cr3t-value"})
            assert result.ok
            assert result.stdout == "done\\n***\\n"  # secrets are masked


        def test_docker_env(mlproject):
            with pytest.raises(NotRunnableError, match="docker_env project"):
                mlproject.run("boxed")
        """
    )
    run(pytester).assert_outcomes(passed=3)
    result = run(pytester, "--mlproject-timeout", "60", "-k", "settings_limit")
    result.assert_outcomes(failed=1)  # the option wins over the settings file


def test_output_is_shown_as_it_comes_with_s(pytester: pytest.Pytester) -> None:
    demo(pytester.path)
    pytester.makepyfile(
        test_fixture_live="""
        def test_live(mlproject):
            print("before")
            mlproject.run("projects/demo", parameters={"n": 2})
            print("after")
        """
    )
    result = run(pytester, "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*before", "1 2", "the data", "after*"])


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    repo = tmp_path / "origin"
    directory = demo(repo, "models/demo")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    git(repo, "tag", "v1")
    (directory / "data.csv").write_text("newer data\n")
    git(repo, "commit", "-q", "-am", "two")
    return repo


@pytest.mark.parametrize("cache", ["cacheprovider", "no:cacheprovider"])
def test_load_a_project_from_a_git_repository(
    pytester: pytest.Pytester,
    origin: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    cache: str,
) -> None:
    temporary = tmp_path_factory.mktemp("temporary")
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    tagged = git(origin, "rev-parse", "v1^{commit}")
    pytester.makepyfile(
        test_fixture_git=f"""
        import pytest
        from pytest_mlproject import SourceError

        URI = "file://{origin}#models/demo"


        @pytest.mark.parametrize("uri, version", [(URI, "v1"), (URI + "@v1", None)])
        def test_tag(mlproject, uri, version):
            project = mlproject.load(uri, version=version)
            result = mlproject.run(project, parameters={{"n": 1}})
            assert result.stdout == "1\\nthe data\\n"
            assert result.commit == {tagged!r}


        def test_head(mlproject):
            assert "newer data" in mlproject.run(URI + "@main").stdout


        def test_missing_version(mlproject):
            with pytest.raises(SourceError, match="Unable to checkout version 'v9'"):
                mlproject.load(URI, version="v9")
        """
    )
    args = ["-p", "no:cacheprovider"] if cache.startswith("no:") else []
    pytester.runpytest(*args).assert_outcomes(passed=4)
    assert git(origin, "status", "--porcelain") == ""
    if args:
        assert (temporary / f"pytest-mlproject-{os.getuid()}" / "sources").is_dir()
    else:
        assert (pytester.path / ".pytest_cache" / "d" / "mlproject-sources").is_dir()


def test_the_public_api_works_without_pytest(tmp_path: Path) -> None:
    directory = demo(tmp_path)
    script = f"""
import sys

sys.modules["pytest"] = None  # importing pytest now fails
from pytest_mlproject import (
    check, git_commit, load, read_settings, render_command, resolve_source, run_entry_point,
    user_parameters,
)

source = resolve_source({str(directory)!r}, cache_dir={str(tmp_path / "cache")!r})
project = load(source.directory)
assert check(project) == []
assert read_settings(project.directory).parameters == ()
assert user_parameters(project.entry_point("main")) == {{}}
entry = project.entry_point("main")
print(render_command(entry, {{"n": 1}}, base_dir=project.directory))
result = run_entry_point(project, "main", {{"n": 1}}, base_dir=project.directory)
assert result.ok, result.stderr
print(result.stdout, end="")
assert git_commit(project.directory) is None
assert not [name for name in sys.modules if name.startswith(("_pytest", "pytest_mlproject.plugin"))]
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"python count.py 1 {directory / 'data.csv'}\n1\nthe data\n"
