"""The layout keeps its promises: a core that never imports pytest, and no import cycles.

Both tests read the source with ``ast`` and count every import statement: at the top of a
module, inside functions, under ``if TYPE_CHECKING:`` and in ``try`` blocks alike.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest_mlproject

PACKAGE = Path(pytest_mlproject.__file__).parent
PLUGIN = "pytest_mlproject.plugin"
#: Outside the plugin package, yet allowed to use pytest: the command-line checker reads the
#: pytest configuration with pytest's own code.
CORE_EXCEPTIONS = {"pytest_mlproject.cli"}


def modules(package: Path) -> dict[str, Path]:
    """Every module of the package under ``package``, by dotted name."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = [package.name, *path.relative_to(package).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every (dotted name, line) the module imports; ``from a import b`` yields ``a.b``."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def within(name: str, known: dict[str, Path]) -> str | None:
    """The module of the package that ``name`` (a module or a name in one) lands in."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def boundary_violations(package: Path) -> list[str]:
    """Imports of pytest, ``_pytest`` or the plugin package by a core module."""
    found = modules(package)
    core = {
        name: path
        for name, path in found.items()
        if not (name == PLUGIN or name.startswith(PLUGIN + ".")) and name not in CORE_EXCEPTIONS
    }
    violations = []
    for name, path in core.items():
        for target, line in imported(name, path):
            top = target.split(".")[0]
            if top in ("pytest", "_pytest") or target == PLUGIN or target.startswith(PLUGIN + "."):
                violations.append(f"{path.relative_to(package.parent)}:{line}: imports {target}")
    return violations


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (a package's own parent package is
    initialised by Python before it, so that implicit import is not an edge)."""
    found = modules(package)
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        targets = {within(target, found) for target, _ in imported(name, path)}
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_core_imports_neither_pytest_nor_the_plugin() -> None:
    assert boundary_violations(PACKAGE) == []


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph(PACKAGE)) == []


def test_the_checks_see_imports_in_functions_and_under_type_checking(tmp_path: Path) -> None:
    package = tmp_path / "pytest_mlproject"
    (package / "plugin").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plugin" / "__init__.py").write_text("")
    (package / "plugin" / "items.py").write_text("from pytest_mlproject import spec\n")
    (package / "spec.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from _pytest.nodes import Node\n"
        "def load():\n"
        "    from .plugin.items import x\n"
    )
    (package / "cli.py").write_text("import pytest\n")

    assert boundary_violations(package) == [
        "pytest_mlproject/spec.py:3: imports _pytest.nodes.Node",
        "pytest_mlproject/spec.py:5: imports pytest_mlproject.plugin.items.x",
    ]
    assert cycles(import_graph(package)) == [
        ["pytest_mlproject.plugin.items", "pytest_mlproject.spec"]
    ]


def test_private_pytest_apis_are_used_through_one_module() -> None:
    found = modules(PACKAGE)
    users = {
        name
        for name, path in found.items()
        for target, _ in imported(name, path)
        if target.split(".")[0] == "_pytest"
    }
    assert users == {"pytest_mlproject.plugin.pytest_private"}


def test_the_architecture_doc_names_every_module() -> None:
    """docs/architecture.md has a row for every module (the fake workspace as one package), so
    the page cannot fall behind the tree."""
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = [line.split("|")[1].strip() for line in doc.splitlines() if line.startswith("| `")]
    named = {cell.strip("`") for cell in rows}
    missing = []
    for path in modules(PACKAGE).values():
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("testing/"):
            relative = "testing/"
        elif relative in {"__init__.py", "databricks/__init__.py"}:
            continue
        if relative not in named:
            missing.append(relative)
    assert missing == []
