"""psycopg 3 at run time: connecting is decided, every statement passes the one classifier, rows are capped.

libpq opens its socket natively, unseen by the process audit hook, so the decision is made
here, at ``connect``: a connection to a declared source is allowed and opened read-only (the
server holds it: ``default_transaction_read_only=on`` is set at startup, the same setting
``SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY`` makes; PostgreSQL then refuses even
``CREATE TEMP TABLE``, so a source that names ``scratch_schemas`` is held by the guard alone);
to any other server it is ``net.connect`` with the host and port.  The connection is matched to a source by host, port
and database, never by the text of a URL, and no user name or password is recorded.

Cursor methods are replaced on the classes (psycopg's are Python classes): ``execute``,
``executemany``, ``copy`` and ``stream`` of ``Cursor`` (``ClientCursor`` inherits them, and
``Connection.execute`` goes through them) and ``ServerCursor``; every fetch path of both is
capped; the same for ``AsyncConnection``, ``AsyncCursor`` and ``AsyncServerCursor``.
``read_only = False`` on a source connection is denied (psycopg would begin each transaction
``READ WRITE``).
"""

from __future__ import annotations

import getpass
import os
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import conninfo as _conninfo

from guard_kernel.decision.guard import Guard
from guard_kernel.decision.request import Request, TableRef
from guard_kernel.enforce.dbapi import core
from guard_kernel.enforce.layer import Wrappers
from guard_kernel.policy.actions import Action
from guard_kernel.policy.databases import server_key

__all__ = ["install", "installed", "repair", "tampered", "uninstall"]

_guard: Guard | None = None
_ORIGINALS: list[tuple[Any, str, Any]] = []
_ORIG_BY: dict[tuple[int, str], Any] = {}
_STATES: weakref.WeakKeyDictionary[Any, core.DbState] = weakref.WeakKeyDictionary()
_PENDING: weakref.WeakKeyDictionary[Any, core.Pending] = weakref.WeakKeyDictionary()
_LOCK = "-c default_transaction_read_only=on"
_NOT_PARAMS = frozenset({"autocommit", "prepare_threshold", "context", "row_factory", "cursor_factory"})


def installed() -> bool:
    return _guard is not None


def _active() -> Guard | None:
    g = _guard
    return None if g is None or g.busy else g


def _orig(owner: Any, name: str) -> Any:
    f = _ORIG_BY.get((id(owner), name))
    return getattr(owner, name) if f is None else f


def _target(params: dict[str, Any]) -> list[tuple[str, int, str]]:
    """The (host, port, database) of every host a conninfo may reach (libpq's defaults from the environment).

    A ``service`` (pg_service.conf) names its host in a file libpq reads: it never matches a
    source, and connecting to it is ``net.connect`` on ``service:<name>``."""
    service = params.get("service") or os.environ.get("PGSERVICE")
    if service:
        return [(f"service:{service}", 0, str(params.get("dbname") or ""))]
    hosts = str(params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST")
                or os.environ.get("PGHOSTADDR", "")).split(",")
    ports = str(params.get("port") or os.environ.get("PGPORT", "")).split(",")
    user = params.get("user") or os.environ.get("PGUSER") or getpass.getuser()
    db = str(params.get("dbname") or os.environ.get("PGDATABASE") or user)
    return [server_key(h, ports[i] if i < len(ports) and ports[i] else (ports[0] or None), db)
            for i, h in enumerate(hosts)]


def _shown(key: tuple[str, int, str]) -> str:
    return f"postgresql://{key[0]}:{key[1]}/{key[2]}"


def _decide_connect(g: Guard, conninfo: str, kwargs: dict[str, Any]) -> core.DbState:
    """Decide opening a connection (raise if denied); lock a source's session (in *kwargs*); its state."""
    params = _conninfo.conninfo_to_dict(
        _conninfo.make_conninfo(conninfo, **{k: v for k, v in kwargs.items() if k not in _NOT_PARAMS}))
    keys = _target(params)
    sources = {core.server_source(g.policy, k) for k in keys}
    source = sources.pop() if len(sources) == 1 else None
    if source is None:  # any other server: the network decides
        for k in keys:
            core.connect_request(g, Action.NET_CONNECT, _shown(k), host=k[0])
    elif not source.scratch_schemas:  # a source: opened read-only, and the server holds it so
        kwargs["options"] = f"{params.get('options', '')} {_LOCK}".strip()
    # (a source with scratch schemas is held by the guard alone: a read-only server session
    # would refuse the writes there; give such a session a role that may write nowhere else)
    return _new_state(keys[0], source.name if source else None,
                      frozenset(source.scratch_schemas) if source else frozenset())


def _connect(cls: Any, /, conninfo: str = "", **kwargs: Any) -> Any:
    original = _orig(psycopg.Connection, "connect").__func__
    g = _active()
    if g is None:
        return original(cls, conninfo, **kwargs)
    st = _decide_connect(g, conninfo, kwargs)
    with g.quiet():
        conn = original(cls, conninfo, **kwargs)
    _STATES[conn] = st
    _catalog(conn, st)
    return conn


