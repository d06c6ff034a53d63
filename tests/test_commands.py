"""Parameter resolution and command rendering, held byte for byte to MLflow's own code.

The differential tests load the same MLproject with ``mlflow.projects._project_spec`` and
with ours, and compare ``compute_command(user_parameters, storage_dir)`` with
:func:`render_command`: the same command, or the same refusal. MLflow's download of remote
``path`` values is replaced by the identity, which is what we do (we never download).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from pytest_mlproject import spec
from pytest_mlproject.commands import (
    CommandError,
    MissingParametersError,
    ParameterError,
    ParamSpec,
    missing_parameters,
    parse_param_spec,
    parse_param_specs,
    render_command,
    resolve_parameters,
    user_parameters,
)
from pytest_mlproject.problems import MLprojectError

mlflow_spec = pytest.importorskip("mlflow.projects._project_spec")
from mlflow.exceptions import ExecutionException  # noqa: E402


def _entry(command: str | None, **parameters: Any) -> spec.EntryPoint:
    params = {}
    for name, value in parameters.items():
        kind, default = value if isinstance(value, tuple) else ("string", value)
        params[name] = spec.Parameter(name, kind, default, 1)
    return spec.EntryPoint("main", command, params, 1)


# ---------------------------------------------------------------------------------------------
# Examples of each rule


def test_user_values_win_over_defaults_and_extras_are_appended_quoted() -> None:
    entry = _entry("python greeter.py {greeting} {name}", greeting="hi", name=None)
    command = render_command(entry, {"name": "friend", "excitement": "10", "a b": "c d"})
    assert command == "python greeter.py hi friend --excitement 10 --'a b' 'c d'"


def test_values_are_quoted_so_a_value_stays_one_word() -> None:
    entry = _entry("echo {name}", name="x")
    assert render_command(entry, {"name": "friend; echo hi"}) == "echo 'friend; echo hi'"


def test_doubled_braces_are_literal() -> None:
    entry = _entry("awk '{{print $1}}' {f} ${{HOME}}", f="data.txt")
    assert render_command(entry) == "awk '{print $1}' data.txt ${HOME}"


def test_hyphenated_names_work() -> None:
    entry = _entry("train --data {data-path}", **{"data-path": "a b"})
    assert render_command(entry) == "train --data 'a b'"


def test_missing_parameters_are_all_named_in_declaration_order() -> None:
    entry = _entry("x {b} {a} {c}", b=None, a=None, c="ok")
    assert missing_parameters(entry, {}) == ["b", "a"]
    with pytest.raises(MissingParametersError) as info:
        render_command(entry, {})
    assert str(info.value) == "No value given for missing parameters: 'b', 'a'"
    assert info.value.names == ("b", "a")
    assert isinstance(info.value, ParameterError)
    assert isinstance(info.value, MLprojectError)


@pytest.mark.parametrize("default", ["", 0, False, "None"])
def test_falsy_defaults_make_a_parameter_optional(default: Any) -> None:
    entry = _entry("x {a}", a=default)
    assert render_command(entry) == f"x {shlex.quote(str(default))}"


def test_local_path_values_are_made_absolute_against_the_base_dir(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "my file.csv").write_text("x")
    entry = _entry("x {p}", p=("path", None))
    expected = shlex.quote(str(tmp_path / "data" / "my file.csv"))
    assert render_command(entry, {"p": "data/my file.csv"}, base_dir=tmp_path) == f"x {expected}"
    # file: without a host is local too, and percent-escapes are decoded as in MLflow
    assert render_command(entry, {"p": "file:data/my%20file.csv"}, tmp_path) == f"x {expected}"
    absolute = f"file://{tmp_path}/data/my%20file.csv"
    assert render_command(entry, {"p": absolute}, tmp_path) == f"x {expected}"


def test_path_values_default_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    assert render_command(_entry("x {p}", p=("path", "a.txt"))) == f"x {tmp_path / 'a.txt'}"


@pytest.mark.parametrize("value", ["missing.csv", "file:missing", "file:///nonexistent/x"])
def test_a_missing_local_path_is_refused_with_mlflows_message(tmp_path: Path, value: str) -> None:
    entry = _entry("x {p}", p=("path", None))
    with pytest.raises(ParameterError) as info:
        render_command(entry, {"p": value}, base_dir=tmp_path)
    assert str(info.value) == (
        f"Got value {value} for parameter p, but no such file or directory was found."
    )


@pytest.mark.parametrize(
    "value", ["s3://bucket/key", "dbfs:/mnt/x", "https://h/x?y=1", "", "file:"]
)
def test_remote_path_values_pass_unchanged(value: str) -> None:
    entry = _entry("x {p}", p=("path", None))
    assert render_command(entry, {"p": value}) == f"x {shlex.quote(value)}"


def test_a_uri_value_needs_a_scheme() -> None:
    entry = _entry("x {u}", u=("uri", None))
    assert render_command(entry, {"u": "s3://b/k"}) == "x s3://b/k"
    with pytest.raises(ParameterError, match=r"^Expected URI for parameter u but got data/x$"):
        render_command(entry, {"u": "data/x"})


@pytest.mark.parametrize("kind", ["path", "uri"])
def test_a_non_string_path_or_uri_is_refused_where_mlflow_crashes(kind: str) -> None:
    entry = _entry("x {p}", p=(kind, 0.5))
    with pytest.raises(
        ParameterError, match="of type float where a path or URI string is expected"
    ):
        render_command(entry)


def test_an_unparsable_url_is_refused() -> None:
    entry = _entry("x {p}", p=("uri", "http://[::1"))
    with pytest.raises(ParameterError, match="neither a local path nor a valid URI"):
        render_command(entry)


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("x {nope}", r"\{nope\} is not one of its parameters"),
        ("x {}", "empty or numbered placeholder"),
        ("x {0}", "empty or numbered placeholder"),
        ("x }", "Single '}'"),
        ("x {a.nope}", "AttributeError"),
    ],
)
def test_templates_mlflow_crashes_on_are_refused(template: str, match: str) -> None:
    with pytest.raises(CommandError, match=match):
        render_command(_entry(template, a="v"))


def test_an_entry_point_without_command_is_refused() -> None:
    with pytest.raises(CommandError, match="has no command"):
        render_command(_entry(None))


def test_resolve_parameters_splits_declared_and_extra() -> None:
    resolved = resolve_parameters(_entry("x {a}", a="1"), {"b c": "d e"})
    assert dict(resolved.declared) == {"a": "1"}
    assert dict(resolved.extra) == {"'b c'": "'d e'"}


def test_implicit_entry_points_take_every_value_as_an_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHELL", "/bin/bash")
    project = spec.Project(Path("."), None, "p", {}, "python_env", None, None)
    assert render_command(project.entry_point("train.py"), {"a": "1"}) == "python train.py --a 1"
    assert render_command(project.entry_point("run me.sh")) == "/bin/bash 'run me.sh'"


# ---------------------------------------------------------------------------------------------
# --mlproject-param specs and layers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alpha=0.5", ParamSpec("alpha", "0.5")),
        ("alpha=", ParamSpec("alpha", "")),
        ("alpha=a=b", ParamSpec("alpha", "a=b")),
        ("train:alpha=0.5", ParamSpec("alpha", "0.5", "train")),
        ("train.py:x=s3://b:k", ParamSpec("x", "s3://b:k", "train.py")),
        (":a:b=1", ParamSpec("a:b", "1")),
        ("e:a:b=1", ParamSpec("a:b", "1", "e")),
    ],
)
def test_parse_param_spec(text: str, expected: ParamSpec) -> None:
    assert parse_param_spec(text) == expected


@pytest.mark.parametrize("text", ["alpha", "=1", "train:=1", ""])
def test_parse_param_spec_refuses_malformed_specs(text: str) -> None:
    with pytest.raises(ParameterError, match="--mlproject-param: invalid parameter"):
        parse_param_spec(text)


@given(
    entry=st.one_of(st.none(), st.text(min_size=1).filter(lambda s: ":" not in s and "=" not in s)),
    name=st.text(min_size=1).filter(lambda s: "=" not in s and ":" not in s),
    value=st.text(),
)
def test_parse_param_spec_round_trips(entry: str | None, name: str, value: str) -> None:
    text = f"{name}={value}" if entry is None else f"{entry}:{name}={value}"
    assert parse_param_spec(text) == ParamSpec(name, value, entry)


def test_repeated_names_in_one_scope_are_refused_like_mlflow() -> None:
    with pytest.raises(ParameterError, match=r"^Repeated parameter: 'a' \("):
        parse_param_specs(["a=1", "a=2"])
    with pytest.raises(ParameterError, match=r"^Repeated parameter: 'e:a' "):
        parse_param_specs(["e:a=1", "e:a=2"])
    assert len(parse_param_specs(["a=1", "e:a=2", "f:a=3"])) == 3


def test_user_parameters_scoping_and_precedence() -> None:
    entry = spec.EntryPoint(
        "train",
        "x",
        {"a": spec.Parameter("a", "string", None, 1), "b": spec.Parameter("b", "float", 1, 2)},
        1,
    )
    cli = parse_param_specs(["a=cli", "other:b=no"])
    ini = parse_param_specs(["b=ini", "train:a=ini-scoped", "undeclared=no"], "ini")
    settings = [ParamSpec("b", "settings", "train"), ParamSpec("extra", "x y", "train")]
    assert user_parameters(entry, cli, ini, settings) == {
        "a": "cli",
        "b": "ini",
        "extra": "x y",
    }
    # within one layer an entry-scoped value wins over a global one
    assert user_parameters(entry, parse_param_specs(["a=g", "train:a=s"])) == {"a": "s"}
    # a global name an entry point does not declare is not passed to it
    assert user_parameters(entry, parse_param_specs(["zzz=1"])) == {}


# ---------------------------------------------------------------------------------------------
# Differential tests against MLflow


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow downloads remote ``path`` values; we pass them on unchanged. Make MLflow do
    the same so the two can be compared, and so that no test reaches the network."""
    monkeypatch.setattr(
        mlflow_spec.artifact_utils,
        "_download_artifact_from_uri",
        lambda artifact_uri, output_path: artifact_uri,
    )


