"""``databricks_spark_job`` projects: MLP311 against what MLflow's own ``load_project`` does
with the same descriptor, and what the run and Databricks paths make of such a project."""

from __future__ import annotations

import contextlib
import shlex
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from mlflow.projects import _project_spec

from pytest_mlproject import checks, commands, descriptor, spec
from pytest_mlproject.databricks import clusterspec, payload, preflight
from pytest_mlproject.options import checking_config
from pytest_mlproject.problems import MLprojectError, Problem

LOAD_PROJECT: Any = _project_spec.load_project

#: A plain `pytest --mlproject` with a cluster spec configured: the Databricks rules apply.
_WITH_SPEC = checking_config(
    cluster_spec=clusterspec.parse(
        '{"spark_version": "15.4.x-scala2.12", "node_type_id": "x", "num_workers": 0}'
    )
)

EP = "entry_points:\n  main:\n    command: python train.py\n"
PATH_EP = (
    "entry_points:\n  main:\n    parameters:\n      data: {type: path, default: train.py}\n"
    "    command: python train.py {data}\n"
)

#: Descriptors MLflow refuses when it loads them, and the start of its message.
REFUSED = {
    "neither": ("databricks_spark_job:\n  python_libraries: [pandas]\n", "requires either"),
    "empty mapping": ("databricks_spark_job: {}\n", "requires either"),
    "both": ("databricks_spark_job:\n  python_file: train.py\n" + EP, "does not allow setting"),
    "path parameter": ("databricks_spark_job: {}\n" + PATH_EP, "does not support entry point"),
    "docker": (
        "databricks_spark_job: {python_file: train.py}\ndocker_env: {image: x}\n",
        "does not support setting docker",
    ),
    "python_env": (
        "databricks_spark_job: {python_file: train.py}\npython_env: env.yaml\n",
        "does not support setting python",
    ),
    "conda_env": (
        "databricks_spark_job: {python_file: train.py}\nconda_env: env.yaml\n",
        "does not support setting conda",
    ),
}


def project(directory: Path, descriptor: str) -> Path:
    (directory / "MLproject").write_text(descriptor, encoding="utf-8")
    (directory / "train.py").write_text("print('trained')\n", encoding="utf-8")
    (directory / "env.yaml").write_text("dependencies: []\n", encoding="utf-8")
    return directory


def codes(directory: Path) -> list[str]:
    return [p.code for p in checks.check(directory)]


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_mlflow_refuses_is_an_error_with_its_message(tmp_path: Path, case: str) -> None:
    descriptor, mlflow_says = REFUSED[case]
    folder = project(tmp_path, descriptor)
    with pytest.raises(Exception, match=mlflow_says) as refused:
        LOAD_PROJECT(str(folder))
    ours = [p for p in checks.check(folder) if p.code == "MLP311"]
    assert ours, f"MLflow refuses it ({refused.value}) but MLP311 is silent"
    assert any(p.message.startswith(str(refused.value)) for p in ours), ours


@pytest.mark.parametrize(
    "descriptor",
    [
        "databricks_spark_job:\n  python_file: train.py\n  parameters: ['--x', '1']\n"
        "  python_libraries: [pandas]\n",
        "databricks_spark_job:\n  python_libraries: [pandas]\n" + EP,
        "databricks_spark_job:\n" + EP,  # left empty: MLflow reads no Spark job at all
    ],
    ids=["python_file", "entry points", "null"],
)
def test_what_mlflow_accepts_has_no_mlp311(tmp_path: Path, descriptor: str) -> None:
    folder = project(tmp_path, descriptor)
    LOAD_PROJECT(str(folder))
    assert "MLP311" not in codes(folder)


@pytest.mark.parametrize(
    ("descriptor", "line", "says"),
    [
        ("databricks_spark_job: [a]\n" + EP, 1, "is a list, not a mapping"),
        ("databricks_spark_job: x\n" + EP, 1, "is a string, not a mapping"),
        ("databricks_spark_job:\n  python_file: 12\n", 2, "is a number, not a file name"),
        ("databricks_spark_job:\n  python_file: gone.py\n", 2, "'gone.py' is not a file"),
        ("databricks_spark_job:\n  python_file: ../x.py\n", 2, "'../x.py' is not a file"),
        ('databricks_spark_job:\n  python_file: "a\\0b.py"\n', 2, "is not a file"),
        ("databricks_spark_job:\n  python_libraries:\n" + EP, 2, "must be a list"),
        (
            "databricks_spark_job:\n  python_file: train.py\n  parameters: [--epochs, 10]\n",
            3,
            "`databricks_spark_job.parameters` must be a list of strings",
        ),
        (
            "databricks_spark_job:\n  python_libraries: pandas\n" + EP,
            2,
            "`databricks_spark_job.python_libraries` must be a list",
        ),
    ],
)
def test_what_mlflow_crashes_on_when_it_submits(
    tmp_path: Path, descriptor: str, line: int, says: str
) -> None:
    problems = [p for p in checks.check(project(tmp_path, descriptor)) if p.code == "MLP311"]
    assert [(p.line, says in p.message) for p in problems] == [(line, True)], problems


