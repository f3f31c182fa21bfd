"""The project's import graph between its top-level rooms, and the layering it must keep.

``python tests/import_graph.py`` prints, per room, which rooms it imports (module level and inside functions) and
any violation; it exits 1 on a violation. ``tests/test_architecture.py`` runs the same check in CI.

The layers, bottom to top: ``foundations`` imports nothing of the project; ``datasets`` and ``models`` stand on it;
``methods`` on those; ``analysis`` reads records (foundations only); ``runners`` (CLI, Hydra, store, tracking) and
``benchmarks`` sit on top of everything. Nothing imports ``runners`` except ``runners`` and ``benchmarks``.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("foundations", "datasets", "models", "methods", "analysis", "runners", "benchmarks")
ALLOWED = {
    "foundations": set(),
    "datasets": {"foundations"},
    "models": {"foundations"},
    "methods": {"foundations", "datasets", "models"},
    "analysis": {"foundations"},
    "runners": {"foundations", "datasets", "models", "methods", "analysis"},
    "benchmarks": {"foundations", "datasets", "models", "methods", "analysis", "runners"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported project module, imported inside a function) for every import statement of a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, nested) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.extend((f"{child.module}.{alias.name}", nested) for alias in child.names)
            visit(child, inner)

    visit(tree, False)
    return [(name, nested) for name, nested in found if name.split(".")[0] in ROOMS]


def modules() -> dict[str, Path]:
    return {module_name(p): p for room in ROOMS for p in sorted((ROOT / room).rglob("*.py")) if (ROOT / room).is_dir()}


def room_edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, path in modules().items():
        for target, nested in project_imports(path):
            src, dst = name.split(".")[0], target.split(".")[0]
            if src != dst:
                edges[(src, dst)].append(f"{name} -> {target}{' (in a function)' if nested else ''}")
    return edges


def module_cycles() -> list[list[str]]:
    """Import cycles between project modules (module-level imports only: what Python executes on import)."""
    known = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        for target, nested in project_imports(path):
            if nested:
                continue
            while target and target not in known:  # `from pkg.mod import fn` names pkg.mod
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    cycles, state = [], {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                walk(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(known):
        if node not in state:
            walk(node, [])
    return cycles


# Imports inside functions are allowed only where they keep start-up light, never to dodge an import circle.
LAZY_OK = {"runners.callbacks": "pandas/matplotlib are loaded only when a sweep ends and its report is written"}


def nested_imports() -> list[str]:
    return [
        f"{name} -> {target} (in a function)"
        for name, path in modules().items()
        for target, nested in project_imports(path)
        if nested and name not in LAZY_OK
    ]


def violations() -> list[str]:
    bad = [line for (src, dst), lines in sorted(room_edges().items()) if dst not in ALLOWED[src] for line in lines]
    bad += nested_imports()
    bad += ["cycle: " + " -> ".join(c) for c in module_cycles()]
    return bad


def main() -> int:
    edges = room_edges()
    for src in ROOMS:
        targets = sorted({dst for (s, dst) in edges if s == src})
        print(
            f"{src:<12} imports {', '.join(f'{t} ({len(edges[(src, t)])})' for t in targets) or 'nothing of the project'}"
        )
    bad = violations()
    print(f"\n{len(bad)} violation(s)" + (":" if bad else ""))
    for line in bad:
        print(f"  {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
