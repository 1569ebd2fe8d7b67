"""The rooms of the source tree, read from the code: no import cycles, and arrows that point one way.

The graph is built with ``ast`` from every ``import`` in ``dsvl_tui`` and ``engine``: at the top of a
module and inside functions alike (a function-level import is a cycle put off until the call, not
gone). Imports under ``if TYPE_CHECKING:`` are left out: they never run. ``from package import name``
is an edge to ``package.name`` when that is a module, else to the package itself (its ``__init__``).
The rules (CONTRIBUTING.md, "The rooms"):

- no cycle between ``dsvl_tui`` modules;
- nothing imports ``dsvl_tui.cli`` but the entry points (the console script names it; the UI bench's
  start-up child stands in for that script);
- ``dsvl_tui/core`` (what every front end shares without UI) imports no room above it;
- ``engine`` imports nothing from ``dsvl_tui``;
- a private module (``_name.py``) is imported only by its own package, and no name with a leading
  underscore is imported from another ``dsvl_tui`` module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dsvl_tui", "engine")
# Run as programs (``python -m``), never imported: the only importers ``dsvl_tui.cli`` may have.
ENTRY_POINTS = {"dsvl_tui.bench.startup_child"}
ABOVE_CORE = ("tui", "repl", "commands", "serve", "storage", "web", "backends", "bench")
# What core reads from a room above today, each a leaf that imports nothing from dsvl_tui. Left for
# a later step (moving them changes many importers); the list may only shrink: an entry no longer
# used fails the test.
CORE_EXCEPTIONS = {
    ("dsvl_tui.core.conversation", "dsvl_tui.storage.transcript.format"),  # the transcript's limits
    ("dsvl_tui.core.crash", "dsvl_tui.storage.paths"),  # where crash.log goes
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The ids of the import nodes under ``if TYPE_CHECKING:`` (never run)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return skipped


def _imported(module: str, is_package: bool, node: ast.Import | ast.ImportFrom,
              modules: set[str]) -> Iterator[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for each target of one import statement."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, None
        return
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    for alias in node.names:
        child = f"{source}.{alias.name}"
        yield (child, None) if child in modules else (source, alias.name)


def _known(name: str, modules: set[str]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (``a.b.c`` for ``import a.b.c.d`` too)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


class Graph:
    """Every module of the tree under ``root`` and what each imports: ``edges[a] = {b, ...}``, and the
    names taken: ``names[(a, b)] = {"x", ...}`` for ``from b import x`` in ``a``."""

    def __init__(self, root: Path, packages: tuple[str, ...] = PACKAGES) -> None:
        files = {module_name(path, root): path for package in packages
                 for path in sorted((root / package).rglob("*.py")) if "__pycache__" not in path.parts}
        modules = set(files)
        self.edges: dict[str, set[str]] = {}
        self.names: dict[tuple[str, str], set[str]] = {}
        for module, path in files.items():
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            skipped = _type_checking_only(tree)
            targets: set[str] = set()
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in skipped:
                    continue
                for name, taken in _imported(module, path.name == "__init__.py", node, modules):
                    target = _known(name, modules)
                    if target is None or target == module:
                        continue
                    targets.add(target)
                    if taken is not None:
                        self.names.setdefault((module, target), set()).add(taken)
            self.edges[module] = targets

    def cycles(self, prefix: str) -> list[list[str]]:
        """The strongly connected components of more than one module among those starting with ``prefix``
        (Tarjan's algorithm, iterative), each sorted; a cycle through other modules counts too."""
        nodes = [node for node in self.edges if node.startswith(prefix)]
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        found: list[list[str]] = []
        for start in nodes:
            if start in index:
                continue
            work = [(start, iter(sorted(self.edges[start])))]
            index[start] = low[start] = len(index)
            stack.append(start)
            on_stack.add(start)
            while work:
                node, children = work[-1]
                child = next(children, None)
                if child is not None:
                    if child not in index:
                        index[child] = low[child] = len(index)
                        stack.append(child)
                        on_stack.add(child)
                        work.append((child, iter(sorted(self.edges[child]))))
                    elif child in on_stack:
                        low[node] = min(low[node], index[child])
                    continue
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 and any(member.startswith(prefix) for member in component):
                        found.append(sorted(component))
        return sorted(found)

    def arrows(self, members: list[str]) -> list[str]:
        """The edges inside one cycle, as "a -> b" lines for the failure message."""
        inside = set(members)
        return [f"{a} -> {b}" for a in members for b in sorted(self.edges[a] & inside)]


@pytest.fixture(scope="module")
def graph() -> Graph:
    return Graph(ROOT)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_graph_sees_imports_at_the_top_inside_functions_and_relative(tmp_path: Path) -> None:
    """A guard against the checks passing vacuously: a made-up package with each kind of import."""
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "def f():\n    from .c import thing\n",
        "pkg/c.py": "import pkg.a\nthing = 1\n",
        "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
        "pkg/e.py": "from pkg.c import _hidden, thing\n",
    })
    made = Graph(tmp_path, ("pkg",))
    assert made.edges["pkg.a"] == {"pkg.b"} and made.edges["pkg.b"] == {"pkg.c"}
    assert made.edges["pkg.c"] == {"pkg.a"} and made.edges["pkg.d"] == set()
    assert made.names[("pkg.e", "pkg.c")] == {"_hidden", "thing"}
    assert made.cycles("pkg") == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_real_graph_has_the_known_arrows(graph: Graph) -> None:
    assert "dsvl_tui.core.options" in graph.edges["dsvl_tui.cli"]
    assert "dsvl_tui.commands.builtin._files" in graph.edges["dsvl_tui.commands.builtin"]
    assert "dsvl_tui.commands.builtin.opening" in graph.edges["dsvl_tui.commands.builtin._web"]  # in a function


