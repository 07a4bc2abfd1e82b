"""DuckDB through the gate vs the same engine past it: big aggregation, a ~2 ms query, row caps.

The gate patches DuckDB's connection class, so it guards every connection of the process
while installed.  The benchmark installs it once for all timings, as a notebook session does,
and times the plain side through DuckDB's own methods (``execute``/``fetchall`` as they were
before the gate patched them) on a second connection.  Both connections build the same
tables from ``range()`` in memory.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .common import make_guard
from .harness import (
    Config,
    Result,
    Skip,
    Stats,
    Timer,
    alternate,
    at_least,
    at_most,
    ratio_result,
    require,
    require_attr,
    skipped,
)

GROUP = "duckdb"
CAP = 10_000  # the human row cap of policies/default.yaml

TABLES = {
    "t": "SELECT i, i % 1000 AS g, ((i * 7919) % 100003)::DOUBLE AS v FROM range({n}) r(i)",
    "s": "SELECT i, i % 5000 AS g, ((i * 7919) % 100003)::DOUBLE AS v FROM range(100000) r(i)",
}
GROUP_BY = "SELECT g, sum(v) AS total, count(*) AS n FROM t GROUP BY g"
SMALL = "SELECT g % 100 AS k, avg(v) AS a, max(i) AS m, count(*) AS n FROM s WHERE v > -{k} GROUP BY k ORDER BY k"
STAR = "SELECT * FROM t"
STAR_ORDERED = "SELECT * FROM t ORDER BY v DESC"
SIZE_GOALS = ("groupby", "uncapped")
"""Goals stated for 10M rows: shown as info (no goal) in a --quick run."""


class Gate:
    """Switches the DuckDB gate on for a block: the set-up's guarded statements, then the timings.

    ``uninstall()`` forgets what the gate knew about each connection (its catalogs), and
    rebuilding that costs a query; a long-lived guarded connection pays it once, so the
    state is kept across the switches to measure the steady state a notebook sees.
    """

    def __init__(self, guard: Any) -> None:
        self.gate = require("guard_kernel.enforce.duckdb.gate")
        self.guard = guard
        self._install = require_attr(self.gate, "install")
        self._uninstall = require_attr(self.gate, "uninstall")
        self._states: dict[Any, Any] = {}
        self._store: Any = getattr(require("guard_kernel.enforce.duckdb.rows"), "STATES", None)

    @contextmanager
    def on(self) -> Iterator[None]:
        self._install(self.guard)
        if self._store is not None:
            for con, st in self._states.items():
                self._store[con] = st
        try:
            yield
        finally:
            if self._store is not None:
                self._states = dict(self._store.items())
            self._uninstall()



@contextmanager
def _connections(cfg: Config) -> Iterator[tuple[Gate, Any, Any]]:
    """(gate, raw connection, guarded connection); the gate is off outside :meth:`Gate.on`."""
    import duckdb

    from guard_kernel.decision.errors import GuardDenied
    from guard_kernel.decision.guard import set_current

    guard = make_guard(cfg)
    gate = Gate(guard)
    set_current(guard)
    try:
        raw = duckdb.connect()
        with gate.on():
            con = duckdb.connect()
            try:
                con.execute("SET threads = 2")
            except GuardDenied:
                pass
            else:
                raise Skip("skipped: duckdb.connect() under the gate is not guarded (SET was allowed)")
        raw.execute("SET threads = 2")  # raises if uninstall() left the gate in place
        yield gate, raw, con
    finally:
        set_current(None)
        guard.close()


def _create(gate: Gate, raw: Any, con: Any, n: int) -> None:
    from guard_kernel.decision.errors import GuardDenied

    for name, body in TABLES.items():
        raw.execute(f"CREATE TABLE {name} AS " + body.format(n=n))
        try:
            with gate.on():
                con.execute(f"CREATE TABLE {name} AS " + body.format(n=n))
        except GuardDenied as exc:  # should not happen: tables the session creates are its own
            raise RuntimeError(f"false positive: the gate denied creating a session table: {exc}") from None


def _q(con: Any, sql: str) -> Timer:
    def run() -> float:
        t0 = time.perf_counter()
        con.execute(sql).fetchall()
        return time.perf_counter() - t0

    return run


def _fresh(con: Any, template: str, start: int) -> Timer:
    """A query the guard has not seen before on every call (a new literal), same engine work."""
    counter = iter(range(start, start + 10**7))

    def run() -> float:
        sql = template.format(k=next(counter))
        t0 = time.perf_counter()
        con.execute(sql).fetchall()
        return time.perf_counter() - t0

    return run


class _Unguarded:
    """A connection seen through DuckDB's own ``execute``/``fetchall``, past the gate's patches."""

    def __init__(self, con: Any) -> None:
        import duckdb

        from guard_kernel.enforce.duckdb.rows import orig

        conn_cls = duckdb.DuckDBPyConnection
        self._con, self._execute, self._fetchall = con, orig(conn_cls, "execute"), orig(conn_cls, "fetchall")

    def execute(self, sql: str) -> _Unguarded:
        self._execute(self._con, sql)
        return self

    def fetchall(self) -> list[Any]:
        return self._fetchall(self._con)  # type: ignore[no-any-return]


def _top_n(raw: Any, sql: str) -> bool:
    """Whether DuckDB plans *sql* with a Top-N operator."""
    plan = "\n".join(str(r[1]) for r in raw.execute("EXPLAIN " + sql).fetchall())
    return "TOP N" in plan.upper() or "TOP_N" in plan.upper()


def run(cfg: Config) -> list[Result]:
    names = {
        "groupby": ("GROUP BY over 10M rows", at_most(1.03, "≤ 1.03")),
        "first": ("~2 ms query, 100k rows, first time", at_most(1.25, "≤ 1.25")),
        "repeat": ("~2 ms query, 100k rows, repeated", at_most(1.10, "≤ 1.10")),
        "cap": ("SELECT * 10M rows, 10k cap / hand LIMIT", at_most(1.10, "≤ 1.10")),
        "uncapped": ("SELECT * 10M rows, uncapped / 10k cap", at_least(100, "≥ 100x")),
        "ordered": ("ORDER BY + cap / hand LIMIT", at_most(1.10, "≤ 1.10")),
        "top_n": ("ORDER BY + cap plans as Top-N (EXPLAIN)", at_least(1.0, "TOP_N in plan")),
    }
    n = 1_000_000 if cfg.quick else 10_000_000
    label = "1M (quick)" if cfg.quick else "10M"
    try:
        with _connections(cfg) as (gate, raw, con):
            if gate.guard.max_rows != CAP:
                raise Skip(f"skipped: expected a {CAP}-row cap for actor human, policy says {gate.guard.max_rows}")
            _create(gate, raw, con, n)
            # the 10M goals are about a big scan; at 1M the fixed per-query cost weighs 10x more
            sized = {k: (v[0].replace("10M", label), None if cfg.quick and k in SIZE_GOALS else v[1])
                     for k, v in names.items()}
            return _measure(cfg, gate, raw, con, sized)
    except Skip as exc:
        return [skipped(GROUP, name, str(exc), goal) for name, goal in names.values()]


def _measure(cfg: Config, gate: Gate, raw_con: Any, con: Any, names: dict[str, tuple[str, Any]]) -> list[Result]:
    with gate.on():  # installed once, as in a session; the plain side goes past it
        return _measure_on(cfg, _Unguarded(raw_con), con, names)


def _measure_on(cfg: Config, raw: Any, con: Any, names: dict[str, tuple[str, Any]]) -> list[Result]:
    results = []
    rounds = cfg.rounds

    def pair(guarded: Timer, plain: Timer, n: int, warmup: int = 1) -> dict[str, list[float]]:
        return alternate({"guarded": guarded, "plain": plain}, n, warmup)

    def result(key: str, s: dict[str, list[float]], note: str) -> None:
        results.append(ratio_result(GROUP, names[key][0], s, names[key][1], note=note))

    result("groupby", pair(_q(con, GROUP_BY), _q(raw, GROUP_BY), rounds), "1,000 groups, fetchall")
    small_rounds = 15 if cfg.quick else 41
    result("first", pair(_fresh(con, SMALL, 1), _fresh(raw, SMALL, 1), small_rounds),
           f"a new literal every run, so the guard's caches miss; {small_rounds} runs")
    fixed = SMALL.format(k=0)
    result("repeat", pair(_q(con, fixed), _q(raw, fixed), small_rounds, warmup=3), "the same text every run")

    got = len(con.execute(STAR).fetchall())
    if got != CAP:
        return [*results, skipped(GROUP, names["cap"][0], f"error: guarded SELECT * returned {got} rows, expected {CAP}",
                                  names["cap"][1], status="error")]
    s = pair(_q(con, STAR), _q(raw, f"{STAR} LIMIT {CAP}"), rounds)
    result("cap", s, "fetchall; plain = hand-written LIMIT")
    capped = Stats.of(s["guarded"])

    unc_rounds = 3 if cfg.quick else 2
    unc = Stats.of([_q(raw, STAR)() for _ in range(unc_rounds)])
    results.append(Result(GROUP, names["uncapped"][0], "s", capped, unc, unc.median / capped.median, "speed-up",
                          "x", names["uncapped"][1], note=f"plain = raw fetchall of every row ({unc_rounds} runs)"))

    s = pair(_q(con, STAR_ORDERED), _q(raw, f"{STAR_ORDERED} LIMIT {CAP}"), rounds)
    capped_sql = require_attr(require("guard_kernel.analysis.sql.requests"), "cap")(STAR_ORDERED, CAP + 1)
    top_capped, top_hand = _top_n(raw, capped_sql), _top_n(raw, f"{STAR_ORDERED} LIMIT {CAP + 1}")
    result("ordered", s, f"rewrite: {' '.join(capped_sql.split())}")
    r = Result(GROUP, names["top_n"][0], figure=float(top_capped), figure_label="TOP_N", figure_unit="bool",
               goal=names["top_n"][1], note=f"hand-written LIMIT plans Top-N: {'yes' if top_hand else 'no'}")
    if not top_hand and not top_capped:
        r.figure, r.note = None, ("n/a at this size: DuckDB plans no Top-N even for the hand-written LIMIT "
                                  "(it uses Top-N only when the LIMIT is a small share of the rows)")
    results.append(r)
    return results
