"""The layering: ``shoal/`` (the shared hall) imports no component; the components
(``tracker``, ``seeder``, ``peer``) import only ``shoal`` and themselves; ``scenarios``
drives them all; only the root ``shoal_cli`` wires everything. No module imports
another that imports it back, not even inside a function."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shoal", "tracker", "seeder", "peer", "scenarios", "shoal_cli")
ALLOWED = {
    "shoal": {"shoal"},
    "tracker": {"shoal", "tracker"},
    "seeder": {"shoal", "seeder"},
    "peer": {"shoal", "peer"},
    "scenarios": {"shoal", "tracker", "seeder", "peer", "scenarios"},
    "shoal_cli": set(PACKAGES),
}


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def _imports(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def test_each_package_imports_only_what_its_layer_allows() -> None:
    wrong = []
    for name, path in _modules():
        package = name.split(".")[0]
        for imported in _imports(ast.parse(path.read_text())):
            top = imported.split(".")[0]
            if top in PACKAGES and top not in ALLOWED[package]:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, wrong


def test_no_import_cycle_between_modules() -> None:
    modules = dict(_modules())
    graph = {
        name: {i for i in _imports(ast.parse(path.read_text())) if i in modules and i != name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name, [])
            assert cycle is None, " -> ".join(cycle)
