"""sqlite3 at run time: every connection opened after the guard is loaded is a guarded subclass.

``sqlite3.Connection`` is a C type whose methods cannot be replaced, but ``sqlite3.connect``
takes a ``factory``: the guard's :func:`connect` (put in place of ``sqlite3.connect`` and
``sqlite3.dbapi2.connect``, which SQLAlchemy and pandas call) opens every connection as
:class:`GuardedConnection`, whose cursors are :class:`GuardedCursor`.  Every ``execute``,
``executemany`` and ``executescript`` is classified in the SQLite dialect and decided as a
whole before any statement runs; every fetch path is capped.

A source database is read-only twice: the guard denies writes, and the file is opened with
``mode=ro`` and an authorizer that refuses everything but reads and the temp schema
(``PRAGMA query_only`` would refuse temp tables too, and the guard denies turning it off).  Opening a file that does not exist creates it: that is a ``file.write``
at its path, decided before the file appears.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import sys
from typing import Any
from urllib.parse import parse_qs, quote

from guard_kernel.decision.guard import Guard
from guard_kernel.decision.request import Request, StarRef, TableRef
from guard_kernel.enforce.dbapi import core
from guard_kernel.policy.actions import Action
from guard_kernel.policy.paths import resolve

__all__ = ["GuardedConnection", "GuardedCursor", "install", "installed", "repair", "tampered", "uninstall"]

_guard: Guard | None = None
_original: Any = None
_ids = itertools.count(1)
_EXEMPT = ("IPython.core.history",)
"""Modules whose connections stay unguarded: IPython's own history database."""


def installed() -> bool:
    return _guard is not None


def _active() -> Guard | None:
    g = _guard
    return None if g is None or g.busy else g


def _state(con: Any) -> core.DbState | None:
    return getattr(con, "_guard_state", None)


# ----------------------------------------------------------------- cursors


