"""``%load_ext guard_kernel`` in a real in-process IPython shell: effects, audit, magics.

Every test gets a fresh project in ``tmp_path`` (policy, data/raw, scratch), the
``GUARD_KERNEL_*`` variables, and a shell with the extension loaded; the fixture takes
everything down again (transformer, hooks, current guard), locked or not.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from guard_kernel.audit import read_records
from guard_kernel.decision import CellRejected, GuardDenied, GuardLocked
from guard_kernel.decision import guard as session
from guard_kernel.enforce.ipython import extension
from guard_kernel.enforce.ipython.cell import CellTransformer

REPO = Path(__file__).resolve().parents[3]
POLICY = (REPO / "policies" / "default.yaml").read_text()


def _force_unload(ip: InteractiveShell) -> None:
    state = extension.loaded()
    if state is not None:
        extension._teardown(state)
        extension._loaded = None
        try:
            state.guard.close()
        except ValueError:
            pass
    ip.ast_transformers[:] = [t for t in ip.ast_transformers if not isinstance(t, CellTransformer)]
    ip.extension_manager.loaded.discard("guard_kernel")
    session.set_current(None)


class Shell:
    """A shell with the guard loaded in a temp project."""

    def __init__(self, ip: InteractiveShell, root: Path) -> None:
        self.ip, self.root = ip, root

    def run(self, code: str) -> Any:
        return self.ip.run_cell(code, store_history=True)

    @property
    def guard(self) -> session.Guard:
        g = session.current()
        assert g is not None
        return g

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        recs = list(read_records(self.guard.audit_path))
        return [r for r in recs if kind is None or r["kind"] == kind]


@pytest.fixture
def make_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Shell]]:
    ip = InteractiveShell.instance()
    _force_unload(ip)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "regions.csv").write_text("region,target\nnorth,1\n")
    (tmp_path / "scratch").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GUARD_KERNEL_AUDIT_DIR", str(tmp_path / "audit"))

    def make(actor: str = "agent", lock: bool = True, mode: str = "enforce", load: bool = True) -> Shell:
        text = POLICY.replace("lock: true", f"lock: {str(lock).lower()}").replace("mode: enforce", f"mode: {mode}")
        (tmp_path / "policy.yaml").write_text(text)
        monkeypatch.setenv("GUARD_KERNEL_POLICY", str(tmp_path / "policy.yaml"))
        monkeypatch.setenv("GUARD_KERNEL_ACTOR", actor)
        sh = Shell(ip, tmp_path)
        if load:
            res = sh.run("%load_ext guard_kernel")
            assert res.success, res.error_in_exec
        return sh

    yield make
    _force_unload(ip)
    for name in ("marker", "y", "files", "out", "con", "c2", "duckdb"):
        ip.user_ns.pop(name, None)


def _transformers(ip: InteractiveShell) -> list[Any]:
    return [t for t in ip.ast_transformers if isinstance(t, CellTransformer)]


# ----------------------------------------------------------- whole-cell denial


def test_denied_cell_runs_no_line_and_shell_goes_on(make_shell: Callable[..., Shell], capsys: Any) -> None:
    sh = make_shell()
    res = sh.run("open('scratch/marker.txt', 'w').write('ran')\nmarker = 1\n!ls\n")
    assert isinstance(res.error_before_exec, CellRejected)
    assert not (sh.root / "scratch" / "marker.txt").exists()
    assert "marker" not in sh.ip.user_ns
    out = capsys.readouterr().out
    assert "nothing in this cell ran" in out and "!ls" in out and "Traceback" not in out
    assert sh.run("y = 40 + 2").success and sh.ip.user_ns["y"] == 42


@pytest.mark.parametrize("cell", ["!ls", "%%bash\necho hi\n", "files = !ls", "%sx ls", "%rm data/raw/regions.csv",
                                  "%pip list"])
def test_shell_escapes_denied_for_agent(make_shell: Callable[..., Shell], cell: str) -> None:
    sh = make_shell()
    res = sh.run(cell)
    assert isinstance(res.error_before_exec, CellRejected), cell
    assert res.error_before_exec.decision.action.value == "shell.exec"
    assert (sh.root / "data" / "raw" / "regions.csv").exists()


def test_shell_call_at_run_time_is_denied(make_shell: Callable[..., Shell]) -> None:
    """A command built at run time is not visible statically: the system wrapper decides it."""
    sh = make_shell()
    res = sh.run("cmd = 'l' + 's'\nget_ipython().system(cmd)")
    assert isinstance(res.error_in_exec, GuardDenied)
    assert res.error_in_exec.decision.resource == "ls"


def test_writefile_into_source_denied_and_scratch_allowed(make_shell: Callable[..., Shell]) -> None:
    sh = make_shell()
    res = sh.run("%%writefile data/raw/x.csv\na,b\n")
    assert isinstance(res.error_before_exec, CellRejected)
    assert not (sh.root / "data" / "raw" / "x.csv").exists()
    assert sh.run("%%writefile scratch/ok.txt\nhello\n").success
    assert (sh.root / "scratch" / "ok.txt").read_text() == "hello\n"


def test_run_script_is_checked_before_it_starts(make_shell: Callable[..., Shell]) -> None:
    sh = make_shell(load=False)
    script = sh.root / "scratch" / "job.py"
    script.write_text("open('scratch/started.txt', 'w').write('1')\nopen('data/raw/regions.csv', 'w')\n")
    assert sh.run("%load_ext guard_kernel").success
    res = sh.run("%run scratch/job.py")
    assert isinstance(res.error_in_exec, GuardDenied)
    assert res.error_in_exec.decision.resource == "data/raw/regions.csv"
    assert not (sh.root / "scratch" / "started.txt").exists()
    assert (sh.root / "data" / "raw" / "regions.csv").read_text().startswith("region")


def test_store_is_a_file_write(make_shell: Callable[..., Shell]) -> None:
    sh = make_shell()
    sh.run("y = 1")
    res = sh.run("%store y")
    assert isinstance(res.error_before_exec, CellRejected)
    assert res.error_before_exec.decision.action.value == "file.write"


def test_sql_on_a_source_connection_rejects_the_whole_cell(make_shell: Callable[..., Shell]) -> None:
    duckdb = pytest.importorskip("duckdb")
    sh = make_shell(load=False)
    con = duckdb.connect(str(sh.root / "data" / "warehouse.duckdb"))
    con.execute("CREATE TABLE orders AS SELECT range AS id FROM range(5)")
    con.close()
    assert sh.run("%load_ext guard_kernel").success
    assert sh.run("import duckdb\ncon = duckdb.connect('data/warehouse.duckdb')").success
    res = sh.run("open('scratch/marker.txt', 'w').write('ran')\ncon.execute('DELETE FROM orders')\n")
    assert isinstance(res.error_before_exec, CellRejected)
    assert res.error_before_exec.decision.action.value == "sql.write"
    assert not (sh.root / "scratch" / "marker.txt").exists()
    # a connection opened in the same cell is understood too
    res = sh.run("open('scratch/marker.txt', 'w').write('ran')\n"
                 "c2 = duckdb.connect('data/warehouse.duckdb', read_only=True)\nc2.sql('DROP TABLE orders')\n")
    assert isinstance(res.error_before_exec, CellRejected)
    assert not (sh.root / "scratch" / "marker.txt").exists()
    assert sh.run("con.sql('CREATE TEMP TABLE mine AS SELECT 1 AS a')\ncon.sql('INSERT INTO mine VALUES (2)')").success
    sh.run("con.close()")


def test_syntax_error_is_reported_by_python(make_shell: Callable[..., Shell]) -> None:
    sh = make_shell()
    res = sh.run("def f(:\n    pass\n")
    assert isinstance(res.error_before_exec, SyntaxError)


def test_human_shell_warns_once_and_runs(make_shell: Callable[..., Shell], capsys: Any) -> None:
    sh = make_shell(actor="human")
    capsys.readouterr()
    res = sh.run("out = get_ipython().getoutput('echo guarded-hello')")
    assert res.success
    assert list(sh.ip.user_ns["out"]) == ["guarded-hello"]
    out = capsys.readouterr().out  # a notice (display output), not stderr
    assert out.count("WARN") == 1 and "echo guarded-hello" in out
    shell_recs = sh.records("shell")
    assert [r["decision"] for r in shell_recs] == ["warn"]


def test_shell_expansion_sees_the_callers_locals(make_shell: Callable[..., Shell]) -> None:
    sh = make_shell(actor="human")
    res = sh.run("def f():\n    word = 'zebra'\n    return get_ipython().getoutput('echo {word}')\nout = f()")
    assert res.success and list(sh.ip.user_ns["out"]) == ["zebra"]
    res = sh.run("def g():\n    word = 'okapi'\n    get_ipython().system('echo {word} > scratch/said.txt')\ng()")
    assert res.success
    assert (sh.root / "scratch" / "said.txt").read_text().strip() == "okapi"


def test_ordinary_magics_run_without_warnings(make_shell: Callable[..., Shell], capsys: Any) -> None:
    sh = make_shell()
    capsys.readouterr()
    for cell in ("%time x = 1", "%timeit -n1 -r1 x = 1", "%pwd", "%who", "%%time\ny = 2\n"):
        assert sh.run(cell).success, cell
    captured = capsys.readouterr()
    assert "guard_kernel" not in captured.err and "guard_kernel" not in captured.out


def test_timeit_body_is_checked(make_shell: Callable[..., Shell]) -> None:
    sh = make_shell()
    res = sh.run("marker = 1\n%timeit -n1 -r1 open('data/raw/regions.csv', 'w')")
    assert isinstance(res.error_before_exec, CellRejected) and "marker" not in sh.ip.user_ns
    assert (sh.root / "data" / "raw" / "regions.csv").read_text().startswith("region")


# ---------------------------------------------------------------- fail closed


def test_transformer_error_rejects_the_cell_and_stays_registered(make_shell: Callable[..., Shell],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sh = make_shell()
    [tr] = _transformers(sh.ip)

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("analysis exploded")

    monkeypatch.setattr(tr, "analyze", boom)
    res = sh.run("y = 'should not run'")
    assert isinstance(res.error_before_exec, CellRejected)
    assert "guard internal error" in str(res.error_before_exec)
    assert "y" not in sh.ip.user_ns
    assert _transformers(sh.ip) == [tr]  # IPython did not unregister it
    [err] = sh.records("guard_error")
    assert err["decision"] == "deny" and "analysis exploded" in err["message"]
    assert [r["decision"] for r in sh.records("cell") if r["code"] == "y = 'should not run'"] == ["deny"]
    monkeypatch.undo()
    res = sh.run("marker = 1\n!ls")
    assert isinstance(res.error_before_exec, CellRejected)  # the next cell is still guarded
    assert "marker" not in sh.ip.user_ns
    assert sh.run("y = 1").success


def test_prefilter_error_rejects_a_plain_cell(make_shell: Callable[..., Shell],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path for cells without interesting names fails closed like the full analysis."""
    import guard_kernel.enforce.ipython.cell as cell

    sh = make_shell()

    def boom(source: str) -> list[int]:
        raise RuntimeError("pre-filter exploded")

    monkeypatch.setattr(cell, "hit_lines", boom)
    res = sh.run("y = 'should not run'")
    assert isinstance(res.error_before_exec, CellRejected)
    assert "y" not in sh.ip.user_ns
    [err] = sh.records("guard_error")
    assert err["decision"] == "deny" and "pre-filter exploded" in err["message"]
    monkeypatch.undo()
    assert sh.run("y = 1").success and sh.ip.user_ns["y"] == 1


