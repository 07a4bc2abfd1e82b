"""DuckDB at run time: every statement of every connection passes the classifier before it runs.

DuckDB 2.0's connection class (``_duckdb.DuckDBPyConnection``) has no Python constructor, so it
cannot be subclassed usefully; but its methods can be replaced on the class, as DuckDB's own
package does for the relation methods.  Patching the class covers every connection at once:
those from ``duckdb.connect``, cursors, duplicates, and the module-level default connection.
The relation layer (``duckdb._relation``) runs everything through a few private connection
methods (``_prepare_script``, ``_submit``, ``_create_view``, ``_register_map``): guarding those
covers ``con.sql``, ``duckdb.sql``, relation terminals and relation writers whatever SQL text
they assemble.  The module-level functions that C++ binds directly (``duckdb.execute``,
``duckdb.fetchall``…) are replaced by calls through the class on the default connection.

Row caps: a row-returning read runs as ``cap(sql, max+1)`` so the engine stops early; every fetch
path trims to ``max`` and reports truncation once (or denies, under ``on_exceed: deny``).
Displays (``repr``/``show``) are capped at ``max`` without a truncation record.

A verdict is kept per connection and text (:class:`~guard_kernel.enforce.duckdb.rows.Checked`): a
repeated statement skips the classifier and the decisions, and is still recorded every time.
It is judged afresh after any ATTACH/DETACH/USE, a policy switch, a new table of the session's
own, or a change of working directory.

This is a guardrail in the same process, not a sandbox: code that reaches the original C++
methods through ``_duckdb`` internals can bypass it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any, cast

import _duckdb
import duckdb
from duckdb import _relation

from guard_kernel.analysis.sql import mask as _mask
from guard_kernel.analysis.sql import requests as _sql
from guard_kernel.decision.evaluate import Effect
from guard_kernel.decision.guard import Guard
from guard_kernel.decision.request import Request
from guard_kernel.enforce.duckdb import columns
from guard_kernel.enforce.duckdb.rows import (
    CONN_FETCH,
    EPOCH,
    GUARD,
    ORIG_BY,
    ORIGINALS,
    STATES,
    CappedResult,
    Checked,
    Conn,
    ConnState,
    Pending,
    arrow_method,
    orig,
)
from guard_kernel.enforce.layer import Wrappers
from guard_kernel.policy.actions import Action
from guard_kernel.policy.databases import server_of
from guard_kernel.policy.paths import resolve

__all__ = ["context", "install", "installed", "repair", "tampered", "uninstall"]

_ENGINE_SETTINGS = (
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    # the gate's wrappers stand between the user's frame and the engine: let DataFrame
    # replacement scans look further up the stack than the first frame outside duckdb
    "SET python_scan_all_frames = true",
)

_guard: Guard | None = None
_local = threading.local()


def installed() -> bool:
    """Whether the gate is in place."""
    return _guard is not None


def tampered() -> list[str]:
    """The DuckDB functions and methods whose guard wrapper code has replaced (``duckdb.connect`` put back…)."""
    return _WRAPPERS.tampered()


def repair() -> None:
    """Put every wrapper back where code replaced it."""
    _WRAPPERS.repair()


def context(con: Any = None) -> _sql.SqlContext | None:
    """The SqlContext the gate uses for *con* (default: the module-level default connection).

    For the cell layer: it knows the receiver of ``con.execute(...)`` from the user namespace and
    can classify literal SQL with the same catalogs (which database is the default, which are
    sources) before any line of the cell runs.  None when the gate is not installed.
    """
    g = _guard
    if g is None:
        return None
    if con is None or con is duckdb:
        con = _duckdb.default_connection()
    if not isinstance(con, Conn):
        return None
    return _ctx(con, g)


# ----------------------------------------------------------------- helpers


def _active() -> Guard | None:
    g = _guard
    if g is None or g.busy:
        return None
    return g


def _source_of(path: str | None) -> str | None:
    if not path or _guard is None:
        return None
    for src in _guard.policy.sources.values():
        if path in (src.duckdb, src.sqlite):  # a SQLite source through DuckDB's sqlite scanner too
            return src.name
    return None


def _db_path(database: Any) -> str | None:
    text = os.fsdecode(os.fspath(database)) if database is not None else ":memory:"
    if not text or text.startswith(":memory:"):
        return None
    if text.startswith("md:") or "://" in text:
        return None
    return resolve(text)


def _alias_for(path: str | None) -> str:
    return os.path.basename(path).split(".", 1)[0].lower() if path else "memory"


def _state(con: Any) -> ConnState:
    st = STATES.get(con)
    if st is None:  # a connection the gate did not open (the default one, or older ones)
        st = ConnState()
        g = _guard
        if g is not None:
            with g.quiet(), contextlib.suppress(duckdb.Error):
                cur = orig(Conn, "cursor")(con)
                try:
                    rows = orig(Conn, "execute")(cur, "SELECT database_name, path, current_database() "
                                                       "FROM duckdb_databases() WHERE NOT internal")
                    for name, path, current in orig(Conn, "fetchall")(rows):
                        real = resolve(path) if path else None
                        st.catalogs[name.lower()] = _source_of(real)
                        if real:
                            st.paths[name.lower()] = real
                        st.default_catalog = current.lower()
                finally:
                    orig(Conn, "close")(cur)
        STATES[con] = st
    return st


def _ctx(con: Any, g: Guard, cwd: str | None = None) -> _sql.SqlContext:
    """The connection's SqlContext, rebuilt only when what it copies may have changed: the
    catalogs (every change bumps :data:`EPOCH`), the policy, the working directory, the
    session's own tables."""
    st = _state(con)
    cwd = cwd or os.getcwd()
    kept = st.ctx
    if (kept is not None and kept[0] is g.policy and kept[1] == EPOCH[0] and kept[2] == cwd
            and kept[3] == g.owned_tables):
        return cast("_sql.SqlContext", kept[4])
    owned = frozenset(g.owned_tables)
    ctx = _sql.SqlContext(root=cwd, catalogs=dict(st.catalogs), default_catalog=st.default_catalog,
                          owned_tables=owned, catalog_paths=dict(st.paths),
                          source_paths=_sql.source_paths(g.policy), macros=frozenset(st.macros),
                          source_servers=_sql.source_servers(g.policy))
    st.ctx = (g.policy, EPOCH[0], cwd, owned, ctx)
    return ctx