def test_a_file_outside_the_project_is_a_warning_and_not_read(tmp_path: Path) -> None:
    """MLflow reads it from the submitting machine; we send only the project folder."""
    outside = tmp_path / "elsewhere.py"
    outside.write_text("from __future__ import annotations\n", encoding="utf-8")
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "job.py").symlink_to(outside)
    for written in ("job.py", "../elsewhere.py", str(outside)):
        project(folder, f"databricks_spark_job:\n  python_file: {written}\n")
        LOAD_PROJECT(str(folder))
        problems = checks.check(folder)
        assert [(p.code, p.line) for p in problems] == [("MLP312", 2)], problems
        assert "neither runs nor submits" in problems[0].message
        assert spec.load(folder).entry_points == {}


def test_a_future_import_breaks_the_job_mlflow_pastes_it_into(tmp_path: Path) -> None:
    folder = project(tmp_path, "databricks_spark_job:\n  python_file: job.py\n")
    (folder / "job.py").write_text('"""Doc."""\n\nfrom __future__ import annotations\n')
    [problem] = checks.check(folder)
    assert (problem.code, problem.path.name, problem.line) == ("MLP311", "job.py", 3)


def test_left_empty_parameters_are_what_mlflow_accepts(tmp_path: Path) -> None:
    folder = project(tmp_path, "databricks_spark_job:\n  python_file: train.py\n  parameters:\n")
    LOAD_PROJECT(str(folder))
    assert checks.check(folder) == []
    assert shlex.split(spec.load(folder).entry_points["main"].command or "") == [
        "python",
        "train.py",
    ]


def test_a_python_file_named_like_an_option_is_still_the_script(tmp_path: Path) -> None:
    folder = project(tmp_path, "databricks_spark_job:\n  python_file: -x.py\n")
    (folder / "-x.py").write_text("")
    main = spec.load(folder).entry_points["main"]
    assert shlex.split(commands.render_command(main, {"ignored": 1})) == ["python", "./-x.py"]


def test_unknown_keys_in_the_section_are_mlp209(tmp_path: Path) -> None:
    folder = project(tmp_path, "databricks_spark_job:\n  pythonfile: train.py\n" + EP)
    [problem] = [p for p in checks.check(folder) if p.code == "MLP209"]
    assert (problem.line, "did you mean `python_file`?" in problem.message) == (2, True)


def test_a_python_file_job_is_the_entry_point_main(tmp_path: Path) -> None:
    """MLflow submits ``python FILE PARAMETERS`` whatever entry point is asked for."""
    folder = project(
        tmp_path,
        "databricks_spark_job:\n  python_file: train.py\n"
        "  parameters: ['--name', 'a b', '{not-a-placeholder}']\n",
    )
    loaded = spec.load(folder)
    assert list(loaded.entry_points) == ["main"]
    main = loaded.entry_points["main"]
    assert (main.spark_python_file, main.line, main.parameters) == (True, 2, {})
    rendered = commands.render_command(main, {}, base_dir=folder)
    assert shlex.split(rendered) == ["python", "train.py", "--name", "a b", "{not-a-placeholder}"]
    assert checks.check(folder) == []


@pytest.mark.parametrize(
    ("descriptor", "made"),
    [
        ("databricks_spark_job:\n  python_file: train.py\n  note: x\n", True),
        ("databricks_spark_job:\n  python_file: gone.py\n", False),
        ("databricks_spark_job:\n  python_file: train.py\n  parameters: [--n, 10]\n", False),
        ("databricks_spark_job:\n  python_file: train.py\n" + EP, False),
        ("databricks_spark_job:\n  python_file: train.py\nconda_env: env.yaml\n", False),
    ],
    ids=["unknown key", "missing file", "numbers", "with entry points", "with an environment"],
)
def test_main_is_made_only_for_a_well_formed_job(
    tmp_path: Path, descriptor: str, made: bool
) -> None:
    entry_points = spec.load(project(tmp_path, descriptor)).entry_points
    assert any(e.spark_python_file for e in entry_points.values()) == made


