"""The package's shape: no import circles, configuration at the bottom, no import hidden in a
function to dodge a circle. Imports are read from the source with `ast` (every import, at module
level or inside a function; blocks under `if TYPE_CHECKING:` are left out), so a circle made by a
deferred import counts as much as one at the top."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "w2s_scale"
# the bottom floor: what config.py may import of the package (static tables and error types)
CONFIG_MAY_IMPORT = {"w2s_scale.errors", "w2s_scale.catalogue"}


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _imports(path: Path, modules: set[str]) -> list[tuple[str, int, bool]]:
    """(imported module of the package, line, at module level) for every import in the file."""
    tree = ast.parse(path.read_text())
    hidden = {id(node) for block in ast.walk(tree)
              if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
              for node in ast.walk(block)}
    top = {id(node) for node in tree.body}
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target in modules and target != here:
                found.append((target, node.lineno, id(node) in top))
    return found


def _graph() -> dict[str, list[tuple[str, int, bool]]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(files)) for name, path in files.items()}


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_circle():
    graph = _graph()
    edges = {m: {target for target, _, _ in found} for m, found in graph.items()}
    assert _circles(edges) == []


def test_the_circle_finder_finds_a_circle():
    """The finder itself: a test that could not fail would prove nothing."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _circles(edges) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_config_is_the_bottom_floor():
    found = {target for target, _, _ in _graph()["w2s_scale.config"]}
    assert found <= CONFIG_MAY_IMPORT, f"config.py imports {sorted(found - CONFIG_MAY_IMPORT)}"
    for bottom in CONFIG_MAY_IMPORT:
        assert _graph()[bottom] == [], f"{bottom} must import nothing of the package"


def test_no_package_import_is_deferred_into_a_function():
    """Deferring a heavy optional library (matplotlib, wandb, deepspeed) is fine; deferring a
    module of our own only hides a circle, which the first test would then miss at import time."""
    deferred = [f"{module} -> {target} (line {line})" for module, found in _graph().items()
                for target, line, at_top in found if not at_top]
    assert deferred == []
