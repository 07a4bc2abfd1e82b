"""mask_columns on PostgreSQL (psycopg) and SQLite (sqlite3): each bypass class runs unguarded (it
leaks) and guarded (masked values only); oracle reads are denied; the benign set is unchanged."""

from __future__ import annotations

import hashlib
import hmac
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from guard_kernel.analysis.sql import mask as _mask
from guard_kernel.decision import GuardDenied
from guard_kernel.decision.guard import Guard, set_current
from guard_kernel.enforce.dbapi import psycopg as psycopg_layer
from guard_kernel.enforce.dbapi import sqlite as sqlite_layer
from guard_kernel.policy import load_policy
from tests.enforce.dbapi.pg_server import PgServer

CASES = yaml.safe_load((Path(__file__).parents[1] / "fixtures/masks.yaml").read_text())["portable"]
KEY = b"held outside the session"
MASKS = "customers: {mask_columns: {ssn: redact, name: hash, dob: \"null\"}}"
POLICY = """
version: 1
name: mask-db-test
defaults: {read: allow, write: deny, export: deny, network: deny, shell: deny}
sources:
  shop:
    url: "%(url)s"
    tables:
      %(masks)s
limits: {max_rows: {agent: 1000, human: 1000}}
"""
LEAK = re.compile(r"ssn\d|name\d|2000-0|date\(2000")


def _guard(root: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> Guard:
    monkeypatch.chdir(root)
    (root / "mask.key").write_bytes(KEY)
    monkeypatch.setenv(_mask.KEY_ENV, str(root / "mask.key"))
    monkeypatch.setattr(_mask, "_KEY", [])
    (root / "policy.yaml").write_text(POLICY % {"url": url, "masks": MASKS})
    g = Guard(load_policy(root / "policy.yaml", root=str(root)), actor="agent", audit_dir=str(root / "audit"),
              notify=lambda d: None)
    set_current(g)
    return g


def _cases(kind: str, engine: str) -> list[dict[str, Any]]:
    other = "sqlite" if engine == "pg" else "pg"
    return [c for c in CASES[kind] if not c.get(other)]


# ------------------------------------------------------------------ PostgreSQL


@pytest.fixture()
def pg_guard(pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Guard]:
    g = _guard(tmp_path, f"postgresql://localhost:{pg_server.port}/shop", monkeypatch)
    psycopg_layer.install(g)
    try:
        yield g
    finally:
        psycopg_layer.uninstall()
        set_current(None)
        g.close()


def _pg_raw(pg: PgServer, sql: str) -> str:
    with psycopg_layer.__dict__["psycopg"].connect(pg.dsn("shop")) as con:  # layer not yet installed
        return repr(con.execute(sql).fetchall())


@pytest.fixture()
def pg_con(pg_guard: Guard, pg_server: PgServer) -> Iterator[Any]:
    with psycopg.connect(pg_server.dsn("shop")) as con:
        yield con


@pytest.mark.parametrize("case", _cases("masked", "pg"), ids=lambda c: c["id"])
def test_pg_bypass_class_returns_only_masked_values(pg_server: PgServer, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, case: dict[str, Any]) -> None:
    assert LEAK.search(_pg_raw(pg_server, case["sql"])), case["sql"]
    g = _guard(tmp_path, f"postgresql://localhost:{pg_server.port}/shop", monkeypatch)
    psycopg_layer.install(g)
    try:
        with psycopg.connect(pg_server.dsn("shop")) as con:
            for fetch in (lambda c: c.fetchall(), lambda c: [c.fetchone()], lambda c: c.fetchmany(50), list):
                rows = repr(fetch(con.execute(case["sql"])))
                assert not LEAK.search(rows), rows
            with con.cursor(name="server_side") as cur:  # a server-side cursor: rows fetched in batches
                cur.execute(case["sql"])
                assert not LEAK.search(repr(cur.fetchall()))
    finally:
        psycopg_layer.uninstall()
        set_current(None)
        g.close()


@pytest.mark.parametrize("case", _cases("denied", "pg"), ids=lambda c: c["id"])
def test_pg_oracle_reads_are_denied(pg_con: Any, case: dict[str, Any]) -> None:
    with pytest.raises(GuardDenied) as e:
        pg_con.execute(case["sql"])
    assert e.value.decision.rules[0].id == "source:shop.customers.mask_columns"
    assert case["expect"] in e.value.decision.message


@pytest.mark.parametrize("case", _cases("benign", "pg"), ids=lambda c: c["id"])
def test_pg_benign_runs(pg_con: Any, case: dict[str, Any]) -> None:
    assert pg_con.execute(case["sql"]).fetchall()


@pytest.mark.parametrize("sql", ["SELECT * FROM customers", "SELECT x FROM (SELECT ssn AS x, name FROM customers) t"])
def test_pg_dataframe_readers_see_masks(pg_con: Any, sql: str) -> None:
    import warnings

    import pandas as pd
    import polars as pl
    with warnings.catch_warnings():  # pandas prefers SQLAlchemy, and says so
        warnings.simplefilter("ignore")
        shown = pd.read_sql(sql, pg_con).to_string()
    assert "***" in shown or "x" in shown
    assert not LEAK.search(shown), shown
    assert not LEAK.search(repr(pl.read_database(sql, pg_con).rows()))


def test_pg_hash_is_the_keyed_hmac(pg_con: Any) -> None:
    row = pg_con.execute("SELECT name, ssn, dob FROM customers WHERE id = 3").fetchone()
    assert row == (hmac.new(KEY, b"name3", hashlib.sha256).hexdigest(), "***", None)


# ------------------------------------------------------------------ SQLite


def _make_sqlite(root: Path) -> Path:
    (root / "data").mkdir(exist_ok=True)
    db = root / "data" / "shop.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, ssn TEXT, dob TEXT)")
    con.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)",
                    [(i, f"name{i}", f"ssn{i}", f"2000-01-{i + 1:02d}") for i in range(20)])
    con.execute("CREATE TABLE orders (oid INTEGER, cid INTEGER, amount REAL)")
    con.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(i, i % 20, i * 1.5) for i in range(100)])
    con.execute("CREATE VIEW mv AS SELECT id, ssn AS s FROM customers")  # stored in the source
    con.commit()
    con.close()
    return db


