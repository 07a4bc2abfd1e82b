"""Kernels and terminals of a guarded server: only guarded kernels start, whatever name is asked for;
no terminals; the server stamps who sent a cell, and the kernel decides it for that actor.

A real Jupyter Server (pytest-jupyter) with real guarded kernels started by it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1, serialize_msg_to_ws_v1
from pytest_jupyter.jupyter_core import jp_asyncio_loop  # noqa: F401  (autouse again here)
from pytest_jupyter.jupyter_server import jp_server_cleanup  # noqa: F401
from server_setup import AGENT_TOKEN, HUMAN_TOKEN, auth, guard_config, refused, server_policy, server_records

from guard_kernel.audit import read_records
from guard_kernel.demo import Workspace
from guard_kernel.kernel import spec
from jupyter_ext.channels import V1
from jupyter_ext.files import GuardForbidden
from jupyter_ext.kernels import PROVIDED_NAME

HUMAN_SPEC = "guarded-human"
SHELL_CELL = "import os\nos.system('true')"


@pytest.fixture
def audit(project: Workspace) -> Path:
    return project.root / "audit"


@pytest.fixture
def kernel_audit(project: Workspace) -> Path:
    return project.root / "kernel-audit" / uuid.uuid4().hex[:8]


@pytest.fixture
def jp_root_dir(project: Workspace) -> Path:
    return project.root


async def _direct(serverapp: Any, kid: str, msg_type: str, content: dict[str, Any],
                  metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """A request sent straight to a kernel the server started (its own ZMQ client: no websocket, no
    stamp from the server); the reply's content."""
    kc = serverapp.kernel_manager.get_kernel(kid).client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        msg = kc.session.msg(msg_type, content, metadata=metadata or {})
        kc.shell_channel.send(msg)
        while True:
            reply = await kc.get_shell_msg(timeout=120)
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                return dict(reply["content"])
    finally:
        kc.stop_channels()


async def _kernel_info(serverapp: Any, kid: str) -> dict[str, Any]:
    return await _direct(serverapp, kid, "kernel_info_request", {})


class TestOnlyGuardedKernels:
    @pytest.fixture
    def jp_server_config(self, project: Workspace, audit: Path) -> dict[str, Any]:
        # no guarded kernelspec is installed in pytest-jupyter's environment: the extension provides one
        return guard_config(project, audit, only_guarded_kernels=True)

    async def test_every_start_is_guarded(self, jp_fetch: Any, jp_serverapp: Any) -> None:
        specs = json.loads((await jp_fetch("api", "kernelspecs")).body)
        assert set(specs["kernelspecs"]) == {PROVIDED_NAME} and specs["default"] == PROVIDED_NAME
        by_name = json.loads((await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))).body)
        # jupyter-mcp-server running inside the server: start_kernel(path=…) and no name
        nameless = await jp_serverapp.kernel_manager.start_kernel(path="scratch")
        session = json.loads((await jp_fetch("api", "sessions", method="POST", body=json.dumps(
            {"path": "scratch/nb.ipynb", "type": "notebook", "kernel": {"name": "echo"}}))).body)
        kids = {"python3": by_name["id"], None: nameless, "echo": session["kernel"]["id"]}
        for kid in kids.values():
            assert jp_serverapp.kernel_manager.get_kernel(kid).kernel_name == PROVIDED_NAME
        info = await _kernel_info(jp_serverapp, nameless)
        assert info["guard"]["guarded"] is True and info["guard"]["actor"] == "agent", info.get("guard")
        assert info["guard"]["policy"] == "agent-default"
        # a client's own guard_actor never raises an agent kernel to human (the kernel alone decides that)
        raised = await _direct(jp_serverapp, nameless, "execute_request",
                               {"code": SHELL_CELL, "silent": False, "store_history": True, "user_expressions": {},
                                "allow_stdin": False, "stop_on_error": False}, {"guard_actor": "human"})
        assert raised["status"] == "error" and "agent-no-egress" in "\n".join(raised["traceback"]), raised
        starts = {r["kernel"]["id"]: r["kernel"] for r in server_records(jp_serverapp) if r["kind"] == "kernel.start"}
        for requested, kid in kids.items():
            assert starts[kid] == {"id": kid, "name": PROVIDED_NAME, "requested": requested}

    async def test_terminals_refused(self, jp_fetch: Any, jp_serverapp: Any) -> None:
        code, body = await refused(jp_fetch("api", "terminals", method="POST", body="{}"))
        assert code == 403 and body["guard"]["rules"][0]["id"] == "no-terminals"
        manager = jp_serverapp.web_app.settings["terminal_manager"]
        with pytest.raises(GuardForbidden):  # a server-side tool asking the manager directly
            manager.create()
        assert manager.list() == []
        kinds = [(r["kind"], r["decision"]) for r in server_records(jp_serverapp)]
        assert kinds.count(("terminal", "deny")) == 2


