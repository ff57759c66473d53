"""The layers of the code base: lower layers never import higher ones, and there are no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Lowest first; a module may import its own layer and any layer before it.
LAYERS = [
    "policies",
    "tasks.core",
    "tasks.storage",
    "tasks.provenance",
    "tasks.demo",
    "tasks.stages",
    "tasks.inspection",
    "tasks.web",
    "flows",
    "cli",
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int | None:
    best = None
    for index, prefix in enumerate(LAYERS):
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(LAYERS[best])):
            best = index
    return best


def _imports(path: Path) -> set[str]:
    """Every first-party module a file imports, at the top or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in {"policies", "tasks", "flows", "cli"}}


def _sources() -> list[Path]:
    return sorted(p for top in ("policies", "tasks", "flows", "cli") for p in (ROOT / top).rglob("*.py"))


def test_every_module_belongs_to_a_layer() -> None:
    loose = [_module_name(p) for p in _sources() if _layer(_module_name(p)) is None and _module_name(p) != "tasks"]
    assert not loose, f"modules outside every layer: {loose}"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    own = _layer(_module_name(path))
    if own is None:
        return
    higher = sorted(name for name in _imports(path) if (_layer(name) or 0) > own)
    assert not higher, f"{_module_name(path)} ({LAYERS[own]}) imports higher layers: {higher}"


def test_no_import_cycles_between_modules() -> None:
    modules = {_module_name(p): p for p in _sources()}
    graph = {
        name: {target for target in _imports(path) if target in modules and target != name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")