def test_a_python_file_job_is_skipped_locally_saying_why(pytester: pytest.Pytester) -> None:
    project(pytester.path, "databricks_spark_job:\n  python_file: train.py\n")
    result = pytester.runpytest("--mlproject", "--mlproject-run", "--mlproject-strict", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED*MLproject:2: Databricks Spark job: MLflow runs its*only on Databricks*"]
    )


def test_no_environment_file_applies_to_a_spark_job(tmp_path: Path) -> None:
    """MLflow returns before it looks for python_env.yaml or conda.yaml."""
    folder = project(tmp_path, "databricks_spark_job:\n  python_libraries: [pandas]\n" + EP)
    (folder / "python_env.yaml").write_text("python: [not, valid]\n", encoding="utf-8")
    loaded = spec.load(folder)
    assert (loaded.env_type, loaded.env_file) == ("python_env", None)
    assert codes(folder) == []
    assert LOAD_PROJECT(str(folder)).env_type is None


@pytest.mark.parametrize(
    ("libraries", "packages"), [("''", ()), ("{}", ()), ("{numpy: 1, six: 2}", ("numpy", "six"))]
)
def test_python_libraries_reach_the_cluster_as_mlflow_iterates_them(
    tmp_path: Path, libraries: str, packages: tuple[str, ...]
) -> None:
    folder = project(tmp_path, f"databricks_spark_job:\n  python_libraries: {libraries}\n" + EP)
    assert preflight.dependencies(spec.load(folder)).packages == packages


def test_python_libraries_become_the_cluster_libraries(tmp_path: Path) -> None:
    folder = project(
        tmp_path, "databricks_spark_job:\n  python_libraries: [pandas==2.2, ' numpy ']\n" + EP
    )
    assert preflight.dependencies(spec.load(folder)).packages == ("pandas==2.2", "numpy")


def test_the_entry_points_of_a_spark_job_run_locally(pytester: pytest.Pytester) -> None:
    """As with `mlflow run .`, which runs them in the current environment."""
    project(pytester.path, "databricks_spark_job:\n  python_libraries: [pandas]\n" + EP)
    result = pytester.runpytest("--mlproject", "--mlproject-run", "--mlproject-strict", "-s")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*trained*"])


@pytest.mark.parametrize(
    ("command", "refused"),
    [
        ("python train.py --x 1", None),
        ("'{py} train.py'", None),  # MLflow fills the template in first
        ("python3 train.py", "starts with 'python3'"),
        ("bash run.sh", "starts with 'bash'"),
        ("|\n      python train.py\n", "'train.py\\n' is not a file"),
        ("python  train.py", "'' is not a file"),
        ("python -m train", "'-m' is not a file"),
        ("python", "'' is not a file"),
        ("python {s}", None),  # required, no default: the value decides, not the template
        ("'{s} train.py'", None),
        ("python {0}", None),  # MLP502's business
        ("python future.py", "future.py:2: `from __future__ import`"),
        ("python bom.py", "bom.py:1: bom.py starts with a byte order mark"),
    ],
)
def test_spark_job_commands_as_mlflow_splits_them(
    tmp_path: Path, command: str, refused: str | None
) -> None:
    """MLP711: MLflow splits the filled-in command on single spaces; the second word is the
    Python file it reads."""
    descriptor = (
        "databricks_spark_job: {}\nentry_points:\n  main:\n"
        "    parameters: {py: {type: string, default: python}, s: string}\n"
        f"    command: {command}\n"
    )
    (tmp_path / "future.py").write_text('"""Doc."""\nfrom __future__ import annotations\n')
    (tmp_path / "bom.py").write_bytes(b"\xef\xbb\xbfprint(1)\n")
    loaded = spec.load(project(tmp_path, descriptor))
    problems = list(preflight.entry_problems(loaded, loaded.entry_points["main"]))
    if refused is None:
        assert problems == []
    else:
        assert [refused in p.message for p in problems] == [True], problems


def test_entry_points_by_name_as_mlflow_finds_them_in_a_spark_job(tmp_path: Path) -> None:
    folder = project(tmp_path, "databricks_spark_job:\n  python_file: train.py\n")
    assert spec.load(folder).entry_point("anything").spark_python_file
    project(tmp_path, "databricks_spark_job: {}\n" + EP)
    loaded = spec.load(folder)
    assert loaded.entry_point("main").command == "python train.py"
    with pytest.raises(MLprojectError, match=r"'train\.py' is not defined in the Databricks spark"):
        loaded.entry_point("train.py")  # no implicit script entry points in a Spark job


