"""The one SQL classifier: what a DuckDB statement does, and the Requests that ask about it.

DuckDB is the authority on how many statements a string holds and of which type: its lexer
(``duckdb.tokenize``) when every statement is plainly a query, else its parser
(``duckdb.extract_statements``, ~10x the cost); sqlglot (dialect ``duckdb``) reads each statement for tables,
columns, files and table functions.  When the two disagree, when sqlglot falls back to
``exp.Command``, fails, or meets a table function we do not know, the statement is
``sql.unknown`` (fail closed) and carries the reason.  Results are cached by text.

Choices worth knowing (documented here because every layer relies on them):

* ``CREATE SECRET`` is ``sql.config``: it stores engine credentials, it creates no data object.
* ``CHECKPOINT``, ``VACUUM``, ``ANALYZE`` are ``sql.config`` (engine maintenance, write class);
  ``CALL`` of a read-only introspection function (``pragma_version()``, ``duckdb_tables()``…)
  and ``PRAGMA`` of an introspection pragma (``table_info``, ``show_tables``…) are ``sql.read``.
* ``BEGIN``/``COMMIT``/``ROLLBACK`` are ``sql.read`` of resource ``transaction``: they change no data.
* ``PREPARE``/``EXECUTE``/``DEALLOCATE`` are ``sql.unknown``: a statement run by name cannot be
  checked; parameters (``?``, ``$1``) do the same job and are checked.
* Literal files read by a statement become extra ``file.read`` requests (URLs become
  ``net.connect``), so file rules apply to SQL the same way they apply to ``open``.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from guard_kernel.analysis.sql.cap import cap_statement
from guard_kernel.analysis.sql.classify import Attach, SqlStatement, analyze
from guard_kernel.decision.evaluate import Decision
from guard_kernel.decision.request import Request, TableRef
from guard_kernel.policy.actions import Action
from guard_kernel.policy.databases import redact_text, server_of
from guard_kernel.policy.paths import remote_host, resolve

if TYPE_CHECKING:
    from guard_kernel.decision.guard import Guard
    from guard_kernel.policy.model import Policy

__all__ = [
    "Attach", "SqlContext", "SqlStatement", "analyze", "cap", "cap_statement", "check_sql", "source_paths",
    "source_servers", "to_requests",
]


@lru_cache(maxsize=2048)
def cap(text: str, limit: int) -> str:
    """*text* rewritten so the engine returns at most *limit* rows (unchanged if it is not one read)."""
    stmts = analyze(text)
    return cap_statement(stmts[0], limit) if len(stmts) == 1 else text


@dataclass(frozen=True)
class SqlContext:
    """What a connection knows about where names point.

    Immutable, mappings included (pass copies, never mutate them afterwards): :func:`to_requests`
    remembers its answer for the same statements and context objects.
    """

    root: str = field(default_factory=os.getcwd)
    """Project root: relative file paths resolve against it."""
    catalogs: Mapping[str, str | None] = field(default_factory=dict)
    """Catalog alias (lower-case) → policy source name (None: not a source)."""
    default_catalog: str = "memory"
    owned_tables: frozenset[str] = frozenset()
    catalog_paths: Mapping[str, str] = field(default_factory=dict)
    """Catalog alias → real path of its database file (writes are judged against it)."""
    source_paths: Mapping[str, str] = field(default_factory=dict)
    """Real path of a source DuckDB or SQLite file → source name (for ATTACH earlier in the same string)."""
    source_servers: Mapping[tuple[str, int, str], str] = field(default_factory=dict)
    """(host, port, database) of a source database server → source name (DuckDB's postgres scanner)."""
    macros: frozenset[str] = frozenset()
    """Table macros this connection created in the session (lower-case): the only unknown table
    functions a statement may call."""
    scratch_schemas: frozenset[str] = frozenset()
    """Schemas of a database connection that the policy gives the session to write in
    (lower-case): tables there are the session's own, not the source's."""


def source_paths(policy: Policy) -> dict[str, str]:
    """Real path of each source DuckDB or SQLite file → source name (for :attr:`SqlContext.source_paths`)."""
    return {p: s.name for s in policy.sources.values() for p in (s.duckdb, s.sqlite) if p}


def source_servers(policy: Policy) -> dict[tuple[str, int, str], str]:
    """(host, port, database) of each source server → source name (for :attr:`SqlContext.source_servers`)."""
    return {s.server: s.name for s in policy.sources.values() if s.server}


def _server_attach(a: Attach, ctx: SqlContext, line: int | None, code: str) -> Request:
    """DuckDB's postgres scanner, one request as every statement has: a declared source is an
    attach that must be READ_ONLY; any other server is ``net.connect`` to its host (its tables
    are then nobody's source, and writes to them follow the ``write`` default)."""
    key = server_of(a.path or "")
    shown = f"postgresql://{key[0]}:{key[1]}/{key[2]}"
    src = ctx.source_servers.get(key)
    if src is None:
        return Request(Action.NET_CONNECT, shown, host=key[0], line=line, code=code)
    written = () if a.read_only else (TableRef(a.alias or "*", None, src),)
    return Request(Action.SQL_ATTACH, shown, written=written, read_only=a.read_only, line=line, code=code)


# ------------------------------------------------------------------- requests


def _path(p: str, root: str) -> str:
    return resolve(p[7:] if p.startswith("file://") else p, root)


def _place(t: TableRef, catalogs: Mapping[str, str | None], default: str,
           owned: set[str], scratch: frozenset[str] = frozenset()) -> tuple[str, str | None]:
    """The catalog a table name lands in, and its source (an unknown qualifier is a schema)."""
    cat: str
    if t.catalog and t.catalog in scratch:
        return t.catalog, None  # a scratch schema of a database connection: the session's own
    if t.catalog and (t.catalog in catalogs or t.catalog in ("temp", "system")):
        cat = t.catalog
    elif not t.catalog and f"temp.{t.name}" in owned:
        cat = "temp"  # DuckDB looks in the temp catalog first
    else:
        cat = default
    return cat, (catalogs.get(cat) if cat not in ("temp", "system") else None)


_MEMO_MAX = 256
_memo: dict[tuple[int, int, int | None, Action],
            tuple[tuple[SqlStatement, ...], SqlContext, tuple[Request, ...]]] = {}
"""(id(stmts), id(ctx), line, export action) → (stmts, ctx, requests): a caller that keeps its
context and asks again about an analysis it got from the cache gets the same requests back.
The entry holds both objects, so their ids cannot be reused while it exists."""


def to_requests(stmts: Iterable[SqlStatement], ctx: SqlContext | None = None,
                line: int | None = None, *, export_action: Action = Action.SQL_EXPORT) -> list[Request]:
    """Decision requests for *stmts*: one per statement, plus one per literal file read or URL.

    *export_action* replaces ``sql.export`` (the relation writers ask as ``export.dataframe``).
    """
    if ctx is None or type(stmts) is not tuple:
        return _to_requests(stmts, ctx or SqlContext(), line, export_action)
    key = (id(stmts), id(ctx), line, export_action)
    hit = _memo.get(key)
    if hit is not None and hit[0] is stmts and hit[1] is ctx:
        return list(hit[2])
    out = _to_requests(stmts, ctx, line, export_action)
    if len(_memo) >= _MEMO_MAX:
        _memo.clear()
    _memo[key] = (stmts, ctx, tuple(out))
    return out


def _to_requests(stmts: Iterable[SqlStatement], ctx: SqlContext, line: int | None,
                 export_action: Action) -> list[Request]:
    out: list[Request] = []
    # what earlier statements of the same string attach, detach, use and create
    catalogs = dict(ctx.catalogs)
    paths = dict(ctx.catalog_paths)
    default = ctx.default_catalog
    owned_names = set(ctx.owned_tables)
    macros = set(ctx.macros)
    for s in stmts:
        def place(t: TableRef, default: str = default) -> tuple[str, str | None]:
            return _place(t, catalogs, default, owned_names, ctx.scratch_schemas)

        def ref(t: TableRef) -> TableRef:
            cat, src = place(t)
            return TableRef(t.name, t.catalog or (cat if cat == "temp" else None), src)

        tables = tuple(ref(t) for t in s.tables)
        written = tuple(ref(t) for t in s.written)
        places = [place(t) for t in s.written]
        created = {(place(t)[0], t.name) for t in s.created}
        owned = bool(written) and all(
            src is None and (cat in ("memory", "temp") or cat in ctx.scratch_schemas or f"{cat}.{t.name}" in owned_names
                             or (cat, t.name) in created)
            for t, (cat, src) in zip(s.written, places, strict=True))
        path = None
        if s.export_path:
            path = _path(s.export_path, ctx.root)
        elif s.attach is not None and s.attach.path and s.attach.engine != "postgres":
            path = _path(s.attach.path, ctx.root)
        elif written and s.action in (Action.SQL_WRITE, Action.SQL_DDL):
            db_paths = {paths.get(cat) for cat, _ in places}
            if len(db_paths) == 1:
                path = db_paths.pop()
        a = s.attach
        if a is not None and a.alias:
            if a.verb == "attach" and path:
                catalogs[a.alias] = ctx.source_paths.get(path)
                paths[a.alias] = path
            elif a.verb == "detach":
                catalogs.pop(a.alias, None)
            elif a.verb == "use":
                default = a.alias.split(".", 1)[0]
        owned_names.update(f"{cat}.{name}" for cat, name in created)
        action = export_action if s.action is Action.SQL_EXPORT else s.action
        reason = s.reason
        if s.unlocks and catalogs.get(default):  # lifting a source connection's lock writes to the source
            written = (TableRef(s.resource, default, catalogs[default]),)
        strange = [m for m in s.macros if m not in macros]
        if strange and action is not Action.SQL_UNKNOWN:
            action = Action.SQL_UNKNOWN
            reason = (f"unknown table function {strange[0]}(): neither one the guard knows nor a table macro "
                      "this connection created in this session")
        macros.difference_update(s.dropped_macros)
        macros.update(s.created_macros)
        # an option-less ATTACH of a source is run as ATTACH … (READ_ONLY) by the DuckDB gate
        read_only = bool(a and (a.read_only or (a.verb == "attach" and not a.options
                                                and path is not None and path in ctx.source_paths)))
        code = redact_text(s.text.strip())  # a conninfo or URL in a statement keeps no password
        if a is not None and a.engine == "postgres" and action is Action.SQL_ATTACH:
            out.append(_server_attach(a, ctx, line, code))
            continue
        out.append(Request(
            action, redact_text(s.resource), path=path, tables=tables, written=written, columns=s.columns, stars=s.stars,
            column_patterns=s.column_patterns, owned=owned,
            read_only=read_only, reason=reason, line=line, code=code,
        ))
        for f in s.files:
            host = remote_host(f)
            if host is not None:
                out.append(Request(Action.NET_CONNECT, f, host=host or None, line=line, code=code))
            else:
                out.append(Request(Action.FILE_READ, f, path=_path(f, ctx.root), line=line, code=code))
    return out


def check_sql(guard: Guard, text: str, *, ctx: SqlContext | None = None, line: int | None = None,
              kind: str = "sql", export_action: Action = Action.SQL_EXPORT) -> list[Decision]:
    """Decide every statement of *text* before any runs; record each; raise GuardDenied listing all denials."""
    ctx = ctx or SqlContext(root=guard.policy.root, source_paths=source_paths(guard.policy))
    reqs = to_requests(analyze(text), ctx, line, export_action=export_action)
    return guard.check_all(((r, kind, {}) for r in reqs), record=True)
