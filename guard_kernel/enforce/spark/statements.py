"""``spark.sql`` and the catalog: every statement decided at the driver before Spark runs anything.

The one classifier reads the text in the Spark dialect; this module places each table name in
Spark's catalog (current database, policy ``spark: {tables, databases}`` sources, the session's
own tables and temporary views) and asks the one decision function.  ``format.`path``` names
are file reads; ``LOCATION '…'`` is a write at that path.  A table the session creates becomes
its own (``spark:db.table`` in ``Guard.owned_tables``) unless it existed before.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from guard_kernel.decision.errors import GuardDenied
from guard_kernel.decision.request import Request, TableRef
from guard_kernel.policy.actions import Action
from guard_kernel.policy.model import Policy
from guard_kernel.policy.paths import remote_host, resolve

if TYPE_CHECKING:
    from guard_kernel.analysis.sql.classify import SqlStatement
    from guard_kernel.decision.guard import Guard

__all__ = ["Verdict", "check_sql", "current_database", "owned_key", "resolve_table", "source_of", "spark_cwd",
           "table_written"]

_NOT_DATABASES = frozenset({"spark_catalog", "temp", "global_temp"})
"""Qualifiers that are not a database: the table's database is unknown (matched by name alone)."""
_LOCATION = re.compile(r"\bLOCATION\s+'((?:[^'\\]|\\.)*)'", re.I)


@dataclass(frozen=True)
class Verdict:
    """The requests of one ``spark.sql`` text, kept while the policy, database and owned tables stay."""

    stmts: tuple[SqlStatement, ...]
    requests: tuple[Request, ...]
    created: tuple[str, ...]
    """Owned-table keys the statements create (added after they ran)."""
    policy: Policy
    database: str
    owned: frozenset[str]
    cwd: str


def source_of(policy: Policy, name: str, database: str | None) -> str | None:
    """The policy source a Spark table belongs to (``spark: {tables, databases}``), if any.

    *database* None means unknown: any source table of that name counts (fail closed)."""
    for s in policy.sources.values():
        if not (s.spark_tables or s.spark_databases):
            continue
        if database is not None and database in s.spark_databases:
            return s.name
        for t in s.spark_tables:
            db, _, tname = t.rpartition(".")
            if tname == name and (not db or database is None or db == database):
                return s.name
    return None


def owned_key(database: str, name: str) -> str:
    """How a Spark table the session created is kept in ``Guard.owned_tables``."""
    return f"spark:{database}.{name}"


def resolve_table(policy: Policy, t: TableRef, database: str) -> tuple[TableRef, str | None]:
    """*t* with its database and source filled in, and its owned-table key (None: a temp view)."""
    if t.catalog == "temp":
        return TableRef(t.name, "temp"), None
    db: str | None = t.catalog or database
    if db in _NOT_DATABASES:
        db = None
    return TableRef(t.name, db, source_of(policy, t.name, db)), owned_key(db or "?", t.name)


def current_database(session: Any) -> str:
    """The session's current database (``default`` when it cannot be asked)."""
    try:
        return str(session.catalog.currentDatabase()).lower()
    except Exception:
        return "default"


_cwds: dict[int, str] = {}


def spark_cwd(session: Any) -> str:
    """The folder Spark resolves relative paths against: the JVM's working directory (not the
    kernel's, which may have changed since the JVM started); the kernel's for Spark Connect."""
    if session is None:
        return os.getcwd()
    key = id(session)
    cwd = _cwds.get(key)
    if cwd is None:
        jvm = getattr(session, "_jvm", None)
        try:
            cwd = str(jvm.System.getProperty("user.dir")) if jvm is not None else os.getcwd()
        except Exception:
            cwd = os.getcwd()
        _cwds[key] = cwd
    return cwd


def _file_table(t: TableRef) -> str | None:
    """The path of a ``parquet.`/path```-style name, else None."""
    from guard_kernel.analysis.sql.dialects.spark import SPARK_FILE_FORMATS

    if t.catalog in SPARK_FILE_FORMATS and ("/" in t.name or ":" in t.name):
        return t.name
    return None


def _file_request(path: str, action: Action, root: str, code: str) -> Request:
    host = remote_host(path)
    if host is not None:
        return Request(Action.NET_CONNECT, path, host=host or None, code=code)
    real = resolve(path[7:] if path.startswith("file://") else path, root)
    return Request(action, path, path=real, code=code)