def mlflow_outcome(directory: Path, entry_point: str, values: Mapping[str, Any]) -> tuple[str, str]:
    with tempfile.TemporaryDirectory() as storage, _cwd(directory):
        try:
            project = mlflow_spec.load_project(str(directory))
            entry = project.get_entry_point(entry_point)
            return "ok", str(entry.compute_command(dict(values), storage))
        except ExecutionException as exc:
            return "refused", str(exc.message)
        except Exception as exc:  # MLflow crashes; we must refuse
            return "crash", f"{type(exc).__name__}: {exc}"


def our_outcome(directory: Path, entry_point: str, values: Mapping[str, Any]) -> tuple[str, str]:
    project = spec.load(directory)
    try:
        return "ok", render_command(project.entry_point(entry_point), values, directory)
    except MLprojectError as exc:
        return "refused", str(exc)


def assert_agrees(directory: Path, entry_point: str, values: Mapping[str, Any]) -> None:
    theirs = mlflow_outcome(directory, entry_point, values)
    ours = our_outcome(directory, entry_point, values)
    if theirs[0] == "crash":
        assert ours[0] == "refused", (theirs, ours)
    else:
        assert ours == theirs


_FILES = ("data.csv", "dir/x.txt", "with space.txt", "dollar$(x).txt")
_NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,6}", fullmatch=True)
_TYPES = st.sampled_from(["string", "float", "path", "uri", "int", "str", "bool", "Path"])
#: Values a user might type, and the ones that try to break out of the quoting.
_NASTY = st.sampled_from(
    [
        "$(touch pwned)",
        "`touch pwned`",
        "a; touch pwned",
        "a && touch pwned",
        "a\ntouch pwned",
        "it's",
        '"double"',
        "x=y=z",
        "ünïcödé ✓",
        "{a}",
        "--flag",
        "-",
        "~",
        "*",
        " ",
    ]
)
_LOCAL = st.sampled_from(
    [
        *_FILES,
        "dir",
        "./data.csv",
        "dir/../data.csv",
        "file:data.csv",
        "file:with%20space.txt",
        "FILE:data.csv",
        "missing.csv",
        "",
        "s3://bucket/key",
        "dbfs:/mnt/x",
        "https://host/x.csv",
        "file://host/x",
        "c:/x",
        "http://[::1",
    ]
)
_VALUES = st.one_of(_NASTY, _LOCAL, st.text(max_size=12))
_DEFAULTS = st.one_of(
    st.none(),
    _NASTY,
    _LOCAL,
    st.text(st.characters(min_codepoint=32, max_codepoint=0x7E), max_size=8),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
)


