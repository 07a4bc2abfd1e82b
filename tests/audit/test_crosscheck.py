"""``guard-kernel audit crosscheck``: cells the server forwarded that the kernel never recorded.

Server records are written with the one AuditWriter in the shared contract's format
(/work/briefs/server-record.md: kind ``server.execute``); kernel audits come from real kernels
driven with jupyter_client (a ``%load_ext`` kernel whose guard a cell breaks, a guarded kernel
started from a Jupyter-style ``kernel-<id>.json``) and from the writer for the edge cases.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import kernel_env

from guard_kernel.audit import AuditWriter, new_session_id, read_records, verify
from guard_kernel.audit.crosscheck import Placement, crosscheck
from guard_kernel.cli.main import main
from guard_kernel.demo import Workspace

POLICY = {"name": "server", "sha256": "0" * 64}
TAMPER = "import guard_kernel.decision.guard as g\ng.current().audit.write = lambda kind, **f: dict(f)"
"""A cell that replaces the session guard's audit sink ``write`` with a no-op (the guard puts it back)."""
SILENCE = ("ip = get_ipython()\nfor e in ('pre_run_cell', 'post_run_cell'):\n    ip.events.callbacks[e].clear()\n"
           + TAMPER)
"""A cell that also unregisters the guard's cell callbacks: out of a ``%load_ext`` guard's reach (the
guarded kernel's per-request check still sees it)."""


def server_writer(folder: Path) -> AuditWriter:
    """The server's chain, as the extension opens it: ``server-<session>.jsonl``, header role server."""
    sid = new_session_id()
    w = AuditWriter(str(folder / f"server-{sid}.jsonl"), session=sid, actor="human", environment="default",
                    policy=POLICY)
    w.write("session", role="server", action=None, resource=None, decision="allow", rules=[],
            message="server guard started")
    return w


def server_record(w: AuditWriter, kernel_id: str, msg_id: str, code: str, *, actor: str = "agent",
                  username: str = "alice") -> dict[str, Any]:
    """One ``server.execute`` record in the contract's format."""
    return w.write("server.execute", kernel={"id": kernel_id, "name": "python3", "requested": "python3"},
                   request={"msg_id": msg_id, "session": "client-session", "username": username},
                   identity={"username": username, "name": username, "agent": actor == "agent"},
                   client={"ip": "127.0.0.1", "user_agent": "pytest"}, actor=actor, code=code,
                   code_sha256=hashlib.sha256(code.encode()).hexdigest(), decision="allow", action=None,
                   resource=f"kernel/{kernel_id}", rules=[], message="")


def kernel_writer(folder: Path, kernel_id: str | None) -> AuditWriter:
    """A kernel session's audit, as the guard writes it (header with ``kernel.id``)."""
    sid = new_session_id() + uuid.uuid4().hex[:4]
    w = AuditWriter(str(folder / f"{sid}.jsonl"), session=sid, actor="agent", environment="default", policy=POLICY)
    w.write("session", action=None, resource=None, decision="allow", rules=[], message="guard started",
            kernel={"name": "guarded", "id": kernel_id})
    return w


def kernel_cell(w: AuditWriter, msg_id: str, decision: str = "allow") -> None:
    w.write("cell", action=None, resource="cell[1]", decision=decision, rules=[], message="", code="1 + 1",
            request={"msg_id": msg_id, "session": "client-session", "username": "alice"})


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(["audit", "crosscheck", *args])
    return rc, capsys.readouterr().out


# ------------------------------------------------------------------ edge cases, from the writer


