"""Property-based tests: whatever the file holds, the reader returns problems or a model.

Nothing a descriptor contains may raise anything else. And for well-formed descriptors, the
model is MLflow's own: the same entry points, parameters, defaults and commands.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st
from mlflow.projects import _project_spec

from pytest_mlproject import checks, spec
from pytest_mlproject.problems import Problem

KEYS = [
    "name",
    "entry_points",
    "main",
    "parameters",
    "command",
    "type",
    "default",
    "conda_env",
    "python_env",
    "docker_env",
    "image",
    "volumes",
    "environment",
    "python",
    "dependencies",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["{x}", "{", "}", "{{", "python train.py {alpha}", "", "None"]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=5
        ),
    ),
    max_leaves=25,
)


@contextmanager
def project_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def read_and_check(directory: Path) -> list[Problem]:
    project, problems = spec.read(directory)
    assert project is not None or problems
    found = checks.check(directory)
    assert all(isinstance(p, Problem) and p.line >= 1 for p in found)
    return found


@given(st.binary(max_size=400))
def test_any_bytes(data: bytes) -> None:
    with project_dir() as directory:
        (directory / "MLproject").write_bytes(data)
        read_and_check(directory)


@given(st.text(alphabet=st.sampled_from(list("ab:{}[]-&*!|>'\"#\n ,?%@`\t")), max_size=200))
def test_yaml_like_text(text: str) -> None:
    with project_dir() as directory:
        (directory / "MLproject").write_text(text, encoding="utf-8")
        read_and_check(directory)


@given(values)
def test_any_document(document: Any) -> None:
    with project_dir() as directory:
        (directory / "MLproject").write_text(yaml.safe_dump(document), encoding="utf-8")
        (directory / "python_env.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
        read_and_check(directory)


names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=10
)
parameter = st.one_of(
    st.sampled_from(["string", "float", "int", "path", "uri", "bool"]),
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["string", "float", "int", "path", "uri", "list[int]"]),
            "default": st.one_of(
                st.none(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)
            ),
        },
    ),
)
entry_point = st.fixed_dictionaries(
    {"command": st.text(max_size=30)},
    optional={"parameters": st.dictionaries(names, parameter, min_size=1, max_size=4)},
)
descriptor = st.fixed_dictionaries(
    {"entry_points": st.dictionaries(names, entry_point, max_size=4)},
    optional={"name": names},
)


@given(descriptor)
def test_well_formed_descriptors_read_as_mlflow_reads_them(document: dict[str, Any]) -> None:
    with project_dir() as directory:
        (directory / "MLproject").write_text(yaml.safe_dump(document), encoding="utf-8")
        ours = spec.load(directory)
        theirs = _project_spec.load_project(str(directory))  # type: ignore[no-untyped-call]
        assert list(ours.entry_points) == list(theirs._entry_points)
        for name, entry in theirs._entry_points.items():
            mine = ours.entry_points[name]
            assert mine.command == entry.command
            assert [(p.name, p.type, p.default) for p in mine.parameters.values()] == [
                (p.name, p.type, p.default) for p in entry.parameters.values()
            ]
        assert ours.env_type == theirs.env_type
        if theirs.name is not None:
            assert ours.name == theirs.name