def _text_of(query: Any) -> str | None:
    if isinstance(query, str):
        return query
    if isinstance(query, _duckdb.Statement):
        return query.query
    return None


def _rewrite_attach(text: str, stmts: tuple[_sql.SqlStatement, ...]) -> str:
    """ATTACH of a source database without options becomes ATTACH … (READ_ONLY)."""
    if not any(s.attach and s.attach.verb == "attach" and not s.attach.options for s in stmts):
        return text
    out = []
    changed = False
    for s in stmts:
        a = s.attach
        if a and a.verb == "attach" and not a.options and a.path and _source_of(resolve(a.path)):
            out.append(s.text.rstrip().rstrip(";") + " (READ_ONLY);")
            changed = True
        else:
            out.append(s.text)
    return "".join(out) if changed else text


_CHECKED_MAX = 512
"""Verdicts kept per connection (a notebook re-runs a few hundred texts at most; more is churn)."""


def _verdict(con: Any, g: Guard, text: str, export_action: Action, cwd: str) -> Checked:
    """Rewrite, classify and decide *text* (nothing recorded, nothing raised)."""
    stmts = _sql.analyze(text)
    c_text = text
    new = _rewrite_attach(text, stmts)
    if new is not text:
        text, stmts = new, _sql.analyze(new)
        c_text = text
    ctx = _ctx(con, g, cwd)
    # all statements at once: a later statement sees what earlier ones ATTACH, USE and CREATE
    reqs = iter(_sql.to_requests(stmts, ctx, export_action=export_action))
    decided = tuple(tuple(g.decide(next(reqs)) for _ in range(1 + len(s.files))) for s in stmts)
    if not any(d.blocked for ds in decided for d in ds):
        decided = columns.through_views(con, g, _state(con), stmts, decided)
    if g.policy.mask_columns() and not any(d.blocked for ds in decided for d in ds):
        text, decided = columns.masked(g, text, stmts, decided)
        if text is not c_text:
            stmts = _sql.analyze(text)
    last = stmts[-1] if stmts else None
    return Checked(
        text, stmts, decided, tuple(d for ds in decided for d in ds if d.blocked), g, g.policy, EPOCH[0],
        frozenset(g.owned_tables), cwd,
        (last.text.strip(), last.resource) if last is not None and last.returns_rows else None)


