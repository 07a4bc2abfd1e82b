"""Row caps on the way into Python: every fetch path of a connection or relation result.

The gate runs a row-returning read as ``cap(sql, max+1)``; the functions here deliver at most
``max`` rows through whatever terminal the user calls, notice the extra row, and report the
truncation once (or deny it under ``limits.on_exceed: deny``).  Shared state of the gate (the
patched originals and what is known per connection) lives here too, so both modules see it.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import _duckdb
import duckdb

from guard_kernel.decision.errors import GuardDenied
from guard_kernel.decision.evaluate import Decision, Effect
from guard_kernel.decision.guard import Guard
from guard_kernel.policy.actions import Action

Conn = _duckdb.DuckDBPyConnection

GUARD: list[Guard] = []
"""The installed guard (empty list: none), set by :func:`guard_kernel.enforce.duckdb.gate.install`."""
ORIGINALS: list[tuple[Any, str, Any]] = []
"""(owner, name, original) in patch order (uninstall restores them in reverse)."""
ORIG_BY: dict[tuple[int, str], Any] = {}
"""(id(owner), name) → original: :func:`orig` runs several times per query, so no list scan."""
STATES: weakref.WeakKeyDictionary[Any, ConnState] = weakref.WeakKeyDictionary()


@dataclass
class Pending:
    """Row-cap bookkeeping of one open result."""

    limit: int
    statement: str
    resource: str
    delivered: int = 0
    reported: bool = False
    display: bool = False

    @property
    def remaining(self) -> int:
        return max(self.limit - self.delivered, 0)


@dataclass(frozen=True)
class Checked:
    """The gate's verdict on one SQL text, kept for the next time the same text comes.

    Valid only while everything it was computed from is unchanged: the guard and its policy
    (``Guard.set_policy`` swaps the object), the connections' catalogs (:data:`EPOCH`), the
    tables the session owns and the working directory (relative paths resolve against it).
    """

    text: str
    """The text to run (an option-less ATTACH of a source gains READ_ONLY)."""
    stmts: tuple[Any, ...]
    decided: tuple[tuple[Decision, ...], ...]
    """Per statement: its decisions (statement, then files and URLs it reads)."""
    denied: tuple[Decision, ...]
    guard: Guard
    policy: Any
    epoch: int
    owned: frozenset[str]
    cwd: str
    pending: tuple[str, str] | None
    """(statement, resource) for the row-cap bookkeeping of the last statement, if it returns rows."""


EPOCH = [0]
"""Bumped whenever any connection ATTACHes, DETACHes or USEs (cursors share catalog maps)."""


@dataclass
class ConnState:
    """What the guard knows about one connection: its catalogs and its open result."""

    catalogs: dict[str, str | None] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    default_catalog: str = "memory"
    pending: Pending | None = None
    checked: dict[tuple[str, Any], Checked] = field(default_factory=dict)
    """(SQL text, export action) → the verdict last computed for it on this connection."""
    ctx: tuple[Any, int, str, frozenset[str], Any] | None = None
    """(policy, EPOCH, cwd, owned tables, SqlContext): the context last built for this connection."""
    macros: set[str] = field(default_factory=set)
    """Table macros created on this connection in the session (its cursors start without them)."""
    views: tuple[int, dict[str, str]] | None = None
    """(EPOCH, view → definition) of the views stored in the source databases the connection
    reaches (:mod:`~guard_kernel.enforce.duckdb.columns`); read again when the catalogs change."""


def orig(owner: Any, name: str) -> Any:
    f = ORIG_BY.get((id(owner), name))
    return getattr(owner, name) if f is None else f


def report(p: Pending, via: str) -> None:
    """The result had more rows than the cap: record it once (or deny under on_exceed: deny)."""
    g = GUARD[0] if GUARD else None
    if g is None or p.reported or p.display:
        return
    p.reported = True
    if g.policy.limits.on_exceed == "deny":
        d = Decision(Effect.DENY, Action.SQL_READ, p.resource, (), f"The result of this query has more than "
                     f"{p.limit} rows (row cap for {g.actor}); the policy denies it instead of truncating.",
                     "Aggregate in SQL or add a WHERE/LIMIT.", None, p.statement)
        g.record_decision(d, "sql")
        raise GuardDenied(d)
    g.truncated(p.resource, returned=p.limit, statement=p.statement, via=via)


def _take(p: Pending, n: int) -> int:
    """How many of *n* rows may still be delivered."""
    return min(n, p.remaining)


def _fetchmany(self: Any, size: int = 1) -> list[Any]:
    st = STATES.get(self)
    p = st.pending if st else None
    if p is None:
        return cast(list[Any], orig(Conn, "fetchmany")(self, size))
    n = _take(p, size)
    rows = orig(Conn, "fetchmany")(self, n) if n > 0 else []
    p.delivered += len(rows)
    if p.remaining == 0:
        _finish(self, p, "fetchmany")
    return rows


def _finish(con: Any, p: Pending, via: str, more: bool | None = None) -> None:
    """Nothing more will be delivered: report a row past the cap, then end the open result."""
    if more is None:
        more = p.remaining == 0 and not p.reported and orig(Conn, "fetchone")(con) is not None
    with contextlib.suppress(duckdb.Error):
        orig(Conn, "abort")(con)  # DuckDB 2.0 wants an open result ended before other work
    st = STATES.get(con)
    if st is not None and st.pending is p:
        st.pending = Pending(p.limit, p.statement, p.resource, p.limit, True)  # later fetches: nothing
    if more:
        report(p, via)


def _fetchone(self: Any) -> Any:
    st = STATES.get(self)
    if st is None or st.pending is None:
        return orig(Conn, "fetchone")(self)
    rows = _fetchmany(self, 1)
    return rows[0] if rows else None


def _fetchall(self: Any) -> list[Any]:
    st = STATES.get(self)
    p = st.pending if st else None
    if p is None:
        return cast(list[Any], orig(Conn, "fetchall")(self))
    # the cap's worth, then one more row to know whether there was more (no copy of the list)
    rows = orig(Conn, "fetchmany")(self, p.remaining) if p.remaining > 0 else []
    p.delivered += len(rows)
    _finish(self, p, "fetchall")
    return rows


def _trim_frame(p: Pending | None, frame: Any, via: str) -> Any:
    if p is None:
        return frame
    n = len(frame)
    if n > p.remaining:
        keep = p.remaining
        frame = frame.iloc[:keep] if hasattr(frame, "iloc") else frame.slice(0, keep)
        report(p, via)
        n = keep
    p.delivered += n
    return frame


def _trim_columns(p: Pending | None, data: Any, via: str) -> Any:
    """A dict of column arrays (fetchnumpy, torch, tf)."""
    if p is None or not data:
        return data
    n = len(next(iter(data.values())))
    if n > p.remaining:
        keep = p.remaining
        data = {k: v[:keep] for k, v in data.items()}
        report(p, via)
        n = keep
    p.delivered += n
    return data


def _frame_method(name: str, trim: Callable[[Pending | None, Any, str], Any]) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        st = STATES.get(self)
        p = st.pending if st else None
        return trim(p, orig(Conn, name)(self, *args, **kwargs), name)
    return method


def arrow_method(name: str, reader: bool) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        st = STATES.get(self)
        p = st.pending if st else None
        out = orig(Conn, name)(self, *args, **kwargs)
        if p is None or out is None:
            return out
        if reader:
            import pyarrow as pa

            table = _trim_frame(p, out.read_all(), name)
            return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
        return _trim_frame(p, out, name)
    return method




class CappedResult:
    """A RelationResult whose terminals deliver at most the cap."""

    def __init__(self, result: Any, pending: Pending) -> None:
        self._result = result
        self._p = pending

    def __getattr__(self, name: str) -> Any:
        return getattr(self._result, name)

    def fetchall(self) -> list[Any]:
        rows = self._result.fetchmany(self._p.remaining + 1)
        if len(rows) > self._p.remaining:
            rows = rows[: self._p.remaining]
            report(self._p, "relation.fetchall")
        self._p.delivered += len(rows)
        return cast(list[Any], rows)

    def fetchmany(self, size: int = 1) -> list[Any]:
        n = _take(self._p, size)
        rows = self._result.fetchmany(n) if n > 0 else []
        self._p.delivered += len(rows)
        if self._p.remaining == 0 and not self._p.reported and self._result.fetchmany(1):
            report(self._p, "relation.fetchmany")
        return rows

    def df(self, *args: Any, **kwargs: Any) -> Any:
        return _trim_frame(self._p, self._result.df(*args, **kwargs), "relation.df")

    def arrow_table(self, *args: Any, **kwargs: Any) -> Any:
        return _trim_frame(self._p, self._result.arrow_table(*args, **kwargs), "relation.arrow")

    def arrow_reader(self) -> Any:
        import pyarrow as pa

        table = _trim_frame(self._p, self._result.arrow_reader().read_all(), "relation.arrow_reader")
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())

    def arrow_capsule(self) -> Any:
        return self.arrow_reader().__arrow_c_stream__()

    def fetchnumpy(self) -> Any:
        return _trim_columns(self._p, self._result.fetchnumpy(), "relation.fetchnumpy")

    def torch(self) -> Any:
        return _trim_columns(self._p, self._result.torch(), "relation.torch")

    def tf(self) -> Any:
        return _trim_columns(self._p, self._result.tf(), "relation.tf")


CONN_FETCH = {
    "fetchall": _fetchall, "fetchmany": _fetchmany, "fetchone": _fetchone,
    "df": _frame_method("df", _trim_frame), "fetchdf": _frame_method("fetchdf", _trim_frame),
    "fetch_df": _frame_method("fetch_df", _trim_frame), "fetch_df_chunk": _frame_method("fetch_df_chunk", _trim_frame),
    "fetchnumpy": _frame_method("fetchnumpy", _trim_columns), "torch": _frame_method("torch", _trim_columns),
    "tf": _frame_method("tf", _trim_columns),
}
