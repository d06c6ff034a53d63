"""MLP712: R scripts that load SparkR without installing it from the Databricks runtime first.

The R files are written to disk and read as text; no R interpreter is involved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_mlproject import cli, spec
from pytest_mlproject.databricks import api, preflight
from pytest_mlproject.problems import Problem

CLUSTER = '{"spark_version": "15.4.x-scala2.12", "node_type_id": "m5.large", "num_workers": 1}'
INSTALL = 'install.packages("/databricks/spark/R/pkg", repos = NULL)'
DATABRICKS_SNIPPET = (
    'if (file.exists("/databricks/spark/R/pkg")) install.packages("/databricks/spark/R/pkg", '
    'repos = NULL) else install.packages("SparkR")'
)


def project(directory: Path, command: str, files: dict[str, str]) -> Path:
    """A project whose entry point ``main`` runs ``command``, with ``files`` beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "MLproject").write_text(
        f"name: r\nentry_points:\n  main:\n    command: {json.dumps(command)}\n", encoding="utf-8"
    )
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def mlp712(directory: Path) -> list[str]:
    """Where MLP712 points, as ``file:line``, for the entry point ``main``."""
    loaded = spec.load(directory)
    problems = preflight.entry_problems(loaded, loaded.entry_points["main"])
    return [_where(p, directory) for p in problems if p.code == "MLP712"]


def _where(problem: Problem, directory: Path) -> str:
    return f"{problem.path.relative_to(directory).as_posix()}:{problem.line}"