def _check(con: Any, g: Guard, text: str, *, record_last: bool = True, record_reads: bool = True,
           export_action: Action = Action.SQL_EXPORT) -> Checked:
    """Rewrite, classify and decide every statement of *text*; raise GuardDenied before any runs.

    Denials are always recorded.  Otherwise each statement is recorded as it runs: with
    ``record_last=False`` the last one is left to the layer that runs it (``_submit``).  The
    verdict is kept per connection and reused for the same text while nothing it depends on
    has changed (see :class:`~guard_kernel.enforce.duckdb.rows.Checked`); it is recorded every time.
    """
    st = _state(con)
    key = (text, export_action)
    c = st.checked.get(key)
    cwd = os.getcwd()
    if (c is None or c.guard is not g or c.policy is not g.policy or c.epoch != EPOCH[0] or c.cwd != cwd
            or c.owned != g.owned_tables):
        c = _verdict(con, g, text, export_action, cwd)
        if len(st.checked) >= _CHECKED_MAX:
            st.checked.clear()
        st.checked[key] = c
    g.check_all((d, "sql", {}) for d in c.denied)  # any denial: recorded, and nothing runs
    decided = c.decided if record_last else c.decided[:-1]
    for ds in decided:
        for d in ds:
            if record_reads or d.effect is not Effect.ALLOW:
                g.record_decision(d, "sql")
    return c


def _after(con: Any, g: Guard, stmts: tuple[_sql.SqlStatement, ...]) -> None:
    """Track what ran: attached catalogs, owned tables, files written."""
    st: ConnState | None = None
    for s in stmts:
        a = s.attach
        if a is not None and a.alias:
            st = st or _state(con)
            if a.verb == "attach" and a.path and a.engine == "postgres":  # DuckDB's postgres scanner
                g_ = _guard
                st.catalogs[a.alias] = (_sql.source_servers(g_.policy).get(server_of(a.path))
                                        if g_ is not None else None)
            elif a.verb == "attach" and a.path:
                real = resolve(a.path)
                st.catalogs[a.alias] = _source_of(real)
                st.paths[a.alias] = real
            elif a.verb == "detach":
                st.catalogs.pop(a.alias, None)
                st.paths.pop(a.alias, None)
            elif a.verb == "use":
                st.default_catalog = a.alias.split(".", 1)[0]
            EPOCH[0] += 1  # every kept verdict may name these catalogs (cursors share the maps)
        if s.created_macros or s.dropped_macros:
            st = st or _state(con)
            st.macros.difference_update(s.dropped_macros)
            st.macros.update(s.created_macros)
            EPOCH[0] += 1  # kept verdicts on this connection may call these macros
        if s.created:
            st = st or _state(con)
            for t in s.created:
                cat = t.catalog or st.default_catalog
                if st.catalogs.get(cat) is None:
                    g.owned_tables.add(t.name)
                    g.owned_tables.add(f"{cat}.{t.name}")
        if s.export_path:
            g.owned_files.add(resolve(s.export_path))


def _pending_for(c: Checked, g: Guard) -> Pending | None:
    """Row-cap bookkeeping for the last statement of *c*, if it returns rows."""
    return Pending(g.max_rows, *c.pending) if c.pending is not None else None