def test_every_forwarded_cell_recorded_passes_and_other_kernels_are_ignored(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    k = kernel_writer(tmp_path, "k1")
    s = server_writer(tmp_path)
    for m in ("m1", "m2"):
        server_record(s, "k1", m, "1 + 1")
        kernel_cell(k, m, "deny" if m == "m2" else "allow")  # a denied cell is recorded too
    server_record(s, "k2", "m3", "x = 1")  # another kernel: not this audit's business
    kernel_cell(k, "direct")  # a request that reached the kernel some other way: listed, not flagged
    k.close()
    s.close()
    rc, out = run_cli(capsys, s.path, k.path)
    assert rc == 0, out
    assert "the server forwarded 2 execute request(s); the kernel recorded 2" in out and "ok: every cell" in out
    assert "the kernel recorded 1 request(s) this server did not forward" in out
    assert crosscheck(s.path, [k.path]).unforwarded == ("direct",)


@pytest.mark.parametrize(("tamper", "expected"), [
    ("server", "chain BROKEN"),
    ("kernel", "chain BROKEN"),
])
def test_a_broken_chain_is_reported_before_anything_is_matched(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              tamper: str, expected: str) -> None:
    k = kernel_writer(tmp_path, "k1")
    s = server_writer(tmp_path)
    server_record(s, "k1", "m1", "1 + 1")
    kernel_cell(k, "m1")
    k.close()
    s.close()
    victim = Path(s.path if tamper == "server" else k.path)
    lines = victim.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"m1"', '"mX"')  # an edited record
    victim.write_text("".join(lines))
    rc, out = run_cli(capsys, s.path, k.path)
    assert rc == 1 and expected in out and str(victim) in out and "CANNOT CROSS-CHECK" in out


def test_placement_before_after_missing_and_a_restart_chain(tmp_path: Path) -> None:
    s = server_writer(tmp_path)
    server_record(s, "k1", "early", "%load_ext guard_kernel")  # before the kernel's audit began
    first = kernel_writer(tmp_path, "k1")
    server_record(s, "k1", "a", "1")
    kernel_cell(first, "a")
    server_record(s, "k1", "lost", "import guard_kernel")  # forwarded while the audit was open: never recorded
    first.write("session_end", action=None, resource=None, decision="allow", rules=[], message="", reason="restart")
    server_record(s, "k1", "after", "2")  # the restarted kernel's session
    second = kernel_writer(tmp_path, "k1")
    server_record(s, "k1", "b", "3")
    kernel_cell(second, "b")
    for w in (s, first, second):
        w.close()
    alone = crosscheck(s.path, [first.path])
    assert {f.msg_id: f.placement for f in alone.forwarded} == {
        "early": Placement.BEFORE, "a": Placement.RECORDED, "lost": Placement.MISSING,
        "after": Placement.AFTER, "b": Placement.AFTER}
    both = crosscheck(s.path, [first.path, second.path])
    assert {f.msg_id: f.placement for f in both.forwarded} == {
        "early": Placement.BEFORE, "a": Placement.RECORDED, "lost": Placement.MISSING,
        "after": Placement.MISSING, "b": Placement.RECORDED}
    assert [f.msg_id for f in both.missing] == ["lost", "after"] and not both.ok


@pytest.mark.parametrize(("ids", "expected"), [
    ((None,), "names no kernel id"),
    (("k1", "k2"), "different kernels"),
])
def test_no_single_kernel_id_cannot_be_cross_checked(tmp_path: Path, ids: tuple[str | None, ...],
                                                     expected: str) -> None:
    s = server_writer(tmp_path)
    server_record(s, "k1", "m1", "1")
    kernels = [kernel_writer(tmp_path, i) for i in ids]
    for w in (s, *kernels):
        w.close()
    c = crosscheck(s.path, [k.path for k in kernels])
    assert not c.ok and c.problem is not None and expected in c.problem and c.forwarded == ()


def test_the_files_the_wrong_way_round_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    k = kernel_writer(tmp_path, "k1")
    s = server_writer(tmp_path)
    server_record(s, "k1", "m1", "1")
    for w in (s, k):
        w.close()
    rc, out = run_cli(capsys, k.path, s.path)
    assert rc == 1 and "is not the server's chain" in out


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, str(tmp_path / "nope.jsonl"), str(tmp_path / "nope2.jsonl"))[0] == 2


# ------------------------------------------------------------------ a real kernel whose guard a cell breaks


