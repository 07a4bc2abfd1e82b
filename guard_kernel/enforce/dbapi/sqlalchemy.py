"""SQLAlchemy at run time, through its own event hooks: every Engine, Core and ORM, pandas included.

``before_cursor_execute`` (``retval=True``) sees the exact SQL each cursor is about to run:
it is classified in the engine's dialect and decided before it runs, and a row-returning read
is rewritten with the row cap.  ``pd.read_sql*`` and ``DataFrame.to_sql`` run through it
(``to_sql``'s CREATE and INSERT are judged like any other statement).  The driver's own layer
(sqlite3, psycopg) then trims every fetch path; the verdict is passed on, not made twice.

``do_connect`` fires before the driver connects: for the drivers the guard knows
(``sqlite+pysqlite``, ``postgresql+psycopg``) their layer decides and locks the connection;
any other driver opens connections no hook sees, so connecting with it is ``net.connect`` on
the engine's host (redacted URL), decided before the socket opens.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from guard_kernel.decision.guard import Guard
from guard_kernel.decision.request import Request
from guard_kernel.enforce.dbapi import core
from guard_kernel.policy.actions import Action
from guard_kernel.policy.databases import redact, server_key

__all__ = ["install", "installed", "repair", "tampered", "uninstall"]

_guard: Guard | None = None
_KNOWN = frozenset({("sqlite", "pysqlite"), ("postgresql", "psycopg")})
"""(dialect, driver) pairs whose DB-API layer guards connections and fetches itself."""
_STATES: weakref.WeakKeyDictionary[Any, core.DbState] = weakref.WeakKeyDictionary()
"""Engine → state, for drivers without a layer of their own."""


def installed() -> bool:
    return _guard is not None


def _active() -> Guard | None:
    g = _guard
    return None if g is None or g.busy else g


def _url_state(engine: Any, g: Guard) -> core.DbState:
    """The state of a connection whose driver has no layer: matched from the engine's URL."""
    st = _STATES.get(engine)
    if st is None:
        url = engine.url
        name = engine.dialect.name
        shown = redact(url.render_as_string(hide_password=True))
        if name == "sqlite":
            from guard_kernel.policy.paths import resolve

            real = resolve(url.database) if url.database and url.database != ":memory:" else None
            src = core.sqlite_source(g.policy, real)
            st = core.DbState("sqlite", f"sqlite:{real}", src.name if src else None, real, shown=shown)
        else:
            key = server_key(url.host, url.port, url.database)
            src = core.server_source(g.policy, key) if name == "postgresql" else None
            st = core.DbState(name, f"{name}:{key[0]}:{key[1]}/{key[2]}", src.name if src else None,
                              scratch=frozenset(src.scratch_schemas) if src else frozenset(), shown=shown)
        _STATES[engine] = st
    return st


def _state(conn: Any, g: Guard) -> tuple[core.DbState, bool]:
    """(the connection's state, whether the driver's own layer trims the rows)."""
    dbapi = conn.connection.dbapi_connection
    st = getattr(dbapi, "_guard_state", None)  # sqlite3's layer
    if st is None:
        pg = sys.modules.get("guard_kernel.enforce.dbapi.psycopg")
        st = pg._STATES.get(dbapi) if pg is not None and pg.installed() else None
    if st is not None:
        return st, True
    return _url_state(conn.engine, g), False


def _before_cursor_execute(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                           executemany: bool) -> tuple[str, Any]:
    g = _active()
    if g is None:
        return statement, parameters
    st, trims = _state(conn, g)
    # a driver the guard does not know cannot trim: cap at max, not max+1
    v = core.check(st, g, statement, cap=not executemany, via="sqlalchemy", limit=None if trims else g.max_rows)
    if trims:
        core.precheck(cursor, v)
    return v.text, parameters


def _do_connect(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> None:
    g = _active()
    if g is None or (dialect.name, dialect.driver) in _KNOWN:
        return  # the driver's layer decides when it connects
    host = cparams.get("host") or (cargs[0] if cargs and isinstance(cargs[0], str) else "")
    key = server_key(host, cparams.get("port"), cparams.get("dbname") or cparams.get("database"))
    g.check(Request(Action.NET_CONNECT, f"{dialect.name}+{dialect.driver}://{key[0]}:{key[1]}/{key[2]}",
                    host=key[0], reason=f"driver {dialect.driver} is not guarded statement by statement",
                    code=f"{dialect.name}+{dialect.driver} connect"), "connect")


def install(guard: Guard) -> None:
    """Listen on every Engine (idempotent; re-install switches guard)."""
    global _guard
    first = _guard is None
    _guard = guard
    if first:
        event.listen(Engine, "before_cursor_execute", _before_cursor_execute, retval=True)
        event.listen(Engine, "do_connect", _do_connect)


def tampered() -> list[str]:
    """The guard's event listeners that code removed from every Engine."""
    if _guard is None:
        return []
    return [f"Engine {name} listener" for name, fn in (("before_cursor_execute", _before_cursor_execute),
                                                          ("do_connect", _do_connect))
            if not event.contains(Engine, name, fn)]


def repair() -> None:
    """Listen again where code removed the guard's listeners."""
    if _guard is None:
        return
    if not event.contains(Engine, "before_cursor_execute", _before_cursor_execute):
        event.listen(Engine, "before_cursor_execute", _before_cursor_execute, retval=True)
    if not event.contains(Engine, "do_connect", _do_connect):
        event.listen(Engine, "do_connect", _do_connect)


def uninstall() -> None:
    global _guard
    if _guard is not None:
        event.remove(Engine, "before_cursor_execute", _before_cursor_execute)
        event.remove(Engine, "do_connect", _do_connect)
    _guard = None
    _STATES.clear()
