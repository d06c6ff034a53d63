"""Read YAML the way MLflow does (PyYAML's safe loader), keeping the line of every key.

MLflow calls ``yaml.safe_load``; we build the same values (so parameter order, last-wins
duplicate keys, merge keys and scalar types all agree) with the C loader when PyYAML has it,
but mappings and sequences come back as :class:`YamlMap` / :class:`YamlSeq`, which remember
their lines. Before anything is constructed, the node graph is measured against
:class:`Limits`, so a hostile file (an alias bomb, a recursive anchor, deep nesting) is
refused with a line number instead of eating memory.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import yaml

# PyYAML built without libyaml has no CSafeLoader; the pure-Python one gives the same values.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_MERGE_TAG = "tag:yaml.org,2002:merge"


class Limits(NamedTuple):
    """What a descriptor (or an environment file) may cost to read."""

    max_bytes: int = 1024 * 1024
    max_depth: int = 32
    #: Nodes the document would have with every alias written out in full.
    max_expanded_nodes: int = 100_000


DEFAULT_LIMITS = Limits()


class NotAFileError(ValueError):
    """The path is a FIFO, a device, a socket or a folder: nothing to read a document from."""


def read_head(path: Path | str, max_bytes: int) -> bytes:
    """At most ``max_bytes + 1`` bytes of a regular file (one more than allowed, so the caller
    can tell the file is too large), never more, whatever the file's size.

    Raises :class:`NotAFileError` for anything but a regular file, without blocking: a FIFO
    would wait for a writer forever and ``/dev/zero`` never ends, so they are opened
    non-blocking and refused. Other failures are ``OSError``.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotAFileError("it is not a regular file")
        return handle.read(max_bytes + 1)


class YamlMap(dict[Any, Any]):
    """A mapping that knows its own line and the line of each of its keys (1-based)."""

    line: int
    key_lines: dict[Any, int]

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class YamlSeq(list[Any]):
    """A sequence that knows its own line and the line of each item (1-based)."""

    line: int
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


class YamlIssue(NamedTuple):
    """Why a document could not be read: a rule code, a line and a message."""

    code: str
    line: int
    message: str


class Duplicate(NamedTuple):
    key: Any
    line: int
    first_line: int


class YamlReadError(Exception):
    def __init__(self, issue: YamlIssue) -> None:
        super().__init__(issue.message)
        self.issue = issue


class _LineLoader(_BaseLoader):  # type: ignore[misc]
    duplicates: list[Duplicate]


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> Iterator[YamlMap]:
    data = YamlMap()
    data.line = node.start_mark.line + 1
    data.key_lines = {}
    yield data
    own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
    loader.flatten_mapping(node)
    merged = len(node.value) - own
    own_lines: dict[Any, int] = {}
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=False)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found unhashable key",
                key_node.start_mark,
            )
        line = key_node.start_mark.line + 1
        # Keys brought in by a merge (`<<: *base`) may be overridden; a key written twice
        # in the mapping itself is a mistake that PyYAML silently resolves to the last one.
        if index >= merged:
            if key in own_lines:
                loader.duplicates.append(Duplicate(key, line, own_lines[key]))
            own_lines[key] = line
        data[key] = loader.construct_object(value_node, deep=False)
        data.key_lines[key] = line


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> Iterator[YamlSeq]:
    data = YamlSeq()
    data.line = node.start_mark.line + 1
    data.item_lines = [child.start_mark.line + 1 for child in node.value]
    yield data
    data.extend(loader.construct_sequence(node))


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _measure(root: yaml.Node, limits: Limits) -> None:
    """Refuse recursive anchors, deep nesting and alias expansion past the limits.

    Walks the node graph once, without recursion, computing for every distinct node the size
    and height it would have with aliases written out; shared nodes are measured once.
    """
    sizes: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = _children(node)
        if not children_done:
            if key in open_nodes:
                continue
            open_nodes.add(key)
            stack.append((node, True))
            for child in children:
                if id(child) in open_nodes:
                    raise YamlReadError(
                        YamlIssue(
                            "MLP104",
                            child.start_mark.line + 1,
                            "recursive YAML alias: an anchor refers to itself; "
                            "write the value out instead of aliasing its own parent",
                        )
                    )
                if id(child) not in sizes:
                    stack.append((child, False))
            continue
        size, height = 1, 1
        for child in children:
            child_size, child_height = sizes[id(child)]
            size += child_size
            height = max(height, child_height + 1)
        line = node.start_mark.line + 1
        if height > limits.max_depth:
            raise YamlReadError(
                YamlIssue(
                    "MLP103",
                    line,
                    f"YAML nested more than {limits.max_depth} levels deep; "
                    "an MLproject needs a handful, flatten this value",
                )
            )
        if size > limits.max_expanded_nodes:
            raise YamlReadError(
                YamlIssue(
                    "MLP104",
                    line,
                    f"YAML aliases expand this value to more than {limits.max_expanded_nodes} "
                    "nodes; write it out without anchors and aliases",
                )
            )
        sizes[key] = (size, height)
        open_nodes.discard(key)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class _Unusual(Exception):
    """The document needs PyYAML's general constructor (merge keys, explicit tags...)."""


_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
#: Keys that ``flatten_mapping`` rewrites (merges, `=`): left to PyYAML.
_FLATTENED_KEY_TAGS = frozenset({_MERGE_TAG, "tag:yaml.org,2002:value"})
#: Scalar tags the fast path builds with the safe loader's own constructor functions.
_SCALAR_CONSTRUCTORS: dict[str, Any] = {
    tag: _BaseLoader.yaml_constructors[tag]
    for tag in (
        "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:timestamp",
        "tag:yaml.org,2002:binary",
    )
}


