"""deny_columns on DuckDB, PostgreSQL and SQLite, on real engines: every bypass class runs unguarded
(it leaks, or its rows are chosen by the denied column) and guarded (denied); the benign set
returns the same rows; and a grid of SELECT-list × FROM shapes checks each engine itself: a query
whose rows hold an ssn value is never allowed (the DuckDB grid: tests/enforce/duckdb/test_gate.py)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
import yaml

from guard_kernel.decision import GuardDenied
from guard_kernel.decision.guard import Guard, set_current
from guard_kernel.enforce.dbapi import psycopg as psycopg_layer
from guard_kernel.enforce.dbapi import sqlite as sqlite_layer
from guard_kernel.enforce.duckdb import gate as duckdb_gate
from guard_kernel.enforce.duckdb import rows as duckdb_rows
from guard_kernel.policy import load_policy
from tests.enforce.dbapi.pg_server import PgServer

VIEWS = ["CREATE VIEW cv AS SELECT id, ssn AS s FROM customers",  # a view stored in the source
         "CREATE VIEW cv2 AS SELECT s AS z FROM cv",  # a view of that view
         "CREATE VIEW cw AS WITH w AS (SELECT * FROM customers) SELECT id, ssn FROM w",
         "CREATE VIEW ov AS SELECT oid, amount FROM orders",  # a view that reads no protected table
         "CREATE VIEW nv AS SELECT id, name FROM customers"]  # a protected table's other columns: denied too
FUNCTIONS = {
    "duckdb": ["CREATE MACRO leak(i) AS (SELECT max(ssn) FROM customers WHERE id = i)",
               "CREATE MACRO twice(i) AS i * 2"],
    "pg": ["CREATE OR REPLACE FUNCTION leak(i int) RETURNS text AS 'SELECT ssn FROM customers WHERE id = i' "
           "LANGUAGE sql",
           "CREATE OR REPLACE FUNCTION leak_pl(i int) RETURNS text AS $$ BEGIN RETURN (SELECT ssn FROM customers "
           "WHERE id = i); END $$ LANGUAGE plpgsql",
           "CREATE OR REPLACE FUNCTION twice(i int) RETURNS int AS 'SELECT i * 2' LANGUAGE sql"],
}
CASES = yaml.safe_load((Path(__file__).parents[1] / "fixtures/deny_columns.yaml").read_text())
ENGINES = ("duckdb", "pg", "sqlite")
SSN = re.compile(r"ssn\d", re.I)
POLICY = """
version: 1
name: deny-columns-test
defaults: {read: allow, write: deny, export: deny, network: deny, shell: deny}
sources:
  shop:
    %(where)s
    tables:
      customers: {deny_columns: [ssn]}
