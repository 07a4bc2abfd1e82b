"""The audit in a real kernel: fail closed when it cannot be written, and what a killed kernel leaves.

A full disk is a real small tmpfs mounted for the test (skipped where the machine does not let
the tests mount one; tests/audit/test_audit.py covers the same path with a test double at the
write call).  A removed audit folder needs nothing special.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
from conftest import SECRETS, GuardedKernel, blocked, start_kernel

from guard_kernel.audit import verify
from guard_kernel.audit.summary import summarize
from guard_kernel.cli.main import main
from guard_kernel.demo import Workspace

WRITE = "import pandas as pd\npd.DataFrame({{'a': [1, 2]}}).to_csv('scratch/{name}', index=False)"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a disk the test can fill."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the write-call double covers it")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_refuses_actions_until_there_is_room_again(
        kernel_factory: Callable[..., GuardedKernel], project: Workspace, tmpfs: Path) -> None:
    k = kernel_factory(policy="default", actor="agent", audit_dir=tmpfs / "audit")
    assert k.load_result is not None and k.load_result.ok, k.load_result
    assert k.run("import pandas as pd\nx = 40").ok
    filler = _fill(tmpfs)
    written: list[Path] = []
    try:
        # the audit file's last page still has room: exports go on (and are recorded) until a
        # record no longer fits; that export must not happen
        for i in range(40):
            out = project.scratch / f"full-disk-{i}.csv"
            res = k.run(WRITE.format(name=out.name))
            if not res.ok:
                break
            written.append(out)
        assert blocked(res), res
        assert "the audit cannot be written" in res.traceback and "No space left" in res.traceback
        assert not out.exists()  # the denied action did not happen
        assert all(p.exists() for p in written)
        res = k.run("x = x + 2")  # nothing runs while the audit cannot be written
        assert blocked(res) and "nothing in this cell ran" in res.traceback, res
        res = k.run("%guard audit")
        assert res.ok and "the audit cannot be written now" in res.stdout and "No space left" in res.stdout, res
    finally:
        filler.unlink()
        for p in written:
            p.unlink()
    assert k.run("x = x + 1").ok
    assert k.value("x") == 41  # the refused cell did not run
    res = k.run(WRITE.format(name=out.name))
    assert res.ok and out.exists(), res
    out.unlink()
    recs = k.records()
    gaps = [r for r in recs if r["kind"] == "audit_gap"]
    assert len(gaps) == 1 and gaps[0]["refused"] >= 2 and "No space left" in gaps[0]["reason"]
    assert verify(str(k.audit_files()[0])).ok


def test_a_removed_audit_folder_refuses_every_action(
        kernel_factory: Callable[..., GuardedKernel], project: Workspace, tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    k = kernel_factory(policy="default", actor="agent", audit_dir=audit)
    assert k.load_result is not None and k.load_result.ok, k.load_result
    assert k.run("import pandas as pd").ok
    shutil.rmtree(audit)
    out = project.scratch / "no-audit.csv"
    res = k.run(WRITE.format(name=out.name))
    assert blocked(res) and "removed or replaced" in res.traceback, res
    assert not out.exists()
    audit.mkdir()  # a new folder does not bring the session's audit back: it keeps refusing
    for code in ("1 + 1", WRITE.format(name=out.name)):
        res = k.run(code)
        assert blocked(res) and "start a new session" in res.traceback, res
    assert not out.exists()
    assert list(audit.iterdir()) == []
    res = k.run("%guard audit")  # the guard still says what is wrong
    assert res.ok and "the audit file is gone" in res.stdout and "removed or replaced" in res.stdout, res


# ------------------------------------------------------- header, end, restarts


def _only(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jsonl"))


def test_header_end_records_and_a_restart_chain(project: Workspace, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    audit = tmp_path / "audit"
    monkeypatch.setenv("JPY_SESSION_NAME", str(project.root / "analysis.ipynb"))
    k = start_kernel(project, policy="default", actor="agent", audit_dir=audit)
    try:
        assert k.load_result is not None and k.load_result.ok, k.load_result
        assert k.run("x = 1").ok
        k.km.restart_kernel(now=False)  # a shutdown_request with restart=True, then a new process
        k.kc.wait_for_ready(timeout=60)
        assert k.run("%load_ext guard_kernel").ok
        assert k.run("y = 2").ok
    finally:
        k.kc.stop_channels()
        k.km.shutdown_kernel(now=False)  # a clean shutdown
    first, second = sorted((summarize(str(p)) for p in _only(audit)), key=lambda s: s.started or "")
    h = first.header
    assert h["kind"] == "session" and h["seq"] == 1 and h["actor"] == "agent"
    # jupyter_client names the file kernel-<id>.json when Jupyter starts the kernel; this one is a temp file
    assert h["kernel"] == {"name": "extension", "id": None, "connection_file": k.km.connection_file}
    assert h["notebook"] == str(project.root / "analysis.ipynb") and h["cwd"] == str(project.root)
    assert h["user"] and h["host"] and h["pid"]
    assert {"python", "guard_kernel", "ipykernel", "duckdb", "pandas", "sqlglot"} <= h["versions"].keys()
    pol = project.policy("default")
    assert h["policy_file"] == str(pol) and h["policy_text"] == pol.read_text()
    assert h["policy"]["sha256"] == hashlib.sha256(pol.read_bytes()).hexdigest()
    assert [x["layer"] for x in h["in_force"]] == ["cell_gate", "magics_and_shell", "duckdb_gate", "dataframe",
                                                  "runtime"]
    assert first.previous_session is None and second.previous_session == first.session
    assert first.ended == "closed (restart)" and second.ended == "closed (shutdown)"
    assert first.chain.ok and second.chain.ok
    assert main(["audit", "list", str(audit)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith(str(first.session)) and out[2].startswith(f"└ {second.session}")
    assert "closed (restart)" in out[1] and "closed (shutdown)" in out[2]


def test_a_kernel_killed_mid_cell_leaves_a_verifiable_audit(project: Workspace, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    audit = tmp_path / "audit"
    k = start_kernel(project, policy="default", actor="agent", audit_dir=audit)
    try:
        assert k.load_result is not None and k.load_result.ok, k.load_result
        assert k.run("import duckdb\ncon = duckdb.connect('data/warehouse.duckdb')\n"
                     "con.sql('SELECT region, count(*) FROM customers GROUP BY region').fetchall()").ok
        assert blocked(k.run("con.sql('SELECT ssn FROM customers').fetchall()"))
        before = k.records()
        msg_id = k.kc.execute("import time\nfor _ in range(6000):\n    time.sleep(0.1)")
        while True:  # the long cell is running
            msg = k.kc.get_iopub_msg(timeout=60)
            if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "busy"):
                break
        proc = k.km.provisioner.process  # type: ignore[union-attr]
        os.kill(proc.pid, signal.SIGKILL)  # no atexit, no end record
        proc.wait(timeout=60)
    finally:
        k.shutdown()
    (path,) = _only(audit)
    assert k.records() == before  # every completed record is there, and nothing else
    res = verify(str(path))
    assert res.ok and res.records == len(before)
    assert res.ended == f"ended without a close record after seq {before[-1]['seq']}"
    assert main(["audit", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"ended:     ended without a close record after seq {before[-1]['seq']}" in out
    assert "chain:     ok" in out and "denied 1" in out
    # the audit notebook of the crashed session says how it ended, and its denied cell stands out
    from guard_kernel.audit.notebook import render, to_markdown

    nb = render(str(path))
    text = to_markdown(nb)
    assert f"ended without a close record after seq {before[-1]['seq']}" in text
    assert any("guard-denied" in c["metadata"].get("tags", ()) for c in nb["cells"] if c["cell_type"] == "code")


# ------------------------------------------------------------------ cell records


def test_a_cell_record_holds_the_worst_effect_inside_it_and_its_request(
        kernel_factory: Callable[..., GuardedKernel]) -> None:
    k = kernel_factory(policy="default", actor="agent")
    assert k.load_result is not None and k.load_result.ok, k.load_result
    assert k.run("import duckdb\ncon = duckdb.connect('data/warehouse.duckdb')\n"
                 "def fetch(q):\n    return con.sql(q).fetchall()").ok
    mark = k.mark()
    # a denial at run time (the cell gate does not see through fetch()), caught by the cell
    # itself: the cell succeeds, and its record still says deny
    res = k.run("try:\n    fetch('SELECT ssn FROM customers')\nexcept PermissionError:\n    pass\n"
                "n = fetch('SELECT count(*) FROM orders')")
    assert res.ok, res
    cell = [r for r in k.since(mark) if r["kind"] == "cell"][-1]
    assert cell["decision"] == "deny" and cell["status"] == "ok"
    assert "customers.ssn" in cell["message"] and cell["rules"]
    inside = cell["inside"]
    assert [x["decision"] for x in inside] == ["deny", "allow"]
    assert inside[0]["statement"] == "SELECT ssn FROM customers" and inside[0]["rules"]
    assert inside[1]["statement"] == "SELECT count(*) FROM orders" and inside[1]["action"] == "sql.read"
    assert cell["execution_count"] and cell["duration_ms"] >= 0 and cell["code"].startswith("try:")
    req = cell["request"]
    assert req["session"] == k.kc.session.session and req["username"] == k.kc.session.username
    assert len(req["msg_id"]) > 8
    # a truncation at run time: the cell is recorded as truncate, with rows kept
    mark = k.mark()
    assert k.run("rows = fetch('SELECT * FROM orders')").ok
    cell = [r for r in k.since(mark) if r["kind"] == "cell"][-1]
    assert cell["decision"] == "truncate" and cell["status"] == "ok"
    trunc = [x for x in cell["inside"] if x["kind"] == "truncate"]
    assert trunc and trunc[0]["returned"] == 500 and trunc[0]["max_rows"] == 500
    # a request that names its tool in the metadata
    mark = k.mark()
    msg = k.kc.session.msg("execute_request", {"code": "z = 3", "silent": False, "store_history": True,
                                               "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
                           metadata={"tool": "test-agent", "cellId": "cell-42"})
    k.kc.shell_channel.send(msg)
    while True:
        reply = k.kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            break
    cell = [r for r in k.since(mark) if r["kind"] == "cell"][-1]
    assert cell["request"]["msg_id"] == msg["header"]["msg_id"]
    assert cell["request"]["tool"] == "test-agent" and cell["request"]["cell_id"] == "cell-42"
    assert cell["decision"] == "allow" and cell["inside"] == []


# -------------------------------------------------------------------- redaction


def _audit_text(k: GuardedKernel) -> str:
    return "".join(p.read_text() for p in k.audit_files())


def _an_ssn(project: Workspace) -> str:
    con = duckdb.connect(str(project.warehouse), read_only=True)
    try:
        return str(con.execute("SELECT ssn FROM customers ORDER BY id LIMIT 1").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


def test_credentials_and_denied_values_never_reach_the_audit(
        kernel_factory: Callable[..., GuardedKernel], project: Workspace) -> None:
    k = kernel_factory(policy="default", actor="agent")
    assert k.load_result is not None and k.load_result.ok, k.load_result
    ssn = _an_ssn(project)
    assert k.run(f"url = 'postgresql://analyst:{SECRETS[0]}@db.example.com/warehouse'\n"
                 f"opts = dict(host='db', token='{SECRETS[1]}')").ok
    assert k.run("import duckdb\ncon = duckdb.connect('data/warehouse.duckdb')").ok
    res = k.run(f"con.sql(\"SELECT name FROM customers WHERE ssn = '{ssn}'\").fetchall()")
    assert blocked(res), res
    assert k.run(f"import pandas as pd\nlookup = pd.DataFrame({{'ssn': ['x']}})\nlookup[lookup.ssn == '{ssn}']").ok
    text = _audit_text(k)
    assert ssn not in text and SECRETS[0] not in text and SECRETS[1] not in text
    cells = [r for r in k.records() if r["kind"] == "cell"]
    codes = "\n".join(c["code"] for c in cells)
    assert "url = 'postgresql://analyst:***@db.example.com/warehouse'" in codes  # code is kept, scrubbed
    assert "opts = dict(host='db', token='***')" in codes
    assert "WHERE ssn = '***'" in codes and "lookup[lookup.ssn == '***']" in codes
    denial = [r for r in k.records() if r["kind"] != "cell" and r.get("decision") == "deny"][-1]
    assert denial["statement"] == "SELECT name FROM customers WHERE ssn = '***'"
    assert not any("output" in c for c in cells)  # outputs are not kept by default


def test_redact_literals_and_keep_outputs(kernel_factory: Callable[..., GuardedKernel], project: Workspace,
                                          tmp_path: Path) -> None:
    pol = tmp_path / "redacting.yaml"
    pol.write_text(project.policy("default").read_text()
                   + "\naudit:\n  redact_literals: true\n  keep_outputs: true\n  max_output_bytes: 64\n")
    k = kernel_factory(policy=pol, actor="agent")
    assert k.load_result is not None and k.load_result.ok, k.load_result
    assert k.run("import duckdb\ncon = duckdb.connect('data/warehouse.duckdb')\n"
                 "def fetch(q):\n    return con.sql(q).fetchall()").ok
    assert k.run("fetch(\"SELECT count(*) FROM orders WHERE status = 'web'\")").ok
    assert k.run("'x' * 1000").ok
    recs = k.records()
    stmt = [r for r in recs if r.get("statement", "").startswith("SELECT count(*) FROM orders")]
    assert stmt and all(r["statement"] == "SELECT count(*) FROM orders WHERE status = '***'" for r in stmt)
    cells = [r for r in recs if r["kind"] == "cell"]
    assert cells[-2]["output"].startswith("[(")  # the cell's value, as text
    out = cells[-1]["output"]
    assert out.startswith("'xxxx") and out.endswith("… [cut at 64 bytes]") and len(out.encode()) < 100