@st.composite
def projects(draw: st.DrawFn) -> tuple[dict[str, Any], str, dict[str, Any]]:
    names = draw(st.lists(_NAMES, unique=True, max_size=4))
    parameters: dict[str, Any] = {}
    for name in names:
        kind, default = draw(_TYPES), draw(_DEFAULTS)
        form = draw(st.sampled_from(["short", "long", "long-no-type"]))
        if form == "short" and default is None:
            parameters[name] = kind
        elif form == "long-no-type":
            parameters[name] = {"default": default}
        else:
            parameters[name] = {"type": kind, "default": default}
    pieces = [f"{{{name}}}" for name in names if draw(st.booleans()) or len(names) < 2]
    pieces += draw(
        st.lists(st.sampled_from(["python t.py", "--x", "{{lit}}", "'q'", "{nope}", "}"]))
    )
    pieces = draw(st.permutations(pieces))
    command = " ".join(pieces) or "true"
    entry_point = draw(st.sampled_from(["main", "main", "main", "train.py", "run.sh", "x.R"]))
    values = draw(
        st.dictionaries(
            st.one_of(st.sampled_from(names) if names else _NAMES, _NAMES, _NASTY),
            _VALUES,
            max_size=4,
        )
    )
    main: dict[str, Any] = {"parameters": parameters, "command": command}
    if not parameters and draw(st.booleans()):
        del main["parameters"]
    document = {"name": "p", "entry_points": {"main": main}}
    return document, entry_point, values