class GuardedCursor(sqlite3.Cursor):
    """A cursor whose statements are decided before they run and whose rows are capped."""

    _guard_pending: core.Pending | None = None

    def _run(self, method: Any, sql: str, *args: Any, cap: bool = True) -> GuardedCursor:
        g = _active()
        st = _state(self.connection)
        if g is None or st is None or not isinstance(sql, str):
            method(self, sql, *args)
            return self
        v = core.check(st, g, sql, cap=cap, via="sqlite3", cursor=self)
        self._guard_pending = None
        with g.quiet():
            method(self, v.text, *args)  # each returns the cursor itself (uncapped: masked only)
        self._guard_pending = core.pending_for(v, g) if cap else None
        core.after(st, g, v.stmts)
        return self

    def execute(self, sql: str, parameters: Any = (), /) -> GuardedCursor:
        return self._run(sqlite3.Cursor.execute, sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> GuardedCursor:
        return self._run(sqlite3.Cursor.executemany, sql, seq_of_parameters, cap=False)

    def executescript(self, sql_script: str, /) -> GuardedCursor:
        return self._run(sqlite3.Cursor.executescript, sql_script, cap=False)

    def fetchone(self) -> Any:
        return core.take_one(_guard, self._guard_pending, super().fetchone(), "fetchone")

    def fetchmany(self, size: int | None = None) -> list[Any]:
        rows = super().fetchmany() if size is None else super().fetchmany(size)
        return core.take(_guard, self._guard_pending, rows, "fetchmany")

    def fetchall(self) -> list[Any]:
        return core.take(_guard, self._guard_pending, super().fetchall(), "fetchall")

    def __next__(self) -> Any:
        row = core.take_one(_guard, self._guard_pending, super().__next__(), "iteration")
        if row is None:
            raise StopIteration
        return row


# ------------------------------------------------------------- connections


def _config(con: Any, name: str, action: Action = Action.SQL_CONFIG) -> None:
    """A connection method that changes what the engine may do: decided like the statement would be."""
    g = _active()
    st = _state(con)
    if g is None or st is None:
        return
    written = (TableRef(name, st.alias, st.source),) if st.source else ()
    g.check(Request(action, name, written=written, code=f"{name}(...)"), "sql", database=st.shown)


class GuardedConnection(sqlite3.Connection):
    """A connection whose cursors are :class:`GuardedCursor` and whose engine settings stay put."""

    _guard_state: core.DbState | None = None

    def cursor(self, factory: Any = None) -> Any:
        if factory is None or factory is sqlite3.Cursor:
            factory = GuardedCursor
        elif not issubclass(factory, GuardedCursor):
            factory = type(f"Guarded{factory.__name__}", (GuardedCursor, factory), {})
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:
        return self.cursor().executemany(sql, parameters)

    def executescript(self, sql_script: str, /) -> Any:
        return self.cursor().executescript(sql_script)

    def set_authorizer(self, *args: Any, **kwargs: Any) -> None:
        _config(self, "set_authorizer")
        super().set_authorizer(*args, **kwargs)

    def enable_load_extension(self, enabled: bool, /) -> None:
        _config(self, "enable_load_extension", Action.SQL_EXTENSION)
        super().enable_load_extension(enabled)

    def load_extension(self, *args: Any, **kwargs: Any) -> None:
        _config(self, "load_extension", Action.SQL_EXTENSION)
        super().load_extension(*args, **kwargs)

    def backup(self, target: Any, *args: Any, **kwargs: Any) -> None:
        g = _active()
        dst = _state(target)
        if g is not None and dst is not None:  # the whole database is written into *target*
            written = (TableRef("*", dst.alias, dst.source),) if dst.source else ()
            g.check(Request(Action.SQL_EXPORT, dst.shown, path=dst.path, written=written, code="backup(...)"),
                    "sql", database=dst.shown)
        super().backup(target, *args, **kwargs)

    def serialize(self, *args: Any, **kwargs: Any) -> bytes:
        """The whole database as bytes: every row of every table, past the row cap and column rules."""
        g = _active()
        st = _state(self)
        if g is not None and st is not None:
            g.check(Request(Action.SQL_EXPORT, st.shown, stars=(StarRef(),), code="serialize()",
                            reason="the whole database as bytes"), "sql", database=st.shown)
        return super().serialize(*args, **kwargs)

    def deserialize(self, *args: Any, **kwargs: Any) -> None:
        """Replaces the whole database: a write to every table."""
        _config(self, "deserialize", Action.SQL_WRITE)
        super().deserialize(*args, **kwargs)

    def blobopen(self, table: str, column: str, row: int, /, *, readonly: bool = False, name: str = "main") -> Any:
        g = _active()
        st = _state(self)
        if g is not None and st is not None:
            verb = "SELECT" if readonly else "UPDATE"
            text = (f'SELECT "{column}" FROM "{name}"."{table}"' if readonly
                    else f'UPDATE "{name}"."{table}" SET "{column}" = NULL')
            core.check(st, g, text, cap=False, via=f"blobopen ({verb})")
        return super().blobopen(table, column, row, readonly=readonly, name=name)


# ------------------------------------------------------------------- connect

_READS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_TRANSACTION,
                    sqlite3.SQLITE_RECURSIVE, sqlite3.SQLITE_SAVEPOINT, sqlite3.SQLITE_PRAGMA})
_TEMP = frozenset(getattr(sqlite3, n) for n in dir(sqlite3) if "_TEMP_" in n and n.startswith("SQLITE_"))


