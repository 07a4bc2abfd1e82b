"""Databases in a real guarded kernel: the layers go on when the libraries are imported, and
drivers no hook sees are refused to agents by the shipped policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from guard_kernel.demo import Workspace
from tests.conftest import GuardedKernel, blocked


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
