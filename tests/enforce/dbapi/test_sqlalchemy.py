"""SQLAlchemy (Core, ORM, pandas) under the guard through its event hooks: PostgreSQL and SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from guard_kernel.audit import read_records
from guard_kernel.decision import GuardDenied
from guard_kernel.decision.guard import Guard, set_current
from guard_kernel.enforce.dataframe import writers
from guard_kernel.enforce.dbapi import psycopg as psycopg_layer
from guard_kernel.enforce.dbapi import sqlalchemy as sqlalchemy_layer
from guard_kernel.enforce.dbapi import sqlite as sqlite_layer
from guard_kernel.policy import load_policy
from tests.enforce.dbapi.pg_server import PgServer

MAX = 5

POLICY = """
version: 1
name: sqlalchemy-test
defaults: {read: allow, write: deny, export: deny, network: deny, shell: deny}
sources:
  shop:
    url: "postgresql://localhost:%(port)d/shop"
    tables:
      customers: {deny_columns: [ssn]}
  local:
    url: "sqlite:///data/local.sqlite"
scratch: ["scratch/**"]
limits: {max_rows: {agent: %(max)d, human: %(max)d}, on_exceed: truncate}
rules:
  - id: scratch-writes
    effect: allow
    actions: [file.write, export.dataframe, sql.export]
    where: {path: "scratch/**"}
"""


@pytest.fixture()
def guard(pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Guard]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "scratch").mkdir()
    con = sqlite3.connect(tmp_path / "data" / "local.sqlite")
    con.execute("CREATE TABLE items (id INTEGER, label TEXT)")
    con.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"l{i}") for i in range(30)])
    con.commit()
    con.close()
    (tmp_path / "policy.yaml").write_text(POLICY % {"port": pg_server.port, "max": MAX})
    g = Guard(load_policy(tmp_path / "policy.yaml", root=str(tmp_path)), actor="agent",
              audit_dir=str(tmp_path / "audit"), notify=lambda d: None)
    set_current(g)
    layers = (sqlite_layer, psycopg_layer, sqlalchemy_layer, writers)
    for layer in layers:
        layer.install(g)
    try:
        yield g
    finally:
        for layer in reversed(layers):
            layer.uninstall()
        set_current(None)
        g.close()


def _sql_records(g: Guard) -> list[dict[str, Any]]:
    return [r for r in read_records(g.audit_path) if r.get("kind") == "sql"]


def test_read_sql_on_postgres_is_capped_once_per_read(guard: Guard, pg_server: PgServer) -> None:
    engine = sa.create_engine(pg_server.url())
    assert len(pd.read_sql("SELECT oid, amount FROM orders", engine)) == MAX
    assert sum(len(c) for c in pd.read_sql("SELECT oid FROM orders", engine, chunksize=2)) == MAX
    assert len(pd.read_sql_table("orders", engine, columns=["oid"])) == MAX
    with pytest.raises(GuardDenied):
        pd.read_sql("SELECT * FROM customers", engine)
    reads = [r for r in _sql_records(guard) if r.get("statement", "").startswith("SELECT oid, amount")]
    assert len(reads) == 1  # decided once, not again by the driver's layer
    pl = pytest.importorskip("polars")
    assert pl.read_database("SELECT oid FROM orders", engine).height == MAX
    engine.dispose()


def test_core_destructive_statements_leave_the_rows(guard: Guard, pg_server: PgServer) -> None:
    engine = sa.create_engine(pg_server.url())
    with engine.connect() as conn:
        for sql in ("DROP TABLE customers", "DELETE FROM orders", "SELECT 1; COMMIT; DROP TABLE orders",
                    "SET default_transaction_read_only = off"):
            with pytest.raises(GuardDenied):
                conn.execute(sa.text(sql))
        orders = sa.Table("orders", sa.MetaData(), autoload_with=conn)
        with pytest.raises(GuardDenied):
            conn.execute(orders.delete())
        assert len(conn.execute(sa.select(orders.c.oid)).fetchall()) == MAX
        assert len(list(conn.execute(sa.select(orders.c.oid)))) == MAX
    engine.dispose()
    psycopg_layer.uninstall()
    import psycopg

    with psycopg.connect(pg_server.dsn()) as raw:
        assert raw.execute("SELECT count(*) FROM orders").fetchone() == (100,)
        assert raw.execute("SELECT count(*) FROM customers").fetchone() == (20,)


class _Base(DeclarativeBase):
    pass


class _Order(_Base):
    __tablename__ = "orders"
    oid: Mapped[int] = mapped_column(primary_key=True)
    cid: Mapped[int]


def test_orm_reads_and_writes(guard: Guard, pg_server: PgServer) -> None:
    engine = sa.create_engine(pg_server.url())
    with Session(engine) as s:
        assert len(s.scalars(sa.select(_Order)).all()) == MAX
        s.add(_Order(oid=1000, cid=1))
        with pytest.raises(GuardDenied):
            s.flush()
    engine.dispose()


def test_to_sql_through_sqlite_engines(guard: Guard, tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": range(10)})
    scratch = sa.create_engine("sqlite:///scratch/out.sqlite")
    frame.to_sql("frame", scratch)  # a new file in scratch: created, its tables the session's own
    assert len(pd.read_sql("SELECT a FROM frame", scratch)) == MAX
    scratch.dispose()
    with pytest.raises(GuardDenied):
        frame.to_sql("frame", sa.create_engine("sqlite:///elsewhere.sqlite"))
    assert not (tmp_path / "elsewhere.sqlite").exists()
    local = sa.create_engine("sqlite:///data/local.sqlite")
    with pytest.raises(GuardDenied):
        frame.to_sql("items", local, if_exists="append")
    with local.connect() as conn, pytest.raises(GuardDenied):
        conn.execute(sa.text("DELETE FROM items"))
    assert len(pd.read_sql("SELECT id FROM items", local)) == MAX
    local.dispose()
    sqlite_layer.uninstall()
    raw = sqlite3.connect(f"file:{tmp_path / 'data/local.sqlite'}?mode=ro", uri=True)
    assert raw.execute("SELECT count(*) FROM items").fetchone() == (30,)
    raw.close()