def _read_only(code: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
    """sqlite3's authorizer on a source connection: reads, and writes to the temp schema only."""
    if code in _READS:
        if code == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() == "query_only" and arg2 is not None:
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_OK if (db == "temp" or code in _TEMP) else sqlite3.SQLITE_DENY


def _target(database: Any, uri: bool) -> tuple[str | None, str | None]:
    """(real path or None for memory, URI ``mode``) of what *database* opens."""
    text = os.fsdecode(os.fspath(database))
    mode: str | None = None
    if uri and text.startswith("file:"):
        body, _, query = text[5:].partition("?")
        modes = parse_qs(query).get("mode")
        mode = modes[0] if modes else None
        if body.startswith("//"):
            body = body[2:]
            body = body[body.index("/"):] if "/" in body else ""
        text = body
    if mode == "memory" or text in ("", ":memory:"):
        return None, mode
    return resolve(text), mode


def connect(database: Any, *args: Any, **kwargs: Any) -> Any:
    """``sqlite3.connect`` that opens a :class:`GuardedConnection` (read-only for a source)."""
    g = _active()
    caller = sys._getframe(1).f_globals.get("__name__", "")
    if g is None or caller.startswith(_EXEMPT):
        return _original(database, *args, **kwargs)
    args_l = list(args)
    factory = args_l[4] if len(args_l) > 4 else kwargs.pop("factory", sqlite3.Connection)
    if not (isinstance(factory, type) and issubclass(factory, GuardedConnection)):
        factory = GuardedConnection if factory is sqlite3.Connection else \
            type(f"Guarded{factory.__name__}", (GuardedConnection, factory), {})
    if len(args_l) > 4:
        args_l[4] = factory
    else:
        kwargs["factory"] = factory
    uri = bool(args_l[6] if len(args_l) > 6 else kwargs.get("uri", False))
    real, mode = _target(database, uri)
    source = core.sqlite_source(g.policy, real)
    if source is not None and real is not None:  # a source is opened read-only, whatever was asked
        database = f"file:{quote(real)}?mode=ro"
        if len(args_l) > 6:
            args_l[6] = True
        else:
            kwargs["uri"] = True
    elif real is not None and mode not in ("ro", "rw") and not os.path.exists(real):
        core.connect_request(g, Action.FILE_WRITE, real, path=real)  # connecting creates the file
        g.owned_files.add(real)
    with g.quiet():
        con = _original(database, *args_l, **kwargs)
        st = core.DbState("sqlite", f"sqlite:{real}" if real else f"sqlite:memory:{next(_ids)}",
                          source.name if source else None, real,
                          frozenset(source.scratch_schemas) if source else frozenset(), real or ":memory:")
        if source is not None:  # (not PRAGMA query_only: it refuses temp tables too)
            sqlite3.Connection.set_authorizer(con, _read_only)
            if any(t.mask_columns for t in source.tables.values()):
                _masking(con, st, g)
            if any(t.mask_columns or t.deny_columns for t in source.tables.values()):
                _views(con, st, g)
    con._guard_state = st
    return con


def _views(con: Any, st: core.DbState, g: Guard) -> None:
    """The connection's reader of the source's views (name → definition)."""
    def views() -> dict[str, str]:
        with g.quiet():
            rows = sqlite3.Connection.execute(con, "SELECT name, sql FROM sqlite_schema WHERE type = 'view'").fetchall()
        return {str(n): str(q or "") for n, q in rows}

    st.views = views


def _masking(con: Any, st: core.DbState, g: Guard) -> None:
    """The connection's ``guard_hmac`` (the session's SQL may not call it) and its catalog reader."""
    from guard_kernel.analysis.sql import mask as _mask
    con.create_function("guard_hmac", 1, _mask.hmac_hex, deterministic=True)

    def columns(table: str) -> list[str]:
        with g.quiet():
            rows = sqlite3.Connection.execute(con, f"PRAGMA table_info(\"{table.replace(chr(34), '')}\")").fetchall()
        return [r[1] for r in rows]

    st.columns = columns


def install(guard: Guard) -> None:
    """Open every later sqlite3 connection through the guard (idempotent; re-install switches guard)."""
    global _guard, _original
    _guard = guard
    if _original is None:
        _original = sqlite3.connect
        sqlite3.connect = connect
        sqlite3.dbapi2.connect = connect


def tampered() -> list[str]:
    """``sqlite3.connect`` put back by code (connections opened then would be unguarded)."""
    if _original is None:
        return []
    return [f"sqlite3.{m.__name__}.connect" for m in (sqlite3, sqlite3.dbapi2) if m.connect is not connect]


def repair() -> None:
    """Put the guarded ``connect`` back."""
    if _original is not None:
        sqlite3.connect = sqlite3.dbapi2.connect = connect


def uninstall() -> None:
    """Put ``sqlite3.connect`` back (connections already open stay guarded subclasses, now inert)."""
    global _guard, _original
    if _original is not None:
        sqlite3.connect = _original
        sqlite3.dbapi2.connect = _original
    _original = None
    _guard = None
