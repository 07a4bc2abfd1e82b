"""The guarded kernel, installed as a kernelspec and started by name through jupyter_client.

Each attack is tried in a real kernel on a real workspace; the test checks the effect (the file
is not there, the table still has its rows) and that the kernel answers the next cell.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import GuardedKernel, kernel_env, table_counts

from guard_kernel.audit import read_records
from guard_kernel.cli.main import main
from guard_kernel.decision.errors import ERROR_NAMES
from guard_kernel.demo import Workspace
from guard_kernel.kernel import spec

Start = Callable[..., GuardedKernel]


@pytest.fixture
def prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kernelspec prefix first on JUPYTER_PATH (the deployment the README recommends)."""
    p = tmp_path / "prefix"
    monkeypatch.setenv("JUPYTER_PATH", str(p / "share" / "jupyter"))
    return p


@pytest.fixture
def start(project: Workspace, prefix: Path, tmp_path: Path) -> Iterator[Start]:
    """Install the guarded kernelspec (default policy, project root) and start kernels by its name."""
    started: list[GuardedKernel] = []

    def make(*, name: str = "guarded", policy: Path | None = None, cwd: Path | None = None, install: bool = True,
             env: dict[str, str] | None = None, **settings: Any) -> GuardedKernel:
        from jupyter_client.manager import start_new_kernel

        pol = policy or project.policy("default")
        if install:
            spec.install(name=name, prefix=str(prefix), policy=str(pol), root=str(project.root), **settings)
        audit = tmp_path / f"audit-{len(started)}"
        kenv = kernel_env(None, "agent", audit)
        kenv.pop("GUARD_KERNEL_ACTOR")
        kenv.update(env or {})
        km, kc = start_new_kernel(kernel_name=name, startup_timeout=60, cwd=str(cwd or project.root), env=kenv)
        k = GuardedKernel(km, kc, project, audit, pol, "agent")
        started.append(k)
        return k

    yield make
    for k in started:
        k.shutdown()


def shell_reply(k: GuardedKernel, msg_id: str) -> dict[str, Any]:
    """The shell reply to *msg_id* (replies to earlier requests are skipped)."""
    while True:
        reply: dict[str, Any] = k.kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


def refused(res: Any) -> bool:
    return res.status == "error" and res.ename in ERROR_NAMES


def test_guarded_before_the_first_cell_and_locked(start: Start, project: Workspace) -> None:
    k = start()
    status = json.loads(k.run("%guard status --json").stdout)
    assert status["lock"] is True and status["actor"] == "agent" and status["kernel"] == "guarded"
    before = table_counts(project)
    res = k.run("import duckdb\nduckdb.connect('data/warehouse.duckdb').execute('DROP TABLE customers')")
    assert refused(res) and "read-only" in res.traceback
    assert table_counts(project) == before
    for cell in ("%unload_ext guard_kernel", "%reload_ext guard_kernel", "%guard policy policies/analyst.yaml"):
        assert refused(k.run(cell)), cell
    assert refused(k.run("open('data/raw/regions.csv', 'a').write('x')"))
    assert k.alive()


def test_kernel_info_advertises_no_debugger(start: Start) -> None:
    k = start()
    info = k.kc.kernel_info(reply=True)["content"]
    assert info["implementation"] == "guard_kernel"
    assert "debugger" not in info["supported_features"] and "kernel subshells" not in info["supported_features"]


def test_cleared_ast_transformers_do_not_open_a_way(start: Start, project: Workspace) -> None:
    k = start()
    assert k.run("get_ipython().ast_transformers.clear()").ok
    res = k.run("import duckdb\nduckdb.connect('data/warehouse.duckdb').execute('DELETE FROM orders')")
    assert refused(res)
    assert table_counts(project)["orders"] > 0
    assert any(r["kind"] == "tamper" and "ast transformer" in r["hooks"] for r in k.records())
    # the hooks were put back: the same action in the next cell is denied by the cell gate itself
    res = k.run("import duckdb\nduckdb.connect('data/warehouse.duckdb').execute('DELETE FROM orders')")
    assert refused(res) and res.ename == "CellRejected"
    assert k.alive()


