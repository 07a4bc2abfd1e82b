"""Databases in a real guarded kernel: the layers go on when the libraries are imported, and
drivers no hook sees are refused to agents by the shipped policy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from guard_kernel.demo import Workspace
from tests.conftest import GuardedKernel, blocked
from tests.enforce.dbapi.pg_server import PgServer, Unavailable, running


@pytest.fixture(scope="module")
def k(kernel: GuardedKernel) -> GuardedKernel:
    return kernel


@pytest.mark.parametrize("code", ["import psycopg2", "from pymysql import connect", "import snowflake.connector"])
def test_unguarded_drivers_are_refused_to_agents(k: GuardedKernel, code: str) -> None:
    mark = k.mark()
    res = k.run(code)
    assert blocked(res), res
    assert any(r.get("decision") == "deny" and any(h["id"] == "unguarded-db-drivers" for h in r.get("rules", []))
               for r in k.since(mark))


def test_sqlite_is_guarded_in_the_kernel(k: GuardedKernel, project: Workspace,
                                         scratch_file: Callable[[str], Path]) -> None:
    res = k.run("import sqlite3\nsqlite3.connect('made_by_agent.sqlite')")
    assert blocked(res), res
    assert not (Path(project.root) / "made_by_agent.sqlite").exists()
    scratch_file("agent.sqlite")
    res = k.run("con = sqlite3.connect('scratch/agent.sqlite')\ncon.execute('CREATE TABLE t (a INTEGER)')\n"
                "con.executemany('INSERT INTO t VALUES (?)', [(i,) for i in range(900)])\n"
                "len(con.execute('SELECT a FROM t').fetchall())")
    assert res.ok, res
    assert res.text == "500"  # the agent's row cap


def test_psycopg_connect_elsewhere_is_decided_before_the_socket(k: GuardedKernel) -> None:
    mark = k.mark()
    res = k.run("import psycopg\npsycopg.connect('host=127.0.0.1 port=1 dbname=x user=u password=hunter2')")
    assert blocked(res), res
    new = [r for r in k.since(mark) if r.get("kind") != "cell"]  # (the cell record holds the code as typed)
    assert any(r.get("action") == "net.connect" and r.get("decision") == "deny" for r in new)
    assert "hunter2" not in str(new)


# ------------------------------------------------ a real PostgreSQL server, in a real kernel

PG_POLICY = """
version: 1
name: kernel-pg
defaults: {read: allow, write: deny, export: deny, network: deny, shell: deny}
sources:
  shop:
    url: "postgresql://localhost:%(port)d/shop"
    tables:
      customers: {deny_columns: [ssn]}
limits: {max_rows: {agent: 7, human: 7}, on_exceed: truncate}
"""


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PgServer]:
    """A private server for this module (tests/enforce/dbapi has its own for the session)."""
    try:
        with running() as server:
            yield server
    except Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def pg_kernel(kernel_factory: Callable[..., GuardedKernel], project: Workspace, pg_server: PgServer,
              tmp_path_factory: pytest.TempPathFactory) -> GuardedKernel:
    policy = tmp_path_factory.mktemp("pg-policy") / "pg.yaml"
    policy.write_text(PG_POLICY % {"port": pg_server.port})
    kern = kernel_factory(policy=policy, actor="agent")
    assert kern.load_result is not None and kern.load_result.ok, kern.load_result
    return kern


def test_postgres_through_psycopg_and_sqlalchemy_in_a_kernel(pg_kernel: GuardedKernel, pg_server: PgServer) -> None:
    k = pg_kernel
    setup = k.run(f"import psycopg\ncon = psycopg.connect({pg_server.dsn()!r}, autocommit=True)\n"
                  "import sqlalchemy as sa, pandas as pd\n"
                  f"engine = sa.create_engine({pg_server.url()!r})")
    assert setup.ok, setup
    assert k.value("len(con.execute('SELECT oid FROM orders').fetchall())") == 7
    assert k.value("len(pd.read_sql('SELECT oid, amount FROM orders', engine))") == 7
    assert k.value("sum(len(c) for c in pd.read_sql('SELECT oid FROM orders', engine, chunksize=3))") == 7
    for bad in ("con.execute('DELETE FROM orders')", "con.execute('SELECT 1; COMMIT; DROP TABLE orders')",
                "pd.read_sql('SELECT * FROM customers', engine)",
                "with engine.begin() as c:\n    c.execute(sa.text('DROP TABLE customers'))"):
        assert blocked(k.run(bad)), bad
    import psycopg

    with psycopg.connect(pg_server.dsn()) as raw:  # this process is not guarded: the server's truth
        assert raw.execute("SELECT count(*) FROM orders").fetchone() == (100,)
        assert raw.execute("SELECT count(*) FROM customers").fetchone() == (20,)
