"""Static cell analysis: code → the actions it clearly takes (table-driven), and check_cell.

Snippets are written as a user types them (``!ls``, ``%%bash``) and passed through
IPython's own input transforms first, exactly as the cell transformer sees them.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from IPython.core.inputtransformer2 import TransformerManager

from guard_kernel.audit import read_records
from guard_kernel.decision import CellRejected, Effect
from guard_kernel.decision import guard as session
from guard_kernel.enforce.ipython.cell import CellTransformer, analyze_source, analyze_tree, check_cell
from guard_kernel.enforce.ipython.magics import magic_intent
from guard_kernel.policy import load_policy

REPO = Path(__file__).resolve().parents[3]
HAS_SQL = (REPO / "guard_kernel" / "analysis" / "sql" / "requests.py").exists()
_TM = TransformerManager()


def intents_of(code: str, **kw: object) -> list[tuple[str, str]]:
    src = _TM.transform_cell(code)
    return [(i.request.action.value, i.request.resource) for i in analyze_source(src, **kw)]  # type: ignore[arg-type]


# (id, cell as typed, expected (action, resource) pairs in order)
CASES: list[tuple[str, str, list[tuple[str, str]]]] = [
    # --- nothing to decide: ordinary analysis
    ("plain-arith", "x = 1 + 1\nprint(x)", []),
    ("pandas-query-is-not-sql", "df.query('a > 1')", []),
    ("read-open", "with open('data/raw/regions.csv') as f:\n    rows = f.read()", []),
    ("open-read-mode", "open('data/raw/regions.csv', 'r')", []),
    ("to-csv-no-path", "text = df.to_csv()", []),
    ("to-csv-variable-path", "df.to_csv(out)", []),
    ("open-dynamic-path", "open(name, 'w')", []),
    ("subprocess-dynamic", "import subprocess as sp\nsp.run(cmd)", [("python.import", "subprocess")]),
    ("magic-time", "%time x = 1", []),
    ("magic-pwd-who", "%pwd\n%who", []),
    ("dict-get", "d = {}\nd.get('a')\nd.execute = 1", []),
    ("syntax-error", "def f(:\n  pass", []),
    # --- files
    ("open-write", "open('out.txt', 'w')", [("file.write", "out.txt")]),
    ("open-append-kw", "open(file='log.txt', mode='a')", [("file.write", "log.txt")]),
    ("open-plus", "open('data/raw/regions.csv', 'r+')", [("file.write", "data/raw/regions.csv")]),
    ("pathlib-write-text", "from pathlib import Path\nPath('scratch/a.txt').write_text('x')",
     [("python.import", "pathlib"), ("file.write", "scratch/a.txt")]),
    ("pathlib-div", "from pathlib import Path\n(Path('data') / 'raw' / 'x.csv').unlink()",
     [("python.import", "pathlib"), ("file.delete", "data/raw/x.csv")]),
    ("pathlib-name", "import pathlib\np = pathlib.Path('data/raw/events.csv')\np.open('w')",
     [("python.import", "pathlib"), ("file.write", "data/raw/events.csv")]),
    ("pathlib-rename", "from pathlib import Path\nPath('a.csv').rename('b.csv')",
     [("python.import", "pathlib"), ("file.delete", "a.csv"), ("file.write", "b.csv")]),
    ("os-remove", "import os\nos.remove('data/raw/events.csv')", [("python.import", "os"), ("file.delete", "data/raw/events.csv")]),
    ("os-replace", "import os\nos.replace('scratch/a', 'data/raw/a')",
     [("python.import", "os"), ("file.delete", "scratch/a"), ("file.write", "data/raw/a")]),
    ("from-os-unlink", "from os import unlink as rm\nrm('x.txt')", [("python.import", "os"), ("file.delete", "x.txt")]),
    ("shutil-rmtree", "import shutil\nshutil.rmtree('data/raw')", [("python.import", "shutil"), ("file.delete", "data/raw")]),
    ("shutil-copy", "import shutil\nshutil.copy('data/raw/a.csv', 'scratch/a.csv')",
     [("python.import", "shutil"), ("file.write", "scratch/a.csv")]),
    ("os-path-join", "import os\nopen(os.path.join('data', 'raw', 'z.csv'), 'w')",
     [("python.import", "os"), ("file.write", "data/raw/z.csv")]),
    # --- dataframe exports
    ("to-csv", "df.to_csv('out.csv')", [("export.dataframe", "out.csv")]),
    ("polars-write", "pdf.write_parquet('out.parquet')", [("export.dataframe", "out.parquet")]),
    ("polars-sink", "lf.sink_csv(path='out.csv')", [("export.dataframe", "out.csv")]),
    ("to-parquet-kw", "df.to_parquet(path='scratch/x.parquet')", [("export.dataframe", "scratch/x.parquet")]),
    ("to-excel", "df.head().to_excel('report.xlsx')", [("export.dataframe", "report.xlsx")]),
    ("polars-write", "pl_df.write_parquet('x.parquet')", [("export.dataframe", "x.parquet")]),
    ("s3-export", "df.to_parquet('s3://bucket/x.parquet')", [("export.dataframe", "s3://bucket/x.parquet")]),
    ("pyarrow-write-table", "import pyarrow.parquet as pq\npq.write_table(t, 'x.parquet')",
     [("python.import", "pyarrow.parquet"), ("export.dataframe", "x.parquet")]),
    ("numpy-save", "import numpy as np\nnp.save('arr.npy', a)", [("python.import", "numpy"), ("export.dataframe", "arr.npy")]),
    ("clipboard", "df.to_clipboard()", [("export.clipboard", "clipboard")]),
    # --- shell, as IPython rewrites it
    ("bang", "!ls -la", [("shell.exec", "ls -la")]),
    ("bang-assign", "files = !ls", [("shell.exec", "ls")]),
    ("cell-bash", "%%bash\nrm -rf data\n", [("shell.exec", "%%bash: rm -rf data")]),
    ("cell-script", "%%script sh\necho hi\n", [("shell.exec", "%%sh: echo hi")]),
    ("line-sx", "%sx whoami", [("shell.exec", "whoami")]),
    ("line-system", "%system date", [("shell.exec", "date")]),
    ("pip", "%pip install requests", [("shell.exec", "pip install requests")]),
    ("alias-rm", "%rm data/raw/x.csv", [("shell.exec", "rm data/raw/x.csv")]),
    ("writefile", "%%writefile data/raw/x.csv\na,b\n", [("file.write", "data/raw/x.csv")]),
    ("save", "%save -r mycode 1-3", [("file.write", "mycode.ipy")]),
    ("logstart", "%logstart", [("file.write", "ipython_log.py")]),
    ("os-system", "import os\nos.system('curl example.com')", [("python.import", "os"), ("shell.exec", "curl example.com")]),
    ("subprocess-list", "import subprocess\nsubprocess.run(['rm', '-rf', 'x'])",
     [("python.import", "subprocess"), ("shell.exec", "rm -rf x")]),
    ("timeit-body", "%%timeit\nopen('t.txt', 'w')\n", [("file.write", "t.txt")]),
    ("timeit-line-options", "%timeit -n1 -r 2 open('t.txt', 'w')", [("file.write", "t.txt")]),
    ("capture-body", "%%capture out\n!ls\n", [("shell.exec", "ls")]),
    # --- imports
    ("import-ctypes", "import ctypes", [("python.import", "ctypes")]),
    ("from-cffi", "from cffi import FFI", [("python.import", "cffi")]),
    ("dunder-import", "m = __import__('ctypes')", [("python.import", "ctypes")]),
    ("import-module", "import importlib\nimportlib.import_module('cffi')",
     [("python.import", "importlib"), ("python.import", "cffi")]),
    # --- network
    ("requests-get", "import requests\nrequests.get('https://example.com/x')",
     [("python.import", "requests"), ("net.connect", "https://example.com/x")]),
    ("urlopen", "from urllib.request import urlopen\nurlopen('http://evil.test/')",
     [("python.import", "urllib.request"), ("net.connect", "http://evil.test/")]),
    ("socket-connect", "s.connect(('db.internal', 5432))", [("net.connect", "db.internal:5432")]),
    ("pandas-url", "import pandas as pd\npd.read_csv('https://example.com/a.csv')",
     [("python.import", "pandas"), ("net.connect", "https://example.com/a.csv")]),
]

SQL_CASES: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("duckdb-sql-read", "import duckdb\nduckdb.sql('SELECT * FROM customers')",
     [("python.import", "duckdb"), ("sql.read", "customers")]),
    ("con-execute-write", "import duckdb\ncon = duckdb.connect()\ncon.execute('DROP TABLE orders')",
     [("python.import", "duckdb"), ("sql.ddl", "orders")]),
    ("cursor-execute", "import duckdb\ncur = duckdb.connect().cursor()\ncur.execute(\"COPY orders TO 'out.csv'\")",
     [("python.import", "duckdb"), ("sql.export", "out.csv")]),
    ("fstring-known-shape", "import duckdb\nduckdb.sql(f'SELECT * FROM customers WHERE id = {x}')",
     [("python.import", "duckdb"), ("sql.read", "customers")]),
    ("fstring-table-unknown", "import duckdb\nduckdb.sql(f'SELECT * FROM {t} LIMIT 5')", [("python.import", "duckdb")]),
    ("sql-not-duckdb", "spark.sql('DROP TABLE x')", []),
]


@pytest.mark.parametrize(("code", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_analyze_source(code: str, expected: list[tuple[str, str]]) -> None:
    assert intents_of(code) == expected


@pytest.mark.skipif(not HAS_SQL, reason="guard_kernel.analysis.sql.requests not available")
@pytest.mark.parametrize(("code", "expected"), [c[1:] for c in SQL_CASES], ids=[c[0] for c in SQL_CASES])
def test_analyze_sql(code: str, expected: list[tuple[str, str]]) -> None:
    assert intents_of(code) == expected


def test_lines_and_code_point_at_the_cell() -> None:
    src = _TM.transform_cell("x = 1\n\ny = 2\n!rm -rf data\n")
    [intent] = analyze_source(src, first_line=10, display="x = 1\n\ny = 2\n!rm -rf data\n")
    assert intent.request.line == 13
    assert intent.request.code == "!rm -rf data"
    assert intent.request.command == "rm -rf data"


def test_namespace_tells_duckdb_from_pandas() -> None:
    duckdb = pytest.importorskip("duckdb")
    if not HAS_SQL:
        pytest.skip("guard_kernel.analysis.sql.requests not available")
    con = duckdb.connect()
    ns = {"con": con, "df": object()}
    assert intents_of("con.sql('DELETE FROM t')", namespace=ns) == [("sql.write", "t")]
    assert intents_of("df.query('DELETE FROM t')", namespace=ns) == []
    con.close()


def test_prefilter_matches_full_walk() -> None:
    """The text pre-filter finds the same intents as walking every node."""
    src = "".join(_TM.transform_cell(c[1] + "\n") for c in CASES if c[0] != "syntax-error")
    tree = ast.parse(src)
    fast = [(i.request.action, i.request.resource, i.request.line) for i in analyze_tree(tree, src)]
    full = [(i.request.action, i.request.resource, i.request.line) for i in analyze_tree(tree, None)]
    assert fast == full and len(fast) > 40


def test_magic_intent_leaves_ordinary_magics_alone() -> None:
    for name in ("time", "timeit", "pwd", "who", "matplotlib", "load_ext"):
        assert magic_intent(name, "x", None) is None
    assert magic_intent("store", "", None) is None
    assert magic_intent("store", "-r", None) is None
    assert magic_intent("store", "df", None) is not None


# ------------------------------------------------------------------ check_cell


POLICY = (REPO / "policies" / "default.yaml").read_text()


@pytest.fixture
def guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> session.Guard:
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "scratch").mkdir()
    (tmp_path / "policy.yaml").write_text(POLICY)
    monkeypatch.chdir(tmp_path)
    policy = load_policy(tmp_path / "policy.yaml", root=str(tmp_path))
    return session.Guard(policy, actor="agent", audit_dir=str(tmp_path / "audit"))


def test_check_cell_allows_ordinary_code_without_records(guard: session.Guard) -> None:
    before = guard.audit.count
    decisions = check_cell(guard, "import os\nopen('scratch/a.txt', 'w')\nx = 1\n")
    assert [d.effect for d in decisions] == [Effect.ALLOW, Effect.ALLOW]
    assert guard.audit.count == before  # allowed intents are recorded by the layer that runs them


def test_check_cell_rejects_and_records_every_intent(guard: session.Guard) -> None:
    with pytest.raises(CellRejected) as info:
        check_cell(guard, "open('scratch/a.txt', 'w')\nimport ctypes\ndf.to_csv('out.csv')\n")
    assert [d.resource for d in info.value.decisions] == ["ctypes", "out.csv"]
    recs = [r for r in read_records(guard.audit_path) if r["kind"] != "session"]
    assert [(r["resource"], r["decision"]) for r in recs] == [
        ("scratch/a.txt", "allow"), ("ctypes", "deny"), ("out.csv", "deny")]
    assert recs[1]["line"] == 2
    assert not os.path.exists("scratch/a.txt")


def test_check_cell_follows_use_and_detach_within_the_cell(guard: session.Guard) -> None:
    attach = "import duckdb\ncon = duckdb.connect()\ncon.execute(\"ATTACH 'data/warehouse.duckdb' AS wh\")\n"
    with pytest.raises(CellRejected) as info:  # after USE wh, customers is the source's table
        check_cell(guard, attach + "con.execute('USE wh')\ncon.execute('DELETE FROM customers')\n")
    [d] = info.value.decisions
    assert d.rules[0].id == "source:warehouse" and d.line == 5
    # another connection keeps its own default catalog
    assert all(not d.blocked for d in check_cell(
        guard, attach + "con.execute('USE wh')\nother = duckdb.connect()\nother.execute('CREATE TABLE t (i INT)')\n"))
    # after DETACH, wh no longer names the source
    assert all(not d.blocked for d in check_cell(
        guard, attach + "con.execute('DETACH wh')\ncon.execute('CREATE TABLE wh.t (i INT)')\n"))
    with pytest.raises(CellRejected):  # while attached, it does
        check_cell(guard, attach + "con.execute('CREATE TABLE wh.t (i INT)')\n")


def test_check_cell_knows_the_table_macros_a_cell_makes(guard: session.Guard) -> None:
    make = "import duckdb\ncon = duckdb.connect()\ncon.execute('CREATE TEMP MACRO tm() AS TABLE SELECT 1 AS x')\n"
    assert all(not d.blocked for d in check_cell(guard, make + "con.execute('SELECT * FROM tm()')\n"))
    with pytest.raises(CellRejected) as info:  # another connection never made it
        check_cell(guard, make + "other = duckdb.connect()\nother.execute('SELECT * FROM tm()')\n")
    assert info.value.decisions[0].rules[0].id == "sql-unknown"
    with pytest.raises(CellRejected):  # dropped before the call
        check_cell(guard, make + "con.execute('DROP MACRO tm')\ncon.execute('SELECT * FROM tm()')\n")


def test_check_cell_fails_closed(guard: session.Guard, monkeypatch: pytest.MonkeyPatch) -> None:
    import guard_kernel.enforce.ipython.cell as cell

    def boom(*a: object, **k: object) -> list[object]:
        raise RuntimeError("analyzer exploded")

    monkeypatch.setattr(cell, "analyze_source", boom)
    with pytest.raises(CellRejected, match="guard internal error"):
        check_cell(guard, "x = 1")


def test_check_cell_failing_under_audit_mode_records_would_deny(
        guard: session.Guard, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import guard_kernel.enforce.ipython.cell as cell

    def boom(*a: object, **k: object) -> list[object]:
        raise RuntimeError("analyzer exploded")

    guard.policy = dataclasses.replace(guard.policy, mode="audit")
    monkeypatch.setattr(cell, "analyze_source", boom)
    decisions = check_cell(guard, "x = 1")  # audit mode blocks nothing, the guard's own errors included
    assert [d.effect for d in decisions] == [Effect.WOULD_DENY]
    recs = [r for r in read_records(guard.audit_path) if r["kind"] == "guard_error"]
    assert [r["decision"] for r in recs] == ["would_deny"] and "analyzer exploded" in recs[0]["message"]


def test_transformer_without_guard_is_inert() -> None:
    session.set_current(None)
    tree = ast.parse("open('x', 'w')")
    assert CellTransformer().visit(tree) is tree
