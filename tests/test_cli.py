"""``mlproject-check``: the pytest items' problems and configuration, as a command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mlproject import cli

# An error (undeclared placeholder, line 4) and a warning (unused parameter, line 7).
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
# A warning only: the unused parameter.
WARNS = """\
name: warns
entry_points:
  main:
    parameters:
      unused: {type: string, default: x}
    command: "python train.py"
"""
GOOD = """\
name: good
entry_points:
  main:
    command: "python train.py"
"""


def project(root: Path, folder: str, descriptor: str, name: str = "MLproject") -> Path:
    directory = root / folder
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(descriptor, encoding="utf-8")
    (directory / "train.py").write_text("", encoding="utf-8")
    return directory / name


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty repository folder, the current folder, with a pytest.ini of its own (so that
    no configuration above tmp_path applies)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return tmp_path


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def codes(lines: list[str]) -> list[str]:
    return [re.sub(r"^(\S+?):(\d+): (MLP\d+) .*", r"\1:\2 \3", line) for line in lines]


def test_errors_fail_warnings_do_not(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project(repo, "p", MIXED)
    project(repo, "w", WARNS)
    status, out, err = check(capsys, ".")
    assert status == 1
    assert codes(out) == ["p/MLproject:4 MLP501", "p/MLproject:7 MLP406", "w/MLproject:5 MLP406"]
    assert out[0].startswith(
        "p/MLproject:4: MLP501 placeholder `{missing}` in entry point 'main' is not a declared"
    )
    assert "1 failing, 2 warnings" in err

    status, out, err = check(capsys, "w")
    assert (status, codes(out)) == (0, ["w/MLproject:5 MLP406"])
    assert "--strict" in err


def test_clean_is_silent(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project(repo, "g", GOOD)
    assert check(capsys) == (0, [], "")  # no path: the current folder


def test_strict_and_ignore_flags(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project(repo, "w", WARNS)
    assert check(capsys, "--strict", "w")[0] == 1
    assert check(capsys, "--strict", "--ignore", "unused-parameter", "w")[:2] == (0, [])
    assert check(capsys, "--ignore", "mlp406,MLP505", "w")[:2] == (0, [])


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("pytest.ini", "[pytest]\nmlproject_ignore = MLP501\nmlproject_strict = true\n"),
        ("tox.ini", "[pytest]\nmlproject_ignore = MLP501\nmlproject_strict = yes\n"),
        ("setup.cfg", "[tool:pytest]\nmlproject_ignore =\n  MLP501\nmlproject_strict = 1\n"),
        (
            "pyproject.toml",
            '[tool.pytest.ini_options]\nmlproject_ignore = "MLP501"\nmlproject_strict = "true"\n',
        ),
        (
            "pyproject.toml",
            "[tool.pytest]\n"
            'mlproject_ignore = ["undeclared-placeholder"]\n'
            "mlproject_strict = true\n",
        ),
    ],
    ids=["pytest.ini", "tox.ini", "setup.cfg", "pyproject-ini-options", "pyproject-native"],
)
def test_settings_come_from_the_pytest_configuration(
    repo: Path, capsys: pytest.CaptureFixture[str], name: str, text: str
) -> None:
    if "[tool.pytest]\n" in text and int(pytest.__version__.split(".")[0]) < 9:
        pytest.skip("[tool.pytest] is pytest 9's")
    (repo / "pytest.ini").unlink()
    (repo / name).write_text(text, encoding="utf-8")
    project(repo, "p", MIXED)
    status, out, _ = check(capsys, "p/MLproject")
    # MLP501 is ignored, and the warning fails: strict.
    assert (status, codes(out)) == (1, ["p/MLproject:7 MLP406"])


def test_the_configuration_is_found_from_the_paths_as_pytest_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    project(repo, "p", MIXED)
    (repo / "tox.ini").write_text("[pytest]\nmlproject_ignore = MLP501 MLP406\n", "utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "pytest.ini").write_text("[pytest]\nmlproject_strict = true\n", "utf-8")
    monkeypatch.chdir(elsewhere)
    status, out, _ = check(capsys, str(repo / "p"))
    assert (status, out) == (0, [])


def test_filterwarnings_decides_as_in_pytest(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project(repo, "w", WARNS)
    ini = repo / "pytest.ini"
    ini.write_text("[pytest]\nfilterwarnings =\n    error\n", encoding="utf-8")
    assert check(capsys, "w")[0] == 1
    ini.write_text(
        "[pytest]\nfilterwarnings = ignore::pytest_mlproject.MLprojectWarning\n", "utf-8"
    )
    assert check(capsys, "w")[:2] == (0, [])
    ini.write_text("[pytest]\nfilterwarnings = error::DeprecationWarning\n", "utf-8")
    assert check(capsys, "w")[:2] == (0, ["w/MLproject:5: MLP406" + check_tail(repo)])


def check_tail(repo: Path) -> str:
    """The message of WARNS's problem, after its code."""
    from pytest_mlproject import checks

    (problem,) = checks.check(repo / "w")
    return " " + problem.message