def test_no_import_cycle_between_dsvl_tui_modules(graph: Graph) -> None:
    cycles = graph.cycles("dsvl_tui.")
    assert not cycles, "import cycles (move what both sides need into a module of its own):\n" + "\n\n".join(
        "\n".join(graph.arrows(members)) for members in cycles)


def test_nothing_imports_the_command_line_but_its_entry_points(graph: Graph) -> None:
    importers = sorted(module for module, targets in graph.edges.items() if "dsvl_tui.cli" in targets)
    assert set(importers) <= ENTRY_POINTS, f"only entry points may import dsvl_tui.cli: {importers}"
    assert not any(entry in targets for targets in graph.edges.values() for entry in ENTRY_POINTS)


def test_core_imports_no_room_above_it(graph: Graph) -> None:
    above = tuple(f"dsvl_tui.{room}" for room in ABOVE_CORE)
    arrows = {(module, target) for module, targets in graph.edges.items() if module.startswith("dsvl_tui.core")
              for target in targets if target.startswith(above)}
    assert arrows <= CORE_EXCEPTIONS, f"core imports a room above it: {sorted(arrows - CORE_EXCEPTIONS)}"
    assert CORE_EXCEPTIONS <= arrows, f"no longer imported; drop from CORE_EXCEPTIONS: {CORE_EXCEPTIONS - arrows}"
    for _, leaf in CORE_EXCEPTIONS:
        assert not {t for t in graph.edges[leaf] if t.startswith("dsvl_tui.")}, f"{leaf} is no longer a leaf"


def test_the_engine_imports_nothing_from_dsvl_tui(graph: Graph) -> None:
    arrows = sorted(f"{module} -> {target}" for module, targets in graph.edges.items()
                    if module.split(".")[0] == "engine" for target in targets if target.startswith("dsvl_tui"))
    assert not arrows, arrows


def test_private_modules_are_imported_only_by_their_own_package(graph: Graph) -> None:
    outside = sorted(f"{module} -> {target}" for module, targets in graph.edges.items() for target in targets
                     if target.startswith("dsvl_tui.") and target.rsplit(".", 1)[1].startswith("_")
                     and not target.rsplit(".", 1)[1].startswith("__")
                     and target.rsplit(".", 1)[0] not in (module, module.rsplit(".", 1)[0]))
    assert not outside, f"import these from their package instead: {outside}"


def test_no_private_name_is_imported_across_dsvl_tui_modules(graph: Graph) -> None:
    private = sorted(f"{module}: from {source} import {name}" for (module, source), names in graph.names.items()
                     if module.startswith("dsvl_tui.") and source.startswith("dsvl_tui.")
                     for name in names if name.startswith("_") and not name.startswith("__"))
    assert not private, f"a name other modules use is public (no leading underscore): {private}"
