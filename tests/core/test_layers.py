"""The floor plan holds (docs/architecture.md): no import cycles between clsuite's modules and no
import from a lower area into a higher one. Read from the source with ``ast`` (every import
counts, also the ones inside functions or under ``TYPE_CHECKING``), so nothing is executed."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "clsuite"

#: area -> the areas its modules may import (an area is the first package under clsuite/;
#: the root modules cli, cli_llm, config, profiles, queue and dvc_deps may import anything;
#: ``clsuite`` itself holds only ``__version__`` and may be imported everywhere)
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "data": {"core", "data"},
    "report": {"core", "report"},
    "models": {"core", "models"},
    "methods": {"core", "data", "methods", "models"},
    "image": {"core", "data", "report", "models", "methods", "image"},
    "llm": {"core", "data", "report", "llm"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "root"


def imports() -> dict[str, set[str]]:
    """Module -> the clsuite modules it imports (``from a import b`` counts ``a.b`` when that is a
    module, else ``a``)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                subs = {f"{base}.{a.name}" for a in node.names} & files.keys()
                found |= subs or {base}
        graph[mod] = {m for m in found if m in files and m != mod}
    return graph


def test_the_import_graph_is_read():
    graph = imports()
    assert "clsuite.core.matrix" in graph["clsuite.image.evaluate"]  # a known arrow: the check sees imports
    assert len(graph) > 100


def test_no_import_cycles():
    g = nx.DiGraph([(a, b) for a, targets in imports().items() for b in targets])
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    g.remove_edges_from([(a, b) for a, b in list(g.edges) if a.startswith(b + ".")])
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert cycles == []


@pytest.mark.parametrize("lower", sorted(ALLOWED))
def test_no_upward_or_sideways_imports(lower):
    bad = sorted(f"{mod} -> {target}" for mod, targets in imports().items() if area(mod) == lower
                 for target in targets if target != "clsuite" and area(target) not in ALLOWED[lower])
    assert bad == [], f"clsuite/{lower} may import only {sorted(ALLOWED[lower])}"


def test_image_metrics_are_pure_functions_of_records():
    """clsuite/image/metrics/ reads no params, prepared folder or registry of methods: it imports only
    core, its own modules and the table schemas (the evaluate stage, clsuite.image.grid_metrics,
    gathers what the metrics need)."""
    allowed = ("clsuite.core.", "clsuite.image.metrics", "clsuite.image.schemas")
    bad = sorted(f"{mod} -> {target}" for mod, targets in imports().items()
                 if mod.startswith("clsuite.image.metrics") for target in targets
                 if target != "clsuite" and not target.startswith(allowed))
    assert bad == []
