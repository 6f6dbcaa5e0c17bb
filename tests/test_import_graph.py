"""No import circles in ``core``: not at module load, not through a call-time import.

The graph is read from the source (every ``import`` outside ``if TYPE_CHECKING:``,
function bodies included: a call-time import that closes a circle is a circle that only
waits for the right call order), and every module of the store seam is imported first in
a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Known call-time circles outside the store seam, each a deliberate lazy import (kept here
# so a new one fails): core.errors scrubs its messages with core.secrets, which takes its
# patterns from core.errors.
ALLOWED_EDGES = {("shepherd.core.secrets", "shepherd.core.errors")}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted((ROOT / "core").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found["shepherd." + ".".join(parts)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, modules: dict[str, Path]) -> set[str]:
    """The core modules ``tree`` imports, at load or at call time (not for type checking)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child.test):
                for stmt in child.orelse:
                    visit(stmt)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    name = f"{child.module}.{alias.name}"  # a submodule, or a name of the module
                    found.add(name if name in modules else child.module)
            visit(child)

    visit(tree)
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(ast.parse(path.read_text(encoding="utf-8")), modules) - {name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle a depth-first walk meets (each as the path back to its start)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the walk's path, 2: done
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if (node, nxt) in ALLOWED_EDGES:
                continue
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return found


def test_the_graph_reader_sees_call_time_imports() -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\n"
                     "if TYPE_CHECKING:\n    from shepherd.core.store.db import Store\n"
                     "def f():\n    from shepherd.core.store.errors import StoreError\n")
    assert _imports(tree, _modules()) == {"shepherd.core.store.errors"}
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]


def test_core_has_no_import_circle() -> None:
    graph = import_graph()
    assert "shepherd.core.store.db" in graph and "shepherd.core.control" in graph
    assert cycles(graph) == []


def test_the_store_seam_sits_below_the_store() -> None:
    """Errors, rows and the vocabulary import nothing of the store; schema takes its
    errors from errors.py, and control.py never imports the store at run time."""
    graph = import_graph()
    for leaf in ("shepherd.core.store.errors", "shepherd.core.store.rows", "shepherd.core.states"):
        assert not {m for m in graph[leaf] if m.startswith("shepherd.core.store")}, leaf
    assert "shepherd.core.store.db" not in graph["shepherd.core.store.schema"]
    assert not {m for m in graph["shepherd.core.control"] if m.startswith("shepherd.core.store")}


@pytest.mark.parametrize("first", ["shepherd.core.store.errors", "shepherd.core.store.schema", "shepherd.core.store.rows",
                                   "shepherd.core.store.protocol", "shepherd.core.control", "shepherd.core.store.db",
                                   "shepherd.core.store.queries", "shepherd.core.store.leases", "shepherd.core.store.recovery"])
def test_each_store_module_imports_first_in_a_fresh_interpreter(first: str) -> None:
    code = (f"import {first}\n"
            "import shepherd.core.store.db, shepherd.core.store.schema, shepherd.core.control, shepherd.core.store\n"
            "from shepherd.core.store.db import Store, StoreError, SessionRow\n"
            "from shepherd.core.store.errors import StoreError as E\n"
            "assert E is StoreError\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
