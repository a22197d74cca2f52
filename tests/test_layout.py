"""The code's shape, checked: the app's rooms, arrows one way, no import cycle, no private names across modules, no
function over the caps (80 lines; ruff's C901 holds the complexity at 15 in `make lint`)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("tuning", "tasks", "app", "cli")  # the order of the arrows: cli -> app -> tasks -> tuning
FUNCTION_LINES = 80  # lines a function may have, layout code included: a longer one does several jobs
# The app's rooms: one per tab (its layout, wiring and Gradio-free logic), and the rooms the tabs share.
TAB_ROOMS = ("experiment", "runs", "compare", "study", "weights", "playground")
SHARED_ROOMS = ("figures", "files", "public")
COMPOSING = ("__init__", "ui", "api", "server")  # all that sits directly under app/: what composes the rooms


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
    """tuning imports neither tasks, app nor cli; tasks never imports app or cli; app never imports cli."""
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


def test_app_is_rooms_and_what_composes_them():
    """Directly under app/ only the Blocks, the API endpoints and the server; everything else lives in a room, and
    each tab's room holds its tab (tab.py: layout and wiring)."""
    loose = sorted(p.stem for p in (REPO / "app").glob("*.py") if p.stem not in COMPOSING)
    assert not loose, f"modules directly under app/ that belong in a room: {loose}"
    rooms = sorted(p.name for p in (REPO / "app").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert rooms == sorted(TAB_ROOMS + SHARED_ROOMS), rooms
    assert all((REPO / "app" / room / "tab.py").is_file() for room in TAB_ROOMS)


def test_shared_rooms_never_import_a_tab():
    """figures, files and public serve every tab, so none of them may depend on one (the arrows: tab -> shared)."""
    wrong = []
    for name, deps in _graph().items():
        parts = name.split(".")
        if parts[1] == "app" and len(parts) > 2 and parts[2] in SHARED_ROOMS:
            wrong += [f"{name} -> {d}" for d in deps if d.split(".")[1] == "app" and d.split(".")[2] in TAB_ROOMS]
    assert not wrong, wrong


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("name", sorted(MODULES))
def test_functions_stay_short(name):
    """A function over 80 lines (a tab's layout too) does several jobs; split it along them."""
    path = MODULES[name]
    long = [f"{n} (line {at}): {size} lines" for n, at, size in _functions(path) if size > FUNCTION_LINES]
    assert not long, f"{path.relative_to(REPO)}: {long} (limit {FUNCTION_LINES})"


def test_every_import_of_ours_resolves_through_src():
    """From the checkout alone (no install, no import hook), src/moduletune's links lead every `moduletune.x.y`
    import to a file: what basedpyright in `make lint` and an editor's go-to-definition follow."""
    src = REPO / "src"
    unresolved = []
    for path in [*MODULES.values(), *(REPO / "tests").rglob("*.py"), *(REPO / "bench").rglob("*.py")]:
        for module, names in _imports(path):
            base = src.joinpath(*module.split("."))
            if not (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
                unresolved.append(f"{path.relative_to(REPO)}: {module}")
    assert not unresolved, unresolved
    links = {p.name: p.resolve() for p in (src / "moduletune").iterdir() if p.is_symlink()}
    assert links == {name: REPO / name for name in PACKAGES}, links


def test_no_function_is_too_complex():
    """ruff's C901 at pyproject.toml's max-complexity (15): a function with more branches does several jobs."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    out = subprocess.run(
        [ruff, "check", "--select", "C901", "--output-format", "json", *PACKAGES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = [f"{d['filename']}:{d['location']['row']} {d['message']}" for d in json.loads(out.stdout or "[]")]
    assert not found, found