limits: {max_rows: {agent: 1000, human: 1000}}
"""


@dataclass
class Engine:
    """One engine with the same two tables, guarded, and a way around the guard to see what leaks."""

    name: str
    raw: Callable[[str], list[Any]]
    """Rows of *sql* without the guard (raises the engine's error when it refuses the query)."""
    con: Any
    """A guarded connection to the same database."""
    errors: tuple[type[BaseException], ...]

    def leaked(self, sql: str) -> str | None:
        """repr of *sql*'s rows unguarded (None: the engine refuses the query)."""
        try:
            return repr(self.raw(sql))
        except self.errors:
            return None


def _guard(root: Path, where: str) -> Guard:
    (root / "policy.yaml").write_text(POLICY % {"where": where})
    g = Guard(load_policy(root / "policy.yaml", root=str(root)), actor="agent", audit_dir=str(root / "audit"),
              notify=lambda d: None)
    set_current(g)
    return g


def _duckdb(root: Path) -> Iterator[Engine]:
    (root / "data").mkdir()
    con = duckdb.connect(str(root / "data" / "shop.duckdb"))
    con.execute("CREATE TABLE customers AS SELECT i AS id, 'name' || i AS name, 'ssn' || i AS ssn, "
                "DATE '2000-01-01' + i::INT AS dob FROM range(20) r(i)")
    con.execute("CREATE TABLE orders AS SELECT i AS oid, i % 20 AS cid, i * 1.5 AS amount FROM range(100) r(i)")
    for v in VIEWS + FUNCTIONS["duckdb"]:
        con.execute(v)
    con.close()
    g = _guard(root, "duckdb: data/shop.duckdb")
    duckdb_gate.install(g)
    raw = duckdb_rows.orig(duckdb, "connect")(str(root / "data/shop.duckdb"), True, {})
    ex = duckdb_rows.orig(duckdb.DuckDBPyConnection, "execute")
    fetch = duckdb_rows.orig(duckdb.DuckDBPyConnection, "fetchall")
    guarded = duckdb.connect("data/shop.duckdb", read_only=True)
    try:
        yield Engine("duckdb", lambda q: list(fetch(ex(raw, q))), guarded, (duckdb.Error,))
    finally:
        guarded.close()
        raw.close()
        duckdb_gate.uninstall()
        set_current(None)
        g.close()


def _pg(root: Path, server: PgServer) -> Iterator[Engine]:
    with psycopg.connect(server.dsn("shop"), autocommit=True) as owner:  # the guard is not installed yet
        for v in VIEWS:
            owner.execute(v.replace("CREATE VIEW", "CREATE OR REPLACE VIEW"))
        for f in FUNCTIONS["pg"]:
            owner.execute(f)
    g = _guard(root, f'url: "postgresql://localhost:{server.port}/shop"')
    psycopg_layer.install(g)
    con = psycopg.connect(server.dsn("shop"), autocommit=True)

    def raw(q: str) -> list[Any]:
        with g.quiet():  # the guard's own work is not judged: the query runs as written
            return con.execute(q).fetchall()
    try:
        yield Engine("pg", raw, con, (psycopg.Error,))
    finally:
        con.close()
        psycopg_layer.uninstall()
        set_current(None)
        g.close()
        with psycopg.connect(server.dsn("shop"), autocommit=True) as owner:
            owner.execute("DROP VIEW IF EXISTS cv2, cv, cw, ov, nv")
            owner.execute("DROP FUNCTION IF EXISTS leak(int), leak_pl(int), twice(int)")


def _sqlite(root: Path) -> Iterator[Engine]:
    (root / "data").mkdir()
    db = root / "data" / "shop.sqlite"
    raw = sqlite3.connect(db)  # before the layer: a plain connection
    raw.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, ssn TEXT, dob TEXT)")
    raw.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)",
                    [(i, f"name{i}", f"ssn{i}", f"2000-01-{i + 1:02d}") for i in range(20)])
    raw.execute("CREATE TABLE orders (oid INTEGER, cid INTEGER, amount REAL)")
    raw.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(i, i % 20, i * 1.5) for i in range(100)])
    for v in VIEWS:
        raw.execute(v)
    raw.commit()
    g = _guard(root, 'url: "sqlite:///data/shop.sqlite"')
    sqlite_layer.install(g)
    con = sqlite3.connect("data/shop.sqlite")
    try:
        yield Engine("sqlite", lambda q: raw.execute(q).fetchall(), con, (sqlite3.Error,))
    finally:
        con.close()
        raw.close()
        sqlite_layer.uninstall()
        set_current(None)
        g.close()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.chdir(tmp_path)
    if request.param == "duckdb":
        yield from _duckdb(tmp_path)
    elif request.param == "pg":
        yield from _pg(tmp_path, request.getfixturevalue("pg_server"))
    else:
        yield from _sqlite(tmp_path)


def _for(kind: str) -> list[Any]:
    """(engine, case) for each case on each engine whose SQL has it."""
    return [pytest.param(e, c, id=f"{e}-{c['id']}") for e in ENGINES for c in CASES[kind] if e in c.get("only", ENGINES)]


@pytest.mark.parametrize("engine,case", _for("leaks"), indirect=["engine"])
def test_bypass_class_leaks_unguarded_and_is_denied(engine: Engine, case: dict[str, Any]) -> None:
    shown = engine.leaked(case["sql"])
    assert shown is not None and SSN.search(shown), f"the case must leak unguarded on {engine.name}: {shown}"
    with pytest.raises(GuardDenied) as e:
        engine.con.execute(case["sql"]).fetchall()
    assert e.value.decision.rules[0].id == "source:shop.customers.deny_columns", e.value.decision


@pytest.mark.parametrize("engine,case", _for("oracles"), indirect=["engine"])
def test_oracle_on_a_denied_column_is_denied(engine: Engine, case: dict[str, Any]) -> None:
    shown = engine.leaked(case["sql"])
    assert shown not in (None, "[]"), f"the oracle must answer unguarded on {engine.name}"
    with pytest.raises(GuardDenied) as e:
        engine.con.execute(case["sql"]).fetchall()
    assert e.value.decision.rules[0].id == "source:shop.customers.deny_columns", e.value.decision


@pytest.mark.parametrize("engine,case", _for("benign"), indirect=["engine"])
def test_benign_reads_run_unchanged(engine: Engine, case: dict[str, Any]) -> None:
    assert repr(engine.con.execute(case["sql"]).fetchall()) == engine.leaked(case["sql"])


@pytest.mark.parametrize("sql,leaks", [
    ("SELECT * FROM cv", True), ("SELECT s FROM cv", True), ("SELECT z FROM cv2", True), ("SELECT ssn FROM cw", True),
    ("SELECT o.oid FROM orders o JOIN cv ON cv.id = o.cid", False), ("SELECT * FROM nv", False),
])
def test_a_source_view_reading_a_protected_table_is_denied(engine: Engine, sql: str, leaks: bool) -> None:
    """The guard does not follow a view's columns: a view stored in the source that reads a table
    with denied columns (directly, through a CTE or another view) is denied, whatever it selects."""
    shown = engine.leaked(sql)
    assert shown is not None and bool(SSN.search(shown)) is leaks, shown
    with pytest.raises(GuardDenied) as e:
        engine.con.execute(sql).fetchall()
    assert e.value.decision.rules[0].id == "source:shop.customers.deny_columns", e.value.decision
    assert "is stored in the database (a view or a function)" in e.value.decision.message


