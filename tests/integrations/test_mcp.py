"""``guard_kernel.integrations.mcp``: where it is installed from, that nothing else imports
jupyter-mcp-server, and which answers it turns into tool errors (real messages, real classes)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.decision.messages import Code, facts, json_line
from guard_kernel.policy.actions import Action

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "guard_kernel"
PLUGIN = "guard_kernel.integrations.mcp"


def test_the_entry_point_names_the_integration_and_the_extra_installs_it() -> None:
    found = [e for e in entry_points(group="reactor.mcp.extensions") if e.name == "guard_kernel"]
    assert [e.value for e in found] == [f"{PLUGIN}:GuardKernelExtension"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    assert any(d.startswith("jupyter-mcp-server") for d in extras["mcp"]) and any(d.startswith("mcp") for d in extras["mcp"])
    assert not any("mcp" in d for d in project["project"]["dependencies"])
    for dep in extras["mcp"]:  # the tests need what the extra installs
        assert dep in extras["test"], dep


def test_no_other_module_imports_jupyter_mcp_server() -> None:
    """Statically (every import, function-level ones too) and at run time (every module imported)."""
    importers = []
    modules = []
    for f in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(f.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] in ("jupyter_mcp_server", "mcp", "reactor") for n in names):
                importers.append(name)
        if name != PLUGIN and not name.endswith("__main__"):
            modules.append(name)
    assert sorted(set(importers)) == [PLUGIN]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jupyter_mcp_server', 'mcp', 'reactor')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _denial(cls: Any) -> str:
    d = Decision(Effect.DENY, Action.SQL_DDL, "customers", (RuleHit("source:warehouse", "default.yaml", 18),),
                 "sql.ddl on customers is read-only", "Create your own tables.", 2, "DROP TABLE customers")
    return "\n".join(cls(d)._render_traceback_())


def _truncation() -> str:
    d = Decision(Effect.TRUNCATE, Action.SQL_READ, "orders", (), "orders: 500 rows returned, more exist",
                 "Aggregate.", None, None, {"returned": 500, "more": True, "total": None, "reader": "sql"})
    return "guard_kernel: orders: 500 rows returned\n" + json_line(d.as_dict())


def _answers() -> list[tuple[str, Any, str | None]]:
    from guard_kernel.decision.errors import CellRejected, GuardLocked, GuardUnavailable, PolicyViolation

    locked = "\n".join(GuardLocked("unload refused", "Start a new session.")._render_traceback_())
    return [
        ("policy-violation", ["[0] 1", _denial(PolicyViolation)], "policy_violation"),
        ("cell-rejected", {"outputs": [_denial(CellRejected)]}, "cell_rejected"),
        ("unavailable", [_denial(GuardUnavailable)], "guard_unavailable"),
        ("locked", locked, "guard_locked"),
        ("not-guarded", json_line(facts(Code.NOT_GUARDED, "kernel k is not guarded", "Deploy it.")), "not_guarded"),
        ("truncation-ran", [_truncation()], None),
        ("plain-output", ["42", "json: not json"], None),
    ]


@pytest.mark.parametrize("answer,code", [a[1:] for a in _answers()], ids=[a[0] for a in _answers()])
def test_which_answers_become_tool_errors(answer: Any, code: str | None) -> None:
    pytest.importorskip("jupyter_mcp_server", reason="the mcp extra is not installed")
    from guard_kernel.integrations.mcp import guard_denial

    found = guard_denial(answer)
    assert (found[1]["code"] if found else None) == code