@pytest.mark.parametrize(
    ("code", "flagged"),
    [
        (b'"""from __future__ import x"""\nprint(1)\n', False),  # a docstring, not an import
        (b'x = """\nfrom __future__ import x"""\n', False),
        (b"# -*- coding: utf-8 -*-\r\nfrom __future__ import annotations\r\n", True),
        (b"\xef\xbb\xbfprint(1)\n", True),
        (b"def broken(:\n", False),  # broken by itself: running it shows that
    ],
    ids=["docstring", "string", "crlf", "bom", "syntax error"],
)
def test_what_breaks_once_mlflow_pastes_the_script(
    tmp_path: Path, code: bytes, flagged: bool
) -> None:
    folder = project(tmp_path, "databricks_spark_job:\n  python_file: job.py\n")
    (folder / "job.py").write_bytes(code)
    assert [p.code for p in checks.check(folder)] == (["MLP311"] if flagged else [])


@pytest.mark.parametrize(
    ("libraries", "refused"),
    [("''", False), ("{}", False), ("{numpy: 1}", False), ("pandas", True), ("[1]", True)],
)
def test_python_libraries_as_mlflow_iterates_them(
    tmp_path: Path, libraries: str, refused: bool
) -> None:
    folder = project(tmp_path, f"databricks_spark_job:\n  python_libraries: {libraries}\n" + EP)
    assert ("MLP311" in codes(folder)) == refused


def test_an_absolute_python_file_inside_runs_from_where_the_project_is_unpacked(
    tmp_path: Path,
) -> None:
    for written in (str(tmp_path / "train.py"), "train.py/"):
        project(tmp_path, f"databricks_spark_job:\n  python_file: {written}\n")
        assert spec.load(tmp_path).entry_points["main"].command == "python train.py"


def test_a_python_file_job_that_cannot_run_says_where_to_look(tmp_path: Path) -> None:
    loaded = spec.load(project(tmp_path, "databricks_spark_job:\n  python_file: gone.py\n"))
    with pytest.raises(MLprojectError, match="MLP311 or MLP312 problem on the project's ::spec"):
        loaded.entry_point("main")


_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from(["", "train.py", "gone.py", "../x.py", "~nobody-mlp/x.py", "-x.py", "{p}"]),
    st.text(alphabet="ab{}~/.- \0\n", max_size=8),
)
_SPARK_JOB = st.one_of(
    _VALUE,
    st.lists(_VALUE, max_size=3),
    st.dictionaries(
        st.sampled_from(["python_file", "parameters", "python_libraries", "other"]),
        st.one_of(
            _VALUE, st.lists(_VALUE, max_size=3), st.dictionaries(st.text(max_size=3), _VALUE)
        ),
        max_size=4,
    ),
)
_COMMAND = st.sampled_from(
    ["python train.py", "python3 x", "python {p}", "python  train.py", "{p} train.py", "python"]
)


@given(
    job=_SPARK_JOB,
    entry_points=st.dictionaries(st.sampled_from(["main", "b"]), _COMMAND, max_size=2),
    env=st.sampled_from([None, "python_env", "conda_env", "docker_env"]),
)
def test_any_spark_job_gives_problems_and_payloads_never_a_traceback(
    job: Any, entry_points: dict[str, str], env: str | None
) -> None:
    """Through everything a Databricks session does before a request: the checks, the
    Databricks rules with a cluster spec, and the command of every entry point."""
    document: dict[str, Any] = {"databricks_spark_job": job}
    if entry_points:
        document["entry_points"] = {
            name: {"parameters": {"p": {"type": "string", "default": "train.py"}}, "command": c}
            for name, c in entry_points.items()
        }
    if env is not None:
        document[env] = {"image": "x"} if env == "docker_env" else "env.yaml"
    with tempfile.TemporaryDirectory() as name:
        folder = project(Path(name), yaml.safe_dump(document))
        context, found = descriptor.descriptor_problems(folder / "MLproject", _WITH_SPEC)
        assert all(isinstance(p, Problem) for p in found)
        if context is None:
            return
        for entry in context.project.entry_points.values():
            with contextlib.suppress(MLprojectError):  # a clear refusal is fine; nothing else
                payload.cluster_command(context.project, entry, {})
