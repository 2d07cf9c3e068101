"""Imports run one way: supervisor -> worker -> servers -> the shared modules, with no cycles.

Read from the source with ast, so imports under ``if TYPE_CHECKING:`` and
inside functions count too: a cycle hidden for the type checker is still a
cycle for whoever reads or moves the code.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[2] / "prefork"

# Higher layers may import lower ones, never the reverse.  Modules directly
# in prefork/ are shared by all, except the command-line front.
LAYERS = ["cli", "supervisor", "worker", "servers", "shared"]
FRONT = {"prefork.cli", "prefork.commands", "prefork.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> str:
    if module in FRONT:
        return "cli"
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in ("supervisor", "worker", "servers"):
        return parts[1]
    if len(parts) == 2 and parts[1] in ("supervisor", "worker", "servers"):
        return parts[1]
    return "shared"


def imports_of(path: Path, module: str) -> Set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("prefork")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("prefork"):
                continue
            for alias in node.names:     # 'from . import x' may name a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
    return {m for m in found if m in MODULES and m != module}


MODULES: Dict[str, Path] = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH: Dict[str, Set[str]] = {m: imports_of(p, m) for m, p in MODULES.items()}


def test_imports_run_down_the_layers() -> None:
    upward = [f"{m} -> {t}" for m, targets in sorted(GRAPH.items()) for t in sorted(targets)
              if LAYERS.index(layer(t)) < LAYERS.index(layer(m))]
    assert not upward, "imports that run back up:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    cycles: List[List[str]] = []
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_is_read() -> None:
    assert "prefork.servers.contracts" in GRAPH["prefork.worker.loop"]
    assert "prefork.worker.process" in GRAPH["prefork.supervisor.spawn"]