def _requests(g: Guard, stmts: tuple[SqlStatement, ...], database: str, exists: Callable[[str, str], bool],
              root: str) -> tuple[tuple[Request, ...], tuple[str, ...]]:
    policy = g.policy
    out: list[Request] = []
    created_keys: list[str] = []
    owned_now = set(g.owned_tables)
    for s in stmts:
        code = s.text.strip()
        extra: list[Request] = []
        tables: list[TableRef] = []
        for t in s.tables:
            path = _file_table(t)
            if path is not None:
                extra.append(_file_request(path, Action.FILE_READ, root, code))
            else:
                tables.append(resolve_table(policy, t, database)[0])
        written: list[TableRef] = []
        owned = bool(s.written)
        created = {(t.catalog, t.name) for t in s.created}
        for t in s.written:
            ref, key = resolve_table(policy, t, database)
            written.append(ref)
            if key is None:
                continue  # a temporary view: session-local, always the session's own
            mine = key in owned_now or ((t.catalog, t.name) in created and not exists(ref.catalog or database, t.name))
            if (t.catalog, t.name) in created and ref.source is None and mine:
                created_keys.append(key)
                owned_now.add(key)
            owned = owned and ref.source is None and mine
        for m in _LOCATION.finditer(s.text):  # CREATE TABLE … LOCATION '…': the files are written there
            extra.append(_file_request(m.group(1), Action.FILE_WRITE, root, code))
        req = Request(s.action, s.resource, tables=tuple(tables), written=tuple(written), columns=s.columns,
                      stars=s.stars, column_patterns=s.column_patterns, owned=owned, reason=s.reason, code=code)
        if s.macros and req.action is not Action.SQL_UNKNOWN:
            req = replace(req, action=Action.SQL_UNKNOWN,
                          reason=f"unknown table function {s.macros[0]}(): Spark may run anything under that name")
        out.append(req)
        out.extend(extra)
        for f in s.files:
            out.append(_file_request(f, Action.FILE_READ, root, code))
    return tuple(out), tuple(created_keys)


_cache: dict[str, Verdict] = {}


def verdict(g: Guard, text: str, session: Any) -> Verdict:
    """The (cached) requests of *text* on *session*."""
    from guard_kernel.analysis.sql.classify import analyze

    database = current_database(session)
    cwd = os.getcwd()
    v = _cache.get(text)
    if (v is not None and v.policy is g.policy and v.database == database and v.owned == g.owned_tables
            and v.cwd == cwd):
        return v

    def exists(db: str, name: str) -> bool:
        try:
            with g.quiet():
                return bool(session.catalog.tableExists(name, db))
        except Exception:
            return True  # cannot tell: not the session's own (fail closed)

    stmts = analyze(text, "spark")
    with g.quiet():
        root = spark_cwd(session)
    reqs, created = _requests(g, stmts, database, exists, root)
    v = Verdict(stmts, reqs, created, g.policy, database, frozenset(g.owned_tables), cwd)
    if len(_cache) >= 512:
        _cache.clear()
    _cache[text] = v
    return v


def check_sql(g: Guard, text: str, session: Any, via: str = "spark.sql") -> Verdict:
    """Decide every statement of *text*; record them; raise :class:`GuardDenied` on any denial."""
    if not isinstance(text, str):
        d = g.decide(Request(Action.SQL_UNKNOWN, "spark.sql", reason="the statement is not a string", code=via))
        g.record_decision(d, "sql", via=via)
        raise GuardDenied(d)
    v = verdict(g, text, session)
    g.check_all(((r, "sql", {"via": via, "database": f"spark:{v.database}"}) for r in v.requests), record=True)
    return v


def after(g: Guard, v: Verdict) -> None:
    """The statements ran: the tables they created are the session's own."""
    g.owned_tables.update(v.created)


def table_written(g: Guard, session: Any, name: str, action: Action, via: str, *, creates: bool) -> str | None:
    """Decide a write to catalog table *name* (``db.table`` or ``table``) by a DataFrame writer;
    return the owned-table key to add once the write succeeded (a table it creates), else None."""
    parts = name.replace("`", "").lower().split(".")
    database = current_database(session) if len(parts) < 2 else parts[-2]
    ref, key = resolve_table(g.policy, TableRef(parts[-1], database), database)
    new = False
    if key is not None and key not in g.owned_tables and creates and ref.source is None:
        try:
            with g.quiet():
                new = not bool(session.catalog.tableExists(ref.name, ref.catalog))
        except Exception:
            new = False
    owned = key is None or (ref.source is None and (key in g.owned_tables or new))
    req = Request(Action.SQL_DDL if new else action, str(ref), tables=(ref,), written=(ref,), owned=owned,
                  code=via)
    g.check(req, "sql", via=via)
    return key if new else None
