"""The import graph runs one way: no module imports one above its layer, and no modules import each other in a loop,
counting every import (at the top, inside a function, or for type checking only: a lazy import that breaks a loop is
still the loop)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.backend_free

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
PACKAGES = {"harness": "harness", "architectures": "harness.architectures", "search_spaces": "harness.search_spaces"}

# Bottom to top, the pipeline's order: each unit (a package, or a module of harness/ itself) may import only units of
# lower layers and its own. The same table is drawn in docs/contributing.md ("Layout").
LAYERS: list[tuple[str, ...]] = [
    ("errors", "version", "dihedral", "path_guard", "atomic", "clock", "input_files"),
    ("settings",),
    ("config", "store"),
    ("registry", "backend"),
    ("cost",),
    ("terminal",),
    ("data",),
    ("run_records", "workspace", "config_files", "plans"),
    ("training",),
    ("architectures",),
    ("ranking",),
    ("reporting", "clean"),
    ("tuning", "scaling", "bench", "run_session"),
    ("search_spaces",),
    ("api",),
    ("cli", "__main__", "__init__"),
]
LAYER = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def imports(found: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the harness modules it imports anywhere in its text (`from a import b` names a.b when b is one)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in found.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
                targets = [t if t in found else node.module for t in targets]
            for target in targets:
                while target not in found and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in found and target != name:
                    edges[name].add(target)
    return edges


def unit(module: str) -> str:
    parts = module.split(".")
    if parts[:2] in (["harness", "architectures"], ["harness", "search_spaces"]):
        return parts[1]
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_unit_has_a_layer():
    missing = sorted({unit(m) for m in modules()} - set(LAYER))
    assert not missing, f"add these to LAYERS (and to docs/contributing.md): {missing}"


def test_no_import_runs_up_a_layer():
    found = modules()
    upward = [
        f"{source} -> {target} (layer {LAYER[unit(source)]} imports layer {LAYER[unit(target)]})"
        for source, targets in sorted(imports(found).items())
        for target in sorted(targets)
        if LAYER.get(unit(target), -1) > LAYER.get(unit(source), -1)
    ]
    assert not upward, "imports that run up:\n" + "\n".join(upward)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_modules_import_each_other_in_a_loop():
    assert cycles(imports(modules())) == []


def test_the_checks_see_a_loop_and_an_upward_import():
    """The checker itself: a made-up graph with one loop, and a data module importing training."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert LAYER[unit("harness.training.runner")] > LAYER[unit("harness.data.feed")]