def test_restored_duckdb_connect_then_copy_writes_nothing(start: Start, project: Workspace) -> None:
    k = start()
    out = project.root / "leak.csv"
    setup = ("import duckdb\nfrom guard_kernel.enforce.duckdb import rows\n"
             "duckdb.connect = rows.ORIG_BY[(id(duckdb), 'connect')]\n"
             "duckdb.DuckDBPyConnection.execute = rows.ORIG_BY[(id(duckdb.DuckDBPyConnection), 'execute')]")
    assert k.run(setup).ok
    res = k.run(f"con = duckdb.connect('data/warehouse.duckdb')\ncon.execute(\"COPY customers TO '{out}'\")")
    assert refused(res)
    assert not out.exists()
    assert any(r["kind"] == "tamper" for r in k.records())
    assert k.alive()


def test_runtime_hook_games_are_caught(start: Start, project: Workspace) -> None:
    k = start()
    target = project.root / "data" / "raw" / "planted.csv"
    assert k.run("import sys\nsys.addaudithook(lambda *a: None)\n"
                 "from guard_kernel.enforce.runtime import hook\nhook._HANDLERS.clear()").ok
    res = k.run("import os\nos.makedirs('data/raw', exist_ok=True)\n"
                f"open({str(target)!r}, 'w').write('x')")
    assert refused(res)
    assert not target.exists()
    assert k.alive()


def test_user_expressions_are_checked_like_a_cell(start: Start, project: Workspace) -> None:
    k = start()
    target = project.root / "data" / "raw" / "expr.csv"
    reply = shell_reply(k, k.kc.execute("1", user_expressions={"x": f"open({str(target)!r}, 'w').write('x')"}))
    assert reply["content"]["status"] == "error" and "user expression" in reply["content"]["evalue"]
    assert not target.exists()
    # a harmless expression is answered
    reply = shell_reply(k, k.kc.execute("1", user_expressions={"n": "1 + 1"}))
    assert reply["content"]["user_expressions"]["n"]["data"]["text/plain"] == "2"


def test_debug_request_is_refused(start: Start) -> None:
    k = start()
    msg = k.kc.session.msg("debug_request", {"seq": 1, "type": "request", "command": "initialize", "arguments": {}})
    k.kc.control_channel.send(msg)
    reply = k.kc.control_channel.get_msg(timeout=30)
    assert reply["msg_type"] == "debug_reply" and reply["content"]["success"] is False
    assert refused(k.run("%debug"))
    assert any(r.get("resource") == "debug_request" and r["decision"] == "deny" for r in k.records())
    assert k.alive()


def test_user_startup_files_do_not_run_before_the_guard(start: Start, project: Workspace, tmp_path: Path) -> None:
    ipdir = tmp_path / "ipython"
    startup = ipdir / "profile_default" / "startup"
    startup.mkdir(parents=True)
    marker = tmp_path / "startup-ran"
    (startup / "00-evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (ipdir / "profile_default" / "ipython_kernel_config.py").write_text(
        f"c.InteractiveShellApp.exec_lines = ['open({str(marker)!r}, \"w\").write(\"ran\")']\n")
    pystartup = tmp_path / "pystartup.py"
    pystartup.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    k = start(env={"IPYTHONDIR": str(ipdir), "PYTHONSTARTUP": str(pystartup)})
    assert k.alive()
    assert not marker.exists()