def test_same_problems_as_the_pytest_items(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fixtures/broken projects, with a configuration: the same failing and warning
    problems from both, at the same lines."""
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    broken = Path(__file__).resolve().parents[1] / "fixtures" / "broken"
    for source in broken.rglob("*"):
        if source.is_file():
            target = pytester.path / source.relative_to(broken.parent)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    project(pytester.path, "p", MIXED)
    project(pytester.path, "misnamed", GOOD, name="MLproject.yaml")
    pytester.makeini("[pytest]\nmlproject_ignore = MLP504 script-missing\n")
    result = pytester.runpytest("--mlproject", "-p", "no:cacheprovider")
    pattern = re.compile(r"^\s*(\S+):(\d+): (MLprojectWarning: )?(MLP\d+) (.*)$")
    from_pytest = set()
    for line in result.outlines:
        match = pattern.match(line)
        if match:
            path, number, warning, code, message = match.groups()
            where = Path(path)
            if where.is_absolute():  # in the warnings summary
                where = where.relative_to(pytester.path)
            from_pytest.add((where.as_posix(), int(number), code, message, not warning))
    monkeypatch.chdir(pytester.path)
    found = cli.check_paths(["."], cli.find_ini(["."], pytester.path), [], strict=False)
    from_cli = {
        (p.path.relative_to(pytester.path).as_posix(), p.line, p.code, p.message, failing)
        for p, failing in found
    }
    assert from_cli == from_pytest
    assert {"MLP101", "MLP107", "MLP209", "MLP302", "MLP304", "MLP501"} <= {c[2] for c in from_cli}
    assert not {"MLP504", "MLP505"} & {c[2] for c in from_cli}
    assert check(capsys, ".")[0] == 1


def test_a_file_beside_a_descriptor_checks_its_project(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    descriptor = project(repo, "p", MIXED)
    (repo / "p" / "conda.yaml").write_text("dependencies: []\n", encoding="utf-8")
    (repo / "lonely").mkdir()
    (repo / "lonely" / "conda.yaml").write_text("dependencies: []\n", encoding="utf-8")
    status, out, _ = check(capsys, "p/conda.yaml", str(descriptor), "lonely/conda.yaml")
    assert (status, codes(out)) == (1, ["p/MLproject:4 MLP501", "p/MLproject:7 MLP406"])


def test_folders_are_searched_as_pytest_searches_them(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for folder in (".git/x", "node_modules/x", "build", "env", "kept", "kept/deeper"):
        project(repo, folder, MIXED)
    (repo / "env" / "pyvenv.cfg").write_text("home = /usr\n", encoding="utf-8")
    project(repo, "misnamed", GOOD, name="MLproject.yml")
    project(repo, "cased", GOOD, name="MLProject")
    status, out, _ = check(capsys)
    assert status == 1
    assert sorted({line.split(":")[0] for line in out}) == [
        "kept/MLproject",
        "kept/deeper/MLproject",
        "misnamed/MLproject.yml",
    ]
    assert any(" MLP107 " in line for line in out)
    (repo / "pytest.ini").write_text("[pytest]\nnorecursedirs = deeper\n", encoding="utf-8")
    found = {line.split(":")[0] for line in check(capsys)[1]}
    assert "build/MLproject" in found
    assert "kept/deeper/MLproject" not in found


def test_usage_errors_exit_2(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project(repo, "p", MIXED)
    status, out, err = check(capsys, "missing/MLproject")
    assert (status, out) == (2, [])
    assert "mlproject-check: error: missing/MLproject: no such file or folder" in err
    status, _, err = check(capsys, "--ignore", "MLP999", "p")
    assert status == 2
    assert "unknown rule 'MLP999'" in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--no-such-flag", "p"])
    assert exit_info.value.code == 2
    (repo / "pytest.ini").write_text("[pytest]\nmlproject_strict = maybe\n", encoding="utf-8")
    status, _, err = check(capsys, "p")
    assert status == 2
    assert "mlproject_strict: 'maybe' is not true or false" in err
    (repo / "pytest.ini").write_text("[pytest]\nfilterwarnings = nonsense::\n", "utf-8")
    assert check(capsys, "p")[0] == 2
    (repo / "pytest.ini").unlink()
    (repo / "pyproject.toml").write_text("[tool.pytest.ini_options\n", encoding="utf-8")
    status, _, err = check(capsys, "p")
    assert status == 2
    assert "cannot read the pytest configuration" in err


def test_a_configured_cluster_spec_brings_the_databricks_rules(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DATABRICKS_HOST", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(repo / "no-databrickscfg"))
    project(
        repo,
        "d",
        "name: d\ndocker_env:\n  image: python:3.11\nentry_points:\n  main:\n"
        "    command: python train.py\n",
    )
    assert check(capsys, "d")[:2] == (0, [])
    (repo / "ci").mkdir()
    (repo / "ci" / "cluster.json").write_text(
        '{"spark_version": "15.4.x-scala2.12", "node_type_id": "m5.large", "num_workers": 0}',
        encoding="utf-8",
    )
    (repo / "pytest.ini").write_text(
        "[pytest]\ndatabricks_cluster_spec = ci/cluster.json\n", encoding="utf-8"
    )
    status, out, _ = check(capsys, "d")
    assert status == 1
    assert any(" MLP706 " in line for line in out)
    (repo / "pytest.ini").write_text(
        "[pytest]\ndatabricks_cluster_spec = ci/missing.json\n", encoding="utf-8"
    )
    status, _, err = check(capsys, "d")
    assert status == 2
    assert "databricks_cluster_spec" in err


def test_github_annotations(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    project(repo, "p", MIXED)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(repo))
    status, out, _ = check(capsys, str(repo / "p"))
    assert status == 1
    commands = [line for line in out if line.startswith("::")]
    assert commands == [
        "::error file=p/MLproject,line=4,title=MLP501 undeclared-placeholder::placeholder "
        "`{missing}` in entry point 'main' is not a declared parameter; MLflow fails with "
        "KeyError: 'missing' when it runs: declare `missing` under `parameters`, or write "
        "`{{missing}}` for literal braces",
        "::warning file=p/MLproject,line=7,title=MLP406 unused-parameter::parameter 'unused' "
        "of entry point 'other' is never used in its command, so its value is dropped: add "
        "`{unused}` to the command or remove it",
    ]
    assert len(out) == 4  # each problem also as its plain line


def test_the_console_script(tmp_path: Path) -> None:
    """Installed with the package, as pre-commit runs it."""
    script = Path(sys.executable).parent / "mlproject-check"
    if not script.exists():
        pytest.skip(f"{script} is not installed (pip install -e .)")
    project(tmp_path, "p", MIXED)
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"}
    done = subprocess.run(
        [str(script), "p"], cwd=tmp_path, capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("p/MLproject:4: MLP501 ")
    done = subprocess.run(
        [sys.executable, "-m", "pytest_mlproject.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "mlproject_ignore" in done.stdout