# ------------------------------------------------------- connection methods


def _connect(database: Any = ":memory:", read_only: bool = False, config: dict[str, Any] | None = None,
             **kwargs: Any) -> Any:
    path = _db_path(database)
    source = _source_of(path)
    if source is not None:
        read_only = True  # sources are never opened for writing
    g = _active()
    if g is not None and path and not read_only and not os.path.exists(path):
        # connecting creates the file: a file.write at its path, decided before it appears
        g.check(Request(Action.FILE_WRITE, path, path=path, code=f"duckdb.connect({path!r})"), "connect")
        g.owned_files.add(path)
    con = orig(duckdb, "connect")(database, read_only, config or {}, **kwargs)
    _configure(con)
    st = ConnState()
    alias = _alias_for(path)
    st.catalogs[alias] = source
    if path:
        st.paths[alias] = path
    st.default_catalog = alias
    STATES[con] = st
    return con


def _configure(con: Any) -> None:
    """Engine settings first, then the lock (a locked engine refuses settings)."""
    g = _guard
    if g is None:
        return
    execute, fetchall = orig(Conn, "execute"), orig(Conn, "fetchall")
    with g.quiet():
        locked = fetchall(execute(con, "SELECT current_setting('lock_configuration')"))[0][0]
        if locked:
            return
        for s in _ENGINE_SETTINGS:
            execute(con, s)
        execute(con, "SET lock_configuration = true")


def _sibling(name: str) -> Callable[[Any], Any]:
    """``cursor``/``duplicate``: a new connection to the same database; it shares the parent's
    catalogs and starts from its default catalog, with no table macros of its own."""

    def method(self: Any) -> Any:
        child = orig(Conn, name)(self)
        if _guard is not None:
            parent = _state(self)
            STATES[child] = ConnState(parent.catalogs, parent.paths, parent.default_catalog)
        return child

    method.__name__ = name
    return method


def _run_statements(self: Any, g: Guard, c: Checked, parameters: Any, run: Callable[..., Any]) -> Any:
    st = _state(self)
    st.pending = None
    stmts = c.stmts
    if c.pending is not None:  # the last statement returns rows
        for s in stmts[:-1]:  # earlier statements run alone, so the last can be capped
            run(self, s.text)
        limit = g.max_rows + 1
        # one statement: the rewrite of the whole text is cached; a later one is capped by its analysis
        capped = _sql.cap(c.text, limit) if len(stmts) == 1 else _sql.cap_statement(stmts[-1], limit)
        result = run(self, capped, parameters)
        st.pending = _pending_for(c, g)
    else:
        result = run(self, c.text, parameters)
    _after(self, g, stmts)
    return self if result is self or result is None else result


def _execute(self: Any, query: Any, parameters: Any = None) -> Any:
    g = _active()
    text = _text_of(query)
    if g is None:
        return orig(Conn, "execute")(self, query, parameters)
    if text is None:  # let DuckDB raise its own error for a wrong type
        return orig(Conn, "execute")(self, query, parameters)
    c = _check(self, g, text)
    with g.quiet(), columns.scrubbed():
        return _run_statements(self, g, c, parameters, orig(Conn, "execute"))


def _executemany(self: Any, query: Any, parameters: Any = None) -> Any:
    g = _active()
    text = _text_of(query)
    if g is None or text is None:
        return orig(Conn, "executemany")(self, query, parameters)
    c = _check(self, g, text)
    with g.quiet(), columns.scrubbed():
        result = orig(Conn, "executemany")(self, c.text, parameters)
    st = _state(self)
    st.pending = _pending_for(c, g)
    _after(self, g, c.stmts)
    return result


def _extension(name: str, verb: str) -> Callable[..., Any]:
    def method(self: Any, extension: str, *args: Any, **kwargs: Any) -> Any:
        g = _active()
        if g is not None:
            g.check(Request(Action.SQL_EXTENSION, str(extension), code=f"{verb} {extension}"), "sql")
        return orig(Conn, name)(self, extension, *args, **kwargs)
    return method


