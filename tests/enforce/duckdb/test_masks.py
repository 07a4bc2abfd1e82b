"""mask_columns on DuckDB: every bypass class runs unguarded (it would leak) and guarded (it does not)."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from guard_kernel.analysis.sql import mask as _mask
from guard_kernel.decision import GuardDenied
from guard_kernel.decision.guard import Guard, set_current
from guard_kernel.enforce.duckdb import gate as duckdb_gate
from guard_kernel.enforce.duckdb import rows as duckdb_rows
from guard_kernel.policy import load_policy

FIXTURES = yaml.safe_load((Path(__file__).parents[1] / "fixtures/masks.yaml").read_text())
KEY = b"a key the session never sees"

POLICY = """
version: 1
name: mask-test
mode: enforce
defaults: {read: allow, write: deny, export: deny, network: deny, shell: deny}
sources:
  warehouse:
    duckdb: data/warehouse.duckdb
    tables:
      customers: {mask_columns: {ssn: redact, email: hash, card: last4, dob: "null"}}
scratch: ["scratch/**"]
limits: {max_rows: {agent: 1000, human: 1000}}
"""
SSN = re.compile(r"\d{3}-\d{2}-\d{4}")
EMAIL = re.compile(r"user\d+@example\.org")
CARD = re.compile(r"4111\d{12}")


def _leaks(text: str) -> bool:
    return bool(SSN.search(text) or EMAIL.search(text) or CARD.search(text) or "1990-" in text)


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "data").mkdir()
    (tmp_path / "scratch").mkdir()
    con = duckdb.connect(str(tmp_path / "data/warehouse.duckdb"))
    con.execute("CREATE TABLE customers AS SELECT i AS id, 'name' || i AS name, "
                "printf('%03d-%02d-%04d', 100 + i, i, 1000 + i) AS ssn, 'user' || i || '@example.org' AS email, "
                "'4111' || lpad(i::VARCHAR, 12, '0') AS card, DATE '1990-01-01' + i::INT AS dob FROM range(30) r(i)")
    con.execute("CREATE TABLE orders AS SELECT i AS oid, i % 30 AS cid, i * 1.5 AS amount FROM range(100) r(i)")
    con.close()
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "mask.key").write_bytes(KEY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(_mask.KEY_ENV, str(tmp_path / "mask.key"))
    monkeypatch.setattr(_mask, "_KEY", [])
    yield tmp_path


@pytest.fixture()
def guard(project: Path) -> Iterator[Guard]:
    g = Guard(load_policy(project / "policy.yaml", root=str(project)), actor="agent",
              audit_dir=str(project / "audit"), notify=lambda *_: None)
    set_current(g)
    duckdb_gate.install(g)
    try:
        yield g
    finally:
        duckdb_gate.uninstall()
        set_current(None)
        g.close()
        duckdb.set_default_connection(duckdb.connect())


@pytest.fixture()
def raw(project: Path) -> Iterator[Any]:
    c = duckdb_rows.orig(duckdb, "connect")(str(project / "data/warehouse.duckdb"), True, {})
    yield c
    c.close()


def _unguarded(raw: Any, q: str) -> str:
    ex = duckdb_rows.orig(duckdb.DuckDBPyConnection, "execute")
    return repr(duckdb_rows.orig(duckdb.DuckDBPyConnection, "fetchall")(ex(raw, q)))


@pytest.mark.parametrize("case", FIXTURES["masked"], ids=lambda c: c["id"])
def test_bypass_class_returns_only_masked_values(guard: Guard, raw: Any, case: dict[str, Any]) -> None:
    q = case["sql"]
    assert _leaks(_unguarded(raw, q)), f"the unguarded query should leak: {q}"
    con = duckdb.connect("data/warehouse.duckdb")
    try:
        got = repr(con.execute(q).fetchall())
        assert not _leaks(got), got
        fetches: list[Callable[[Any], Any]] = [
            lambda c: c.sql(q).df().to_string(), lambda c: c.sql(q).arrow(), lambda c: c.execute(q).fetchnumpy(),
            lambda c: c.execute(q).fetchone(), lambda c: c.execute(q).fetchmany(50), lambda c: c.sql(q).pl(),
            lambda c: c.sql(q).fetchall(), lambda c: c.execute(q).df().to_string(), lambda c: list(c.sql(q).fetchall()),
        ]
        for fetch in fetches:  # a cursor each: DuckDB wants a result finished before the next statement
            with con.cursor() as cur:
                frame = repr(fetch(cur))
            assert not _leaks(frame), frame
    finally:
        con.close()


@pytest.mark.parametrize("case", FIXTURES["denied"], ids=lambda c: c["id"])
def test_oracle_reads_are_denied(guard: Guard, raw: Any, case: dict[str, Any]) -> None:
    _unguarded(raw, case["sql"])  # DuckDB runs it unguarded
    con = duckdb.connect("data/warehouse.duckdb")
    try:
        with pytest.raises(GuardDenied) as e:
            con.execute(case["sql"])
        d = e.value.decision
        assert d.rules[0].id.endswith("mask_columns"), d.rules
        assert case["expect"] in d.message, d.message
        assert d.hint and d.as_dict()["code"] == "policy_violation"
    finally:
        con.close()


@pytest.mark.parametrize("case", FIXTURES["benign"], ids=lambda c: c["id"])
def test_benign_analysis_runs(guard: Guard, raw: Any, case: dict[str, Any]) -> None:
    con = duckdb.connect("data/warehouse.duckdb")
    try:
        assert con.execute(case["sql"]).fetchall() == duckdb_rows.orig(duckdb.DuckDBPyConnection, "fetchall")(
            duckdb_rows.orig(duckdb.DuckDBPyConnection, "execute")(raw, case["sql"]))
    finally:
        con.close()


def test_mask_kinds(guard: Guard) -> None:
    con = duckdb.connect("data/warehouse.duckdb")
    row = con.execute("SELECT ssn, email, card, dob FROM customers WHERE id = 7").fetchone()
    assert row is not None
    assert row[0] == "***" and row[3] is None
    assert row[1] == hmac.new(KEY, b"user7@example.org", hashlib.sha256).hexdigest()  # keyed, so not brute-forced
    assert row[1] != hashlib.sha256(b"user7@example.org").hexdigest()
    assert row[2] == "***0007"
    con.close()


def test_errors_never_show_the_key(guard: Guard) -> None:
    con = duckdb.connect("data/warehouse.duckdb")
    k = _mask.mask_key()
    with pytest.raises(duckdb.Error) as e:
        con.execute("SELECT no_such_column FROM customers")
    assert k.inner.hex() not in str(e.value).lower() and k.outer.hex() not in str(e.value).lower()
    con.close()


def test_views_and_tables_made_from_masked_rows_stay_masked(guard: Guard) -> None:
    con = duckdb.connect()
    con.execute("ATTACH 'data/warehouse.duckdb' AS w (READ_ONLY)")
    con.execute("CREATE VIEW v AS SELECT * FROM w.customers")
    con.execute("CREATE TABLE t AS SELECT ssn, email FROM w.customers")
    rel = con.sql("SELECT * FROM w.customers")
    rel.create_view("rv")
    for q in ("SELECT * FROM v", "SELECT * FROM t", "SELECT * FROM rv"):
        assert not _leaks(repr(con.execute(q).fetchall())), q
    con.close()


# ---------------------------------------------- the deny-columns grid, for masks: checked against DuckDB

_SELECTS = ["*", "t.*", "#3", "#4", "COLUMNS(*)", "COLUMNS('s.*')", "COLUMNS(lambda c: c LIKE '%s%')",
            "* EXCLUDE (id)", "* EXCLUDE (ssn)", "* LIKE '%s%'", "(*)", "t", "to_json(t)", "unnest([t])",
            "name", "upper(x)", "count(*)", "max(#3)", "list(t)", "x", "c", "t.x", "v", "x || ''"]
_FROMS = ["customers t", "customers AS t(a, b, x, d)", "(SELECT * FROM customers) t", "(FROM customers) t",
          "(SELECT 1) z, customers t", "(SELECT * EXCLUDE (ssn) FROM customers) t",
          "(SELECT ssn AS c, email AS x FROM customers) t", "(SELECT id, name FROM customers) t",
          "(SELECT * FROM customers) AS t(a, b, x, d)", "customers t JOIN orders o ON o.cid = t.id",
          "(SELECT * FROM customers UNION ALL SELECT * FROM customers) t", "(TABLE customers) t",
          "(SELECT t2 FROM customers t2) t", "(SELECT ssn AS x FROM customers UNION SELECT 'a') t",
          "(SELECT (SELECT max(card) FROM customers) AS x) t", "(UNPIVOT customers ON name INTO NAME k VALUE v) t"]
_SHAPES = ["SELECT {sel} FROM {frm}", "WITH w AS (SELECT * FROM {frm}) SELECT {sel} FROM w t",
           "FROM {frm} SELECT {sel}", "SELECT {sel} FROM {frm} WHERE t.x LIKE '1%'"]


def test_no_allowed_query_returns_an_unmasked_value(guard: Guard, raw: Any) -> None:
    """Every SELECT-list × FROM × shape that DuckDB runs: denied, or its rows hold no unmasked value."""
    con = duckdb.connect("data/warehouse.duckdb")
    leaking = allowed = 0
    try:
        for shape in _SHAPES:
            for sel in _SELECTS:
                for frm in _FROMS:
                    q = shape.format(sel=sel, frm=frm)
                    try:
                        leaks = _leaks(_unguarded(raw, q))
                    except duckdb.Error:
                        continue
                    try:
                        rows = con.execute(q).fetchall()
                    except GuardDenied:
                        continue
                    except duckdb.Error:  # the masked rows have other types: a query may no longer bind
                        continue
                    allowed += 1
                    leaking += leaks
                    assert not _leaks(repr(rows)), f"allowed, and it returned unmasked values: {q}"
    finally:
        con.close()
    assert leaking > 300 and allowed > 500, (leaking, allowed)  # the grid holds both kinds


def test_the_audit_holds_no_value_of_a_masked_column(guard: Guard) -> None:
    con = duckdb.connect("data/warehouse.duckdb")
    with pytest.raises(GuardDenied):
        con.execute("SELECT id FROM customers WHERE ssn = '107-07-1007'")
    con.close()
    assert "107-07-1007" not in Path(guard.audit_path).read_text()


def test_relation_api_sees_masked_values(guard: Guard) -> None:
    con = duckdb.connect("data/warehouse.duckdb")
    try:
        for rel in (con.table("customers"), con.sql("SELECT * FROM customers").project("ssn, email"),
                    con.sql("SELECT * FROM customers").aggregate("list(ssn), list(card)"),
                    con.view("customers")):
            assert not _leaks(repr(rel.fetchall())) and not _leaks(rel.df().to_string())
        with pytest.raises(GuardDenied):
            con.sql("SELECT * FROM customers").filter("ssn LIKE '1%'").fetchall()
    finally:
        con.close()