@pytest.mark.parametrize("engine", ["duckdb", "pg"], indirect=True)
def test_a_function_stored_in_the_source_that_reads_a_protected_table_is_denied(engine: Engine) -> None:
    """DuckDB macros and PostgreSQL functions (SQL or PL/pgSQL) stored in the source: calling one
    whose body reads a table with denied columns is denied; one that reads none is called."""
    calls = ["SELECT leak(1)", "SELECT o.oid, leak(o.cid) FROM orders o"] + (
        ["SELECT leak_pl(2)"] if engine.name == "pg" else [])
    for sql in calls:
        shown = engine.leaked(sql)
        assert shown is not None and SSN.search(shown), (sql, shown)
        with pytest.raises(GuardDenied) as e:
            engine.con.execute(sql).fetchall()
        assert e.value.decision.rules[0].id == "source:shop.customers.deny_columns", e.value.decision
    assert engine.con.execute("SELECT twice(21)").fetchall() == [(42,)]


def test_a_source_view_over_other_tables_is_read(engine: Engine) -> None:
    sql = "SELECT oid, amount FROM ov ORDER BY oid"
    assert repr(engine.con.execute(sql).fetchall()) == engine.leaked(sql)


# ------------------------------------------------------------------ the grid, checked by each engine

_SELECTS = ["*", "t.*", "t", "row_to_json(t)", "to_jsonb(t)", "to_json(t)", "json_object('k', t.c)",
            "name", "upper(name)", "count(*)", "x", "c", "t.x", "t.c", "v", "upper(c)", "c || ''",
            "(SELECT max(ssn) FROM customers)", "(SELECT max(c) FROM customers)", "max(x)", "a", "b"]
_FROMS = ["customers t", "customers AS t(a, b, x, d)", "(SELECT * FROM customers) t",
          "(SELECT 1 AS z) z, customers t", "(SELECT ssn AS c FROM customers) t", "(SELECT id, name FROM customers) t",
          "(SELECT * FROM customers) AS t(a, b, x, d)", "customers t JOIN orders o ON o.cid = t.id",
          "(SELECT * FROM customers UNION ALL SELECT * FROM customers) t", "(SELECT t2 FROM customers t2) t",
          "(SELECT name AS x, ssn AS c FROM customers) t", "(SELECT id AS v FROM customers) t",
          "(SELECT upper(ssn) AS c, id AS x FROM customers) t", "(SELECT name AS c FROM customers UNION SELECT ssn "
          "FROM customers) t", "(SELECT (SELECT max(ssn) FROM customers) AS c) t"]
_SHAPES = ["SELECT {sel} FROM {frm}", "WITH w AS (SELECT * FROM {frm}) SELECT {sel} FROM w t",
           "WITH w AS (SELECT {sel} FROM {frm}) SELECT * FROM w"]


@pytest.mark.parametrize("engine", ["pg", "sqlite"], indirect=True)
def test_no_query_that_returns_ssn_is_allowed(engine: Engine) -> None:
    """Every SELECT-list × FROM shape above that the engine runs: if its rows hold an ssn value,
    the guard must deny it; what it allows must hold none."""
    leaking = allowed = 0
    for shape in _SHAPES:
        for sel in _SELECTS:
            for frm in _FROMS:
                q = shape.format(sel=sel, frm=frm)
                shown = engine.leaked(q)
                if shown is None:
                    continue
                try:
                    rows = engine.con.execute(q).fetchall()
                except GuardDenied:
                    leaking += bool(SSN.search(shown))
                    continue
                allowed += 1
                assert not SSN.search(repr(rows)), f"allowed on {engine.name}, and it returned ssn values: {q}"
    print(f"{engine.name}: {leaking} leaking queries denied, {allowed} allowed")
    assert leaking > 50 and allowed > 20, (leaking, allowed)  # the grid holds both kinds


def test_async_psycopg_sees_source_views_and_functions(engine_pg_async: Any) -> None:
    """psycopg's async connections have no catalog reader: the views and functions are read when
    the connection opens, and a use of one that reads a protected table is denied."""
    import asyncio

    async def session() -> list[Any]:
        got: list[Any] = []
        async with await psycopg.AsyncConnection.connect(engine_pg_async) as con:
            for sql in ("SELECT s FROM cv", "SELECT leak(1)", "SELECT twice(2)", "SELECT oid FROM ov ORDER BY oid"):
                try:
                    got.append((await (await con.execute(sql)).fetchall())[:1])
                except GuardDenied as e:
                    got.append(e.decision.rules[0].id)
        return got

    assert asyncio.run(session()) == ["source:shop.customers.deny_columns", "source:shop.customers.deny_columns",
                                      [(4,)], [(0,)]]


@pytest.fixture()
def engine_pg_async(pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)
    gen = _pg(tmp_path, pg_server)
    next(gen)
    try:
        yield pg_server.dsn("shop")
    finally:
        gen.close()