def test_a_changed_policy_file_stops_the_kernel_after_restart(start: Start, project: Workspace,
                                                               tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(project.policy("default").read_text())
    k = start(policy=policy)
    res = k.run(f"open({str(policy)!r}, 'a').write('\\n# edited by the agent\\n')")
    assert refused(res)
    policy.write_text(policy.read_text().replace("lock: true", "lock: false"))  # edited outside the session
    k.km.restart_kernel(now=True)
    k.kc.wait_for_ready(timeout=60)
    res = k.run("1 + 1")
    assert refused(res) and "changed since this kernel was installed" in res.traceback
    assert k.kc.kernel_info(reply=True)["content"]["status"] == "ok"


def test_a_kernel_without_a_valid_policy_runs_nothing(start: Start, tmp_path: Path, project: Workspace) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: bad\ndefaults: {read: maybe}\n")
    spec.install(name="loose", prefix=str(tmp_path / "prefix"))  # no policy fixed: the environment's is used
    k = start(name="loose", install=False, env={"GUARD_KERNEL_POLICY": str(bad)})
    assert k.kc.kernel_info(reply=True)["content"]["status"] == "ok"
    target = project.root / "scratch" / "ran.txt"
    res = k.run(f"open({str(target)!r}, 'w').write('x')")
    assert refused(res) and "defaults.read" in res.traceback and "json:" in res.traceback
    assert not target.exists()


def test_install_refuses_an_invalid_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: bad\nrules: [{id: x, effect: maybe, actions: [sql.read]}]\n")
    assert main(["install", "--prefix", str(tmp_path / "p"), "--policy", str(bad)]) == 2
    assert "effect" in capsys.readouterr().err
    assert not (tmp_path / "p" / "share" / "jupyter" / "kernels" / "guarded").exists()


def test_installed_as_python3_it_is_what_python3_starts(start: Start, prefix: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    k = start(name="python3")
    assert json.loads(k.run("%guard status --json").stdout)["kernel"] == "python3"
    assert main(["kernels"]) == 0
    out = capsys.readouterr().out
    assert f"'python3' resolves to {prefix / 'share' / 'jupyter' / 'kernels' / 'python3'} (guarded)" in out


def test_a_notebook_in_a_subfolder_decides_like_one_at_the_root(start: Start, project: Workspace) -> None:
    sub = project.root / "notebooks" / "deep"
    sub.mkdir(parents=True)
    cells = {
        "read raw": "import pandas as pd\nlen(pd.read_csv('{up}data/raw/regions.csv'))",
        "write scratch": "open('{up}scratch/note.txt', 'w').write('ok')",
        "write source": "open('{up}data/raw/regions.csv', 'a').write('x')",
    }
    outcomes = []
    for cwd, up in ((project.root, ""), (sub, "../../")):
        k = start(cwd=cwd)
        outcomes.append({name: k.run(code.format(up=up)).ok for name, code in cells.items()})
        k.shutdown()
    assert outcomes[0] == outcomes[1] == {"read raw": True, "write scratch": True, "write source": False}


def test_cell_records_name_their_request_and_silent_runs_are_recorded(start: Start) -> None:
    k = start()
    msg_id = k.kc.execute("x = 41 + 1")
    shell_reply(k, msg_id)
    shell_reply(k, k.kc.execute("y = x", silent=True))
    deadline = time.monotonic() + 10  # the launcher writes what the kernel sends on its own thread
    while True:
        cells = [r for r in k.records() if r["kind"] == "cell"]
        if any(r.get("silent") for r in cells) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert any(r.get("request", {}).get("msg_id") == msg_id for r in cells)
    assert any(r.get("silent") and r["code"] == "y = x" for r in cells)


def test_comm_to_an_unknown_target_is_refused_for_agents(start: Start) -> None:
    k = start()
    assert k.run("ran = []\nget_ipython().kernel.comm_manager.register_target("
                 "'backdoor', lambda comm, msg: ran.append(msg))").ok
    msg = k.kc.session.msg("comm_open", {"comm_id": "c1", "target_name": "backdoor", "data": {}})
    k.kc.shell_channel.send(msg)
    assert k.value("len(ran)") == 0
    assert any(r["kind"] == "comm" and r["decision"] == "deny" for r in k.records())


def test_load_ext_with_a_bad_policy_refuses_cells_until_a_good_one(kernel_factory: Any, project: Workspace,
                                                                   tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: bad\nmode: sometimes\n")
    k = kernel_factory(policy=bad)
    assert k.load_result is not None and k.load_result.status == "error"
    target = project.root / "data" / "raw" / "after-bad-load.csv"
    res = k.run(f"open({str(target)!r}, 'w').write('x')")
    assert res.ename == "GuardUnavailable" and "could not start" in res.traceback
    assert not target.exists()
    assert k.run(f"%guard policy {project.policy('default')}").ok
    assert refused(k.run(f"open({str(target)!r}, 'w').write('x')"))
    assert not target.exists()
    assert k.run("1 + 1").ok


def test_records_of_a_kernel_session_verify(start: Start) -> None:
    from guard_kernel.audit import verify

    k = start()
    k.run("1 + 1")
    files = k.audit_files()
    assert files and all(verify(str(f)).ok for f in files)
    records = list(read_records(str(files[0])))
    assert records[0]["kind"] == "launcher" and records[0]["confinement"]["state"] == "in force"
    header = next(r for r in records if r["kind"] == "session")
    assert header["kernel"]["name"] == "guarded" and header["lock"] is True and header["pid"] != records[0]["pid"]
    assert header["confinement"]["state"] == "in force"
    assert os.path.basename(str(files[0])).endswith(".jsonl")


def test_the_audit_folder_and_the_policy_file_are_never_writable(start: Start, tmp_path: Path) -> None:
    analyst = tmp_path / "analyst.yaml"  # a policy that allows writing files in general
    analyst.write_text("version: 1\nname: open\nlock: false\ndefaults: {read: allow, write: allow, export: allow}\n"
                       "scratch: ['scratch/**']\n")
    k = start(policy=analyst)
    audit = k.audit_files()[0]
    before = list(read_records(str(audit)))
    for code in (f"open({str(audit)!r}, 'w').write('')", f"import os\nos.remove({str(audit)!r})",
                 f"open({str(analyst)!r}, 'a').write('rules: []')"):
        assert refused(k.run(code)), code
    assert list(read_records(str(audit)))[:len(before)] == before  # nothing recorded was lost
    assert "rules: []" not in analyst.read_text()
    assert k.run("open('scratch/note.txt', 'w').write('fine')").ok  # ordinary writes still work


def test_one_cell_that_uses_the_originals_is_stopped_by_the_os_layer(start: Start, tmp_path: Path) -> None:
    """docs/threat-model.md: a cell that reaches DuckDB's unwrapped functions through the guard's own
    module state, and uses them without replacing any hook, is not seen in-process; Landlock stops
    the write (a source opened read-write: refused; a COPY outside scratch: refused)."""
    k = start()
    res = k.run("import duckdb\nfrom guard_kernel.enforce.duckdb import rows\n"
                "rows.ORIG_BY[(id(duckdb), 'connect')]('data/warehouse.duckdb')")
    assert res.status == "error" and "Permission denied" in res.traceback
    leak = tmp_path / "leak.csv"
    res = k.run("c = rows.ORIG_BY[(id(duckdb), 'connect')](':memory:')\n"
                "c.execute(\"ATTACH 'data/warehouse.duckdb' AS w (READ_ONLY)\")\n"
                f"rows.ORIG_BY[(id(duckdb.DuckDBPyConnection), 'execute')](c, \"COPY w.customers TO '{leak}'\")")
    assert res.status == "error" and "Permission denied" in res.traceback
    assert not leak.exists()
    assert k.alive()


def test_kernel_info_advertises_the_guard(start: Start) -> None:
    k = start()
    guard = k.kc.kernel_info(reply=True)["content"]["guard"]
    assert guard["guarded"] is True and guard["actor"] == "agent" and guard["lock"] is True
    assert guard["policy"] == "agent-default" and len(guard["policy_sha256"]) == 64
    assert guard["confinement"] == "in force" and guard["check_target"] == "guard_kernel.check"


def comm_answers(k: GuardedKernel, comm_id: str, data: dict[str, Any], *, limit: int = 200) -> list[dict[str, Any]]:
    """Open the ``guard_kernel.check`` comm with *data* and collect the kernel's answers (bounded)."""
    k.kc.shell_channel.send(k.kc.session.msg("comm_open", {"comm_id": comm_id, "target_name": "guard_kernel.check",
                                                           "data": data}))
    for _ in range(limit):
        msg = k.kc.get_iopub_msg(timeout=60)
        if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == comm_id:
            return [msg["content"]["data"]]
    raise AssertionError("no answer on the guard_kernel.check comm")


def test_the_check_comm_answers_without_running_anything(start: Start, project: Workspace) -> None:
    k = start()
    before = table_counts(project)
    drop = "import duckdb\nduckdb.connect('data/warehouse.duckdb').execute('DROP TABLE customers')"
    [answer] = comm_answers(k, "chk1", {"code": drop})
    assert answer["ok"] is True and answer["report"]["outcome"] == "deny"
    assert table_counts(project) == before  # asked, never run
    [answer] = comm_answers(k, "chk2", {"code": "x = 1 + 1"})
    assert answer["ok"] is True and answer["report"]["outcome"] == "allow"
    assert k.value("'x' in dir()") is False  # the pre-flight ran nothing
    [answer] = comm_answers(k, "chk3", {"code": 3})
    assert answer["ok"] is False and "string" in answer["error"]
    assert not any(r["kind"] == "comm" and r["decision"] == "deny" for r in k.records())
    assert k.alive()
