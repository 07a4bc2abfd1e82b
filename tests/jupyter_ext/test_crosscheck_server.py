"""End to end through a real Jupyter Server: the server records every execute_request it
forwards (the server guard's channels, issue 15), a cell breaks the kernel's guard, and
``guard-kernel audit crosscheck`` names the cells the kernel never recorded.

The server-side record is the server guard's (``jupyter_ext.channels``, built on its own
branch): until it is merged this module is skipped.  The contract both sides follow is
/work/briefs/server-record.md; tests/audit/test_crosscheck.py checks crosscheck itself against
records written in that format.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("jupyter_ext.channels", reason="the server-side record of forwarded cells (issue 15) is not here")

from conftest import kernel_env
from pytest_jupyter.jupyter_core import jp_asyncio_loop  # noqa: F401  (autouse again here)
from pytest_jupyter.jupyter_server import jp_server_cleanup  # noqa: F401

from guard_kernel.audit import read_records, verify
from guard_kernel.audit.session import read_header
from guard_kernel.cli.main import main
from guard_kernel.demo import Workspace

# Replacing the sink alone is caught now (the guard pins its recording path, enforce/ipython/pins.py);
# unregistering the guard's cell callbacks as well is out of a %load_ext guard's reach: only the
# server's record shows what ran after it.
TAMPER = ("ip = get_ipython()\nfor e in ('pre_run_cell', 'post_run_cell'):\n    ip.events.callbacks[e].clear()\n"
          "import guard_kernel.decision.guard as g\ng.current().audit.write = lambda kind, **f: dict(f)")
"""A cell that unregisters the guard's cell callbacks and replaces its sink ``write`` (as tests/audit/test_crosscheck.py's SILENCE)."""


@pytest.fixture(name="audit_dir")
def server_audit_dir(project: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One audit folder for the server's chain and its kernels' (the kernels inherit the server's environment)."""
    folder = tmp_path / "audit"
    for name, value in kernel_env(project.policy("default"), "agent", folder, project.root).items():
        if name.startswith("GUARD_KERNEL_"):
            monkeypatch.setenv(name, value)
    return folder


@pytest.fixture(name="jp_root_dir")
def project_root(project: Workspace) -> Path:
    return Path(project.root)


@pytest.fixture(name="jp_server_config")
def crosscheck_server_config(audit_dir: Path) -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_ext": True}},
            "GuardExtension": {"audit_dir": str(audit_dir)}}


def _message(code: str, session: str) -> dict[str, Any]:
    return {"header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "username": "reviewer",
                       "session": session, "version": "5.3",
                       "date": datetime.datetime.now(datetime.UTC).isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": False}}


async def _execute(ws: Any, code: str, session: str) -> tuple[str, str]:
    """Send one cell over the server's websocket; its msg_id and reply status."""
    msg = _message(code, session)
    await ws.write_message(json.dumps(msg))
    while True:
        raw = await ws.read_message()
        assert raw is not None, "the websocket closed"
        reply = json.loads(raw)
        if reply.get("msg_type") == "execute_reply" and reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return msg["header"]["msg_id"], reply["content"]["status"]


async def test_crosscheck_flags_the_cells_a_subverted_kernel_never_recorded(
        jp_fetch: Any, jp_ws_fetch: Any, audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kernel = json.loads((await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))).body)
    kid = kernel["id"]
    ws = await jp_ws_fetch("api", "kernels", kid, "channels")
    session = uuid.uuid4().hex
    ids: dict[str, str] = {}
    try:
        for name, code in [("load", "%load_ext guard_kernel"), ("plain", "x = 40 + 2"),
                           ("denied", "open('data/raw/e2e.csv', 'w').write('x')"),
                           ("tamper", TAMPER), ("unrecorded", "y = x + 1")]:
            ids[name], status = await _execute(ws, code, session)
            assert (status == "ok") == (name != "denied"), (name, status)
    finally:
        ws.close()
        await jp_fetch("api", "kernels", kid, method="DELETE")

    [server] = sorted(audit_dir.glob("server-*.jsonl"))
    assert verify(str(server)).ok
    assert (read_header(str(server)) or {}).get("role") == "server"
    forwarded = [r for r in read_records(str(server)) if r.get("kind") == "server.execute"]
    by_msg = {r["request"]["msg_id"]: r for r in forwarded if r["kernel"]["id"] == kid}
    assert set(ids.values()) <= set(by_msg)  # every cell the server forwarded is in its chain
    rec = by_msg[ids["unrecorded"]]
    assert rec["code"] == "y = x + 1" and rec["code_sha256"] == hashlib.sha256(b"y = x + 1").hexdigest()
    assert rec["identity"]["username"] and rec["client"]["ip"] and rec["actor"] in ("agent", "human")
    assert rec["resource"] == f"kernel/{kid}" and rec["decision"] == "allow"
    assert rec["kernel"]["name"] == "python3" and rec["kernel"]["requested"] == "python3"
    assert rec["request"]["session"] == session and rec["request"]["username"] == "reviewer"

    kernels = [p for p in audit_dir.glob("*.jsonl")
               if not p.name.startswith("server-") and ((read_header(str(p)) or {}).get("kernel") or {}).get("id") == kid]
    assert len(kernels) == 1, kernels  # the kernel audit's header names the server's kernel id
    rc = main(["audit", "crosscheck", str(server), str(kernels[0]), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert [m["msg_id"] for m in report["missing"]] == [ids["tamper"], ids["unrecorded"]]
    assert report["counts"]["recorded"] == 2 and report["counts"]["before"] == 1