#: :func:`_fits` recurses once per level; limits deeper than this are left to _measure.
_MAX_RECURSION = 200


def _fits(root: yaml.Node, limits: Limits) -> bool:
    """Whether the document is certainly within the limits, found without any bookkeeping.

    Counts every node with aliases written out, and gives up (``False``) as soon as the count
    or the depth passes a limit, so a hostile document costs at most the limits' worth of
    steps here; :func:`_measure` then says exactly where and why. A recursive alias always
    passes the depth limit. Within the limits, :func:`_measure` would find nothing either:
    its sizes and heights are those counted here, and the root's are the largest.
    """
    budget = [limits.max_expanded_nodes - 1]  # the root
    max_depth = limits.max_depth
    scalar, mapping = yaml.ScalarNode, yaml.MappingNode

    def count(node: yaml.Node, depth: int) -> bool:
        children = node.value
        if node.__class__ is mapping:
            children = [child for pair in children for child in pair]
        if not children:
            return True
        budget[0] -= len(children)
        if budget[0] < 0 or depth >= max_depth:
            return False
        return all(child.__class__ is scalar or count(child, depth + 1) for child in children)

    if max_depth > _MAX_RECURSION:
        return False  # deeper than Python's stack allows: _measure walks without recursion
    return max_depth >= 1 and budget[0] >= 0 and (root.__class__ is scalar or count(root, 1))


def _build(loader: _LineLoader, root: yaml.Node) -> Any:
    """What ``construct_document`` gives, built directly from the nodes of a plain document
    (standard tags, no merge keys): no generators, no per-node bookkeeping but one dictionary
    for shared (aliased) collections. Containers are filled in the order PyYAML fills them
    (breadth first), so duplicate keys are reported in the same order. Raises
    :class:`_Unusual` for anything else, before any side effect."""
    made: dict[int, Any] = {}
    pending: list[tuple[Any, yaml.Node]] = []
    duplicates = loader.duplicates
    mapping_node, sequence_node, scalar_node = yaml.MappingNode, yaml.SequenceNode, yaml.ScalarNode

    def value(node: yaml.Node) -> Any:
        kind, tag = node.__class__, node.tag
        if kind is scalar_node:
            if tag == _STR_TAG:
                return node.value
            constructor = _SCALAR_CONSTRUCTORS.get(tag)
            if constructor is None:
                raise _Unusual
            return constructor(loader, node)
        known = made.get(id(node))
        if known is not None:
            return known
        data: YamlMap | YamlSeq
        if kind is mapping_node and tag == _MAP_TAG:
            data = YamlMap()
            data.key_lines = {}
        elif kind is sequence_node and tag == _SEQ_TAG:
            data = YamlSeq()
            data.item_lines = [child.start_mark.line + 1 for child in node.value]
        else:
            raise _Unusual
        data.line = node.start_mark.line + 1
        made[id(node)] = data
        pending.append((data, node))
        return data

    result = value(root)
    index = 0
    while index < len(pending):
        data, node = pending[index]
        index += 1
        if isinstance(data, YamlSeq):
            data.extend([value(child) for child in node.value])
            continue
        key_lines = data.key_lines
        for key_node, value_node in node.value:
            if key_node.tag in _FLATTENED_KEY_TAGS:
                raise _Unusual
            key = value(key_node)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "found unhashable key",
                    key_node.start_mark,
                )
            line = key_node.start_mark.line + 1
            if key in key_lines:
                duplicates.append(Duplicate(key, line, key_lines[key]))
            data[key] = value(value_node)
            key_lines[key] = line
    return result


def parse(data: bytes | str, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, list[Duplicate]]:
    """Parse one YAML document; return its value and the duplicate keys it had.

    Raises :class:`YamlReadError` with a rule code and a line for anything MLflow would fail
    to read, and for documents past the limits. An empty document is ``None``, as in MLflow.
    """
    loader = _LineLoader(data)
    loader.duplicates = []
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        if not _fits(node, limits):
            _measure(node, limits)
        try:
            return _build(loader, node), loader.duplicates
        except _Unusual:
            loader.duplicates = []
        return loader.construct_document(node), loader.duplicates
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        raise YamlReadError(YamlIssue("MLP101", line, f"{problem}{context}")) from None
    except yaml.YAMLError as exc:  # reader errors: control characters and the like
        raise YamlReadError(YamlIssue("MLP101", 1, str(exc))) from None
    finally:
        loader.dispose()


def parse_file(
    where: Path, data: bytes, limits: Limits = DEFAULT_LIMITS
) -> tuple[Any, list[Duplicate]]:
    """:func:`parse` for a file that several descriptors may name (an environment file, a
    settings file): the same file with the same content is parsed once per process, however
    many descriptors, rules and checks read it. ``where`` is the file's resolved path; the
    content is part of the key, so a file that changes is parsed again. The value is shared:
    callers read it and never change it."""
    value, duplicates = _parse_once(str(where), data, limits)
    return value, list(duplicates)


@functools.lru_cache(maxsize=256)
def _parse_once(where: str, data: bytes, limits: Limits) -> tuple[Any, tuple[Duplicate, ...]]:
    del where  # part of the key only: two files with the same text stay two entries
    value, duplicates = parse(data, limits)
    return value, tuple(duplicates)
