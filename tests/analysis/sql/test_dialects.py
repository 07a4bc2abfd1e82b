"""The one classifier in PostgreSQL's and SQLite's dialects: splits, kinds, and what is always denied."""

from __future__ import annotations

import pytest

from guard_kernel.analysis.sql.dialects import DIALECTS, get
from guard_kernel.analysis.sql.requests import SqlContext, analyze, cap_statement, to_requests
from guard_kernel.decision.request import TableRef
from guard_kernel.policy.actions import Action


def _actions(text: str, dialect: str) -> list[str]:
    return [s.action.value for s in analyze(text, dialect)]


def test_duckdb_stays_the_default_dialect() -> None:
    assert analyze("SELECT 1") == analyze("SELECT 1", "duckdb")
    assert set(DIALECTS) == {"duckdb", "postgres", "sqlite", "spark"}
    assert get("postgresql").name == "postgres"
    assert analyze("SELECT 1", "oracle")[0].action is Action.SQL_UNKNOWN


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
def test_split_respects_strings_and_comments(dialect: str) -> None:
    stmts = analyze("SELECT 'a;b' AS x; /* c; */ SELECT 2 -- d;\n;", dialect)
    assert [s.kind for s in stmts] == ["SELECT", "SELECT"]
    assert stmts[0].text == "SELECT 'a;b' AS x;"


def test_postgres_dollar_quotes_do_not_split() -> None:
    assert len(analyze("SELECT $$a;b$$; SELECT 1", "postgres")) == 2


BENIGN_PG = [
    "SELECT c.name, count(*), sum(o.amount) FROM customers c JOIN orders o ON o.cid = c.id GROUP BY 1 ORDER BY 2 DESC",
    "WITH t AS (SELECT cid, sum(amount) s FROM orders GROUP BY cid) SELECT * FROM t WHERE s > 10",
    "SELECT x FROM orders FETCH FIRST 5 ROWS ONLY",
    "SELECT * FROM generate_series(1, 3)",
    "SELECT * FROM orders WHERE oid = %s",
    "SELECT avg(amount) OVER (PARTITION BY cid) FROM orders",
    "SHOW search_path",
    "EXPLAIN SELECT * FROM orders",
    "select pg_catalog.version()",
    "BEGIN", "COMMIT", "ROLLBACK",
]


@pytest.mark.parametrize("sql", BENIGN_PG)
def test_ordinary_postgres_analysis_is_a_read(sql: str) -> None:
    assert _actions(sql, "postgres") == ["sql.read"]


ALWAYS_DENIED_PG = [
    "DO $$ BEGIN DROP TABLE customers; END $$", "CALL p()", "EXECUTE stmt", "PREPARE p AS SELECT 1",
    "COPY customers TO PROGRAM 'curl x'", "COPY customers FROM PROGRAM 'cat /etc/passwd'",
    "COPY customers TO '/tmp/out.csv'", "SELECT lo_export(1, '/tmp/x')", "SELECT pg_read_file('/etc/passwd')",
    "SELECT * FROM dblink('host=x', 'select 1') AS t(a int)", "SELECT set_config('role', 'admin', false)",
    "SELECT query_to_xml('DROP TABLE customers', true, true, '')", "CREATE EXTENSION dblink", "LISTEN x",
    "ALTER SYSTEM SET fsync = off", "SELECT * INTO copy FROM customers", "EXPLAIN ANALYZE DELETE FROM orders",
    "SELECT nextval('s')", "VACUUM",
    "WITH d AS (DELETE FROM customers RETURNING *) SELECT * FROM d",
    "WITH u AS (UPDATE orders SET amount = 0 RETURNING oid) SELECT count(*) FROM u",
    "CREATE TRIGGER t BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION f()",
    "LOAD 'auto_explain'", "LOCK TABLE customers", "NOTIFY ch",
]


@pytest.mark.parametrize("sql", ALWAYS_DENIED_PG)
def test_postgres_statements_the_guard_cannot_hold_are_unknown(sql: str) -> None:
    stmts = analyze(sql, "postgres")
    assert stmts[0].action is Action.SQL_UNKNOWN and stmts[0].reason


ALWAYS_DENIED_SQLITE = ["SELECT load_extension('x')", "SELECT writefile('x', 'y')", "VACUUM INTO 'x.db'", "REINDEX",
                        "CREATE TRIGGER tr AFTER INSERT ON customers BEGIN DELETE FROM orders; END"]


