"""What ``make demo`` runs: a fresh sample project under ``build/demo``, then
``notebooks/demo.ipynb`` in the guarded kernel under ``policies/default.yaml`` (the project as its
root) as the ``agent`` actor, each cell's
outcome checked against the expectation in its metadata, the sources checked unchanged and
nothing written outside ``scratch/``, then the audit verified.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import TextIO

from guard_kernel._package import PACKAGE_DIR
from guard_kernel.demo.workspace import Workspace, build_workspace, repo_policies
from guard_kernel.policy.load import load_policy
from guard_kernel.tools.runner import print_audit, print_report, print_summary, run_notebook


def _digests(ws: Workspace) -> dict[str, str]:
    files = [ws.warehouse, *ws.raw_files]
    return {str(p.relative_to(ws.root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _files_outside_scratch(ws: Workspace) -> set[str]:
    skip = ("scratch", ".guard_audit", "policies", "demo.ipynb")
    out = set()
    for p in ws.root.rglob("*"):
        rel = p.relative_to(ws.root)
        if p.is_file() and rel.parts[0] not in skip and rel.parts[-1] != ".ipynb_checkpoints":
            out.add(str(rel))
    return out


def demo_notebook() -> Path:
    """notebooks/demo.ipynb of this checkout."""
    nb = Path(PACKAGE_DIR).resolve().parent / "notebooks" / "demo.ipynb"
    if not nb.is_file():
        raise FileNotFoundError(f"{nb} not found: run the demo from a source checkout")
    return nb


def demo(build_dir: str | os.PathLike[str] = "build/demo", out: TextIO | None = None) -> int:
    """Build ``build/demo``, run the demo notebook as an agent under policies/default.yaml, report. 0 = as expected."""
    out = out or sys.stdout
    policies = repo_policies()
    if policies is None:
        print("demo: policies/default.yaml not found: run the demo from a source checkout", file=sys.stderr)
        return 2
    policy = policies / "default.yaml"
    ws = build_workspace(build_dir, clean=True, copy_policies=False)
    audit_dir = ws.root / ".guard_audit"
    load_policy(policy, root=str(ws.root))  # a bad policy stops here, with file:line
    digests, files = _digests(ws), _files_outside_scratch(ws)
    print(f"guard_kernel demo: {demo_notebook().name} in the guarded kernel, as actor 'agent' under {policy}\n"
          f"workspace (the policy's root): {ws.root}\n", file=out)
    result = run_notebook(demo_notebook(), cwd=ws.root, policy=policy, root=ws.root, actor="agent",
                          audit_dir=audit_dir, output=ws.root / "demo.ipynb")
    print_report(result, out)
    problems = [f"cell {c.number} ({c.title}): {why}" for c, why in result.problems]
    problems += [f"cell {c.number} ({c.title}): {c.status} without the raises-exception tag"
                 for c in result.cells if c.status in ("denied", "error") and not c.expected_error]
    if _digests(ws) != digests:
        problems.append("a source file changed: " + ", ".join(k for k, v in _digests(ws).items() if digests[k] != v))
    extra = _files_outside_scratch(ws) - files
    if extra:
        problems.append("files were written outside scratch/: " + ", ".join(sorted(extra)))
    print(f"\nexecuted notebook: {ws.root / 'demo.ipynb'}", file=out)
    if not print_audit(result.audit_files, out):
        problems.append("the audit is missing or does not verify")
    print_summary(result, out)
    if problems:
        print("\ndemo FAILED: the guard did not behave as the notebook expects:", file=out)
        for p in problems:
            print(f"  - {p}", file=out)
        return 1
    print("\ndemo OK: every cell behaved as expected; sources unchanged; nothing written outside scratch/.",
          file=out)
    return 0


__all__ = ["demo", "demo_notebook"]
