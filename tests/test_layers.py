"""The import order of the package: a stage imports only the stages below it, and no module imports a circle.

cli/, demo/ → tools/, integrations/ → enforce/ → analysis/ → decision/ → audit/ → policy/ → _package (every import,
function-level ones included; a stage not listed here, such as a new top-level one, may import any).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "guard_kernel"
RANK = {"_package": 0, "policy": 1, "audit": 2, "decision": 3, "analysis": 4, "enforce": 5, "tools": 6,
        "integrations": 6, "cli": 7, "demo": 7}


def _module(f: Path) -> str:
    parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, *, top_level_only: bool) -> list[str]:
    nodes = ast.iter_child_nodes(tree) if top_level_only else ast.walk(tree)
    out: list[str] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return [n for n in out if n.startswith("guard_kernel.")]


def _sources() -> dict[str, ast.AST]:
    return {_module(f): ast.parse(f.read_text()) for f in sorted(PACKAGE.rglob("*.py"))}


def test_no_stage_imports_a_stage_above_it() -> None:
    bad = []
    for mod, tree in _sources().items():
        parts = mod.split(".")
        if len(parts) < 2 or parts[1] not in RANK:
            continue  # guard_kernel/__init__ and __main__ sit on top
        for name in _imports(tree, top_level_only=False):
            other = name.split(".")[1]
            if other in RANK and RANK[other] > RANK[parts[1]]:
                bad.append(f"{mod} imports {name}")
    assert not bad


def test_no_import_circles() -> None:
    sources = _sources()
    graph = {m: {n for n in _imports(t, top_level_only=True) if n in sources and n != m} for m, t in sources.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " → ".join([*path[path.index(n):], n]))
            if n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