@pytest.fixture()
def lite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    db = _make_sqlite(tmp_path)
    raw = sqlite3.connect(db)
    g = _guard(tmp_path, "sqlite:///data/shop.sqlite", monkeypatch)
    sqlite_layer.install(g)
    try:
        con = sqlite3.connect("data/shop.sqlite")
        yield raw, con
        con.close()
    finally:
        sqlite_layer.uninstall()
        set_current(None)
        g.close()
        raw.close()


@pytest.mark.parametrize("case", _cases("masked", "sqlite"), ids=lambda c: c["id"])
def test_sqlite_bypass_class_returns_only_masked_values(lite: tuple[Any, Any], case: dict[str, Any]) -> None:
    raw, con = lite
    assert LEAK.search(repr(raw.execute(case["sql"]).fetchall())), case["sql"]
    for fetch in (lambda c: c.fetchall(), lambda c: [c.fetchone()], lambda c: c.fetchmany(50), list):
        rows = repr(fetch(con.execute(case["sql"])))
        assert not LEAK.search(rows), rows
    assert not LEAK.search(repr(con.cursor().execute(case["sql"]).fetchall()))


@pytest.mark.parametrize("case", _cases("denied", "sqlite"), ids=lambda c: c["id"])
def test_sqlite_oracle_reads_are_denied(lite: tuple[Any, Any], case: dict[str, Any]) -> None:
    with pytest.raises(GuardDenied) as e:
        lite[1].execute(case["sql"])
    assert e.value.decision.rules[0].id == "source:shop.customers.mask_columns"
    assert case["expect"] in e.value.decision.message


@pytest.mark.parametrize("case", _cases("benign", "sqlite"), ids=lambda c: c["id"])
def test_sqlite_benign_runs_unchanged(lite: tuple[Any, Any], case: dict[str, Any]) -> None:
    raw, con = lite
    assert con.execute(case["sql"]).fetchall() == raw.execute(case["sql"]).fetchall()


def test_sqlite_source_view_over_a_masked_table_is_denied(lite: tuple[Any, Any]) -> None:
    raw, con = lite
    assert LEAK.search(repr(raw.execute("SELECT s FROM mv").fetchall()))
    with pytest.raises(GuardDenied) as e:
        con.execute("SELECT s FROM mv")
    assert e.value.decision.rules[0].id == "source:shop.customers.mask_columns"
    assert "masked" in e.value.decision.message


def test_sqlite_hash_is_the_keyed_hmac_and_pandas_sees_masks(lite: tuple[Any, Any]) -> None:
    import pandas as pd

    con = lite[1]
    assert con.execute("SELECT name, ssn, dob FROM customers WHERE id = 3").fetchone() == (
        hmac.new(KEY, b"name3", hashlib.sha256).hexdigest(), "***", None)
    assert not LEAK.search(pd.read_sql("SELECT * FROM customers", con).to_string())
    import polars as pl

    assert not LEAK.search(repr(pl.read_database("SELECT * FROM customers", con).rows()))


def test_sqlalchemy_over_sqlite_sees_masks(lite: tuple[Any, Any], tmp_path: Path) -> None:
    import sqlalchemy as sa

    from guard_kernel.enforce.dbapi import sqlalchemy as sa_layer

    g = sqlite_layer._guard
    assert g is not None
    sa_layer.install(g)
    try:
        engine = sa.create_engine("sqlite:///data/shop.sqlite")
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT * FROM (SELECT ssn AS x, name FROM customers) t")).fetchall()
        assert rows and not LEAK.search(repr(rows))
        engine.dispose()
    finally:
        sa_layer.uninstall()