# ------------------------------------------------------------- load / unload


def test_unload_refused_when_locked(make_shell: Callable[..., Shell], capsys: Any) -> None:
    sh = make_shell()
    guard = sh.guard
    for cell in ("%unload_ext guard_kernel", "%reload_ext guard_kernel"):
        res = sh.run(cell)
        assert isinstance(res.error_in_exec, GuardLocked), cell
    assert "locked" in capsys.readouterr().out
    with pytest.raises(GuardLocked):
        extension.unload_ipython_extension(sh.ip)
    assert session.current() is guard and len(_transformers(sh.ip)) == 1
    assert isinstance(sh.run("!ls").error_before_exec, CellRejected)
    assert [r["decision"] for r in sh.records("guard")] == ["deny", "deny", "deny"]


def test_removed_hooks_are_restored_when_locked(make_shell: Callable[..., Shell]) -> None:
    sh = make_shell()
    res = sh.run("ip = get_ipython()\nip.ast_transformers.clear()\nip.__dict__.pop('system');")
    assert res.success and _transformers(sh.ip) == []
    res = sh.run("marker = 1\n!ls")  # put back before this cell is transformed
    assert isinstance(res.error_before_exec, CellRejected) and "marker" not in sh.ip.user_ns
    res = sh.run("cmd = 'ls'\nget_ipython().system(cmd)")
    assert isinstance(res.error_in_exec, GuardDenied)
    assert len(_transformers(sh.ip)) == 1
    assert any("restored" in r["message"] for r in sh.records("guard"))
    guard = sh.guard
    assert sh.run("from guard_kernel.decision import guard as s\ns.set_current(None)").success
    assert isinstance(sh.run("!ls").error_before_exec, CellRejected)
    assert session.current() is guard
    for name in ("ip", "s"):
        sh.ip.user_ns.pop(name, None)


