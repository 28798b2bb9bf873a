"""The package's shape (docs/ARCHITECTURE.md): imports flow one way, down the floors.

The import graph is read from the source with ``ast`` (imports inside functions count too: a
lazy import is still a dependency), so a circle or an upward import fails here, not in a
user's traceback.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "wbclf"

# Lower numbers are lower floors; a module may import its own floor and the floors below.
FLOORS = {
    "ground": 0,   # config, checkpoint, metrics, device, atomic, errors
    "data": 1,
    "models": 1,
    "tracking": 2,
    "training": 3,
    "inference": 3,
    "sweeps": 3,
    "reporting": 3,
    "cli": 4,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The wbclf modules ``name`` imports (``from pkg import mod`` resolves to ``pkg.mod``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t if t in known else base for t in targets]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        # A submodule's import of its own package's __init__ (``from wbclf.sweeps import
        # trial``) is resolved to the submodule above; what remains is a real dependency.
        graph[name] = imports_of(name, path, known) - {"wbclf"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as a path that ends where it starts; None when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def floor(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return FLOORS["ground"]
    top = parts[1]
    return FLOORS.get(top, FLOORS["ground"])


def test_find_cycle_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_circle():
    assert find_cycle(import_graph()) is None


def test_imports_flow_down_the_floors():
    upward = [f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
              if floor(b) > floor(a)]
    assert upward == []


def part(module: str) -> str:
    """The folder a module belongs to (``ground`` for the top-level modules)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or parts[-1] in FLOORS else "ground"


def test_parts_on_one_floor_do_not_import_each_other():
    """data and models share floor 1, training, inference, sweeps and reporting floor 3: each
    imports the floors below and its own part, never a neighbour (the ground floor's modules
    may import each other)."""
    sideways = [f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                if floor(a) == floor(b) and part(a) != part(b) and part(a) != "ground"]
    assert sideways == []


def test_each_part_is_a_folder():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top
    for part in ("data", "models", "training", "tracking", "inference", "sweeps", "reporting"):
        assert (PACKAGE / part / "__init__.py").is_file(), part


def test_the_base_plan_never_imports_a_strategy():
    graph = import_graph()
    assert not {m for m in graph["wbclf.training.plans.base"] if m.startswith(
        "wbclf.training.plans.")}


@pytest.mark.parametrize("pattern", [r"\.\./shared", r"DESIGN §", r"DESIGN\.md"])
def test_nothing_refers_to_files_outside_the_repository(pattern):
    hits = []
    for root in ("README.md", "docs", "wbclf", "scripts", "sweeps"):
        base = REPO / root
        files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()
                                                and p.suffix in (".md", ".py", ".yaml")]
        for path in files:
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(pattern, line):
                    hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert hits == []


def test_the_field_table_in_the_docs_is_current():
    import importlib.util
    import itertools

    from wbclf.config import FIELDS, GROUPS

    grouped = list(itertools.chain.from_iterable(GROUPS.values()))
    assert sorted(grouped) == sorted(FIELDS) and len(grouped) == len(set(grouped))
    assert all(f.metadata.get("help") for f in FIELDS.values())
    spec = importlib.util.spec_from_file_location("config_table",
                                                  REPO / "scripts" / "config_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.embedded((REPO / "docs" / "ARCHITECTURE.md").read_text()) == module.table()
