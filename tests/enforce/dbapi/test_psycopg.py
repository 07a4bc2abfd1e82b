"""psycopg 3 under the guard against a real PostgreSQL server: effects in the server checked."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import psycopg.sql
import pytest

from guard_kernel.analysis.sql.requests import analyze
from guard_kernel.audit import read_records
from guard_kernel.decision import GuardDenied
from guard_kernel.decision.guard import Guard, set_current
from guard_kernel.enforce.dbapi import psycopg as psycopg_layer
from guard_kernel.policy import load_policy
from tests.enforce.dbapi.pg_server import PgServer

MAX = 5

POLICY = """
version: 1
name: pg-test
defaults: {read: allow, write: deny, export: deny, network: deny, shell: deny}
sources:
  shop:
    url: "postgresql://localhost:%(port)d/shop"
    tables:
      customers: {deny_columns: [ssn]}
  lab:
    url: "postgresql://127.0.0.1:%(port)d/lab"
    scratch_schemas: [work]
limits: {max_rows: {agent: %(max)d, human: %(max)d}, on_exceed: truncate}
"""


@pytest.fixture()
def guard(pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Guard]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "policy.yaml").write_text(POLICY % {"port": pg_server.port, "max": MAX})
    g = Guard(load_policy(tmp_path / "policy.yaml", root=str(tmp_path)), actor="agent",
              audit_dir=str(tmp_path / "audit"), notify=lambda d: None)
    set_current(g)
    psycopg_layer.install(g)
    try:
        yield g
    finally:
        psycopg_layer.uninstall()
        set_current(None)
        g.close()


def _raw(pg: PgServer, sql: str, db: str = "shop") -> Any:
    """*sql* on the server outside any guard (the layer is uninstalled first)."""
    psycopg_layer.uninstall()
    with psycopg.connect(pg.dsn(db)) as con:
        return con.execute(sql).fetchall()


BENIGN = [
    "SELECT c.name, count(*), sum(o.amount) FROM customers c JOIN orders o ON o.cid = c.id GROUP BY 1 ORDER BY 2 DESC",
    "WITH t AS (SELECT cid, sum(amount) s FROM orders GROUP BY cid) SELECT cid, s FROM t WHERE s > 10",
    "SELECT oid FROM orders ORDER BY oid FETCH FIRST 3 ROWS ONLY",
    "SELECT * FROM generate_series(1, 3)",
    "SELECT avg(amount) OVER (PARTITION BY cid) FROM orders",
    "SELECT id, name, dob FROM customers WHERE dob > DATE '2000-01-05'",
    "SELECT * FROM orders WHERE oid = 7",
    "SHOW search_path",
    "EXPLAIN SELECT * FROM orders",
    "SELECT pg_catalog.version()",
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    "SELECT * FROM other.accounts",
    "SELECT cid, oid, amount, sum(amount) OVER (PARTITION BY cid ORDER BY oid) AS running FROM orders WHERE cid = 7",
    "SELECT * FROM (SELECT cid, oid, row_number() OVER (PARTITION BY cid ORDER BY amount DESC) AS rn FROM orders) t "
    "WHERE rn <= 2",
    "WITH top AS (SELECT cid, sum(amount) AS s FROM orders GROUP BY 1 ORDER BY 2 DESC LIMIT 10) "
    "SELECT t.cid, c.name, t.s FROM top t JOIN customers c ON c.id = t.cid",
    "SELECT date_trunc('month', dob) AS m, count(*) FROM customers GROUP BY 1 ORDER BY 1",
    "SELECT CASE WHEN amount > 100 THEN 'big' ELSE 'small' END AS size, count(*) FROM orders GROUP BY 1",
    "SELECT cid, count(*) FROM orders GROUP BY cid HAVING count(*) > 4 ORDER BY cid",
    "SELECT DISTINCT cid FROM orders WHERE amount BETWEEN 10 AND 20",
    "SELECT id FROM customers UNION SELECT cid FROM orders ORDER BY 1",
    "SELECT name FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.cid = c.id AND o.amount > 140)",
    "SELECT c.name, o.amount FROM customers c CROSS JOIN LATERAL "
    "(SELECT amount FROM orders WHERE cid = c.id ORDER BY amount DESC LIMIT 1) o",
    "SELECT cid, array_agg(oid ORDER BY oid) FROM orders GROUP BY cid",
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) FROM orders",
    "SELECT count(*) FILTER (WHERE amount > 50), count(*) FROM orders",
    "SELECT upper(name), length(name), substr(name, 1, 3) FROM customers WHERE name LIKE 'name1%'",
    "SELECT o.cid, round(avg(o.amount), 2)::float AS avg_amount FROM orders o GROUP BY o.cid",
    "SELECT json_build_object('id', id, 'name', name) FROM customers WHERE id < 3",
    "SELECT d::date FROM generate_series(DATE '2024-01-01', DATE '2024-01-05', INTERVAL '1 day') d",
    "SELECT count(*) FROM orders WHERE cid IN (SELECT id FROM customers WHERE name LIKE 'name%')",
]


@pytest.mark.parametrize("sql", BENIGN)
def test_ordinary_analysis_runs_with_no_denial(guard: Guard, pg_server: PgServer, sql: str) -> None:
    with psycopg.connect(pg_server.dsn()) as con:
        rows = con.execute(sql).fetchall()
    assert rows
    assert guard.counts["deny"] == 0


DESTRUCTIVE = [
    "DROP TABLE customers", "DELETE FROM customers", "TRUNCATE customers", "UPDATE customers SET name = 'x'",
    "INSERT INTO orders VALUES (1, 1, 1)", "DROP SCHEMA other CASCADE", "DELETE FROM other.accounts",
    "ALTER TABLE customers ADD COLUMN x int", "CREATE TABLE mine (a int)", "CREATE INDEX ix ON orders (cid)",
    "DO $$ BEGIN DROP TABLE customers; END $$", "CALL p()", "EXECUTE s",
    "COPY customers TO PROGRAM 'cat > /tmp/x'", "COPY customers TO '/tmp/x.csv'", "SELECT lo_export(1, '/tmp/x')",
    "SELECT pg_read_file('/etc/passwd')", "SELECT nextval('s')", "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT 1; COMMIT; DROP TABLE customers", "SET default_transaction_read_only = off", "BEGIN READ WRITE",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "RESET ALL", "SET TRANSACTION READ WRITE",
    "GRANT ALL ON customers TO PUBLIC",
]


def test_destructive_statements_leave_the_tables_and_rows(guard: Guard, pg_server: PgServer) -> None:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as con:
        for sql in DESTRUCTIVE:
            with pytest.raises(GuardDenied) as e:
                con.execute(sql)
            assert e.value.decisions[0].message, sql  # every denial explains itself
        with pytest.raises(GuardDenied):
            con.read_only = False
        with pytest.raises(GuardDenied):  # composed SQL is read as the text it renders to
            con.execute(psycopg.sql.SQL("DELETE FROM {}").format(psycopg.sql.Identifier("orders")))
        with pytest.raises(GuardDenied):
            con.execute(b"TRUNCATE orders")
        with pytest.raises(GuardDenied), con.cursor().copy("COPY customers FROM STDIN") as cp:
            cp.write_row((99, "x", "y", None))
        with pytest.raises(GuardDenied), con.cursor().copy("COPY orders TO STDOUT"):
            pass
    assert _raw(pg_server, "SELECT count(*) FROM customers") == [(20,)]
    assert _raw(pg_server, "SELECT count(*) FROM orders") == [(100,)]
    assert _raw(pg_server, "SELECT count(*) FROM other.accounts") == [(2,)]
    assert _raw(pg_server, "SELECT count(*) FROM pg_tables WHERE tablename = 'mine'") == [(0,)]


def test_the_server_holds_a_source_read_only_too(guard: Guard, pg_server: PgServer) -> None:
    with psycopg.connect(pg_server.dsn()) as con:
        original = psycopg_layer._orig(psycopg.Cursor, "execute")  # under the guard: the server refuses
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            original(con.cursor(), "DELETE FROM customers")
    assert _raw(pg_server, "SELECT count(*) FROM customers") == [(20,)]


def test_deny_columns_hold(guard: Guard, pg_server: PgServer) -> None:
    with psycopg.connect(pg_server.dsn()) as con:
        for sql in ("SELECT ssn FROM customers", "SELECT * FROM customers", "SELECT upper(ssn) FROM customers",
                    "SELECT c.* FROM customers c", "SELECT name FROM customers ORDER BY ssn",
                    "SELECT c FROM customers c", "SELECT row_to_json(c) FROM customers c", "SELECT md5(ssn) FROM customers"):
            with pytest.raises(GuardDenied):
                con.execute(sql)
        assert len(con.execute("SELECT id, name FROM customers").fetchall()) == MAX


def test_row_cap_on_every_fetch_path(guard: Guard, pg_server: PgServer) -> None:
    with psycopg.connect(pg_server.dsn()) as con:
        assert len(con.execute("SELECT * FROM orders").fetchall()) == MAX
        cur = con.execute("SELECT oid FROM orders")
        assert len(list(iter(cur.fetchone, None))) == MAX
        cur = con.execute("SELECT oid FROM orders")
        got: list[Any] = []
        while batch := cur.fetchmany(2):
            got += batch
        assert len(got) == MAX
        assert len(list(con.execute("SELECT oid FROM orders"))) == MAX
        assert len(list(con.cursor().stream("SELECT oid FROM orders"))) == MAX
        assert len(con.execute("SELECT oid FROM orders ORDER BY oid FETCH FIRST 50 ROWS ONLY").fetchall()) == MAX
        assert len(con.execute("SELECT oid FROM orders LIMIT 3").fetchall()) == 3
        with con.cursor(name="server_side") as sc:  # a server-side cursor
            sc.execute("SELECT oid FROM orders")
            got = []
            while batch := sc.fetchmany(2):
                got += batch
            assert len(got) == MAX
        with con.cursor(name="server_iter") as sc:
            sc.execute("SELECT oid FROM orders")
            assert len(list(sc)) == MAX
    assert any(r["decision"] == "truncate" for r in read_records(guard.audit_path))


def test_pandas_read_sql_through_psycopg(guard: Guard, pg_server: PgServer) -> None:
    with psycopg.connect(pg_server.dsn()) as con, pytest.warns(UserWarning):
        assert len(pd.read_sql("SELECT oid, amount FROM orders", con)) == MAX
    with psycopg.connect(pg_server.dsn()) as con, pytest.warns(UserWarning):
        assert sum(len(c) for c in pd.read_sql("SELECT oid FROM orders", con, chunksize=2)) == MAX


def test_connecting_elsewhere_is_net_connect_without_credentials(guard: Guard, pg_server: PgServer) -> None:
    with pytest.raises(GuardDenied) as e:
        psycopg.connect(pg_server.dsn("postgres") + " password=hunter2")
    d = e.value.decisions[0]
    assert d.action.value == "net.connect" and d.resource == f"postgresql://localhost:{pg_server.port}/postgres"
    text = Path(guard.audit_path).read_text()
    assert "hunter2" not in text and "net.connect" in text
    with pytest.raises(GuardDenied):
        psycopg.Connection.connect(host="10.0.0.1", dbname="shop", connect_timeout=1)
    with pytest.raises(GuardDenied):  # a service file could name any host: never a source
        psycopg.connect("service=shop dbname=shop")


def test_scratch_schemas_are_the_sessions_own(guard: Guard, pg_server: PgServer) -> None:
    with psycopg.connect(pg_server.dsn("lab")) as con:
        con.execute("CREATE TABLE work.summary AS SELECT cid, sum(amount) AS total FROM orders GROUP BY cid")
        con.execute("INSERT INTO work.summary VALUES (99, 0)")
        con.execute("DELETE FROM work.summary WHERE cid = 99")
        assert len(con.execute("SELECT * FROM work.summary").fetchall()) == MAX
        for sql in ("DROP TABLE customers", "DELETE FROM other.accounts", "CREATE TABLE public.x (a int)"):
            with pytest.raises(GuardDenied):
                con.execute(sql)
        con.execute("DROP TABLE work.summary")
        con.commit()
    assert _raw(pg_server, "SELECT count(*) FROM customers", "lab") == [(20,)]


def test_classifier_statement_kinds_match_the_server(guard: Guard, pg_server: PgServer) -> None:
    """Every statement of the benign set is one read in the classifier and runs on the server."""
    for sql in BENIGN:
        assert [s.action.value for s in analyze(sql, "postgres")] == ["sql.read"], sql


def test_async_connections_are_guarded_alike(guard: Guard, pg_server: PgServer) -> None:
    async def session() -> None:
        async with await psycopg.AsyncConnection.connect(pg_server.dsn(), autocommit=True) as con:
            cur = await con.execute("SELECT oid FROM orders")
            assert len(await cur.fetchall()) == MAX
            cur = await con.execute("SELECT oid FROM orders")
            assert len([r async for r in cur]) == MAX
            async with con.cursor(name="async_server", withhold=True) as sc:
                await sc.execute("SELECT oid FROM orders")
                got: list[Any] = []
                while batch := await sc.fetchmany(2):
                    got += batch
                assert len(got) == MAX
            assert len([r async for r in con.cursor().stream("SELECT oid FROM orders")]) == MAX
            for sql in ("DELETE FROM orders", "SELECT 1; COMMIT; DROP TABLE orders", "SELECT ssn FROM customers"):
                with pytest.raises(GuardDenied):
                    await con.execute(sql)
            original = psycopg_layer._orig(psycopg.AsyncCursor, "execute")
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):  # the server holds the lock too
                await original(con.cursor(), "DELETE FROM orders")
        with pytest.raises(GuardDenied):
            await psycopg.AsyncConnection.connect(pg_server.dsn("postgres"))

    asyncio.run(session())
    assert _raw(pg_server, "SELECT count(*) FROM orders") == [(100,)]