@pytest.mark.parametrize("sql", ALWAYS_DENIED_SQLITE)
def test_sqlite_statements_the_guard_cannot_hold_are_unknown(sql: str) -> None:
    assert analyze(sql, "sqlite")[0].action is Action.SQL_UNKNOWN


@pytest.mark.parametrize(("sql", "dialect"), [
    ("SET default_transaction_read_only = off", "postgres"), ("BEGIN READ WRITE", "postgres"),
    ("START TRANSACTION READ WRITE", "postgres"), ("SET TRANSACTION READ WRITE", "postgres"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "postgres"), ("RESET ALL", "postgres"),
    ("PRAGMA query_only = OFF", "sqlite"),
])
def test_undoing_the_lock_is_a_write_to_a_source(sql: str, dialect: str) -> None:
    stmts = analyze(sql, dialect)
    assert stmts[0].unlocks
    src = to_requests(stmts, SqlContext(catalogs={"db": "warehouse"}, default_catalog="db"))[0]
    assert src.written and src.written[0].source == "warehouse"
    mine = to_requests(stmts, SqlContext(catalogs={"db": None}, default_catalog="db"))[0]
    assert not mine.written


def test_multi_statement_bypass_is_seen_as_a_whole() -> None:
    assert _actions("SELECT 1; COMMIT; DROP TABLE customers", "postgres") == ["sql.read", "sql.read", "sql.ddl"]


def test_copy_through_the_client() -> None:
    s = analyze("COPY orders (oid, cid) FROM STDIN", "postgres")[0]
    assert s.action is Action.SQL_WRITE and s.written == (TableRef("orders"),)
    assert analyze("COPY (SELECT oid FROM orders) TO STDOUT", "postgres")[0].action is Action.SQL_EXPORT


def test_tables_land_in_the_connection_database_except_temp_and_scratch() -> None:
    ctx = SqlContext(catalogs={"pg": "warehouse"}, default_catalog="pg", scratch_schemas=frozenset({"work"}))
    drop, temp, scratch = to_requests(analyze(
        "DROP TABLE public.customers; CREATE TEMP TABLE t AS SELECT 1; CREATE TABLE work.t2 (a int)", "postgres"), ctx)
    assert drop.written[0].source == "warehouse" and not drop.owned
    assert temp.owned and scratch.owned


def test_sqlite_pragmas() -> None:
    assert _actions("PRAGMA table_info(customers)", "sqlite") == ["sql.read"]
    assert analyze("PRAGMA main.table_info(\"t\")", "sqlite")[0].tables == (TableRef("t", "main"),)
    assert _actions("PRAGMA journal_mode = WAL", "sqlite") == ["sql.config"]


def test_row_caps_in_the_dialect() -> None:
    s = analyze("SELECT * FROM orders FETCH FIRST 50 ROWS ONLY", "postgres")[0]
    assert cap_statement(s, 6).endswith("LIMIT 6")
    assert cap_statement(analyze("SELECT * FROM orders", "sqlite")[0], 6).endswith("LIMIT 6")


def test_duckdb_scanners_are_judged_as_the_database_they_reach() -> None:
    ctx = SqlContext(source_servers={("db.example", 5432, "shop"): "shop"}, source_paths={"/p/x.sqlite": "lite"})

    def req(sql: str) -> tuple[str, bool, tuple[TableRef, ...]]:
        (r,) = to_requests(analyze(sql), ctx)
        return r.action.value, r.read_only, r.written

    assert req("ATTACH 'host=10.1.2.3 dbname=x' AS pg (TYPE postgres, READ_ONLY)")[0] == "net.connect"
    assert req("ATTACH 'postgres:dbname=shop host=db.example' AS pg (READ_ONLY)") == ("sql.attach", True, ())
    action, ro, written = req("ATTACH 'postgres:dbname=shop host=db.example' AS pg")
    assert (action, ro) == ("sql.attach", False) and written[0].source == "shop"
    r = to_requests(analyze("ATTACH 'sqlite:/p/x.sqlite' AS s"), ctx)[0]
    assert r.path == "/p/x.sqlite"
    assert analyze("ATTACH 'x' AS m (TYPE mysql)")[0].action is Action.SQL_UNKNOWN
    r = to_requests(analyze("ATTACH 'host=h dbname=d password=hunter2' AS p (TYPE postgres)"), ctx)[0]
    assert "hunter2" not in (r.code or "") and "hunter2" not in r.resource
