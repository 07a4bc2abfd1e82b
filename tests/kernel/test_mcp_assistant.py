"""A real assistant client: jupyter-mcp-server over stdio, driven by the official ``mcp`` client,
against a real Jupyter Server on 127.0.0.1 whose ``python3`` is the guarded kernelspec.

Issue 18's three ways around a per-notebook ``%load_ext`` — ``execute_code`` before ``use_notebook``
(the MCP server's own launch-time kernel), ``execute_code(kernel_id=…)`` to any running kernel,
and ``restart_notebook`` — must each land in a guarded kernel: a ``DROP TABLE`` on a source comes
back to the agent as a denial with the JSON facts, and the table keeps its rows.  Then, in the same
agent session: a ``COPY … TO`` outside scratch, ``!rm`` on a source file and ``df.to_csv('/tmp/…')``
are denials too (tool errors with the plugin, the kernel's error text without), every source keeps
its checksum, ordinary analysis runs, and a truncation comes back with its JSON.  One Jupyter Server
serves the module; each test starts its own MCP server (the plugin is on or off per process).
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
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import source_digests, table_counts

from guard_kernel.audit import read_records
from guard_kernel.cli.main import main
from guard_kernel.decision.messages import find_facts, schema
from guard_kernel.demo import Workspace
from guard_kernel.kernel import spec

mcp = pytest.importorskip("mcp", reason="the test extra installs mcp")
BIN = Path(sys.executable).parent
MCP_SERVER = shutil.which("jupyter-mcp-server", path=str(BIN))
DROP = "import duckdb\nduckdb.connect('data/warehouse.duckdb').execute('DROP TABLE customers')"
TOKEN = "guard-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A Jupyter Server on loopback whose JUPYTER_PATH starts with the guarded kernelspec's prefix."""

    def __init__(self, root: Path, prefix: Path, tmp: Path) -> None:
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.env = dict(os.environ, JUPYTER_PATH=str(prefix / "share" / "jupyter"),
                        JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "data"),
                        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
        self.env.pop("PYTHONPATH", None)
        self.log = tmp / "jupyter-server.log"
        port = self.url.rsplit(":", 1)[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
             "--allow-root"], env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            cwd=str(tmp))  # jupyter-collaboration writes its .jupyter_ystore.db here, not in the checkout
        for _ in range(240):  # bounded: ~2 minutes at most
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited:\n{self.log.read_text()}")
            try:
                self.api("GET", "/api/status")
                return
            except OSError:
                try:
                    self.proc.wait(0.5)
                except subprocess.TimeoutExpired:
                    pass
        raise RuntimeError(f"jupyter server did not answer:\n{self.log.read_text()}")

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        req = urllib.request.Request(self.url + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture(scope="module")
def server(project: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """One Jupyter Server for the module: the documented deployment, the guarded kernelspec installed as
    ``python3`` in a prefix first on the server's JUPYTER_PATH (its policy and project root fixed)."""
    if MCP_SERVER is None:
        pytest.skip("jupyter-mcp-server is not installed (pip install -e '.[test]')")
    tmp = tmp_path_factory.mktemp("mcp")
    prefix = tmp / "prefix"
    spec.install(name="python3", prefix=str(prefix), policy=str(project.policy("default")), root=str(project.root),
                 audit_dir=str(tmp / "audit-unused"))
    plain = prefix / "share" / "jupyter" / "kernels" / "plain"  # an unguarded kernelspec beside it
    plain.mkdir(parents=True)
    (plain / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (not guarded)", "language": "python"}))
    srv = Server(project.root, prefix, tmp)
    try:
        yield srv, prefix
    finally:
        srv.stop()


@pytest.fixture
def deployment(server: tuple[Server, Path], project: Workspace, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> tuple[Server, Path]:
    """The module's server, with the kernelspec re-installed so this test's kernels audit into their own
    folder (the server reads the kernelspec whenever it starts a kernel)."""
    srv, prefix = server
    audit = tmp_path / "audit"
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))  # for guard-kernel doctor here
    spec.install(name="python3", prefix=str(prefix), policy=str(project.policy("default")), root=str(project.root),
                 audit_dir=str(audit))
    return srv, audit


def text(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


def denial(result: Any) -> dict[str, Any]:
    """The JSON facts of a message the agent received (the ``json:`` line of the guard's message),
    checked against the shipped schema."""
    body = text(result)
    facts = find_facts(body)
    assert facts is not None, f"no guard message in the tool's answer:\n{body}"
    jsonschema.validate(facts, schema())
    return facts


def run_agent(server: Server, root: Path, steps: Any, env: dict[str, str] | None = None) -> Any:
    """Start jupyter-mcp-server over stdio with the ``mcp`` client and run the coroutine *steps(session)*."""
    from mcp import ClientSession, StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=str(MCP_SERVER), cwd=str(root),
        env={"JUPYTER_URL": server.url, "JUPYTER_TOKEN": TOKEN, "PATH": os.environ.get("PATH", ""),
             "HOME": os.environ.get("HOME", str(root)), **(env or {})})

    async def main() -> Any:
        with (root.parent / "mcp-server.log").open("w") as errlog:
            async with stdio_client(params, errlog=errlog) as (r, w), ClientSession(r, w) as session:
                await session.initialize()
                return await asyncio.wait_for(steps(session), timeout=600)

    return asyncio.run(main())


WH = "import duckdb\ncon = duckdb.connect('data/warehouse.duckdb', read_only=True)\n"


def attacks(tag: str) -> dict[str, tuple[str, Path | None]]:
    """More of what an over-eager agent tries, each a denial: name → (cell, file it must not create)."""
    copy_out, csv_out = Path(f"/tmp/guard-mcp-copy-{tag}.csv"), Path(f"/tmp/guard-mcp-df-{tag}.csv")
    return {
        "copy_out": (WH + f"con.execute(\"COPY customers TO '{copy_out}' (HEADER)\")", copy_out),
        "rm_source": ("!rm data/raw/regions.csv", None),
        "to_csv_tmp": ("import pandas as pd\n"
                       f"pd.read_csv('data/raw/regions.csv').to_csv('{csv_out}')", csv_out),
    }


@pytest.mark.parametrize("plugin", [True, False], ids=["plugin", "no-plugin"])
def test_every_kernel_the_assistant_reaches_is_guarded(deployment: tuple[Server, Path], project: Workspace,
                                                       plugin: bool) -> None:
    """With guard_kernel's MCP plugin a denial is a tool error; without it, the kernel's error text —
    both carry the JSON facts, and either way nothing ran."""
    server, audit = deployment
    before = table_counts(project)
    digests = source_digests(project)
    more = attacks(uuid.uuid4().hex[:8])
    # a running kernel the agent did not start (another user's notebook, say), started by name
    other = server.api("POST", "/api/kernels", {"name": "python3"})["id"]
    # and one that is not guarded at all
    unguarded = server.api("POST", "/api/kernels", {"name": "plain"})["id"]
    marker = project.scratch / f"unguarded-{plugin}.txt"

    async def steps(s: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # 1. before use_notebook: the MCP server's own launch-time kernel
        out["launch"] = await s.call_tool("execute_code", {"code": DROP, "timeout": 120})
        # 2. any running kernel, by id
        out["by_id"] = await s.call_tool("execute_code", {"code": DROP, "kernel_id": other, "timeout": 120})
        # 3. a notebook, then a restart: the fresh kernel is guarded too
        out["use"] = await s.call_tool("use_notebook", {"notebook_name": "nb", "notebook_path": f"agent-{plugin}.ipynb",
                                                        "mode": "create"})
        out["restart"] = await s.call_tool("restart_notebook", {"notebook_name": "nb"})
        out["after_restart"] = await s.call_tool("execute_code", {"code": DROP, "timeout": 120})
        for name, (code, _) in more.items():
            out[name] = await s.call_tool("execute_code", {"code": code, "timeout": 120})
        out["ordinary"] = await s.call_tool("execute_code", {
            "code": WH + "con.execute('SELECT count(*) FROM customers').fetchone()[0]", "timeout": 120})
        out["analysis"] = await s.call_tool("execute_code", {
            "code": WH + "df = con.execute('SELECT region, count(*) AS n FROM customers GROUP BY region "
                         "ORDER BY region').df()\nint(df.n.sum())", "timeout": 120})
        out["truncated"] = await s.call_tool("execute_code", {
            "code": WH + "len(con.execute('SELECT id FROM orders').fetchall())", "timeout": 120})
        out["status"] = await s.call_tool("execute_code", {"code": "%guard status --json", "timeout": 120})
        out["unguarded"] = await s.call_tool("execute_code", {
            "code": f"open({str(marker)!r}, 'w').write('ran')", "kernel_id": unguarded, "timeout": 120})
        return out

    # the client's configuration asks for a weaker session: the kernelspec's fixed values win
    env = {"GUARD_KERNEL_ACTOR": "human", "GUARD_KERNEL_POLICY": ""}
    if not plugin:  # jupyter-mcp-server loads only the extensions this names
        env["JUPYTER_MCP_EXTENSIONS"] = "no-such-extension"
    out = run_agent(server, project.root, steps, env=env)
    for step in ("launch", "by_id", "after_restart"):
        assert out[step].is_error is plugin, (step, text(out[step]))
        facts = denial(out[step])
        assert facts["code"] == "cell_rejected" and facts["action"] == "sql.ddl", step
        assert facts["resource"] == "customers" and facts["hint"], step
    expected = {"copy_out": ("sql.export", "file.write"), "rm_source": ("shell.exec", "file.delete"),
                "to_csv_tmp": ("export.dataframe", "file.write")}
    for name, (_, made) in more.items():
        assert out[name].is_error is plugin, (name, text(out[name]))
        facts = denial(out[name])
        assert facts["effect"] == "deny" and facts["action"] in expected[name] and facts["hint"], (name, facts)
        assert made is None or not made.exists(), made
    assert not out["use"].is_error and not out["restart"].is_error, (text(out["use"]), text(out["restart"]))
    assert not out["ordinary"].is_error and not out["status"].is_error
    assert text(out["ordinary"]).strip() == str(before["customers"])
    assert not out["analysis"].is_error and text(out["analysis"]).strip().splitlines()[-1] == str(before["customers"])
    truncated = out["truncated"]
    assert not truncated.is_error, text(truncated)  # it ran: a notice, never a tool error
    facts = denial(truncated)
    assert facts["code"] == "truncated" and facts["returned"] == 500 and facts["more"] is True
    assert facts["reader"] == "sql" and "WHERE" in facts["hint"]
    assert "500" in text(truncated).splitlines()
    status = json.loads(text(out["status"]))
    assert status["actor"] == "agent" and status["lock"] is True and status["kernel"] == "python3"
    assert table_counts(project) == before  # no DROP happened, on any path
    assert source_digests(project) == digests  # and no source file changed

    # the plugin asks a kernel before sending it code: one that is not guarded gets nothing
    if plugin:
        assert out["unguarded"].is_error and not marker.exists(), text(out["unguarded"])
        facts = denial(out["unguarded"])
        assert facts["code"] == "not_guarded" and "guard-kernel install" in facts["hint"]
    else:  # without it, nothing stops code sent to an unguarded kernel: the doctor is the check
        assert marker.read_text() == "ran"
        marker.unlink()
    assert main(["doctor", "--url", server.url, "--token", TOKEN]) == 1  # it names the unguarded kernel
    server.api("DELETE", f"/api/kernels/{unguarded}")
    assert main(["doctor", "--url", server.url, "--token", TOKEN]) == 0  # the deployment holds
    kernels = server.api("GET", "/api/kernels")
    assert len(kernels) >= 3 and {k["name"] for k in kernels} == {"python3"}
    records = [r for f in sorted(audit.rglob("*.jsonl")) for r in read_records(str(f))]
    denied = [r for r in records if r.get("decision") == "deny" and r.get("action") == "sql.ddl"]
    assert len(denied) >= 3  # one per path, each recorded by the kernel that refused it
    sessions = [r for r in records if r["kind"] == "session"]
    assert len(sessions) >= 3 and all(r["actor"] == "agent" for r in sessions)
    cells = [r for r in records if r["kind"] == "cell"]
    sent = [DROP, *(code for code, _ in more.values())]
    # every denied attempt is in the audit as the agent's: with the plugin as refused before it was sent
    # (the kernel's pre-flight answered, the code never ran), without it as a refused cell
    asked = [r for r in records if r["kind"] == "request" and r.get("via") == "guard_kernel.check"]
    attempts = asked if plugin else cells
    assert all(any(r.get("code") == code for r in attempts) for code in sent), [r.get("code") for r in attempts]
    assert all(r["actor"] == "agent" for r in attempts + cells)
    if plugin:
        assert not [c for c in cells if c["code"] in sent]  # none of them reached the kernel as a cell
    else:
        assert {c["status"] for c in cells if c["code"] in sent} <= {"rejected", "error"}


def test_doctor_refuses_a_python3_that_fixes_no_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A guarded ``python3`` without a fixed policy would run under the built-in one, whatever the
    assistant's configuration says: the doctor says so and exits 1."""
    prefix = tmp_path / "prefix"
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    spec.install(name="python3", prefix=str(prefix))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "fixes no policy" in out and "built-in" in out
    spec.install(name="python3", prefix=str(prefix), policy=str(Path(__file__).parents[2] / "policies" / "default.yaml"),
                 actor="human")
    assert main(["doctor", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and any("actor 'human'" in p for p in report["problems"])
    spec.install(name="python3", prefix=str(prefix), policy=str(Path(__file__).parents[2] / "policies" / "default.yaml"))
    assert main(["doctor"]) == 0


def test_doctor_flags_a_python3_that_is_not_guarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "empty"))
    entries = {e.name: e for e in spec.kernels()}
    if entries.get("python3") is None or entries["python3"].guarded:
        pytest.skip("this environment has no plain python3 kernelspec")
    assert main(["doctor"]) == 1
    assert "NOT guarded" in capsys.readouterr().out


def test_as_a_server_extension_the_same_deployment_holds(deployment: tuple[Server, Path], project: Workspace) -> None:
    """jupyter-mcp-server enabled as an extension of the Jupyter Server itself (its default when
    installed), reached over streamable HTTP at ``/mcp``: its kernels are the server's, so guarded,
    and the plugin (loaded in the server process) makes the denial a tool error."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client
    from mcp.shared.exceptions import MCPError

    server, audit = deployment
    before, digests = table_counts(project), source_digests(project)

    async def main() -> dict[str, Any]:
        async with create_mcp_http_client(headers={"Authorization": f"token {TOKEN}"}) as http, \
                streamable_http_client(server.url + "/mcp", http_client=http) as (r, w, *_), \
                ClientSession(r, w) as s:
            await s.initialize()
            out: dict[str, Any] = {}
            out["use"] = await s.call_tool("use_notebook", {"notebook_name": "ext", "notebook_path": "ext.ipynb",
                                                            "mode": "create"})
            try:
                out["drop"] = await s.call_tool("execute_code", {"code": DROP, "timeout": 120})
            except MCPError as exc:  # as an extension, 2.2.x sends a tool's error as a JSON-RPC error
                out["drop_error"] = str(exc)
            out["ordinary"] = await s.call_tool("execute_code", {
                "code": WH + "con.execute('SELECT count(*) FROM customers').fetchone()[0]", "timeout": 120})
            return out

    out = asyncio.run(asyncio.wait_for(main(), timeout=600))
    assert not out["use"].is_error, text(out["use"])
    assert "drop" not in out, text(out["drop"])  # not an ordinary answer: an error carrying the guard's message
    facts = find_facts(out["drop_error"])
    assert facts is not None, out["drop_error"]
    jsonschema.validate(facts, schema())
    assert facts["code"] == "cell_rejected" and facts["resource"] == "customers"
    assert not out["ordinary"].is_error and text(out["ordinary"]).strip().splitlines()[-1] == str(before["customers"])
    assert table_counts(project) == before and source_digests(project) == digests
    sessions = [r for f in sorted(audit.rglob("*.jsonl")) for r in read_records(str(f)) if r["kind"] == "session"]
    assert sessions and all(r["actor"] == "agent" for r in sessions)
