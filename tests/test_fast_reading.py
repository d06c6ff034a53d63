"""The fast paths of reading give exactly what the general ones give.

``_shell.split`` stands in for ``shlex.split`` and ``_yaml.parse`` builds plain documents
without PyYAML's general constructor: on any input, the words, values, lines, duplicate keys
and errors must be the same, or a rule would report something else.
"""

from __future__ import annotations

import shlex
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from pytest_mlproject import _shell, _yaml

SHELL_TEXT = st.text(alphabet=" \t\r\n\x0b'\"\\ab=${}-é", max_size=24)


def _outcome(function: Any, text: str) -> Any:
    try:
        return function(text)
    except ValueError as exc:
        return ("ValueError", str(exc))


@given(SHELL_TEXT)
def test_split_gives_shlex_words_and_errors(text: str) -> None:
    assert _outcome(_shell.split, text) == _outcome(shlex.split, text)


def test_simple_commands_leave_out_assignments_and_untokenisable_parts() -> None:
    command = "FOO=1 BAR=2 python a.py && echo 'x y' | R_LIBS=y Rscript b.R; echo 'open | ./c.sh"
    assert _shell.simple_commands(command) == (
        ("python", "a.py"),
        ("echo", "x y"),
        ("Rscript", "b.R"),
        ("./c.sh",),
    )


def _general(data: bytes) -> Any:
    """What PyYAML's own construction makes of ``data`` with our loader, or the error."""
    loader = _yaml._LineLoader(data)
    loader.duplicates = []
    try:
        node = loader.get_single_node()
        if node is None:
            return _shape(None), []
        _yaml._measure(node, _yaml.DEFAULT_LIMITS)
        return _shape(loader.construct_document(node)), _dups(loader.duplicates)
    except _yaml.YamlReadError:
        return "YamlReadError"
    except yaml.MarkedYAMLError:
        return "MarkedYAMLError"
    finally:
        loader.dispose()


def _fast(data: bytes) -> Any:
    try:
        value, duplicates = _yaml.parse(data)
    except _yaml.YamlReadError as exc:
        return "YamlReadError" if exc.issue.code != "MLP101" else "MarkedYAMLError"
    return _shape(value), _dups(duplicates)


def _shape(value: Any) -> Any:
    if isinstance(value, _yaml.YamlMap):
        lines = [(repr(k), line) for k, line in value.key_lines.items()]
        return ("map", value.line, lines, [(repr(k), _shape(v)) for k, v in value.items()])
    if isinstance(value, _yaml.YamlSeq):
        return ("seq", value.line, value.item_lines, [_shape(v) for v in value])
    return type(value).__name__, repr(value)


def _dups(duplicates: list[_yaml.Duplicate]) -> list[tuple[str, int, int]]:
    return [(repr(d.key), d.line, d.first_line) for d in duplicates]


LINES = st.sampled_from(
    [
        "a: 1",
        "a: 2",
        "b: &x {c: 1, c: 2}",
        "d: *x",
        "e: [1, &y [2, 3], *y]",
        "<<: *x",
        "f: !!set {p, q}",
        "g: !tag 1",
        "h: 2001-12-14",
        "i: !!binary aGVsbG8=",
        "j: {<<: [*x], k: 1}",
        "? [l]\n: 1",
        "m:\n  n: 1\n  n: 2\n  o: [1, {p: 1, p: 2}]",
        "q: !!str {r: 1}",
        "s: &z [*z]",
        "t: " + "[" * 33 + "]" * 33,
        "u: yes",
        "v: .inf",
        "w: ~",
        "= : 1",
        "x: [",
    ]
)


@given(st.lists(LINES, max_size=8))
def test_parse_gives_what_pyyaml_constructs(lines: list[str]) -> None:
    data = "\n".join(lines).encode()
    assert _fast(data) == _general(data)
