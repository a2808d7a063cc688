"""The package's floor plan: layers that follow the data flow, no import circle, short modules.

Every import of every module is read from its source (module-level and function-level alike)
and checked against :data:`LAYERS`: a module may import its own subpackage and the layers below
it, never a layer above it or a sibling package of its own layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Subpackages (or root modules) of fscil_bench from the bottom up, in the order data flows.
LAYERS: list[set[str]] = [
    {"registry", "cache", "defaults", "distributed"},  # leaves
    {"schedules"},  # which classes and samples arrive when
    {"data"},  # images on disk and in memory, dataset families
    {"metrics", "models", "protocol"},  # pure metrics; networks; the method contract
    {"__init__"},  # the public API (re-exports the protocol)
    {"benchmarks"},  # schedule + data + transforms under a versioned name
    {"toolkit"},  # what methods reuse
    {"integrations"},  # adapters to Avalanche and learn2learn
    {"baselines"},  # the built-in methods
    {"results"},  # the store of records
    {"run"},  # runner, grid, executors, method discovery
    {"reporting"},  # leaderboards
    {"cli"},
]
MAX_LINES = 450


def module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for the package and the built-in methods."""
    out = {}
    for path in (REPO / "fscil_bench").rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in (REPO / "baselines").glob("*.py"):
        name = "fscil_bench.baselines" + ("" if path.stem == "__init__" else f".{path.stem}")
        out[name] = path
    return out


MODULES = module_files()


def imports_of(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports (``from a.b import c`` is ``a.b.c`` when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        found |= {t for t in targets if t.split(".")[0] == "fscil_bench" and t != name}
    return found


def layer_of(name: str) -> int:
    part = name.split(".")[1] if "." in name else "__init__"
    for i, layer in enumerate(LAYERS):
        if part in layer:
            return i
    raise AssertionError(f"{name} is in no layer of LAYERS; add its subpackage there")


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def test_every_import_goes_down_the_layers():
    wrong = []
    for name, targets in sorted(GRAPH.items()):
        for target in sorted(targets):
            own, theirs = name.split(".")[:2], target.split(".")[:2]
            if own == theirs:
                continue  # within one subpackage
            if layer_of(target) >= layer_of(name):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(wrong)


def test_there_is_no_import_circle():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)


def test_no_module_is_longer_than_the_limit():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_checker_sees_an_upward_import_and_a_circle(tmp_path):
    """The two checks above would catch a violation: a toy graph with one of each."""
    assert layer_of("fscil_bench.cli") > layer_of("fscil_bench.run.runner") > layer_of("fscil_bench.data.arrays")
    assert "fscil_bench.data.arrays" in GRAPH["fscil_bench.protocol"]  # edges are read
    bad = tmp_path / "mod.py"
    bad.write_text("from fscil_bench.cli import main\n")
    assert imports_of("fscil_bench.data.mod", bad) == {"fscil_bench.cli"}


def test_every_package_folder_is_listed_for_installation():
    """A subpackage missing from pyproject.toml's list would vanish from an installed copy."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "fscil_bench").rglob("__init__.py")}
    assert folders - listed == set()
    assert {"fscil_bench.baselines", "fscil_bench.sessions"} <= listed
