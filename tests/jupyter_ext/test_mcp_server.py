"""A real assistant client against a guarded server: jupyter-mcp-server over stdio (the ``mcp`` client)
talks to a real Jupyter Server process that loads ``jupyter_ext`` from its configuration file, with
``only_guarded_kernels`` and the assistant's token naming an agent identity.

Every kernel the assistant reaches is the guarded one the extension provides (the server asked for
``python3``), its cells are stamped ``agent``, and its Contents-API write into a source is refused
with nothing written.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_setup import AGENT_TOKEN, guard_config

from guard_kernel.audit import read_records
from guard_kernel.demo import Workspace
from jupyter_ext.kernels import PROVIDED_NAME

pytest.importorskip("mcp", reason="the test extra installs mcp")
BIN = Path(sys.executable).parent
MCP_SERVER = shutil.which("jupyter-mcp-server", path=str(BIN))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(project: Workspace, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Jupyter Server process on loopback; its jupyter_server_config.json enables and configures the guard."""
    if MCP_SERVER is None:
        pytest.skip("jupyter-mcp-server is not installed (pip install -e '.[test]')")
    audit = tmp_path / "audit"
    config = tmp_path / "config"
    config.mkdir()
    settings = guard_config(project, audit, only_guarded_kernels=True)
    (config / "jupyter_server_config.json").write_text(json.dumps(settings))
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_PATH=str(tmp_path / "empty"))
    env.pop("PYTHONPATH", None)
    log = tmp_path / "jupyter-server.log"
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1",
                             f"--ServerApp.port={port}", f"--ServerApp.root_dir={project.root}",
                             "--ServerApp.open_browser=False", "--allow-root"],
                            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=str(tmp_path))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # bounded: ~2 minutes at most
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited:\n{log.read_text()}")
            try:
                _api(url, "GET", "/api/status")
                break
            except OSError:
                try:
                    proc.wait(0.5)
                except subprocess.TimeoutExpired:
                    pass
        yield url, audit
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def _api(url: str, method: str, path: str) -> Any:
    req = urllib.request.Request(url + path, method=method, headers={"Authorization": f"token {AGENT_TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def _text(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


def test_assistant_gets_guarded_kernels_and_cannot_write_sources(server: tuple[str, Path],
                                                                 project: Workspace) -> None:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    url, audit = server
    target = project.raw / "agent.ipynb"
    params = StdioServerParameters(
        command=str(MCP_SERVER), cwd=str(project.root),
        env={"JUPYTER_URL": url, "JUPYTER_TOKEN": AGENT_TOKEN, "PATH": os.environ.get("PATH", ""),
             "HOME": os.environ.get("HOME", str(project.root))})

    async def steps(s: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["status"] = await s.call_tool("execute_code", {"code": "%guard status --json", "timeout": 120})
        out["write"] = await s.call_tool("use_notebook", {"notebook_name": "nb", "notebook_path": "data/raw/agent.ipynb",
                                                          "mode": "create"})
        return out

    async def main() -> dict[str, Any]:
        with (project.root.parent / "mcp-server-ext.log").open("w") as errlog:
            async with stdio_client(params, errlog=errlog) as (r, w), ClientSession(r, w) as session:
                await session.initialize()
                return await asyncio.wait_for(steps(session), timeout=600)

    out = asyncio.run(main())
    status = json.loads(_text(out["status"]))
    assert status["kernel"] == PROVIDED_NAME and status["actor"] == "agent" and status["lock"] is True
    assert out["write"].is_error or "403" in _text(out["write"]) or "Forbidden" in _text(out["write"]), \
        _text(out["write"])
    assert not target.exists()  # nothing written into the source

    kernels = _api(url, "GET", "/api/kernels")
    assert kernels and {k["name"] for k in kernels} == {PROVIDED_NAME}
    records = [r for f in sorted(audit.glob("server-*.jsonl")) for r in read_records(str(f))]
    starts = [r["kernel"] for r in records if r["kind"] == "kernel.start"]
    assert starts and all(k["name"] == PROVIDED_NAME for k in starts)
    denied = [r for r in records if r["kind"] == "file" and r["decision"] == "deny"]
    assert any(r["resource"] == "data/raw/agent.ipynb" and r["identity"]["username"] == "claude" for r in denied)
    execs = [r for r in records if r["kind"] == "server.execute"]
    assert execs and all(r["actor"] == "agent" and r["identity"]["agent"] for r in execs)
