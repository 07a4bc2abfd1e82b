"""docs/assistants.md's plain ``jupyter_client`` agent, run as written against the documented deployment
(the guarded kernelspec installed as ``python3`` in a prefix first on JUPYTER_PATH)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import source_digests

from guard_kernel.demo import Workspace
from guard_kernel.kernel import spec

DOC = Path(__file__).resolve().parents[2] / "docs" / "assistants.md"
MARK = "<!-- tested: tests/kernel/test_assistants_doc.py -->"
OUT = Path("/tmp/agent-out.csv")
"""What the example's denied cell tries to write."""


def example() -> str:
    """The Python block right after the marker in the doc."""
    text = DOC.read_text()
    assert MARK in text, "the tested example lost its marker"
    found = re.search(r"```python\n(.*?)```", text[text.index(MARK):], re.S)
    assert found is not None
    return found.group(1)


def test_the_plain_jupyter_client_agent_in_the_docs_works(project: Workspace, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    spec.install(name="python3", prefix=str(prefix), policy=str(project.policy("default")), root=str(project.root),
                 audit_dir=str(tmp_path / "audit"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_KERNEL_")}
    env["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
    env.pop("PYTHONPATH", None)
    before, existed = source_digests(project), OUT.exists()
    (tmp_path / "agent.py").write_text(example())
    out = subprocess.run([sys.executable, str(tmp_path / "agent.py")], cwd=project.root, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "policy agent-default actor agent", out.stdout
    assert lines[1] == "error CellRejected cell_rejected export.dataframe", out.stdout
    assert lines[2].startswith("instead: ") and len(lines[2]) > len("instead: "), out.stdout
    assert lines[3] == "ok truncated 500 True", out.stdout
    assert lines[4] == "check: deny", out.stdout
    assert existed or not OUT.exists()  # the denied write did not happen
    assert source_digests(project) == before