def _writes_table(name: str) -> Callable[..., Any]:
    def method(self: Any, table_name: str, *args: Any, **kwargs: Any) -> Any:
        g = _active()
        if g is not None:
            quoted = ".".join('"' + p.replace('"', '""') + '"' for p in str(table_name).split("."))
            _check(self, g, f"INSERT INTO {quoted} DEFAULT VALUES")
        return orig(Conn, name)(self, table_name, *args, **kwargs)
    return method


def _denied_as(name: str, action: Action) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        g = _active()
        if g is not None:
            g.check(Request(action, name, code=f"{name}(...)"), "sql")
        return orig(Conn, name)(self, *args, **kwargs)
    return method


# --------------------------------------------------------- relation layer


def _submit(self: Any, sql: str, values: Any = None, format: str = "rows", batch_size: int = 131072) -> Any:
    g = _active()
    if g is None:
        return orig(Conn, "_submit")(self, sql, values, format, batch_size)
    export_action = Action.EXPORT_DATAFRAME if getattr(_local, "relation_export", False) else Action.SQL_EXPORT
    c = _check(self, g, sql, export_action=export_action)
    display = getattr(_local, "display", False)
    p = _pending_for(c, g)
    run_sql = c.text
    if p is not None:
        p.display = display
        run_sql = _sql.cap(c.text, g.max_rows if display else g.max_rows + 1)
    with g.quiet(), columns.scrubbed():
        result = orig(Conn, "_submit")(self, run_sql, values, format, batch_size)
    _after(self, g, c.stmts)
    return CappedResult(result, p) if p is not None else result


def _prepare_script(self: Any, sql: Any, values: Any = None, **kwargs: Any) -> Any:
    g = _active()
    text = _text_of(sql)
    if g is None or text is None:
        return orig(Conn, "_prepare_script")(self, sql, values, **kwargs)
    c = _check(self, g, text, record_last=False)
    sql = c.text if isinstance(sql, str) or len(c.stmts) > 1 or c.text != text else sql
    with g.quiet(), columns.scrubbed():
        out = orig(Conn, "_prepare_script")(self, sql, values, **kwargs)
    _after(self, g, c.stmts[:-1])  # the last runs through _submit (or lazily, as a relation)
    return out


def _create_view(self: Any, name: str, sql: str, **kwargs: Any) -> Any:
    g = _active()
    if g is not None:
        quoted = '"' + str(name).replace('"', '""') + '"'
        stmt = f"CREATE OR REPLACE VIEW {quoted} AS {sql}"
        c = _check(self, g, stmt)
        with g.quiet(), columns.scrubbed():
            if c.text != stmt:  # masked columns: the view is made of the masked rows
                sql = _mask.rewrite(sql, "duckdb", g.policy.mask_columns())
            out = orig(Conn, "_create_view")(self, name, sql, **kwargs)
        _after(self, g, c.stmts)
        return out
    return orig(Conn, "_create_view")(self, name, sql, **kwargs)


def _register_map(self: Any, function: Any, schema: Any, input_sql: str) -> Any:
    g = _active()
    if g is not None:
        input_sql = _check(self, g, input_sql).text
    return orig(Conn, "_register_map")(self, function, schema, input_sql)


def _register_collection(self: Any, result: Any) -> Any:
    if isinstance(result, CappedResult):
        result = result._result
    return orig(Conn, "_register_collection")(self, result)


def _flagged(name: str, flag: str) -> Callable[..., Any]:
    """Relation method *name*, run with the thread-local *flag* set (read by ``_submit``).

    ``relation_export``: a relation writer, so its COPY is judged as ``export.dataframe``;
    ``display``: repr/show, capped without a truncation record.
    """
    orig = getattr(_relation.DuckDBPyRelation, name)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        was = getattr(_local, flag, False)
        setattr(_local, flag, True)
        try:
            return orig(self, *args, **kwargs)
        finally:
            setattr(_local, flag, was)
    method.__name__ = name
    method.__doc__ = orig.__doc__
    return method