class TestWhoSentACell:
    """A guarded kernelspec whose actor is human; the server stamps agent for an agent identity."""

    @pytest.fixture
    def jp_server_config(self, project: Workspace, audit: Path, kernel_audit: Path, jp_environ: Any) -> dict[str, Any]:
        spec.install(name=HUMAN_SPEC, user=True, policy=str(server_policy(project)), root=str(project.root),
                     actor="human", audit_dir=str(kernel_audit))
        return guard_config(project, audit, only_guarded_kernels=True, guarded_kernel_name=HUMAN_SPEC)

    async def test_server_stamps_the_identity_and_the_kernel_lowers(self, jp_fetch: Any, jp_ws_fetch: Any,
                                                                    jp_serverapp: Any, kernel_audit: Path) -> None:
        kid = json.loads((await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}),
                                         headers=auth(HUMAN_TOKEN))).body)["id"]
        assert jp_serverapp.kernel_manager.get_kernel(kid).kernel_name == HUMAN_SPEC
        # JupyterLab's wire protocol (v1, binary) for the agent, the legacy JSON one for the others
        agent = await _execute(jp_ws_fetch, kid, AGENT_TOKEN, SHELL_CELL, {"guard_actor": "human"}, v1=True)
        # ipykernel serves execute_request on the control channel too: stamped there as well
        control = await _execute(jp_ws_fetch, kid, AGENT_TOKEN, SHELL_CELL, {"guard_actor": "human"},
                                 channel="control")
        human = await _execute(jp_ws_fetch, kid, HUMAN_TOKEN, SHELL_CELL, {})
        raised = await _execute(jp_ws_fetch, kid, HUMAN_TOKEN, "1 + 1", {"guard_actor": "agent"})
        # kept verdicts are a human's: the lowered request must not reuse them (row cap human 10000, agent 500)
        rows = "import duckdb\n_con = globals().get('_con') or duckdb.connect()\n" \
               "print(len(_con.execute('SELECT * FROM range(2000)').fetchall()))"
        as_human = await _execute(jp_ws_fetch, kid, HUMAN_TOKEN, rows, {})
        as_agent = await _execute(jp_ws_fetch, kid, AGENT_TOKEN, rows, {})
        again_human = await _execute(jp_ws_fetch, kid, HUMAN_TOKEN, rows, {})
        assert [as_human["stdout"].split()[0], as_agent["stdout"].split()[0], again_human["stdout"].split()[0]] \
            == ["2000", "500", "2000"], (as_human, as_agent, again_human)
        assert agent["status"] == "error" and control["status"] == "error", (agent, control)  # shell.exec denied
        assert human["status"] == "ok", human  # the kernelspec's human: a warning, it runs
        assert raised["status"] == "ok"  # a client's own stamp counts for nothing: the server's stands

        execs = {r["request"]["msg_id"]: r for r in server_records(jp_serverapp) if r["kind"] == "server.execute"}
        assert execs[agent["msg_id"]]["actor"] == "agent" and execs[agent["msg_id"]]["identity"]["agent"] is True
        assert execs[control["msg_id"]]["actor"] == "agent"
        assert execs[human["msg_id"]]["actor"] == "human" and execs[human["msg_id"]]["identity"]["username"] == "ana"
        assert execs[raised["msg_id"]]["actor"] == "human"
        rec = execs[agent["msg_id"]]
        assert rec["kernel"] == {"id": kid, "name": HUMAN_SPEC, "requested": "python3"}
        assert rec["code"] == SHELL_CELL and rec["resource"] == f"kernel/{kid}" and rec["client"]["ip"]

        records = [r for f in sorted(kernel_audit.glob("*.jsonl")) for r in read_records(str(f))]
        lowered = [r for r in records if r["kind"] == "actor"]
        assert [r["request"]["msg_id"] for r in lowered] == [agent["msg_id"], control["msg_id"], as_agent["msg_id"]]
        assert {r["acting_as"] for r in lowered} == {"agent"}
        shell = [r["decision"] for r in records if r.get("action") == "shell.exec"]
        assert "deny" in shell and "warn" in shell, shell  # the agent's cell denied, the human's warned


async def _execute(ws_fetch: Any, kid: str, token: str, code: str, metadata: dict[str, Any], *,
                   v1: bool = False, channel: str = "shell") -> dict[str, Any]:
    """Send one execute_request over the kernel's websocket as *token*'s identity; its reply content."""
    ws = await ws_fetch("api", "kernels", kid, "channels", headers=auth(token), subprotocols=[V1] if v1 else None)
    assert (ws.selected_subprotocol == V1) is v1
    msg_id = uuid.uuid4().hex
    msg = {"metadata": metadata, "parent_header": {},
           "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "client-says",
                      "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
           "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                       "allow_stdin": False, "stop_on_error": False}}
    stdout = ""
    reply: dict[str, Any] | None = None
    idle = False  # the reply (shell) may come before the cell's output (iopub): wait for both
    try:
        if v1:
            await ws.write_message(serialize_msg_to_ws_v1(msg, channel, lambda x: json.dumps(x).encode()), binary=True)
        else:
            await ws.write_message(json.dumps({"channel": channel, "buffers": [], **msg}))
        while True:
            raw = await asyncio.wait_for(ws.read_message(), timeout=180)
            assert raw is not None, "the websocket closed"
            if v1:
                _, parts = deserialize_msg_from_ws_v1(raw)
                header, parent, content = json.loads(parts[0]), json.loads(parts[1]), json.loads(parts[3])
            else:
                got = json.loads(raw)
                header, parent, content = got["header"], got["parent_header"], got["content"]
            if parent.get("msg_id") != msg_id:
                continue
            if header.get("msg_type") == "stream":
                stdout += content.get("text", "")
            elif header.get("msg_type") == "execute_reply":
                reply = content
            elif header.get("msg_type") == "status" and content.get("execution_state") == "idle":
                idle = True
            if reply is not None and idle:
                return {"msg_id": msg_id, "stdout": stdout, **reply}
    finally:
        ws.close()
