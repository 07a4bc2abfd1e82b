"""Databases: the SQL guard step in each dialect, and a ~2 ms PostgreSQL query guarded vs raw.

The guard step (classify + requests + decisions + cap rewrite) is timed per dialect on the
same few statements, first time (analysis cache cleared) and cached.  The PostgreSQL pair
runs against a private server started for the run (tests/enforce/dbapi/pg_server.py): the
guarded side through psycopg with the layer installed, the plain side through psycopg's own
methods on a second connection, alternating.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from .harness import Config, Result, Skip, Stats, Timer, alternate, at_most, ratio_result, require, skipped

GROUP = "databases"
STATEMENTS = {
    "simple": "SELECT id, name FROM customers WHERE id = 7",
    "join": "SELECT c.name, count(*) AS n, sum(o.amount) AS total FROM customers c JOIN orders o ON o.cid = c.id "
            "WHERE o.amount > 10 GROUP BY c.name ORDER BY total DESC",
    "cte": "WITH t AS (SELECT cid, sum(amount) AS s FROM orders GROUP BY cid),\n"
           "u AS (SELECT cid, s, rank() OVER (ORDER BY s DESC) AS r FROM t)\n"
           "SELECT c.name, u.s, u.r FROM u JOIN customers c ON c.id = u.cid\nWHERE u.r <= 10\nORDER BY u.r",
}
DIALECTS = ("duckdb", "postgres", "sqlite")
QUERY = "SELECT g, sum(v) AS total, count(*) AS n FROM bench GROUP BY g"
BENCH_TABLE = ("CREATE TABLE bench AS SELECT i, i % 1000 AS g, (i * 7919) % 100003 AS v "
               "FROM generate_series(1, 8000) i")


def _steps(cfg: Config) -> list[Result]:
    sql = require("guard_kernel.analysis.sql.requests")
    from guard_kernel.decision.guard import Guard
    from guard_kernel.policy.load import parse_policy

    policy = parse_policy("version: 1\nname: bench\nsources:\n  shop:\n    url: postgresql://localhost/shop\n",
                          root=cfg.workdir)
    guard = Guard(policy, actor="human", audit_dir=os.path.join(cfg.workdir, "audit"), notify=lambda d: None)
    ctx = sql.SqlContext(root=cfg.workdir, catalogs={"db": "shop"}, default_catalog="db")
    rounds = 5 if cfg.quick else 15
    results = []
    for dialect in DIALECTS:
        def step(text: str, dialect: str = dialect) -> object:
            stmts = sql.analyze(text, dialect)
            decided = [guard.decide(r) for r in sql.to_requests(stmts, ctx)]
            return sql.cap_statement(stmts[0], 10_001) if len(stmts) == 1 else decided

        first: list[float] = []
        cached: list[float] = []
        for text in STATEMENTS.values():
            step(text)  # imports, tokenizer tables
            samples = []
            for _ in range(rounds):
                sql.analyze.cache_clear()
                guard._cache.clear()
                t0 = time.perf_counter()
                step(text)
                samples.append(time.perf_counter() - t0)
            first.append(statistics.median(samples))
            t0 = time.perf_counter()
            for _ in range(200):
                step(text)
            cached.append((time.perf_counter() - t0) / 200)
        fs, cs = Stats.of(first), Stats.of(cached)
        results.append(Result(GROUP, f"guard step, {dialect}, first time (median of 3 statements)", "s", fs, None,
                              fs.median, "p50", "s", at_most(500e-6, "≤ 500 µs"),
                              note=", ".join(f"{n} {f * 1e6:.0f} µs" for n, f in zip(STATEMENTS, first, strict=True))))
        results.append(Result(GROUP, f"guard step, {dialect}, cached", "s", cs, None, cs.median, "p50", "s",
                              at_most(10e-6, "≤ 10 µs")))
    return results


def _postgres(cfg: Config) -> list[Result]:
    name, goal = "~2 ms PostgreSQL query, repeated (psycopg)", at_most(1.10, "≤ 1.10")
    try:
        from tests.enforce.dbapi.pg_server import Unavailable, running
    except ImportError:
        return [skipped(GROUP, name, "skipped: run from a checkout (tests/ holds the server set-up)", goal)]
    try:
        with running() as server:
            return _pair(cfg, server, name, goal)
    except (Unavailable, Skip) as exc:
        return [skipped(GROUP, name, f"skipped: {exc}", goal)]


def _pair(cfg: Config, server: Any, name: str, goal: Any) -> list[Result]:
    import psycopg

    from guard_kernel.decision.guard import Guard
    from guard_kernel.enforce.dbapi import psycopg as layer
    from guard_kernel.policy.load import parse_policy

    with psycopg.connect(server.dsn()) as setup:
        setup.execute(BENCH_TABLE)
    policy = parse_policy(f"version: 1\nname: bench\nsources:\n  shop:\n    url: postgresql://localhost:{server.port}/shop\n",
                          root=cfg.workdir)
    guard = Guard(policy, actor="human", audit_dir=os.path.join(cfg.workdir, "audit"), notify=lambda d: None)
    raw = psycopg.connect(server.dsn(), autocommit=True)
    layer.install(guard)
    try:
        con = psycopg.connect(server.dsn(), autocommit=True)
        execute, fetchall = layer._orig(psycopg.Cursor, "execute"), layer._orig(psycopg.Cursor, "fetchall")

        def guarded() -> float:
            t0 = time.perf_counter()
            con.execute(QUERY).fetchall()
            return time.perf_counter() - t0

        def plain() -> float:
            t0 = time.perf_counter()
            cur = raw.cursor()
            fetchall(execute(cur, QUERY))
            return time.perf_counter() - t0

        timers: dict[str, Timer] = {"guarded": guarded, "plain": plain}
        samples = alternate(timers, 15 if cfg.quick else 41, 3)
        con.close()
    finally:
        layer.uninstall()
        raw.close()
        guard.close()
    plain_ms = statistics.median(samples["plain"]) * 1e3
    return [ratio_result(GROUP, name, samples, goal, note=f"plain {plain_ms:.1f} ms; 1,000 groups over 8,000 rows")]


def run(cfg: Config) -> list[Result]:
    try:
        return [*_steps(cfg), *_postgres(cfg)]
    except Skip as exc:
        return [skipped(GROUP, "databases", str(exc))]
