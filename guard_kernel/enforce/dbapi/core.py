"""What every database layer shares: which database a connection reaches, the verdict on a
statement (the one classifier in the connection's dialect, the one decision function), the
session's own tables, and row caps on the way into Python.

A connection's database is a catalog of its own in the :class:`SqlContext` (``pg:host:port/db``,
``sqlite:/real/path``): every table name it sees lands there, so on a source connection every
table is the source's, except temp tables and tables in the source's ``scratch_schemas``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from guard_kernel.decision.errors import GuardDenied
from guard_kernel.decision.evaluate import Decision, Effect, mask_denial, view_denial
from guard_kernel.decision.guard import Guard
from guard_kernel.decision.request import Request
from guard_kernel.policy.actions import Action
from guard_kernel.policy.model import Policy, Source

if TYPE_CHECKING:  # the classifier (and sqlglot) load with the first statement, not with the layer
    from guard_kernel.analysis.sql import requests as _sql

__all__ = ["DbState", "Pending", "Verdict", "after", "check", "precheck", "protects_columns", "server_source",
           "sqlite_source", "take", "take_one"]


@dataclass
class DbState:
    """What the guard knows about one connection (shared by its cursors)."""

    dialect: str
    alias: str
    """The database's catalog key (``pg:host:port/db``, ``sqlite:/path``, ``sqlite:memory:N``)."""
    source: str | None = None
    path: str | None = None
    """Real path of a SQLite file (writes are judged against it: scratch, sources)."""
    scratch: frozenset[str] = frozenset()
    shown: str = ""
    """The database as shown in records (a URL without credentials, or a path)."""
    checked: dict[str, Verdict] = field(default_factory=dict)
    ctx: tuple[Any, ...] | None = None
    columns: Callable[[str], list[str]] | None = None
    """How the driver reads a table's columns in order from the catalog (for masked columns)."""
    known_columns: dict[str, list[str]] = field(default_factory=dict)
    """Columns read so far, per table: kept for the session, forgotten after any DDL."""
    views: Callable[[], dict[str, str]] | None = None
    """How the driver reads the objects the database stores that may read a table — views,
    functions — (name → definition) from the catalog."""
    known_views: dict[str, str] | None = None
    """The views read: kept for the session, read again after any DDL."""


@dataclass(frozen=True)
class Verdict:
    """The decisions on one SQL text for one connection, kept while the policy, the session's own
    tables and the working directory stay the same."""

    text: str
    """The text to run: a single row-returning read is capped at max+1 rows."""
    stmts: tuple[_sql.SqlStatement, ...]
    decided: tuple[Decision, ...]
    denied: tuple[Decision, ...]
    policy: Policy
    owned: frozenset[str]
    cwd: str
    pending: tuple[str, str] | None
    """(statement, resource) of a read whose rows reach Python, for the row cap."""


_local = threading.local()


def server_source(policy: Policy, key: tuple[str, int, str]) -> Source | None:
    """The source that is the database server *key* (host, port, database), if any."""
    return next((s for s in policy.sources.values() if s.server == key), None)


def sqlite_source(policy: Policy, real: str | None) -> Source | None:
    """The source that is the SQLite file *real*, if any."""
    return next((s for s in policy.sources.values() if real and s.sqlite == real), None) if real else None


def _ctx(st: DbState, g: Guard, cwd: str) -> _sql.SqlContext:
    from guard_kernel.analysis.sql import requests as _sql

    kept = st.ctx
    if kept is not None and kept[0] is g.policy and kept[1] == cwd and kept[2] == g.owned_tables:
        return kept[3]  # type: ignore[no-any-return]
    owned = frozenset(g.owned_tables)
    ctx = _sql.SqlContext(root=cwd, catalogs={st.alias: st.source}, default_catalog=st.alias, owned_tables=owned,
                          catalog_paths={st.alias: st.path} if st.path else {}, scratch_schemas=st.scratch)
    st.ctx = (g.policy, cwd, owned, ctx)
    return ctx


def _verdict(st: DbState, g: Guard, text: str, cwd: str, cap: bool, limit: int) -> Verdict:
    from guard_kernel.analysis.sql import requests as _sql

    stmts = _sql.analyze(text, st.dialect)
    reqs = _sql.to_requests(stmts, _ctx(st, g, cwd))
    decided = tuple(g.decide(r) for r in reqs)
    last = stmts[-1] if stmts else None
    pending = (last.text.strip(), last.resource) if last is not None and last.returns_rows else None
    run = text
    if not any(d.blocked for d in decided):
        decided = _through_views(st, g, stmts, decided)
    if not any(d.blocked for d in decided):
        run, decided = _masked(st, g, text, decided)
    if cap and len(stmts) == 1 and pending is not None:
        run = _sql.cap_statement(stmts[0] if run is text else _sql.analyze(run, st.dialect)[0], limit)
    return Verdict(run, stmts, decided, tuple(d for d in decided if d.blocked), g.policy,
                   frozenset(g.owned_tables), cwd, pending)


def _masked(st: DbState, g: Guard, text: str, decided: tuple[Decision, ...]) -> tuple[str, tuple[Decision, ...]]:
    """*text* with the source's masked columns masked in the database
    (:mod:`~guard_kernel.analysis.sql.mask`), or a denial when that cannot hold."""
    src = g.policy.sources.get(st.source) if st.source else None
    masks = {t.name: dict(t.mask_columns) for t in src.tables.values() if t.mask_columns} if src else {}
    if not masks or not decided:
        return text, decided
    from guard_kernel.analysis.sql import mask as _mask

    try:
        catalog = {t: _columns(st, t) for t in _mask.masked_tables(masks, text, st.dialect)}
        return _mask.rewrite(text, st.dialect, masks, catalog=catalog), decided
    except _mask.MaskDenied as e:
        return text, (*decided, mask_denial(g.policy, e, decided[0]))