def test_unload_when_unlocked_removes_every_hook(make_shell: Callable[..., Shell]) -> None:
    sh = make_shell(actor="agent", lock=False)
    path = sh.guard.audit_path
    assert sh.run("%unload_ext guard_kernel").success
    assert session.current() is None and _transformers(sh.ip) == []
    assert "system" not in sh.ip.__dict__ and "find" not in sh.ip.magics_manager.__dict__
    assert sh.run("z = 1").success
    assert any(r["kind"] == "session_end" for r in read_records(path))


def test_loading_twice_is_harmless(make_shell: Callable[..., Shell]) -> None:
    sh = make_shell()
    guard = sh.guard
    extension.load_ipython_extension(sh.ip)
    assert sh.run("%load_ext guard_kernel").success
    assert session.current() is guard
    assert len(_transformers(sh.ip)) == 1
    assert len(sh.ip.events.callbacks["pre_run_cell"]) == len(set(sh.ip.events.callbacks["pre_run_cell"]))
    sh.run("x = 1")
    assert len([r for r in sh.records("cell") if r["code"] == "x = 1"]) == 1


def test_bad_policy_refuses_to_load_and_installs_nothing(make_shell: Callable[..., Shell],
                                                         monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    sh = make_shell(load=False)
    (sh.root / "bad.yaml").write_text("version: 1\nname: bad\nmode: sometimes\n")
    monkeypatch.setenv("GUARD_KERNEL_POLICY", str(sh.root / "bad.yaml"))
    res = sh.run("%load_ext guard_kernel")
    assert not res.success
    assert "PolicyError" in capsys.readouterr().out
    assert session.current() is None and _transformers(sh.ip) == []


# --------------------------------------------------------------------- magics


def test_guard_magics(make_shell: Callable[..., Shell], capsys: Any) -> None:
    sh = make_shell()
    sh.run("!ls")
    capsys.readouterr()
    sh.run("%guard status")
    out = capsys.readouterr().out
    for want in ("agent-default", "enforce", "lock:        true", "actor:       agent", "environment: default",
                 "denied 1", sh.guard.audit_path):
        assert want in out, want
    sh.run("%guard explain")
    out = capsys.readouterr().out
    assert "deny shell.exec on ls" in out and "agent-no-egress (policy.yaml:" in out
    sh.run("%guard explain --json")
    d = json.loads(capsys.readouterr().out)
    assert d["code"] == "policy_violation" and d["action"] == "shell.exec" and d["rules"][0]["id"] == "agent-no-egress"
    sh.run("%guard audit")
    out = capsys.readouterr().out
    assert out.startswith(f"audit:     {sh.guard.audit_path}\n")
    assert "chain:     ok" in out and "denied 1" in out and "ended:     ended without a close record" in out
    assert re.search(r"\n\d+ +\S+ +deny +shell +shell\.exec +ls +agent-no-egress ", out), out
    sh.run("%guard audit --json")
    d = json.loads(capsys.readouterr().out)
    assert d["path"] == sh.guard.audit_path and d["denial_count"] == 1 and d["chain_ok"]
    assert d["denials"][0]["rules"] == ["agent-no-egress"]


def test_guard_policy_switch(make_shell: Callable[..., Shell], capsys: Any) -> None:
    sh = make_shell(lock=False, load=False)
    (sh.root / "other.yaml").write_text(POLICY.replace("name: agent-default", "name: stricter"))
    assert sh.run("%load_ext guard_kernel").success  # files are written before the guard is on
    assert sh.run("%guard policy other.yaml").success
    assert sh.guard.policy.name == "stricter"
    assert "switched from agent-default to stricter" in capsys.readouterr().out
    res = sh.run("%guard policy other.yaml")  # the new policy is locked: no more switching
    assert isinstance(res.error_in_exec, GuardLocked)
    assert sh.guard.policy.name == "stricter"


# (id, line, what the usage error says) — a finished command line: nothing is silently ignored
MAGIC_USAGE_ERRORS: list[tuple[str, str, str]] = [
    ("unknown-subcommand", "%guard stauts", "unknown subcommand 'stauts'"),
    ("stray-argument-status", "%guard status now", "unexpected argument 'now'"),
    ("stray-argument-explain", "%guard explain 2 3", "unexpected argument '3'"),
    ("not-a-number", "%guard explain last", "positive number"),
    ("zero", "%guard explain 0", "positive number"),
    ("unknown-option", "%guard explain --yaml", "unknown option '--yaml'"),
    ("audit-takes-nothing", "%guard audit x", "unexpected argument 'x'"),
    ("policy-needs-a-file", "%guard policy", "policy needs a FILE"),
    ("check-needs-code", "%guard check", "check needs the code"),
    ("cell-only-for-check", "%%guard status\nx", "only for check"),
]


@pytest.mark.parametrize("line,message", [m[1:] for m in MAGIC_USAGE_ERRORS], ids=[m[0] for m in MAGIC_USAGE_ERRORS])
def test_guard_magic_usage_errors(make_shell: Callable[..., Shell], capsys: Any, line: str, message: str) -> None:
    from IPython.core.error import UsageError

    sh = make_shell()
    res = sh.run(line)
    assert isinstance(res.error_in_exec, UsageError) or isinstance(res.error_before_exec, UsageError), res
    err = res.error_in_exec or res.error_before_exec
    assert message in str(err) and "usage: %guard" in str(err)


@pytest.mark.parametrize("line", ["%guard help", "%guard -h", "%guard --help", "%guard explain -h"])
def test_guard_magic_help(make_shell: Callable[..., Shell], capsys: Any, line: str) -> None:
    sh = make_shell()
    assert sh.run(line).success
    out = capsys.readouterr().out
    assert "usage: %guard" in out and "%guard check" in out and "%guard explain [N]" in out


def test_guard_explain_n(make_shell: Callable[..., Shell], capsys: Any) -> None:
    sh = make_shell()
    sh.run("!ls")
    sh.run("import ctypes")
    capsys.readouterr()
    sh.run("%guard explain 1")
    assert "python.import on ctypes" in capsys.readouterr().out
    sh.run("%guard explain 2")
    assert "shell.exec on ls" in capsys.readouterr().out
    sh.run("%guard explain 2 --json")
    assert json.loads(capsys.readouterr().out)["action"] == "shell.exec"
    sh.run("%guard explain 99")
    assert "No decision 99 back" in capsys.readouterr().out


def test_guard_check(make_shell: Callable[..., Shell], capsys: Any) -> None:
    sh = make_shell()
    mark = len(sh.records())
    assert sh.run("%guard check import ctypes").success
    out = capsys.readouterr().out
    assert "DENY" in out and "no-native-code (policy.yaml:" in out
    assert sh.run("%guard check --json open('scratch/x.txt', 'w')").success
    d = json.loads(capsys.readouterr().out)
    assert d["outcome"] == "allow" and d["units"][0]["decisions"][0]["rules"][0]["id"] == "scratch-writes"
    assert sh.run("%%guard check\nimport os\nos.remove('data/raw/regions.csv')\n").success
    assert "source:raw" in capsys.readouterr().out
    assert (sh.root / "data" / "raw" / "regions.csv").exists()  # checked, not run
    assert not (sh.root / "scratch" / "x.txt").exists()
    assert [r["kind"] for r in sh.records()[mark:]] == ["cell"] * 3  # nothing decided was recorded


def test_guard_check_knows_the_session(make_shell: Callable[..., Shell], capsys: Any) -> None:
    """Names bound and tables created by earlier cells count, as they do when the code runs."""
    sh = make_shell()
    assert sh.run("import duckdb\nmem = duckdb.connect()\nmem.execute('CREATE TABLE t AS SELECT 1 AS a')").success
    capsys.readouterr()
    sh.run("%guard check mem.execute('DELETE FROM t')")
    assert "ALLOW" in capsys.readouterr().out
    sh.run("%guard check mem.execute('SELEKT 1')")
    assert "sql-unknown" in capsys.readouterr().out


# ---------------------------------------------------------------------- audit


def test_every_cell_has_a_record(make_shell: Callable[..., Shell]) -> None:
    sh = make_shell()
    sh.run("a = 1")
    sh.run("1 / 0")
    sh.run("marker = 2\n!ls")
    cells = [r for r in sh.records("cell")]
    by_code = {r["code"]: r for r in cells}
    assert by_code["a = 1"]["decision"] == "allow" and by_code["a = 1"]["error"] is None
    assert by_code["1 / 0"]["error"].startswith("ZeroDivisionError")
    rejected = by_code["marker = 2\n!ls"]
    assert rejected["decision"] == "deny" and rejected["error"].startswith("CellRejected")
    assert rejected["intents"] == [{"action": "shell.exec", "resource": "ls", "line": 2, "via": "!"}]
    assert rejected["rules"][0]["id"] == "agent-no-egress"
    for r in cells:
        assert isinstance(r["duration_ms"], float) and r["seq"] > 0
    deny = [r for r in sh.records("shell") if r["decision"] == "deny"]
    assert len(deny) == 1 and deny[0]["line"] == 2


def test_audit_mode_records_would_deny_and_runs(make_shell: Callable[..., Shell]) -> None:
    sh = make_shell(mode="audit")
    res = sh.run("out = get_ipython().getoutput('echo audited')")
    assert res.success and list(sh.ip.user_ns["out"]) == ["audited"]
    assert [r["decision"] for r in sh.records("shell")] == ["would_deny"]
    cell = next(r for r in sh.records("cell") if "audited" in r["code"])
    assert cell["decision"] == "would_deny"


def test_warnings_are_shown(make_shell: Callable[..., Shell], capsys: Any) -> None:
    sh = make_shell(actor="human")
    capsys.readouterr()
    sh.run("!echo hi")
    out = capsys.readouterr().out
    assert re.search(r"WARN: Shell command run under policy agent-default", out)


def test_human_bash_cell_runs_with_one_warning(make_shell: Callable[..., Shell], capsys: Any) -> None:
    sh = make_shell(actor="human")
    capsys.readouterr()
    assert sh.run("%%bash\necho bash-ran > scratch/bash.txt\n").success
    assert (sh.root / "scratch" / "bash.txt").read_text().strip() == "bash-ran"
    assert capsys.readouterr().out.count("WARN") == 1
    assert [r["decision"] for r in sh.records("magic")] == ["warn"]


def test_reload_when_unlocked_gives_one_fresh_guard(make_shell: Callable[..., Shell]) -> None:
    sh = make_shell(lock=False)
    old = sh.guard
    assert sh.run("%reload_ext guard_kernel").success
    assert session.current() is not None and session.current() is not old
    assert len(_transformers(sh.ip)) == 1
    assert isinstance(sh.run("!ls").error_before_exec, CellRejected)


LATE_LIBRARIES = r"""
import json, sys
sys.path.insert(0, {repo!r})
from IPython.core.interactiveshell import InteractiveShell

ip = InteractiveShell.instance()
heavy = ("pandas", "numpy", "pyarrow", "duckdb", "sqlglot")
assert ip.run_cell("%load_ext guard_kernel").success
out = {{"imported_by_load": sorted(m for m in heavy if m in sys.modules)}}
ok = lambda code: ip.run_cell(code).success
out["first"] = ok({first!r})
out["import"] = ok("import duckdb, pandas as pd")
out["gate"] = ok("from guard_kernel.enforce.duckdb import gate as duckdb_gate; assert duckdb_gate.installed()")
out["copy_to"] = ok("duckdb.sql(\"COPY (SELECT 1 AS a) TO 'out.csv'\")")
out["to_csv_built_name"] = ok("getattr(pd.DataFrame({{'a': [1]}}), 'to_' + 'csv')('out2.csv')")
out["scratch"] = ok("pd.DataFrame({{'a': [1]}}).to_csv('scratch/ok.csv'); duckdb.sql('SELECT 42').fetchall()")
print(json.dumps(out))
"""


@pytest.mark.parametrize("first", ["pass", "from guard_kernel.analysis.sql import requests"],
                         ids=["user-imports-duckdb", "sql-layer-imports-duckdb"])
def test_load_imports_no_data_library_and_guards_them_on_import(tmp_path: Path, first: str) -> None:
    """``%load_ext`` leaves pandas/DuckDB unimported; a cell importing them gets them guarded.

    DuckDB may also first come in through the guard's own SQL layer (its ``import duckdb``
    runs while ``guard_kernel.analysis.sql.requests`` is still being imported): the gate goes on all the same.
    """
    (tmp_path / "scratch").mkdir()
    (tmp_path / "policy.yaml").write_text(POLICY)
    env = {**os.environ, "GUARD_KERNEL_POLICY": str(tmp_path / "policy.yaml"), "GUARD_KERNEL_ACTOR": "agent",
           "GUARD_KERNEL_AUDIT_DIR": str(tmp_path / "audit")}
    proc = subprocess.run([sys.executable, "-c", LATE_LIBRARIES.format(repo=str(REPO), first=first)], cwd=tmp_path,
                          env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"imported_by_load": [], "first": True, "import": True, "gate": True, "copy_to": False,
                   "to_csv_built_name": False, "scratch": True}
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "out2.csv").exists()
    assert (tmp_path / "scratch" / "ok.csv").exists()


def test_guard_config_sets_what_the_environment_leaves_unset(make_shell: Callable[..., Shell], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``c.GuardConfig.*`` is the Jupyter way to say what GUARD_KERNEL_* says; a variable set wins."""
    from traitlets.config import Config

    sh = make_shell(load=False)
    monkeypatch.delenv("GUARD_KERNEL_ACTOR")
    cfg = Config()
    cfg.GuardConfig.actor = "human"
    cfg.GuardConfig.environment = "staging"
    cfg.GuardConfig.policy = str(tmp_path / "not-this-one.yaml")  # GUARD_KERNEL_POLICY is set: it wins
    monkeypatch.setattr(sh.ip, "config", cfg)
    assert sh.run("%load_ext guard_kernel").success
    assert (sh.guard.actor, sh.guard.environment) == ("human", "staging")
    assert sh.guard.policy.file == str(tmp_path / "policy.yaml")