class Forwarder:
    """Sends cells to a real kernel the way a Jupyter Server forwards them: the server's record is
    written first (the contract's format), then the request goes to the kernel."""

    def __init__(self, kc: Any, writer: AuditWriter, kernel_id: str) -> None:
        self.kc, self.writer, self.kernel_id = kc, writer, kernel_id

    def run(self, code: str) -> tuple[str, dict[str, Any]]:
        msg = self.kc.session.msg("execute_request", {"code": code, "silent": False, "store_history": True,
                                                      "user_expressions": {}, "allow_stdin": False,
                                                      "stop_on_error": False})
        msg_id = msg["header"]["msg_id"]
        server_record(self.writer, self.kernel_id, msg_id, code)
        self.kc.shell_channel.send(msg)
        while True:
            reply = self.kc.get_shell_msg(timeout=120)
            if reply["parent_header"].get("msg_id") == msg_id:
                return msg_id, reply["content"]


@pytest.fixture(scope="module")
def broken_session(project: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A ``%load_ext`` kernel started like a server starts one (``kernel-<id>.json``); a cell
    replaces its guard's writer with a no-op, and the cells after it run unrecorded."""
    from jupyter_client.manager import KernelManager

    base = tmp_path_factory.mktemp("crosscheck")
    kid = str(uuid.uuid4())
    audit = base / "audit"
    km = KernelManager(kernel_name="python3", connection_file=str(base / f"kernel-{kid}.json"))
    km.start_kernel(cwd=str(project.root), env=kernel_env(project.policy("default"), "agent", audit, project.root))
    kc = km.client()
    kc.start_channels()
    server = server_writer(base)
    try:
        kc.wait_for_ready(timeout=120)
        fwd = Forwarder(kc, server, kid)
        ids: dict[str, str] = {}
        for name, code in [
            ("load", "%load_ext guard_kernel"),
            ("plain", "x = 40 + 2"),
            ("denied", "open('data/raw/crosscheck.csv', 'w').write('x')"),
            ("tamper", SILENCE),
            ("unrecorded", "y = x + 1"),
        ]:
            ids[name], content = fwd.run(code)
            assert (content["status"] == "ok") == (name != "denied"), (name, content)
        server.close()
        yield {"kid": kid, "ids": ids, "server": server.path, "kernel": sorted(audit.glob("*.jsonl")),
               "project": project}
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_the_load_ext_header_names_the_servers_kernel_id(broken_session: dict[str, Any]) -> None:
    [kernel] = broken_session["kernel"]
    header = next(r for r in read_records(str(kernel)) if r["kind"] == "session")
    assert header["kernel"]["id"] == broken_session["kid"]
    assert header["kernel"]["connection_file"].endswith(f"kernel-{broken_session['kid']}.json")


def test_cells_after_the_guard_was_broken_are_flagged(broken_session: dict[str, Any],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ids, [kernel] = broken_session["ids"], broken_session["kernel"]
    recorded = {(r.get("request") or {}).get("msg_id") for r in read_records(str(kernel))}
    assert ids["plain"] in recorded and ids["denied"] in recorded  # the guard worked until the tamper
    assert ids["tamper"] not in recorded and ids["unrecorded"] not in recorded  # and then no more
    assert not (broken_session["project"].root / "data" / "raw" / "crosscheck.csv").exists()
    rc, out = run_cli(capsys, broken_session["server"], str(kernel))
    assert rc == 1, out
    assert "NOT RECORDED BY THE KERNEL (2)" in out
    assert ids["tamper"] in out and ids["unrecorded"] in out and "y = x + 1" in out
    assert ids["plain"] not in out.split("NOT RECORDED")[1]
    assert "1 forwarded before the kernel's audit began" in out  # the %load_ext cell itself
    rc, js = run_cli(capsys, broken_session["server"], str(kernel), "--json")
    data = json.loads(js)
    assert rc == 1 and [m["msg_id"] for m in data["missing"]] == [ids["tamper"], ids["unrecorded"]]
    assert data["counts"] == {"recorded": 2, "missing": 2, "before": 1, "after": 0}
    assert data["kernel_id"] == broken_session["kid"]


def test_the_same_kernel_before_the_tamper_passes(broken_session: dict[str, Any], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The control: a server chain with only the cells sent while the guard was whole is matched."""
    before = {broken_session["ids"][n] for n in ("plain", "denied")}
    s = server_writer(tmp_path)
    for r in read_records(broken_session["server"]):
        if (r.get("request") or {}).get("msg_id") in before:
            server_record(s, r["kernel"]["id"], r["request"]["msg_id"], r["code"])
    s.close()
    [kernel] = broken_session["kernel"]
    rc, out = run_cli(capsys, s.path, str(kernel))
    assert rc == 0 and "the server forwarded 2 execute request(s); the kernel recorded 2" in out, out


# ------------------------------------------------------------------ the guarded kernel


def test_the_guarded_kernels_header_names_the_servers_kernel_id(project: Workspace, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from jupyter_client.manager import KernelManager

    from guard_kernel.kernel import spec

    prefix = tmp_path / "prefix"
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    spec.install(name="guarded", prefix=str(prefix), policy=str(project.policy("default")), root=str(project.root))
    kid, audit = str(uuid.uuid4()), tmp_path / "audit"
    env = kernel_env(None, "agent", audit)
    km = KernelManager(kernel_name="guarded", connection_file=str(tmp_path / f"kernel-{kid}.json"))
    km.start_kernel(cwd=str(project.root), env=env)
    kc = km.client()
    kc.start_channels()
    server = server_writer(tmp_path)
    try:
        kc.wait_for_ready(timeout=120)
        fwd = Forwarder(kc, server, kid)
        assert fwd.run("z = 1")[1]["status"] == "ok"
        assert fwd.run("open('data/raw/guarded.csv', 'w').write('x')")[1]["status"] == "error"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    server.close()
    [kernel] = sorted(audit.glob("*.jsonl"))
    header = next(r for r in read_records(str(kernel)) if r["kind"] == "session")
    assert header["kernel"] == {"name": "guarded", "id": kid, "connection_file": os.path.abspath(km.connection_file)}
    rc, out = run_cli(capsys, server.path, str(kernel))
    assert rc == 0 and "the kernel recorded 2" in out, out


def test_a_cell_that_replaces_the_sink_is_recorded_anyway(project: Workspace, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A cell that replaces the guard's sink ``write`` used to silence the guarded kernel's audit
    from then on (crosscheck found it).  The recording path is pinned now: the cell's end puts it
    back, records the cell and a ``tamper`` record naming what was replaced, and every later cell
    is recorded; crosscheck finds nothing missing."""
    from jupyter_client.manager import KernelManager

    from guard_kernel.kernel import spec

    prefix = tmp_path / "prefix"
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    spec.install(name="guarded", prefix=str(prefix), policy=str(project.policy("default")), root=str(project.root))
    kid, audit = str(uuid.uuid4()), tmp_path / "audit"
    km = KernelManager(kernel_name="guarded", connection_file=str(tmp_path / f"kernel-{kid}.json"))
    km.start_kernel(cwd=str(project.root), env=kernel_env(None, "agent", audit))
    kc = km.client()
    kc.start_channels()
    server = server_writer(tmp_path)
    try:
        kc.wait_for_ready(timeout=120)
        fwd = Forwarder(kc, server, kid)
        whole = fwd.run("a = 1")[0]
        silenced = [fwd.run(TAMPER)[0], fwd.run("b = a + 1")[0]]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    server.close()
    [kernel] = sorted(audit.glob("*.jsonl"))
    assert verify(str(kernel)).ok  # nothing in the launcher's file was erased or rewritten
    records = list(read_records(str(kernel)))
    [tamper] = [r for r in records if r["kind"] == "tamper"]
    assert tamper["decision"] == "deny" and any("write" in h for h in tamper["hooks"]), tamper
    rc, out = run_cli(capsys, server.path, str(kernel), "--json")
    report = json.loads(out)
    assert rc == 0 and report["missing"] == [] and report["counts"]["recorded"] == 3, report
    assert {whole, *silenced} <= {(r.get("request") or {}).get("msg_id") for r in records}
