"""The code's shape, checked: arrows point one way, no import cycle, no module reaches into another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("tuning", "tasks", "app")  # the order of the arrows: app -> tasks -> tuning
LIMIT = 400  # lines a source file may have (about: a file over it does more than one job)


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(("moduletune",) + parts)
            out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every `from moduletune... import names` and `import moduletune...`, lazy ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("moduletune."):
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("moduletune.")]
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        deps = set()
        for module, names in _imports(path):
            deps |= {f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES}  # `from pkg import mod`
            if module in MODULES and not all(f"{module}.{n}" in MODULES for n in names or ["?"]):
                deps.add(module)
        graph[name] = deps - {name}
    return graph


def test_no_import_cycle():
    """No module imports, even lazily, a module that imports it back: each module can be read on its own."""
    graph, state, cycles = _graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep) :] + [dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_arrows_point_one_way():
    """tuning imports neither tasks nor app; tasks never imports app."""
    wrong = []
    for name, deps in _graph().items():
        level = PACKAGES.index(name.split(".")[1])
        wrong += [f"{name} -> {d}" for d in deps if PACKAGES.index(d.split(".")[1]) > level]
    assert not wrong, wrong


def test_no_module_uses_another_modules_private_names():
    """`from moduletune.x import _name` and `x._name` on one of our modules are how two files grow into one."""
    wrong = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for module, names in _imports(path):
            wrong += [f"{name}: from {module} import {n}" for n in names if n.startswith("_") and n != "__version__"]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("moduletune."):
                for a in node.names:
                    if f"{node.module}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname and a.name in MODULES:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                wrong.append(f"{name}: {node.value.id}.{node.attr}")
    assert not wrong, wrong


@pytest.mark.parametrize("name", sorted(MODULES))
def test_source_files_stay_small(name):
    """A file over about 400 lines does several jobs; split it along them."""
    lines = MODULES[name].read_text().count("\n")
    assert lines <= LIMIT, f"{MODULES[name].relative_to(REPO)} has {lines} lines (limit {LIMIT})"