def _new_state(key: tuple[str, int, str], source: str | None, scratch: frozenset[str]) -> core.DbState:
    return core.DbState("postgres", f"pg:{key[0]}:{key[1]}/{key[2]}", source, None, scratch, _shown(key))


def _catalog(conn: Any, st: core.DbState) -> None:
    """Let the guard read a table's columns (in order) on *conn*, for masked columns, and its views."""
    def columns(table: str) -> list[str]:
        g = _guard
        if g is None:
            return []
        with g.quiet():
            cur = _orig(psycopg.Cursor, "execute")(conn.cursor(), _COLUMNS, (table,))
            return [r[0] for r in _orig(psycopg.Cursor, "fetchall")(cur)]

    def views() -> dict[str, str]:
        g = _guard
        if g is None:
            return {}
        with g.quiet():
            cur = _orig(psycopg.Cursor, "execute")(conn.cursor(), _VIEWS)
            return {str(n): str(d or "") for n, d in _orig(psycopg.Cursor, "fetchall")(cur)}

    st.columns = columns
    st.views = views


_VIEWS = ("SELECT viewname, definition FROM pg_views WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "
          "UNION ALL SELECT matviewname, definition FROM pg_matviews "
          # functions stored outside the system schemas, by their body (a C function's is its symbol)
          "UNION ALL SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
          "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')")
_COLUMNS = ("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum")


def _state(conn: Any, g: Guard) -> core.DbState:
    """The connection's state; a connection opened before the guard is matched now (without the server's lock)."""
    st = _STATES.get(conn)
    if st is None:
        info = conn.info
        key = server_key(info.host, info.port, info.dbname)
        src = core.server_source(g.policy, key)
        st = _STATES[conn] = _new_state(key, src.name if src else None,
                                        frozenset(src.scratch_schemas) if src else frozenset())
        _catalog(conn, st)
    return st


def _text(query: Any, cur: Any) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, (bytes, bytearray, memoryview)):
        return bytes(query).decode()
    as_string = getattr(query, "as_string", None)
    if as_string is not None:  # psycopg.sql.SQL / Composed
        return str(as_string(cur))
    raise TypeError(f"the guard cannot read a query of type {type(query).__name__}")


def _checked(cur: Any, query: Any, *, cap: bool, via: str) -> tuple[Guard | None, Any, core.Verdict | None]:
    """(guard, query to run, verdict): decided before anything runs; GuardDenied on any denial."""
    g = _active()
    if g is None:
        return None, query, None
    st = _state(cur.connection, g)
    text = _text(query, cur)
    v = core.check(st, g, text, cap=cap, via=via, cursor=cur)
    _PENDING.pop(cur, None)
    return g, (v.text if v.text != text else query), v


def _done(cur: Any, g: Guard, v: core.Verdict, *, cap: bool) -> None:
    if cap:
        p = core.pending_for(v, g)
        if p is not None:
            _PENDING[cur] = p
    core.after(_STATES[cur.connection], g, v.stmts)