# Each case: the command, the R files, and where MLP712 points (None: no warning).
CASES: dict[str, tuple[str, dict[str, str], str | None]] = {
    "library without install": (
        "Rscript train.R",
        {"train.R": "x <- 1\nlibrary(SparkR)\nsparkR.session()\n"},
        "train.R:2",
    ),
    "require": ("Rscript train.R", {"train.R": "require(SparkR)\n"}, "train.R:1"),
    "require, then the session": (
        "Rscript train.R",
        {"train.R": "require(SparkR)\nx <- 1\nsparkR.session()\n"},
        "train.R:1",
    ),
    "install if require fails": (
        "Rscript train.R",
        {"train.R": f"if (!require(SparkR)) {{\n  {INSTALL}\n  library(SparkR)\n}}\n"},
        None,
    ),
    "quoted package name": (
        "Rscript train.R",
        {"train.R": 'suppressPackageStartupMessages(library("SparkR"))\n'},
        "train.R:1",
    ),
    "session only": ("Rscript train.R", {"train.R": "\n\nsc <- sparkR.session()\n"}, "train.R:3"),
    "namespace call": (
        "Rscript train.R",
        {"train.R": "df <- SparkR::createDataFrame(iris)\n"},
        "train.R:1",
    ),
    "install, then load": (
        "Rscript train.R",
        {"train.R": f"{INSTALL}\nlibrary(SparkR)\nsparkR.session()\n"},
        None,
    ),
    "Databricks' snippet, then load": (
        "Rscript train.R",
        {"train.R": f"{DATABRICKS_SNIPPET}\nlibrary(SparkR)\n"},
        None,
    ),
    "the path in a variable": (
        "Rscript train.R",
        {
            "train.R": 'pkg <- "/databricks/spark/R/pkg"\ninstall.packages(pkg, repos = NULL)\n'
            "library(SparkR)\n"
        },
        None,
    ),
    "lib.loc in the load itself": (
        "Rscript train.R",
        {"train.R": 'library(SparkR,\n        lib.loc = "/databricks/spark/R/lib")\n'},
        None,
    ),
    "install after the load": (
        "Rscript train.R",
        {"train.R": f"library(SparkR)\n{INSTALL}\n"},
        "train.R:1",
    ),
    "the first load is named": (
        "Rscript train.R",
        {"train.R": "# set up\nlibrary(SparkR)\nsparkR.session()\n"},
        "train.R:2",
    ),
    "commented-out load": (
        "Rscript train.R",
        {"train.R": "# library(SparkR)\n  #sparkR.session()\nx <- 1 # library(SparkR)\n"},
        None,
    ),
    "load in strings": (
        "Rscript train.R",
        {
            "train.R": "msg <- 'library(SparkR)'\ncat(\"call sparkR.session() # later\\n\")\n"
            'raw <- r"(library(SparkR))"\n'
        },
        None,
    ),
    "an escaped quote does not end the string": (
        "Rscript train.R",
        {"train.R": 'x <- "say \\"library(SparkR)\\""\nlibrary(SparkR)\n'},
        "train.R:2",
    ),
    "other packages": (
        "Rscript train.R",
        {"train.R": "library(sparklyr)\nlibrary(SparkRx)\nobj$sparkR.session()\n"},
        None,
    ),
    "mlflow_source entry point": (
        "Rscript -e \"mlflow::mlflow_source('train.R')\" --args",
        {"train.R": "library(SparkR)\n"},
        "train.R:1",
    ),
    "mlflow_source with the install": (
        "Rscript -e \"mlflow::mlflow_source('train.R')\" --args --alpha 1",
        {"train.R": f"{INSTALL}\nlibrary(SparkR)\n"},
        None,
    ),
    "source()d helper loads": (
        "Rscript train.R",
        {"train.R": "x <- 1\nsource('R/spark.R')\n", "R/spark.R": "\nlibrary(SparkR)\n"},
        "R/spark.R:2",
    ),
    "source()d helper installs first": (
        "Rscript train.R",
        {"train.R": 'source(file = "setup.R")\nlibrary(SparkR)\n', "setup.R": INSTALL},
        None,
    ),
    "install after the source() that loads": (
        "Rscript train.R",
        {"train.R": f'source("spark.R")\n{INSTALL}\n', "spark.R": "library(SparkR)\n"},
        "spark.R:1",
    ),
    "only one level deep": (
        "Rscript train.R",
        {"train.R": 'source("a.R")\n', "a.R": 'source("b.R")\n', "b.R": "library(SparkR)\n"},
        None,
    ),
    "an earlier script installs": (
        "Rscript setup.R && Rscript train.R --epochs 1",
        {"setup.R": INSTALL, "train.R": "library(SparkR)\n"},
        None,
    ),
    "installed in the command": (
        "R CMD INSTALL /databricks/spark/R/pkg && Rscript train.R",
        {"train.R": "library(SparkR)\n"},
        None,
    ),
    "options before the script": (
        "R_LIBS=lib Rscript --vanilla train.R {alpha}",
        {"train.R": "library(SparkR)\n"},
        "train.R:1",
    ),
    "script name not literal": ("Rscript {script}", {"train.R": "library(SparkR)\n"}, None),
    "source() name not literal": (
        "Rscript train.R",
        {"train.R": 'source(file.path(here, "spark.R"))\n', "spark.R": "library(SparkR)\n"},
        None,
    ),
    "missing script": ("Rscript gone.R", {}, None),
    "missing helper": ("Rscript train.R", {"train.R": 'source("gone.R")\n'}, None),
    "not R": ("python train.py", {"train.py": "# library(SparkR)\n"}, None),
    "unterminated string": ("Rscript train.R", {"train.R": 'x <- "library(SparkR)\n'}, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_loads_without_the_install_and_only_those(tmp_path: Path, case: str) -> None:
    command, files, where = CASES[case]
    directory = project(tmp_path / "p", command, files)
    assert mlp712(directory) == ([] if where is None else [where])


def test_the_message_names_the_load_and_gives_the_snippet(tmp_path: Path) -> None:
    directory = project(tmp_path, "Rscript train.R", {"train.R": "library(SparkR)\n"})
    loaded = spec.load(directory)
    [problem] = preflight.entry_problems(loaded, loaded.entry_points["main"])
    assert problem.format(relative_to=directory) == (
        "train.R:1: MLP712 `library(SparkR)` needs SparkR, which Databricks asks an MLflow "
        "project run to install from the runtime's copy before loading it: add "
        f"`{DATABRICKS_SNIPPET}` before this line"
    )
    assert problem.entry_point == "main"


def test_scripts_that_cannot_be_read_say_nothing(tmp_path: Path) -> None:
    outside = tmp_path / "outside.R"
    outside.write_text("library(SparkR)\n", encoding="utf-8")
    directory = project(
        tmp_path / "p",
        "Rscript folder.R && Rscript fifo.R && Rscript link.R && Rscript ../outside.R "
        "&& Rscript big.R && Rscript binary.R && Rscript 'unbalanced",
        {"big.R": "library(SparkR)\n" + "#" * (2 * 1024 * 1024)},
    )
    (directory / "folder.R").mkdir()
    os.mkfifo(directory / "fifo.R")
    (directory / "link.R").symlink_to(outside)
    (directory / "binary.R").write_bytes(b"\xff\xfe\x00\x00library(Spark\xffR)\n")
    assert mlp712(directory) == []
    (directory / "MLproject").write_text(
        "name: r\nentry_points:\n  main:\n    command: Rscript binary.R && Rscript train.R\n",
        encoding="utf-8",
    )
    (directory / "train.R").write_bytes(b"x <- '\xff'\nlibrary(SparkR)\n")
    assert mlp712(directory) == ["train.R:2"]


def test_a_session_with_a_cluster_spec_warns_on_the_entry_point(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(pytester.path / "no-databrickscfg"))
    project(pytester.path, "Rscript train.R", {"train.R": "library(SparkR)\n"})
    (pytester.path / "cluster.json").write_text(CLUSTER, encoding="utf-8")

    plain = pytester.runpytest("--mlproject", "-p", "no:cacheprovider")
    plain.assert_outcomes(passed=2)
    assert "MLP712" not in plain.stdout.str()

    spec_option = ("--databricks-cluster-spec", "cluster.json")
    warned = pytester.runpytest("--mlproject", "-p", "no:cacheprovider", *spec_option)
    warned.assert_outcomes(passed=2, warnings=1)
    warned.stdout.fnmatch_lines(["*train.R:1: MLprojectWarning: MLP712 `library(SparkR)` needs*"])

    strict = pytester.runpytest(
        "--mlproject", "--mlproject-strict", "-p", "no:cacheprovider", *spec_option
    )
    strict.assert_outcomes(passed=1, failed=1)
    strict.stdout.fnmatch_lines(["FAILED MLproject::main::check*"])

    ignored = pytester.runpytest(
        "--mlproject", "--mlproject-strict", "--mlproject-ignore", "sparkr-not-installed",
        "-p", "no:cacheprovider", *spec_option,
    )  # fmt: skip
    ignored.assert_outcomes(passed=2)


def test_mlproject_check_reports_it_with_a_configured_cluster_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DATABRICKS_HOST", "DATABRICKS_CONFIG_PROFILE", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))
    project(tmp_path / "r", "Rscript train.R", {"train.R": "\nsparkR.session()\n"})
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    assert cli.main(["r"]) == 0
    assert capsys.readouterr().out == ""

    (tmp_path / "cluster.json").write_text(CLUSTER, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\ndatabricks_cluster_spec = cluster.json\n", encoding="utf-8"
    )
    assert cli.main(["r"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" needs ")[0] for line in out] == [
        f"{Path('r', 'train.R')}:2: MLP712 `sparkR.session()`"
    ]
    assert cli.main(["--strict", "r"]) == 1


def test_an_implicit_r_entry_point_is_checked_before_it_is_submitted(tmp_path: Path) -> None:
    """``mlflow run -e train.R`` runs ``Rscript -e "mlflow::mlflow_source('train.R')"``."""
    directory = project(tmp_path, "Rscript other.R", {"train.R": "x <- 1\nlibrary(SparkR)\n"})
    submission = api.prepare(directory, "train.R", cluster_spec=CLUSTER, host="https://x.net")
    assert [w.split(" needs ")[0] for w in submission.warnings] == [
        f"{directory / 'train.R'}:2: MLP712 `library(SparkR)`"
    ]
    (directory / "train.R").write_text(f"{INSTALL}\nlibrary(SparkR)\n", encoding="utf-8")
    assert api.prepare(directory, "train.R", cluster_spec=CLUSTER, host="x").warnings == ()