# ----------------------------------------------------------------- module level


def _module_function(name: str) -> Callable[..., Any]:
    def function(*args: Any, connection: Any = None, **kwargs: Any) -> Any:
        con = connection if connection is not None else _duckdb.default_connection()
        return getattr(Conn, name)(con, *args, **kwargs)
    function.__name__ = name
    return function


_MODULE_FUNCS = ("execute", "executemany", "fetchall", "fetchone", "fetchmany", "fetchdf", "fetch_df",
                 "fetch_df_chunk", "fetchnumpy", "torch", "tf", "install_extension", "load_extension", "append",
                 "checkpoint", "cursor", "duplicate", "register_filesystem", "query_appender", "appender")
_RELATION_WRITERS = ("write_csv", "to_csv", "write_parquet", "to_parquet")
_RELATION_DISPLAY = ("__repr__", "__str__", "show", "preview", "_repr_mimebundle_")


_WRAPPERS = Wrappers()
"""Every patch's wrapper: what :func:`tampered` expects to find in place."""


def _patch(owner: Any, name: str, value: Any) -> None:
    _WRAPPERS.add(owner, name, value)
    ORIGINALS.append((owner, name, getattr(owner, name)))
    ORIG_BY.setdefault((id(owner), name), ORIGINALS[-1][2])
    setattr(owner, name, value)


def install(guard: Guard) -> None:
    """Guard every DuckDB connection of this process with *guard* (idempotent; re-install switches guard)."""
    global _guard
    if _guard is not None:
        _guard = guard
        GUARD[:] = [guard]
        return
    _guard = guard
    GUARD[:] = [guard]
    methods: dict[str, Any] = {
        "execute": _execute, "executemany": _executemany, "cursor": _sibling("cursor"), "duplicate": _sibling("duplicate"),
        "_submit": _submit, "_prepare_script": _prepare_script, "_create_view": _create_view,
        "_register_map": _register_map, "_register_collection": _register_collection,
        "install_extension": _extension("install_extension", "INSTALL"),
        "load_extension": _extension("load_extension", "LOAD"),
        "append": _writes_table("append"), "appender": _writes_table("appender"),
        "checkpoint": _denied_as("checkpoint", Action.SQL_CONFIG),
        "register_filesystem": _denied_as("register_filesystem", Action.SQL_CONFIG),
        "to_arrow_table": arrow_method("to_arrow_table", reader=False),
        "to_arrow_reader": arrow_method("to_arrow_reader", reader=True),
        **CONN_FETCH,
    }
    for name, fn in methods.items():
        if hasattr(Conn, name):
            _patch(Conn, name, fn)
    for name in _RELATION_WRITERS:
        _patch(_relation.DuckDBPyRelation, name, _flagged(name, "relation_export"))
    for name in _RELATION_DISPLAY:
        if hasattr(_relation.DuckDBPyRelation, name):
            _patch(_relation.DuckDBPyRelation, name, _flagged(name, "display"))
    for mod in (duckdb, _duckdb):
        _patch(mod, "connect", _connect)
        for name in _MODULE_FUNCS:
            if hasattr(mod, name) and hasattr(Conn, name):
                _patch(mod, name, _module_function(name))
    try:  # the default connection gets the engine settings too
        _configure(_duckdb.default_connection())
    except duckdb.Error:
        pass


def uninstall() -> None:
    """Restore DuckDB as it was (tests; the extension refuses to unload when the policy is locked)."""
    global _guard
    while ORIGINALS:
        owner, name, value = ORIGINALS.pop()
        setattr(owner, name, value)
    _WRAPPERS.clear()
    ORIG_BY.clear()
    STATES.clear()
    _guard = None
    GUARD.clear()
    for attr in ("relation_export", "display"):
        if hasattr(_local, attr):
            delattr(_local, attr)