def _execute(owner: Any, name: str, *, cap: bool) -> Callable[..., Any]:
    def method(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        original = _orig(owner, name)
        g, run, v = _checked(self, query, cap=cap, via=f"psycopg {name}")
        if g is None or v is None:
            return original(self, query, *args, **kwargs)
        with g.quiet():
            out = original(self, run, *args, **kwargs)
        _done(self, g, v, cap=cap)
        return out

    method.__name__ = name
    return method


def _copy(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Any:
    original = _orig(psycopg.Cursor, "copy")
    _g, run, _v = _checked(self, statement, cap=False, via="psycopg copy")
    return original(self, run, *args, **kwargs)  # a context manager: the COPY starts when it is entered


def _stream(self: Any, query: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
    original = _orig(psycopg.Cursor, "stream")
    g, run, v = _checked(self, query, cap=True, via="psycopg stream")
    p = core.pending_for(v, g) if g is not None and v is not None else None
    for row in original(self, run, *args, **kwargs):
        if core.take_one(g, p, row, "stream") is None:
            return
        yield row


def _fetch(owner: Any, name: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = _orig(owner, name)(self, *args, **kwargs)
        p = _PENDING.get(self)
        if p is None:
            return out
        if name == "fetchone":
            return core.take_one(_guard, p, out, name)
        if name == "__next__":
            if core.take_one(_guard, p, out, "iteration") is None:
                raise StopIteration
            return out
        return core.take(_guard, p, out, name)

    method.__name__ = name
    return method


def _set_read_only_gen(self: Any, value: bool | None) -> Any:
    g = _active()
    if g is not None and value is False:
        st = _state(self, g)
        if st.source:
            g.check(Request(Action.SQL_CONFIG, "read_only = False", written=(TableRef("read_only", st.alias, st.source),),
                            code="connection.read_only = False"), "sql", database=st.shown)
    return _orig(psycopg.BaseConnection, "_set_read_only_gen")(self, value)


async def _async_connect(cls: Any, /, conninfo: str = "", **kwargs: Any) -> Any:
    original = _orig(psycopg.AsyncConnection, "connect").__func__
    g = _active()
    if g is None:
        return await original(cls, conninfo, **kwargs)
    st = _decide_connect(g, conninfo, kwargs)
    conn = await original(cls, conninfo, **kwargs)  # (not quiet across an await: other tasks run meanwhile)
    _STATES[conn] = st
    # async: no catalog reader, so a masked table is denied (fail closed); the source's views and
    # functions are read once, here (the session cannot change them: the source is read-only)
    if core.protects_columns(g, st):
        cur = conn.cursor()
        await _orig(psycopg.AsyncCursor, "execute")(cur, _VIEWS)
        rows = await _orig(psycopg.AsyncCursor, "fetchall")(cur)
        st.known_views = {str(n).lower(): str(d or "") for n, d in rows}
        if not conn.autocommit:
            await conn.rollback()  # leave the connection as the caller opened it: no transaction
    return conn


def _async_execute(owner: Any, name: str, *, cap: bool) -> Callable[..., Any]:
    async def method(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        original = _orig(owner, name)
        g, run, v = _checked(self, query, cap=cap, via=f"psycopg async {name}")
        out = await original(self, run, *args, **kwargs)
        if g is not None and v is not None:
            _done(self, g, v, cap=cap)
        return out

    method.__name__ = name
    return method


def _async_fetch(owner: Any, name: str) -> Callable[..., Any]:
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = await _orig(owner, name)(self, *args, **kwargs)
        p = _PENDING.get(self)
        if p is None:
            return out
        if name == "fetchone":
            return core.take_one(_guard, p, out, name)
        if name == "__anext__":
            if core.take_one(_guard, p, out, "iteration") is None:
                raise StopAsyncIteration
            return out
        return core.take(_guard, p, out, name)

    method.__name__ = name
    return method


def _async_copy(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Any:
    _g, run, _v = _checked(self, statement, cap=False, via="psycopg async copy")
    return _orig(psycopg.AsyncCursor, "copy")(self, run, *args, **kwargs)


async def _async_stream(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
    g, run, v = _checked(self, query, cap=True, via="psycopg async stream")
    p = core.pending_for(v, g) if g is not None and v is not None else None
    async for row in _orig(psycopg.AsyncCursor, "stream")(self, run, *args, **kwargs):
        if core.take_one(g, p, row, "stream") is None:
            return
        yield row


_WRAPPERS = Wrappers()
"""Every patch's wrapper: what :func:`tampered` expects to find in place."""


def tampered() -> list[str]:
    """The psycopg functions and methods whose guard wrapper code has replaced."""
    return _WRAPPERS.tampered()


def repair() -> None:
    """Put every wrapper back where code replaced it."""
    _WRAPPERS.repair()


def _patch(owner: Any, name: str, value: Any) -> None:
    _WRAPPERS.add(owner, name, value)
    _ORIGINALS.append((owner, name, owner.__dict__[name]))
    _ORIG_BY[(id(owner), name)] = owner.__dict__[name]
    setattr(owner, name, value)


def install(guard: Guard) -> None:
    """Guard every psycopg connection opened from now on (idempotent; re-install switches guard)."""
    global _guard
    first = _guard is None and not _ORIGINALS
    _guard = guard
    if not first:
        return
    _patch(psycopg.Connection, "connect", classmethod(_connect))
    _ORIGINALS.append((psycopg, "connect", psycopg.connect))
    psycopg.connect = psycopg.Connection.connect  # the module's name was bound at import
    _WRAPPERS.add(psycopg, "connect", psycopg.connect)
    _patch(psycopg.AsyncConnection, "connect", classmethod(_async_connect))
    _patch(psycopg.BaseConnection, "_set_read_only_gen", _set_read_only_gen)
    for owner in (psycopg.Cursor, psycopg.ServerCursor):
        _patch(owner, "execute", _execute(owner, "execute", cap=True))
        _patch(owner, "executemany", _execute(owner, "executemany", cap=False))
        for name in ("fetchone", "fetchmany", "fetchall", "__next__"):
            _patch(owner, name, _fetch(owner, name))
    _patch(psycopg.Cursor, "copy", _copy)
    _patch(psycopg.Cursor, "stream", _stream)
    for aowner in (psycopg.AsyncCursor, psycopg.AsyncServerCursor):
        _patch(aowner, "execute", _async_execute(aowner, "execute", cap=True))
        _patch(aowner, "executemany", _async_execute(aowner, "executemany", cap=False))
        for name in ("fetchone", "fetchmany", "fetchall", "__anext__"):
            _patch(aowner, name, _async_fetch(aowner, name))
    _patch(psycopg.AsyncCursor, "copy", _async_copy)
    _patch(psycopg.AsyncCursor, "stream", _async_stream)


def uninstall() -> None:
    """Restore psycopg as it was."""
    global _guard
    while _ORIGINALS:
        owner, name, value = _ORIGINALS.pop()
        setattr(owner, name, value)
    _ORIG_BY.clear()
    _WRAPPERS.clear()
    _guard = None
