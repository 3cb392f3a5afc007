"""The product's and the stand-ins' modules import each other without cycles, and the
product never imports the stand-ins (they live apart: devstack/ is test infrastructure)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agents", "devstack", "clients")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    mods["agent"] = ROOT / "agent.py"
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Modules of ours imported at module level (what runs at import time)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            subs = {f"{base}.{a.name}" for a in node.names} & mods.keys()
            found |= subs
            if len(subs) < len(node.names):
                found.add(base)
    return {m for m in found if m in mods and m != name}


def _graph_here() -> dict[str, list[str]]:
    mods = _modules()
    return {m: sorted(_imports(m, p, mods)) for m, p in mods.items()}


def _graph() -> dict[str, set[str]]:
    """Parsed in a process of its own: CPython 3.11's AST conversion keeps one process-wide
    recursion counter, and a parse in another thread of the test process (a job thread of a
    worker from an earlier test) makes it fail with 'recursion depth mismatch'."""
    out = subprocess.run(
        [sys.executable, "-c", "import json, tests.test_import_graph as g; print(json.dumps(g._graph_here()))"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    return {m: set(deps) for m, deps in json.loads(out.stdout).items()}


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def test_the_product_does_not_import_the_stand_ins():
    product = {m: deps for m, deps in _graph().items() if m.split(".")[0] == "agents"}
    leaks = {m: sorted(d for d in deps if d.startswith("devstack")) for m, deps in product.items()}
    assert {m: d for m, d in leaks.items() if d} == {}
