"""sqlite3 under the guard, in process: a real Guard, real database files, effects checked."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from guard_kernel.audit import read_records
from guard_kernel.decision import GuardDenied
from guard_kernel.decision.guard import Guard, set_current
from guard_kernel.enforce.dbapi import sqlite as sqlite_layer
from guard_kernel.policy import PolicyError, load_policy, parse_policy

MAX = 5

POLICY = """
version: 1
name: sqlite-test
mode: enforce
lock: true
defaults: {read: allow, write: deny, export: deny, network: deny, shell: deny}
sources:
  shop:
    url: "sqlite:///data/shop.sqlite"
    tables:
      customers: {deny_columns: [ssn]}
scratch: ["scratch/**"]
limits: {max_rows: {agent: %(max)d, human: %(max)d}, on_exceed: truncate}
rules:
  - id: scratch-writes
    effect: allow
    actions: [file.write, export.dataframe, sql.export]
    where: {path: "scratch/**"}
"""


def _make(root: Path) -> None:
    (root / "data").mkdir()
    (root / "scratch").mkdir()
    con = sqlite3.connect(root / "data" / "shop.sqlite")
    con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, ssn TEXT)")
    con.executemany("INSERT INTO customers VALUES (?, ?, ?)", [(i, f"name{i}", f"ssn{i}") for i in range(20)])
    con.execute("CREATE TABLE orders (oid INTEGER, cid INTEGER, amount REAL)")
    con.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(i, i % 20, i * 1.5) for i in range(100)])
    con.commit()
    con.close()
    (root / "data" / "other.sqlite").touch()
    con = sqlite3.connect(root / "data" / "other.sqlite")
    con.execute("CREATE TABLE notes (id INTEGER, body TEXT)")
    con.execute("INSERT INTO notes VALUES (1, 'keep me')")
    con.commit()
    con.close()


@pytest.fixture()
def guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Guard]:
    _make(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "policy.yaml").write_text(POLICY % {"max": MAX})
    g = Guard(load_policy(tmp_path / "policy.yaml", root=str(tmp_path)), actor="agent",
              audit_dir=str(tmp_path / "audit"), notify=lambda d: None)
    set_current(g)
    sqlite_layer.install(g)
    try:
        yield g
    finally:
        sqlite_layer.uninstall()
        set_current(None)
        g.close()


def _count(path: Path, table: str) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # after uninstall: the raw engine
    try:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        con.close()


def _records(g: Guard) -> list[dict[str, Any]]:
    return list(read_records(g.audit_path))


def test_reads_joins_and_aggregates_just_work(guard: Guard) -> None:
    con = sqlite3.connect("data/shop.sqlite")
    rows = con.execute("SELECT c.name, count(*), sum(o.amount) FROM customers c JOIN orders o ON o.cid = c.id "
                       "WHERE c.id < 3 GROUP BY c.name ORDER BY c.name").fetchall()
    assert [r[0] for r in rows] == ["name0", "name1", "name2"]
    assert con.execute("PRAGMA table_info(customers)").fetchall()
    assert guard.counts["deny"] == 0


def test_destructive_statements_on_a_source_leave_the_rows(guard: Guard, tmp_path: Path) -> None:
    con = sqlite3.connect("data/shop.sqlite")
    for sql in ("DROP TABLE customers", "DELETE FROM customers", "UPDATE customers SET name = 'x'",
                "INSERT INTO orders VALUES (1, 1, 1)", "PRAGMA query_only = OFF", "ATTACH DATABASE 'x.db' AS x",
                "SELECT load_extension('x')", "VACUUM INTO 'scratch/copy.sqlite'"):
        with pytest.raises(GuardDenied):
            con.execute(sql)
    with pytest.raises(GuardDenied):
        con.executescript("SELECT 1; DELETE FROM customers;")
    with pytest.raises(GuardDenied):
        con.set_authorizer(None)
    with pytest.raises(GuardDenied):  # every row of every table, past the cap and the column rules
        con.serialize()
    with pytest.raises(GuardDenied):
        con.deserialize(b"")
    sqlite_layer.uninstall()
    assert _count(tmp_path / "data/shop.sqlite", "customers") == 20
    assert _count(tmp_path / "data/shop.sqlite", "orders") == 100


def test_the_database_holds_a_source_read_only_too(guard: Guard) -> None:
    con = sqlite3.connect("data/shop.sqlite")
    raw = sqlite3.Connection.cursor(con)  # the C method under the guard: the engine itself refuses
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.Cursor.execute(raw, "DELETE FROM customers")
    assert sqlite3.Cursor.execute(raw, "SELECT count(*) FROM customers").fetchone() == (20,)


def test_temp_tables_on_a_source_stay_writable(guard: Guard) -> None:
    con = sqlite3.connect("data/shop.sqlite")
    con.execute("CREATE TEMP TABLE mine AS SELECT id, name FROM customers WHERE id < 3")
    con.execute("INSERT INTO mine VALUES (99, 'new')")
    con.execute("DELETE FROM mine WHERE id = 0")
    assert con.execute("SELECT count(*) FROM mine").fetchone() == (3,)


def test_deny_columns_hold(guard: Guard) -> None:
    con = sqlite3.connect("data/shop.sqlite")
    for sql in ("SELECT ssn FROM customers", "SELECT * FROM customers", "SELECT upper(ssn) FROM customers",
                "SELECT c.* FROM customers c"):
        with pytest.raises(GuardDenied):
            con.execute(sql)
    assert len(con.execute("SELECT id, name FROM customers").fetchall()) == MAX


def test_row_cap_on_every_fetch_path(guard: Guard) -> None:
    con = sqlite3.connect("data/shop.sqlite")
    assert len(con.execute("SELECT * FROM orders").fetchall()) == MAX
    cur = con.execute("SELECT oid FROM orders")
    assert len([r for r in iter(cur.fetchone, None)]) == MAX
    cur = con.execute("SELECT oid FROM orders")
    got: list[Any] = []
    while batch := cur.fetchmany(2):
        got += batch
    assert len(got) == MAX
    assert len(list(con.execute("SELECT oid FROM orders"))) == MAX
    assert len(con.execute("SELECT oid FROM orders LIMIT 3").fetchall()) == 3
    assert any(r["decision"] == "truncate" for r in _records(guard))


def test_pandas_read_sql_is_one_capped_read(guard: Guard) -> None:
    con = sqlite3.connect("data/shop.sqlite")
    assert len(pd.read_sql("SELECT oid, amount FROM orders", con)) == MAX
    chunks = list(pd.read_sql("SELECT oid FROM orders", con, chunksize=2))
    assert sum(len(c) for c in chunks) == MAX
    with pytest.raises(GuardDenied):
        pd.read_sql("SELECT * FROM customers", con)


def test_a_new_database_file_is_a_file_write(guard: Guard, tmp_path: Path) -> None:
    with pytest.raises(GuardDenied) as e:
        sqlite3.connect("new.sqlite")
    assert "file.write" in str(e.value)
    assert not (tmp_path / "new.sqlite").exists()
    con = sqlite3.connect("scratch/work.sqlite")  # the scratch area: created, and the session's own
    con.execute("CREATE TABLE t (a INTEGER)")
    con.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    con.execute("UPDATE t SET a = a + 1")
    con.execute("DROP TABLE t")
    pd.DataFrame({"a": [1, 2]}).to_sql("frame", con)
    assert con.execute("SELECT count(*) FROM frame").fetchone() == (2,)


def test_tables_the_session_did_not_create_stay_as_they_are(guard: Guard, tmp_path: Path) -> None:
    con = sqlite3.connect("data/other.sqlite")  # not a source, but not the session's either
    assert con.execute("SELECT body FROM notes").fetchall() == [("keep me",)]
    with pytest.raises(GuardDenied):
        con.execute("DELETE FROM notes")
    con.execute("CREATE TABLE mine (a INTEGER)")
    con.execute("INSERT INTO mine VALUES (1)")
    sqlite_layer.uninstall()
    assert _count(tmp_path / "data/other.sqlite", "notes") == 1


def test_multi_statement_script_is_judged_before_any_part_runs(guard: Guard, tmp_path: Path) -> None:
    con = sqlite3.connect("scratch/s.sqlite")
    with pytest.raises(GuardDenied):
        con.executescript("CREATE TABLE a (x INTEGER); ATTACH DATABASE 'data/shop.sqlite' AS s; DELETE FROM s.customers;")
    sqlite_layer.uninstall()
    assert _count(tmp_path / "scratch/s.sqlite", "sqlite_master") == 0  # not even the CREATE ran


def test_policy_sources_name_databases_without_credentials(tmp_path: Path) -> None:
    p = parse_policy("version: 1\nname: x\nsources:\n  pg:\n    url: postgresql://db.example:6543/sales\n"
                     "    scratch_schemas: [Work]\n  lite:\n    url: sqlite:///data/x.sqlite\n", root=str(tmp_path))
    assert p.sources["pg"].server == ("db.example", 6543, "sales")
    assert p.sources["pg"].scratch_schemas == ("work",)
    assert p.sources["lite"].sqlite == str(tmp_path / "data" / "x.sqlite")
    with pytest.raises(PolicyError, match="credentials"):
        parse_policy("version: 1\nname: x\nsources:\n  pg:\n    url: postgresql://u:secret@h/db\n")
    with pytest.raises(PolicyError):
        parse_policy("version: 1\nname: x\nsources:\n  pg:\n    url: mysql://h/db\n")


def test_a_source_asked_for_read_write_by_uri_is_opened_read_only(guard: Guard, tmp_path: Path) -> None:
    con = sqlite3.connect(f"file:{tmp_path / 'data/shop.sqlite'}?mode=rw", uri=True)
    raw = sqlite3.Connection.cursor(con)
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.Cursor.execute(raw, "DELETE FROM orders")
    assert con.execute("SELECT count(*) FROM orders").fetchone() == (100,)


def test_a_source_is_matched_by_real_path(guard: Guard, tmp_path: Path) -> None:
    (tmp_path / "scratch" / "alias.sqlite").symlink_to(tmp_path / "data" / "shop.sqlite")
    con = sqlite3.connect("scratch/alias.sqlite")  # a link in scratch is still the source
    with pytest.raises(GuardDenied):
        con.execute("DELETE FROM orders")
    assert con.execute("SELECT count(*) FROM orders").fetchone() == (100,)


def test_on_exceed_deny_refuses_the_rows(guard: Guard, tmp_path: Path) -> None:
    strict = tmp_path / "scratch" / "strict.yaml"  # scratch: the runtime hook may be in place (whole suite)
    strict.write_text((POLICY % {"max": MAX}).replace("on_exceed: truncate", "on_exceed: deny"))
    guard.set_policy(load_policy(strict, root=str(tmp_path)))
    con = sqlite3.connect("data/shop.sqlite")
    assert len(con.execute("SELECT oid FROM orders LIMIT 4").fetchall()) == 4
    with pytest.raises(GuardDenied):
        con.execute("SELECT oid FROM orders").fetchall()


def test_polars_read_database_goes_through_the_guarded_cursor(guard: Guard) -> None:
    pl = pytest.importorskip("polars")
    con = sqlite3.connect("data/shop.sqlite")
    assert pl.read_database("SELECT oid, amount FROM orders", con).height == MAX
    with pytest.raises(GuardDenied):
        pl.read_database("SELECT ssn FROM customers", con)
