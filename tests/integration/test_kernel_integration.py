"""A real kernel with ``%load_ext guard_kernel``: effects on disk and in the database, not error names.

One guarded kernel (policies/default.yaml, actor ``agent``) serves the module; the
sample project has 2000 customers, 20000 orders, 3000 raw events and 800 returns, so
every full read crosses the agent's row cap of 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import GuardedKernel, blocked, decisions, source_digests, table_counts

from guard_kernel.audit import verify
from guard_kernel.demo import Workspace

CAP = 500

SETUP = """
import os, shutil, pathlib
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
con = duckdb.connect("data/warehouse.duckdb")
small = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
"""


@pytest.fixture(scope="module")
def k(kernel: GuardedKernel) -> GuardedKernel:
    res = kernel.run(SETUP)
    assert res.ok, f"setup failed:\n{res}"
    return kernel


@pytest.fixture(scope="module")
def before(project: Workspace) -> tuple[dict[str, str], dict[str, int]]:
    """Source bytes and row counts before anything ran."""
    return source_digests(project), table_counts(project)


@pytest.fixture
def untouched(k: GuardedKernel, project: Workspace, before: tuple[dict[str, str], dict[str, int]]) -> Iterator[None]:
    """After the test: sources keep their bytes and row counts, and the kernel still answers."""
    yield
    assert k.alive(), "the kernel must answer the next cell"
    assert source_digests(project) == before[0], "a source file changed"
    assert table_counts(project) == before[1], "a warehouse table changed"


def test_guard_is_loaded(k: GuardedKernel) -> None:
    assert k.load_result is not None and k.load_result.ok
    status = k.run("%guard status")
    assert status.ok, status
    shown = status.stdout + status.text
    assert "agent-default" in shown and "agent" in shown
    assert len(k.audit_files()) == 1
    first = k.records()[0]
    assert first["actor"] == "agent" and first["policy"]["name"] == "agent-default"


# ------------------------------------------------------------ denied exports

EXPORTS: list[tuple[str, str, str]] = [
    ("pandas-to_csv", "small.to_csv({p!r})", "out_pandas.csv"),
    ("pandas-to_parquet", "small.to_parquet({p!r})", "out_pandas.parquet"),
    ("pandas-to_json", "small.to_json({p!r})", "out_pandas.json"),
    ("pandas-to_pickle", "pd.to_pickle(small, {p!r})", "out_pandas.pkl"),
    ("pandas-dynamic-getattr", "getattr(small, 'to_' + 'csv')({p!r})", "out_dynamic.csv"),
    ("pandas-subdir", "small.to_csv({p!r})", "exports/out.csv"),
    ("pyarrow-parquet", "pq.write_table(pa.table({{'a': [1, 2]}}), {p!r})", "out_arrow.parquet"),
    ("pyarrow-csv", "pa_csv.write_csv(pa.table({{'a': [1, 2]}}), {p!r})", "out_arrow.csv"),
    ("numpy-save", "np.save({p!r}, np.arange(3))", "out_numpy.npy"),
    ("duckdb-copy", "con.execute(\"COPY (SELECT 1 AS a) TO '{p}'\")", "out_copy.csv"),
    ("duckdb-copy-table", "con.execute(\"COPY orders TO '{p}' (FORMAT parquet)\")", "out_orders.parquet"),
    ("duckdb-copy-built-string", "q = 'COPY (SELECT 1 AS a) ' + \"TO '{p}'\"\ncon.execute(q)", "out_built.csv"),
    ("duckdb-default-connection", "duckdb.sql(\"COPY (SELECT 42 AS a) TO '{p}'\")", "out_default.csv"),
    ("duckdb-relation-write_csv", "con.sql('SELECT 1 AS a').write_csv({p!r})", "out_rel.csv"),
    ("duckdb-relation-to_parquet", "con.sql('SELECT 1 AS a').to_parquet({p!r})", "out_rel.parquet"),
    ("duckdb-export-database", "duckdb.connect().execute(\"EXPORT DATABASE '{p}'\")", "out_export_dir"),
    ("open-write", "open({p!r}, 'w').write('x')", "out_open.txt"),
    ("pathlib-write_text", "pathlib.Path({p!r}).write_text('x')", "out_pathlib.txt"),
    ("os-open", "os.close(os.open({p!r}, os.O_WRONLY | os.O_CREAT))", "out_osopen.txt"),
]


@pytest.mark.parametrize("code,target", [e[1:] for e in EXPORTS], ids=[e[0] for e in EXPORTS])
def test_denied_export_leaves_no_file(k: GuardedKernel, project: Workspace, untouched: None, code: str,
                                      target: str) -> None:
    path = project.root / target
    res = k.run(code.format(p=target))
    assert blocked(res), f"export to {target} was not denied:\n{res}"
    assert not path.exists(), f"{target} was written although the export was denied"


def test_export_of_a_dataframe_into_scratch_is_allowed(k: GuardedKernel, project: Workspace,
                                                       scratch_file: Callable[[str], Path]) -> None:
    out = scratch_file("ok_export.csv")
    res = k.run("small.to_csv('scratch/ok_export.csv', index=False)")
    assert res.ok, res
    assert out.read_text().splitlines()[0] == "a,b"


# --------------------------------------------------------- sources stay put

SOURCE_WRITES: list[tuple[str, str]] = [
    ("delete-rows", "con.execute('DELETE FROM orders')"),
    ("update-rows", "con.execute(\"UPDATE customers SET region = 'nowhere'\")"),
    ("insert-rows", "con.execute('INSERT INTO products SELECT * FROM products')"),
    ("drop-table", "con.execute('DROP TABLE products')"),
    ("truncate-table", "con.execute('TRUNCATE orders')"),
    ("alter-table", "con.execute('ALTER TABLE customers DROP COLUMN ssn')"),
    ("create-table-in-source", "con.execute('CREATE TABLE leak AS SELECT 1 AS a')"),
    ("read-write-connect", "duckdb.connect('data/warehouse.duckdb', read_only=False).execute('DELETE FROM orders')"),
    ("attach-read-write", "c2 = duckdb.connect()\nc2.execute(\"ATTACH 'data/warehouse.duckdb' AS w\")\n"
                          "c2.execute('DELETE FROM w.orders')"),
    ("built-string", "t = 'ord' + 'ers'\ncon.execute(f'DELETE FROM {t} WHERE id < 100')"),
    ("pandas-over-raw-csv", "small.to_csv('data/raw/regions.csv')"),
    ("append-to-raw", "open('data/raw/events.csv', 'a').write('1,x,2024-01-01')"),
    ("new-file-under-raw", "open('data/raw/new.csv', 'w').write('x')"),
    ("remove-raw", "os.remove('data/raw/returns.parquet')"),
    ("rename-raw", "os.rename('data/raw/regions.csv', 'scratch/regions.csv')"),
    ("pathlib-unlink", "pathlib.Path('data/raw/events.csv').unlink()"),
    ("rmtree-raw", "shutil.rmtree('data/raw')"),
    ("truncate-file", "os.truncate('data/raw/events.csv', 0)"),
    ("overwrite-warehouse", "open('data/warehouse.duckdb', 'wb').write(b'')"),
    ("symlink-in-scratch", "os.symlink(os.path.abspath('data/raw/regions.csv'), 'scratch/link.csv')\n"
                           "open('scratch/link.csv', 'w').write('gone')"),
    ("hard-link-into-raw", "open('scratch/hl.txt', 'w').write('x')\nos.link('scratch/hl.txt', 'data/raw/hl.txt')"),
    ("replace-into-raw", "open('scratch/r.txt', 'w').write('x')\nos.replace('scratch/r.txt', 'data/raw/regions.csv')"),
    ("symlink-into-raw", "os.symlink('/etc/hostname', 'data/raw/link')"),
]


@pytest.mark.parametrize("code", [c[1] for c in SOURCE_WRITES], ids=[c[0] for c in SOURCE_WRITES])
def test_sources_keep_their_bytes_and_rows(k: GuardedKernel, project: Workspace, untouched: None,
                                           code: str) -> None:
    res = k.run(code)
    try:
        assert blocked(res), f"a write to a source was not denied:\n{res}"
        assert not (project.raw / "new.csv").exists()
    finally:
        for name in ("link.csv", "regions.csv", "hl.txt", "r.txt"):
            (project.scratch / name).unlink(missing_ok=True)


def test_source_database_is_open_read_only(k: GuardedKernel) -> None:
    # a second lock: even the engine refuses, whatever the classifier said
    assert k.value("con.sql(\"SELECT bool_and(readonly) FROM duckdb_databases() "
                   "WHERE database_name = 'warehouse'\").fetchall()[0][0]") is True


# ------------------------------------------------------------------ row caps

Q = "SELECT id, customer_id, amount FROM orders"
FETCHES: list[tuple[str, str]] = [
    ("fetchall", f"len(con.execute({Q!r}).fetchall())"),
    ("fetchmany-loop", f"cur = con.execute({Q!r})\nn = 0\nwhile (b := cur.fetchmany(100)):\n    n += len(b)\nn"),
    ("fetchone-loop", f"cur = con.execute({Q!r})\nn = 0\nwhile cur.fetchone() is not None:\n    n += 1\nn"),
    ("execute-df", f"len(con.execute({Q!r}).df())"),
    ("execute-fetchdf", f"len(con.execute({Q!r}).fetchdf())"),
    ("execute-fetchnumpy", f"len(con.execute({Q!r}).fetchnumpy()['id'])"),
    ("execute-arrow-table", f"con.execute({Q!r}).to_arrow_table().num_rows"),
    ("relation-df", f"len(con.sql({Q!r}).df())"),
    ("relation-fetchall", f"len(con.sql({Q!r}).fetchall())"),
    ("relation-arrow", f"con.sql({Q!r}).to_arrow_table().num_rows"),
    ("relation-arrow-reader", f"sum(b.num_rows for b in con.sql({Q!r}).arrow())"),
    ("relation-fetchnumpy", f"len(con.sql({Q!r}).fetchnumpy()['id'])"),
    ("relation-api-no-sql", "len(con.table('orders').df())"),
    ("relation-limit-above-cap", f"len(con.sql({Q!r}).limit(5000).df())"),
    ("query-method", f"len(con.query({Q!r}).fetchall())"),
    ("cursor", f"len(con.cursor().execute({Q!r}).fetchall())"),
    ("parameters", "len(con.execute('SELECT id FROM orders WHERE amount > ?', [0]).fetchall())"),
    ("limit-parameter", "len(con.execute('SELECT id FROM orders LIMIT ?', [5000]).fetchall())"),
    ("own-limit-above-cap", "len(con.execute('SELECT id FROM orders LIMIT 5000').fetchall())"),
    ("union", "len(con.execute('SELECT id FROM orders UNION ALL SELECT id FROM orders').fetchall())"),
    ("cte", "len(con.execute('WITH o AS (SELECT * FROM orders) SELECT id FROM o').fetchall())"),
    ("offset", "len(con.execute('SELECT id FROM orders OFFSET 10').fetchall())"),
    ("limit-percent", "len(con.execute('SELECT id FROM orders LIMIT 50%').fetchall())"),
    ("from-first", "len(con.execute('FROM orders SELECT id').fetchall())"),
    ("multi-statement", "len(con.execute('SELECT 1; SELECT id FROM orders').fetchall())"),
    ("module-default-connection", "len(duckdb.sql(\"SELECT * FROM read_csv('data/raw/events.csv')\").fetchall())"),
    ("module-execute", "len(duckdb.execute(\"SELECT * FROM 'data/raw/events.csv'\").fetchall())"),
    ("module-read_csv", "len(duckdb.read_csv('data/raw/events.csv').df())"),
    ("pandas-read_csv", "len(pd.read_csv('data/raw/events.csv'))"),
    ("pandas-read_csv-chunks", "sum(len(c) for c in pd.read_csv('data/raw/events.csv', chunksize=100))"),
    ("pandas-read_parquet", "len(pd.read_parquet('data/raw/returns.parquet'))"),
    ("pyarrow-read_table", "pq.read_table('data/raw/returns.parquet').num_rows"),
]


@pytest.mark.parametrize("code", [f[1] for f in FETCHES], ids=[f[0] for f in FETCHES])
def test_capped_reads_bring_back_at_most_max_rows(k: GuardedKernel, code: str) -> None:
    mark = k.mark()
    res = k.run(code)
    assert res.ok, res
    n = int(res.text)
    assert 0 < n <= CAP, f"{n} rows came back (cap {CAP})"
    recs = k.since(mark)
    assert any(r.get("kind") == "truncate" or r.get("decision") == "truncate" for r in recs), \
        "the truncation is recorded"
    shown = [n.get("text/plain", "") for n in res.notices]
    assert any("rows returned" in x and '"code": "truncated"' in x for x in shown), \
        "the user is told the result was truncated (a notice, not stderr)"
    assert "truncat" not in res.stderr.lower()


def test_fetch_df_chunk_is_capped(k: GuardedKernel) -> None:
    n = k.value(f"cur = con.execute({Q!r})\nn = 0\nwhile len(c := cur.fetch_df_chunk()):\n    n += len(c)\nn")
    assert 0 < n <= CAP


def test_full_reads_return_exactly_the_cap(k: GuardedKernel) -> None:
    assert k.value(f"len(con.execute({Q!r}).fetchall())") == CAP


def test_aggregates_over_full_tables_are_not_capped(k: GuardedKernel, project: Workspace) -> None:
    mark = k.mark()
    assert k.value("con.execute('SELECT count(*) FROM orders').fetchall()[0][0]") == project.orders
    assert k.value("len(con.execute('SELECT customer_id FROM orders GROUP BY customer_id "
                   "HAVING count(*) > 0 LIMIT 400').fetchall())") == 400
    assert k.value("len(pd.read_csv('data/raw/regions.csv'))") == 4
    assert "truncate" not in decisions(k.since(mark))


# ------------------------------------------------- a denied cell runs no line

FIRST_LINE_DENIED: list[tuple[str, str]] = [
    ("delete-source", "con.execute('DELETE FROM orders')"),
    ("select-ssn", "con.sql('SELECT name, ssn FROM customers').df()"),
    ("select-star", "con.sql('SELECT * FROM customers').df()"),
    ("export", "small.to_csv('report.csv')"),
    ("shell", "!ls -la"),
    ("cell-magic-bash", None),  # %%bash must be the first line: handled below
    ("import-ctypes", "import ctypes"),
    ("multi-statement", "con.execute('CREATE TEMP TABLE mm AS SELECT 1 AS a; DROP TABLE orders')"),
    ("unparseable-sql", "con.execute('SELEKT * FROM orders')"),
    ("open-source-for-write", "open('data/raw/regions.csv', 'w')"),
]


@pytest.mark.parametrize("bad", [f[1] for f in FIRST_LINE_DENIED if f[1]],
                         ids=[f[0] for f in FIRST_LINE_DENIED if f[1]])
def test_denied_cell_runs_no_line(k: GuardedKernel, project: Workspace, untouched: None,
                                  scratch_file: Callable[[str], Path], bad: str) -> None:
    marker = scratch_file("line1.txt")
    assert k.run("globals().pop('line1_ran', None)").ok
    res = k.run(f"open('scratch/line1.txt', 'w').write('ran')\nline1_ran = True\n{bad}\n")
    assert blocked(res), res
    assert not marker.exists(), "line 1 of a denied cell ran"
    assert k.value("'line1_ran' in globals()") is False


def test_bash_cell_magic_is_denied_for_agents(k: GuardedKernel, untouched: None,
                                              scratch_file: Callable[[str], Path]) -> None:
    marker = scratch_file("bash.txt")
    res = k.run("%%bash\necho ran > scratch/bash.txt\n")
    assert blocked(res), res
    assert not marker.exists()


RUNTIME_DENIED: list[tuple[str, str]] = [
    ("os-system", "os.system('echo ran > scratch/rt.txt')"),
    ("subprocess", "import subprocess\nsubprocess.run(['sh', '-c', 'echo ran > scratch/rt.txt'])"),
    ("exec-built-string", "exec('import subpro' + 'cess; subprocess.run([\"touch\", \"scratch/rt.txt\"])')"),
    ("system-magic", "%system touch scratch/rt.txt"),
    ("sx-magic", "%sx touch scratch/rt.txt"),
    ("getoutput", "get_ipython().getoutput('touch scratch/rt.txt')"),
]


@pytest.mark.parametrize("code", [c[1] for c in RUNTIME_DENIED], ids=[c[0] for c in RUNTIME_DENIED])
def test_processes_are_denied_for_agents(k: GuardedKernel, untouched: None, scratch_file: Callable[[str], Path],
                                         code: str) -> None:
    marker = scratch_file("rt.txt")
    res = k.run(code)
    assert blocked(res), res
    assert not marker.exists()


MAGICS_DENIED: list[tuple[str, str, str | None]] = [
    ("writefile", "%%writefile wf.txt\nhello\n", "wf.txt"),
    ("save", "%save -f saved.py 1", "saved.py"),
    ("logstart", "%logstart -o logged.py", "logged.py"),
    ("pip", "%pip install --no-index no-such-package", None),
    ("alias-cp", "%cp data/raw/regions.csv copied.csv", "copied.csv"),
    ("alias-rm", "%rm data/raw/regions.csv", None),
]


@pytest.mark.parametrize("code,target", [m[1:] for m in MAGICS_DENIED], ids=[m[0] for m in MAGICS_DENIED])
def test_magics_are_decided_by_the_policy(k: GuardedKernel, project: Workspace, untouched: None, code: str,
                                          target: str | None) -> None:
    res = k.run(code)
    assert blocked(res), res
    if target:
        assert not (project.root / target).exists()


def test_writefile_into_scratch_is_allowed(k: GuardedKernel, scratch_file: Callable[[str], Path]) -> None:
    out = scratch_file("wf_ok.txt")
    res = k.run("%%writefile scratch/wf_ok.txt\nhello\n")
    assert res.ok, res
    assert out.read_text() == "hello\n"


def test_threads_are_guarded_too(k: GuardedKernel, project: Workspace, untouched: None) -> None:
    mark = k.mark()
    # the path is built at run time so that only the runtime layer can see the write
    res = k.run("import threading\n"
                "def work():\n"
                "    try:\n"
                "        open(''.join(['from_thread', '.txt']), 'w').write('x')\n"
                "    except PermissionError:\n"
                "        pass\n"
                "t = threading.Thread(target=work)\nt.start()\nt.join()")
    assert res.ok, res
    assert not (project.root / "from_thread.txt").exists()
    assert "deny" in decisions(k.since(mark))


def test_network_is_denied(k: GuardedKernel, untouched: None) -> None:
    res = k.run("import socket\ns = socket.socket()\ntry:\n    s.connect(('127.0.0.1', 9))\nfinally:\n    s.close()")
    assert blocked(res), res


def test_guard_survives_odd_cells(k: GuardedKernel, untouched: None, scratch_file: Callable[[str], Path]) -> None:
    """Input the analysers may choke on must not knock the cell gate out (IPython drops failing transformers)."""
    odd = ["x = " + "(" * 150 + "1" + ")" * 150, "def f(:\n  pass", "f'{'", "\x00", "%%time\n1", "a = 1; del a",
           "con.sql(f'SELECT {1+1} AS two').fetchall()", "lambda: (yield)", "print('\\udcff')"]
    for code in odd:
        k.run(code)
    marker = scratch_file("odd.txt")
    res = k.run("open('scratch/odd.txt', 'w').write('ran')\nsmall.to_csv('odd_export.csv')")
    assert blocked(res), res
    assert not marker.exists(), "after odd input, a denied cell ran its first line: the cell gate is gone"


# ------------------------------------------------------- deny_columns (ssn)

SSN_READS: list[tuple[str, str]] = [
    ("explicit", "SELECT ssn FROM customers"),
    ("star", "SELECT * FROM customers"),
    ("qualified-star", "SELECT c.* FROM customers c"),
    ("where-only", "SELECT id FROM customers WHERE ssn LIKE '1%'"),
    ("order-by-only", "SELECT id FROM customers ORDER BY ssn LIMIT 3"),
    ("function", "SELECT max(length(ssn)) FROM customers"),
    ("whole-row", "SELECT customers FROM customers LIMIT 1"),
    ("columns-regex", "SELECT COLUMNS('s.*') FROM customers"),
    ("summarize", "SUMMARIZE customers"),
    ("join", "SELECT o.id, c.ssn FROM orders o JOIN customers c ON c.id = o.customer_id"),
    ("subquery", "SELECT * FROM (SELECT * FROM customers) t"),
]


@pytest.mark.parametrize("sql", [s[1] for s in SSN_READS], ids=[s[0] for s in SSN_READS])
def test_deny_column_is_never_read(k: GuardedKernel, sql: str) -> None:
    res = k.run(f"con.sql({sql!r}).fetchall()")
    assert blocked(res), res
    assert "ssn" in res.traceback


@pytest.mark.parametrize("code", [
    "col = 'ss' + 'n'\ncon.sql(f'SELECT {col} FROM customers').fetchall()",
    "con.table('customers').fetchall()",
    "con.table('customers').project('id, ssn').fetchall()",
], ids=["built-string", "relation-api", "relation-project"])
def test_deny_column_at_run_time(k: GuardedKernel, code: str) -> None:
    res = k.run(code)
    assert blocked(res), res


def test_naming_the_other_columns_is_fine(k: GuardedKernel) -> None:
    assert k.value("len(con.sql('SELECT * EXCLUDE (ssn, dob) FROM customers LIMIT 5').fetchall())") == 5


# ------------------------------------------------------------------ the audit


def test_one_record_per_action_with_the_right_decision(k: GuardedKernel) -> None:
    mark = k.mark()
    res = k.run("a1 = con.execute('SELECT count(*) FROM orders').fetchall()\n"
                "a2 = con.execute('SELECT count(*) FROM products').fetchall()")
    assert res.ok, res
    recs = [r for r in k.since(mark) if r.get("kind") not in ("cell", "session")]
    assert [r.get("decision") for r in recs if r.get("action") == "sql.read"] == ["allow", "allow"], recs
    resources = " ".join(str(r.get("resource")) + str(r.get("statement", "")) for r in recs)
    assert "orders" in resources and "products" in resources

    mark = k.mark()
    res = k.run("con.execute('DELETE FROM orders WHERE id = 1')")
    assert blocked(res)
    recs = [r for r in k.since(mark) if r.get("kind") not in ("cell", "session")]
    denies = [r for r in recs if r.get("decision") == "deny"]
    assert len(denies) == 1, recs
    d = denies[0]
    assert d["action"] == "sql.write" and "orders" in d["resource"]
    assert any(str(r.get("id", r)).startswith("source:warehouse") for r in d["rules"])
    assert d["message"]


def test_every_cell_has_a_record(k: GuardedKernel) -> None:
    mark = k.mark()
    k.run("cell_a = 1")
    k.run("small.to_csv('nope.csv')")
    cells = [r for r in k.since(mark) if r.get("kind") == "cell"]
    assert len(cells) == 2, k.since(mark)
    assert "cell_a = 1" in json.dumps(cells[0]) and cells[0].get("decision") in ("allow", None)
    assert cells[1].get("decision") == "deny" or cells[1].get("error")


def test_records_carry_the_required_fields(k: GuardedKernel) -> None:
    k.run("con.execute('DELETE FROM orders WHERE id = 2')")
    required = {"seq", "ts", "session", "actor", "environment", "policy", "kind", "action", "resource",
                "decision", "rules", "message"}
    for r in k.records():
        if r.get("kind") in ("cell", "session", "session_end"):
            continue
        assert required <= r.keys(), f"record lacks {required - r.keys()}: {r}"
        assert r["actor"] == "agent" and r["environment"] == "default"
        assert r["decision"] in ("allow", "deny", "warn", "would_deny", "truncate")


def test_audit_chain_verifies(k: GuardedKernel) -> None:
    for f in k.audit_files():
        res = verify(str(f))
        assert res.ok, res.problem


def test_audit_mode_rule_records_would_deny_and_runs(k: GuardedKernel) -> None:
    mark = k.mark()
    res = k.run("con.sql('SELECT min(dob) FROM customers').fetchall()")
    assert res.ok, res
    assert "would_deny" in decisions(k.since(mark))


# ----------------------------------------------- what the user and agent see


def test_denial_is_short_with_rule_reason_and_json(k: GuardedKernel) -> None:
    res = k.run("con.execute('DELETE FROM orders')")
    assert blocked(res)
    tb = res.traceback
    assert "ast.py" not in tb and "Traceback (most recent call last)" not in tb, tb
    assert "source:warehouse" in tb
    line = next(x for x in tb.splitlines() if x.startswith("json: "))
    facts = json.loads(line[len("json: "):])
    assert facts["code"] == "cell_rejected" and facts["action"] == "sql.write"  # decided before the cell ran
    assert res.ename == "CellRejected" and res.error is not None and "\n" not in res.error["evalue"]
    assert {"resource", "rules", "message", "hint"} <= facts.keys()


def test_runtime_denial_is_short_too(k: GuardedKernel) -> None:
    res = k.run("t = 'ord' + 'ers'\ncon.execute('DELETE FROM ' + t)")
    assert blocked(res)
    assert "Traceback (most recent call last)" not in res.traceback and "ast.py" not in res.traceback


# ------------------------------------------------------------- the extension


def test_unload_is_refused_under_lock(k: GuardedKernel, project: Workspace) -> None:
    k.run("%unload_ext guard_kernel")
    res = k.run("small.to_csv('after_unload.csv')")
    assert blocked(res), "the guard was removed by %unload_ext although the policy is locked"
    assert not (project.root / "after_unload.csv").exists()
    k.run("%reload_ext guard_kernel")
    res = k.run("small.to_csv('after_reload.csv')")
    assert blocked(res)
    assert not (project.root / "after_reload.csv").exists()


def test_loading_twice_is_harmless(k: GuardedKernel) -> None:
    assert k.run("%load_ext guard_kernel").ok
    mark = k.mark()
    res = k.run("con.execute('DELETE FROM orders WHERE id = 3')")
    assert blocked(res)
    denies = [r for r in k.since(mark) if r.get("kind") not in ("cell", "session") and r.get("decision") == "deny"]
    assert len(denies) == 1, "a second load must not double the hooks"
    assert len(k.audit_files()) == 1, "one session, one audit file"


def test_policy_switch_refused_under_lock(k: GuardedKernel, project: Workspace) -> None:
    k.run(f"%guard policy {project.policy('analyst')}")
    status = k.run("%guard status")
    assert "agent-default" in status.stdout + status.text


# ----------------------------------------------------- other actors and modes


@pytest.fixture(scope="module")
def human(kernel_factory: Callable[..., GuardedKernel]) -> GuardedKernel:
    k = kernel_factory(policy="default", actor="human")
    assert k.load_result is not None and k.load_result.ok, k.load_result
    return k


def test_human_shell_runs_with_a_recorded_warning(human: GuardedKernel, scratch_file: Callable[[str], Path]) -> None:
    marker = scratch_file("human.txt")
    mark = human.mark()
    res = human.run("!echo ran > scratch/human.txt")
    assert res.ok, res
    assert marker.read_text().strip() == "ran"
    assert "warn" in decisions(human.since(mark))
    assert "human-shell" in "".join(n.get("text/plain", "") for n in res.notices)  # a notice, not stderr
    assert res.stderr == ""


def test_human_row_cap_is_larger(human: GuardedKernel) -> None:
    human.run("import duckdb\ncon = duckdb.connect('data/warehouse.duckdb')")
    assert human.value("len(con.execute('SELECT id FROM orders').fetchall())") == 10000


@pytest.fixture(scope="module")
def auditing(kernel_factory: Callable[..., GuardedKernel]) -> GuardedKernel:
    k = kernel_factory(policy="audit-only", actor="agent")
    assert k.load_result is not None and k.load_result.ok, k.load_result
    return k


def test_audit_only_policy_blocks_nothing_and_records_would_deny(auditing: GuardedKernel, project: Workspace) -> None:
    target = project.root / "audit_only_export.csv"
    mark = auditing.mark()
    try:
        res = auditing.run("import pandas as pd\npd.DataFrame({'a': [1]}).to_csv('audit_only_export.csv')")
        assert res.ok, res
        assert target.exists()
        assert "would_deny" in decisions(auditing.since(mark))
    finally:
        target.unlink(missing_ok=True)


# ------------------------------------------------------------- demo and run


def test_make_demo_behaves_as_the_notebook_expects(tmp_path: Path) -> None:
    import io

    from guard_kernel.demo import demo

    out = io.StringIO()
    status = demo(tmp_path / "demo", out=out)
    text = out.getvalue()
    assert status == 0, text
    assert "DENIED" in text and "truncated" in text and "warned" in text
    assert "verify: hash chain intact" in text
    assert not (tmp_path / "demo" / "region_summary.csv").exists()
    # the demo's audit renders as the audit notebook: every denied cell tagged
    import nbformat

    from guard_kernel.audit.notebook import render

    (audit,) = (tmp_path / "demo" / ".guard_audit").glob("*.jsonl")
    nb = render(str(audit))
    nbformat.validate(nbformat.from_dict(nb))
    denied = [c for c in nb["cells"] if c["cell_type"] == "code" and c["metadata"]["guard_kernel"]["decision"] in ("deny", "would_deny")]
    assert denied and all({"guard-denied", "guard-would-deny"} & set(c["metadata"]["tags"]) for c in denied)
    assert f"## Denials ({len(denied)})" in nb["cells"][1]["source"]


def test_a_killed_kernel_loses_no_completed_record(kernel_factory: Callable[..., GuardedKernel]) -> None:
    import os
    import signal

    victim = kernel_factory(policy="default", actor="agent")
    assert victim.load_result is not None and victim.load_result.ok
    res = victim.run("import duckdb\ncon = duckdb.connect('data/warehouse.duckdb')\n"
                     "n = con.execute('SELECT count(*) FROM orders').fetchall()")
    assert res.ok, res
    assert blocked(victim.run("con.execute('DELETE FROM orders WHERE id = 5')"))
    os.kill(victim.km.provisioner.pid, signal.SIGKILL)
    recs = victim.records()
    assert any(r.get("decision") == "deny" and r.get("action") == "sql.write" for r in recs)
    assert any(r.get("decision") == "allow" and r.get("action") == "sql.read" for r in recs)
    for f in victim.audit_files():
        assert verify(str(f)).ok