@given(projects())
def test_rendering_agrees_with_mlflow_on_generated_projects(
    case: tuple[dict[str, Any], str, dict[str, Any]],
) -> None:
    document, entry_point, values = case
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder).resolve()
        for name in _FILES:
            (directory / name).parent.mkdir(exist_ok=True)
            (directory / name).write_text("x")
        (directory / "MLproject").write_text(yaml.safe_dump(document, allow_unicode=True))
        assert_agrees(directory, entry_point, values)


def test_corpus_commands_agree_with_mlflow(corpus: Path) -> None:
    compared = 0
    for expected_file in sorted((corpus / "expected").glob("*.json")):
        expected = json.loads(expected_file.read_text("utf-8"))
        if not expected["ok"]:
            continue
        directory = (corpus / "projects" / expected_file.stem).resolve()
        for name, entry in expected["entry_points"].items():
            filled = {
                param: f"s3://bucket/V_{param}"
                if entry["parameters"][param]["type"] == "uri"
                else f"V_{param}"
                for param in entry["required_parameters"]
            }
            for values in ({}, filled, {**filled, "extra one": "it's; $(x)"}):
                assert_agrees(directory, name, values)
                compared += 1
        assert_agrees(directory, "main", {})
    assert compared > 300


# ---------------------------------------------------------------------------------------------
# No value can inject a shell command


_ARGV = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))


@given(
    declared=st.lists(st.one_of(_NASTY, _ARGV), min_size=1, max_size=3),
    extra=st.dictionaries(
        st.one_of(_NASTY, _ARGV).filter(lambda key: key != ""),
        st.one_of(_NASTY, _ARGV),
        max_size=2,
    ),
)
def test_no_value_can_inject_a_command(declared: list[str], extra: dict[str, str]) -> None:
    names = [f"p{index}" for index in range(len(declared))]
    assume(not set(names) & set(extra))
    template = "printf '%s\\0' " + " ".join(f"{{{name}}}" for name in names)
    entry = _entry(template, **dict.fromkeys(names, "default"))
    command = render_command(entry, {**dict(zip(names, declared, strict=True)), **extra})
    with tempfile.TemporaryDirectory() as folder:
        output = subprocess.run(
            ["bash", "-c", command], cwd=folder, capture_output=True, check=True
        ).stdout
        assert os.listdir(folder) == []
    expected = [*declared]
    for key, value in extra.items():
        expected += [f"--{key}", value]
    assert output.decode("utf-8").split("\0")[:-1] == expected
