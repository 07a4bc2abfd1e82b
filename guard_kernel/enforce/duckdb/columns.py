"""Column protections in the DuckDB gate, beyond the decision on names: masked columns rewritten
in the engine, views stored in a source that read a protected table, and engine errors scrubbed
of the mask key.

* :func:`masked` — every statement goes through :func:`guard_kernel.analysis.sql.mask.rewrite`;
  one that cannot be masked (a filter, join, group or order on a masked column…) is denied.
* :func:`through_views` — a view or a scalar macro stored in a source database is a name the
  classifier cannot see through: when its definition (read from ``duckdb_views()`` and
  ``duckdb_functions()``, once per set of attached catalogs) reads a table with ``deny_columns``
  or ``mask_columns``, directly or through other views and macros, using it is denied (fail
  closed: the guard does not follow such an object's columns).
  The session's own views are judged, and masked, when they are made.
* :func:`scrubbed` — DuckDB quotes the statement it ran in its errors: the key's pads never
  appear in what reaches the session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import duckdb

from guard_kernel.analysis.sql import mask as _mask
from guard_kernel.analysis.sql import requests as _sql
from guard_kernel.analysis.sql.refs import through_views as _views_reaching
from guard_kernel.decision.evaluate import Decision, mask_denial, view_denial
from guard_kernel.decision.guard import Guard
from guard_kernel.enforce.duckdb.rows import EPOCH, Conn, ConnState, orig

__all__ = ["masked", "scrubbed", "through_views"]

Decided = tuple[tuple[Decision, ...], ...]
"""The decisions of each statement of a text, in order."""


def masked(g: Guard, text: str, stmts: tuple[_sql.SqlStatement, ...], decided: Decided) -> tuple[str, Decided]:
    """*text* with masked columns masked in the engine (:mod:`~guard_kernel.analysis.sql.mask`); a
    statement that cannot be masked gets a denial (a would-deny in audit mode, run as it is)."""
    masks = g.policy.mask_columns()
    out: list[str] = []
    changed = False
    new_decided = list(decided)
    for i, s in enumerate(stmts):
        try:
            new = _mask.rewrite(s.text, "duckdb", masks)
        except _mask.MaskDenied as e:
            new_decided[i] = (*decided[i], mask_denial(g.policy, e, decided[i][0]))
            out.append(s.text)
            continue
        changed = changed or new is not s.text
        out.append(s.text if new is s.text else new + ";\n")
    if changed and len(stmts) == 1:
        return out[0].rstrip(";\n"), tuple(new_decided)
    return ("".join(out) if changed else text), tuple(new_decided)


def _protected(g: Guard) -> set[str]:
    return {t.name for s in g.policy.sources.values() for t in s.tables.values() if t.deny_columns or t.mask_columns}


def _source_views(con: Any, g: Guard, st: ConnState) -> dict[str, str]:
    """View → definition, over the source databases *con* has attached (kept until the catalogs change)."""
    kept = st.views
    if kept is not None and kept[0] == EPOCH[0]:
        return kept[1]
    sources = [name for name, src in st.catalogs.items() if src is not None]
    views: dict[str, str] = {}
    if sources:
        with g.quiet():
            cur = orig(Conn, "cursor")(con)
            try:
                rows = orig(Conn, "fetchall")(orig(Conn, "execute")(
                    cur, "SELECT database_name, view_name, sql FROM duckdb_views() WHERE NOT internal "
                         "UNION ALL SELECT database_name, function_name, macro_definition FROM duckdb_functions() "
                         "WHERE function_type = 'macro' AND NOT internal"))
            finally:
                orig(Conn, "close")(cur)
        wanted = set(sources)
        views = {str(v).lower(): str(q or "") for db, v, q in rows if str(db).lower() in wanted}
    st.views = (EPOCH[0], views)
    return views


def through_views(con: Any, g: Guard, st: ConnState, stmts: tuple[_sql.SqlStatement, ...],
                  decided: Decided) -> Decided:
    """*decided*, with a denial added to each statement that reads a source's view reading a
    protected table."""
    protected = _protected(g)
    uses_other = any(s.functions or any(t.name not in protected for t in s.tables) for s in stmts)
    if not protected or not uses_other:
        return decided
    try:
        views = _source_views(con, g, st)
    except duckdb.Error:  # the catalog cannot be read: a source view cannot be told from a table
        views = {}
    if not views:
        return decided
    out = list(decided)
    for i, s in enumerate(stmts):
        hit = _views_reaching(sorted({t.name for t in s.tables} - protected | set(s.functions)), views, protected,
                              "duckdb")
        if hit is not None and decided[i]:
            out[i] = (*decided[i], view_denial(g.policy, hit[0], hit[1], decided[i][0]))
    return tuple(out)


@contextlib.contextmanager
def scrubbed() -> Iterator[None]:
    """DuckDB errors quote the statement they ran: the mask key's pads never appear in them."""
    try:
        yield
    except duckdb.Error as e:
        msg = str(e)
        clean = _mask.scrub(msg)
        if clean == msg:
            raise
        raise type(e)(clean) from None