def _through_views(st: DbState, g: Guard, stmts: Iterable[_sql.SqlStatement],
                   decided: tuple[Decision, ...]) -> tuple[Decision, ...]:
    """*decided*, plus a denial when a statement reads a view of the source, or calls a function
    stored there, that reads a table with denied or masked columns: the guard does not resolve
    such an object's columns (fail closed)."""
    src = g.policy.sources.get(st.source) if st.source else None
    if src is None or (st.views is None and st.known_views is None) or not decided:
        return decided
    protected = {t.name for t in src.tables.values() if t.deny_columns or t.mask_columns}
    names = {n for s in stmts for n in (*(t.name for t in s.tables), *s.functions)} - protected
    if not protected or not names:
        return decided
    if st.known_views is None and st.views is not None:
        st.known_views = {k.lower(): v for k, v in st.views().items()}
    if st.known_views is None:
        return decided
    from guard_kernel.analysis.sql.refs import through_views

    hit = through_views(sorted(names), st.known_views, protected, st.dialect)
    return decided if hit is None else (*decided, view_denial(g.policy, hit[0], hit[1], decided[0]))


def protects_columns(g: Guard, st: DbState) -> bool:
    """Whether the connection's source has tables with denied or masked columns."""
    src = g.policy.sources.get(st.source) if st.source else None
    return src is not None and any(t.deny_columns or t.mask_columns for t in src.tables.values())


def _columns(st: DbState, table: str) -> list[str] | None:
    cols = st.known_columns.get(table)
    if cols is None and st.columns is not None:
        cols = st.columns(table) or None
        if cols:
            st.known_columns[table] = cols
    return cols


def check(st: DbState, g: Guard, text: str, *, cap: bool = True, via: str = "", cursor: Any = None,
          limit: int | None = None) -> Verdict:
    """Decide every statement of *text* before any runs; record them; raise GuardDenied on any denial.

    A single row-returning read is capped at *limit* rows (default max+1, the extra row telling
    the fetch layer there was more).  A verdict another layer already reached for the same
    text on the same *cursor* (SQLAlchemy's hook, then the driver's cursor) is not made twice.
    """
    pre = getattr(_local, "pre", None)
    if pre is not None and cursor is not None:
        _local.pre = None
        if pre[0] is cursor and pre[1] == text:
            return pre[2]  # type: ignore[no-any-return]
    cwd = os.getcwd()
    key = text if limit is None and cap else f"{limit}:{int(cap)}:{text}"
    v = st.checked.get(key)
    if v is None or v.policy is not g.policy or v.owned != g.owned_tables or v.cwd != cwd:
        v = _verdict(st, g, text, cwd, cap, g.max_rows + 1 if limit is None else limit)
        if len(st.checked) >= 512:
            st.checked.clear()
        st.checked[key] = v
    extra = {"via": via, "database": st.shown} if via else {"database": st.shown}
    g.check_all(((d, "sql", extra) for d in v.decided), record=True)
    return v


def precheck(cursor: Any, v: Verdict) -> None:
    """*v* stands for the next statement this thread runs on *cursor* with the text ``v.text``."""
    _local.pre = (cursor, v.text, v)


def after(st: DbState, g: Guard, stmts: Iterable[_sql.SqlStatement]) -> None:
    """Remember the tables the statements created (the session's own from now on); after DDL the
    columns read from the catalog are read again."""
    for s in stmts:
        if s.action is Action.SQL_DDL:
            st.known_columns.clear()
            if st.views is not None:  # (without a reader, the views read at connect are kept)
                st.known_views = None
        for t in s.created:
            if t.catalog == "temp":
                g.owned_tables.add(f"temp.{t.name}")
            elif st.source is None or (t.catalog and t.catalog in st.scratch):
                g.owned_tables.add(f"{st.alias}.{t.name}")


def connect_request(g: Guard, action: Action, resource: str, **facts: Any) -> Decision:
    """Decide (and record) opening a connection; raise when it is denied."""
    return g.check(Request(action, resource, code=f"connect {resource}", **facts), "connect")


# ------------------------------------------------------------------ row caps


@dataclass
class Pending:
    """Row-cap bookkeeping of one open result."""

    limit: int
    statement: str
    resource: str
    delivered: int = 0
    reported: bool = False


def pending_for(v: Verdict, g: Guard) -> Pending | None:
    return Pending(g.max_rows, *v.pending) if v.pending is not None else None


def _report(g: Guard, p: Pending, via: str) -> None:
    if p.reported:
        return
    p.reported = True
    if g.policy.limits.on_exceed == "deny":
        d = Decision(Effect.DENY, Action.SQL_READ, p.resource, (), f"The result of this query has more than "
                     f"{p.limit} rows (row cap for {g.actor}); the policy denies it instead of truncating.",
                     "Aggregate in SQL or add a WHERE/LIMIT.", None, p.statement)
        g.record_decision(d, "sql")
        raise GuardDenied(d)
    g.truncated(p.resource, returned=p.limit, statement=p.statement, via=via)


def take(g: Guard | None, p: Pending | None, rows: list[Any], via: str) -> list[Any]:
    """The rows of *rows* still within the cap (the first row past it is reported once)."""
    if p is None or g is None:
        return rows
    room = max(p.limit - p.delivered, 0)
    if len(rows) > room:
        _report(g, p, via)
        rows = rows[:room]
    p.delivered += len(rows)
    return rows


def take_one(g: Guard | None, p: Pending | None, row: Any, via: str) -> Any:
    """*row* if it is within the cap, else None (the end of the result, as far as Python sees)."""
    if row is None or p is None or g is None:
        return row
    return row if take(g, p, [row], via) else None
