"""Statement classification, in any dialect: the dialect splits and types, sqlglot reads the contents.

:func:`analyze` is the entry point (re-exported by :mod:`guard_kernel.analysis.sql.requests`); it
never raises.  How a string splits into statements is the dialect's (:mod:`.dialects`: DuckDB's
own lexer and parser, sqlglot's tokenizer for PostgreSQL and SQLite).  When the dialect names the
statement type (DuckDB), sqlglot's tree must agree with it; otherwise the type is sqlglot's.
Tables, columns, stars and files are read by :mod:`.refs`.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

from guard_kernel.analysis.sql import dialects
from guard_kernel.analysis.sql.cap import cap_plan
from guard_kernel.analysis.sql.dialects.base import SqlDialect
from guard_kernel.analysis.sql.dialects.duckdb import parse_pivot
from guard_kernel.analysis.sql.refs import (
    READ_FUNCS,
    Facts,
    collect,
    func_name,
    literal_strings,
    star_of,
    table_ref,
)
from guard_kernel.decision.request import StarRef, TableRef
from guard_kernel.policy.actions import Action
from guard_kernel.policy.paths import URL

__all__ = ["Attach", "SqlStatement", "analyze"]


@dataclass(frozen=True)
class Attach:
    """An ATTACH / DETACH / USE: the database file, its alias and how it is opened."""

    path: str | None
    """The file as written (ATTACH only)."""
    alias: str | None
    """Catalog alias (lower-case); ATTACH without AS uses the file stem."""
    read_only: bool = False
    """``(READ_ONLY)`` given (DETACH and USE count as read-only: they change no data)."""
    options: bool = False
    """Whether an option list was given at all (a READ_ONLY rewrite is only safe without one)."""
    verb: str = "attach"
    """attach, detach or use."""
    engine: str = "duckdb"
    """What the file or string is: ``duckdb``, ``sqlite`` or ``postgres`` (DuckDB's scanners:
    ``TYPE sqlite``/``TYPE postgres`` or a ``sqlite:``/``postgres:`` prefix); *path* is then
    the SQLite file or the libpq connection string."""


@dataclass(frozen=True)
class SqlStatement:
    """What one SQL statement does, as far as the classifier can tell."""

    text: str
    action: Action
    kind: str
    """DuckDB statement type name (SELECT, INSERT, CREATE, COPY…)."""
    tables: tuple[TableRef, ...] = ()
    """Tables read or written (lower-case, catalog when qualified)."""
    written: tuple[TableRef, ...] = ()
    """Tables changed (INSERT/UPDATE/DELETE/DDL targets)."""
    created: tuple[TableRef, ...] = ()
    """Objects created (CREATE TABLE/VIEW/MACRO…)."""
    columns: tuple[str, ...] = ()
    stars: tuple[StarRef, ...] = ()
    column_patterns: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    """Literal files read, as written."""
    export_path: str | None = None
    """Target of COPY … TO / EXPORT DATABASE, as written."""
    attach: Attach | None = None
    returns_rows: bool = False
    """A read whose rows can come into Python (the row cap applies)."""
    temporary: bool = False
    """CREATE TEMP …: the created objects live in the temp catalog."""
    reason: str | None = None
    """Why the statement is sql.unknown (or a note)."""
    cap_append: bool = False
    """The row cap may be appended as ``LIMIT n`` (a plain SELECT: no LIMIT, OFFSET, CTE, INTO…);
    decided while the parse tree exists so :func:`~guard_kernel.analysis.sql.cap.cap_statement` is string work."""
    own_limit: int | None = None
    """The statement's own literal ``LIMIT n`` (plain SELECT): left alone when n is within the cap."""
    macros: tuple[str, ...] = ()
    """Table functions the guard does not know (lower-case): allowed only as table macros this
    connection created in the session (:func:`guard_kernel.analysis.sql.requests.to_requests` decides), else
    ``sql.unknown``.  A macro made elsewhere might be anything, and a name that is not a macro on
    this connection may be a built-in (``json_execute_serialized_sql`` runs SQL unseen)."""
    created_macros: tuple[str, ...] = ()
    """Table macros this statement creates (``CREATE [TEMP] MACRO m(…) AS TABLE …``)."""
    dropped_macros: tuple[str, ...] = ()
    """Macros this statement drops, or replaces with a scalar macro."""
    functions: tuple[str, ...] = ()
    """Functions sqlglot does not know that the statement calls (lower-case): a database may store
    one that reads a protected table (the layers check them against the catalog)."""
    unlocks: bool = False
    """Would undo a read-only lock the guard put on the connection (``SET
    default_transaction_read_only = off``, ``BEGIN READ WRITE``, ``PRAGMA query_only = OFF``,
    ``RESET ALL``…): on a source connection it is a write to the source."""

    @property
    def resource(self) -> str:
        """Human-readable target: tables, path or the statement's first words."""
        if self.export_path:
            return self.export_path
        if self.attach is not None:
            return self.attach.path or self.attach.alias or self.attach.verb
        objs = self.written or self.created or self.tables
        # DataFrames and other Python objects are scanned under registry names like __duckdb_source_…
        names = [str(t) for t in objs if not t.name.startswith("__duckdb_")]
        if objs and not names and not self.files:
            return "python data"
        if names:
            return ", ".join(dict.fromkeys(names))
        if self.files:
            return ", ".join(self.files)
        words = self.text.strip().split()
        return " ".join(words[:2])[:80] if words else "(empty)"



_READ_PRAGMAS = frozenset({
    "version", "table_info", "show", "show_tables", "show_tables_expanded", "database_list", "database_size",
    "storage_info", "platform", "metadata_info", "user_agent", "collations", "functions", "show_databases",
})

# sqlglot expression types that agree with each DuckDB statement type
_AGREE: dict[str, tuple[type[exp.Expr], ...]] = {
    "SELECT": (exp.Select, exp.SetOperation, exp.Describe, exp.Show, exp.Summarize, exp.Pivot, exp.Values,
               exp.Subquery),
    "MULTI": (exp.Pivot,),
    "INSERT": (exp.Insert,),
    "UPDATE": (exp.Update,),
    "DELETE": (exp.Delete, exp.TruncateTable),
    "MERGE_INTO": (exp.Merge,),
    "CREATE": (exp.Create,),
    "ALTER": (exp.Alter, exp.Comment),
    "DROP": (exp.Drop,),
    "COPY": (exp.Copy,),
    "ATTACH": (exp.Attach,),
    "DETACH": (exp.Detach,),
    "SET": (exp.Set, exp.Use),
    "PRAGMA": (exp.Pragma,),
    "LOAD": (exp.Install,),
    "TRANSACTION": (exp.Transaction, exp.Commit, exp.Rollback),
    "VACUUM": (exp.Analyze,),
}
_WORD = re.compile(r"\s*(?:(?:--[^\n]*\n?)|(?:/\*.*?\*/)|\s)*([A-Za-z_]+)", re.S)
_tls = threading.local()


def _parse(text: str, dialect: str = "duckdb") -> list[exp.Expr | None]:
    """``Dialect.parse(text)`` with the tokenizer and parser kept per thread and dialect: both
    reset themselves on every call, and building them anew costs ~10 µs a statement."""
    pairs: dict[str, tuple[Any, Any]] = _tls.__dict__.setdefault("pairs", {})
    pair = pairs.get(dialect)
    if pair is None:
        d = Dialect.get_or_raise(dialect)
        pair = pairs[dialect] = (d.tokenizer(), d.parser())
    with warnings.catch_warnings():  # sqlglot warns before falling back to exp.Command
        warnings.simplefilter("ignore")
        return cast("list[exp.Expr | None]", pair[1].parse(pair[0].tokenize(text), text))


def _words(text: str, n: int = 3) -> list[str]:
    """The first *n* keywords of *text*, comments skipped, upper-case."""
    out: list[str] = []
    pos = 0
    while len(out) < n:
        m = _WORD.match(text, pos)
        if not m:
            break
        out.append(m.group(1).upper())
        pos = m.end()
    return out


def _statement(text: str, kind: str) -> SqlStatement:
    """Classify one statement whose DuckDB type is *kind*."""
    # only CREATE/DROP … SECRET and SHOW look past the first keyword (one regex match each)
    words = _words(text, 3 if kind in ("CREATE", "DROP") else 1)
    first = words[0] if words else ""
    if first == "SHOW":
        words = _words(text)

    def unknown(reason: str) -> SqlStatement:
        return SqlStatement(text, Action.SQL_UNKNOWN, kind, reason=reason)

    if kind in ("PREPARE", "EXECUTE") or (kind == "DROP" and first == "DEALLOCATE"):
        return unknown("prepared statements run by name cannot be checked; use parameters (?, $1) instead")
    if kind == "EXPLAIN":
        m = re.match(r"\s*(?:(?:--[^\n]*\n?)|(?:/\*.*?\*/)|\s)*EXPLAIN\s+(ANALY[SZ]E\s+)?", text, re.I | re.S)
        if not m:
            return unknown("EXPLAIN not understood")
        inner = analyze(text[m.end():])
        if len(inner) != 1 or inner[0].action is Action.SQL_UNKNOWN:
            return unknown(inner[0].reason or "EXPLAIN of an unknown statement" if inner else "empty EXPLAIN")
        s = inner[0]
        action = s.action if m.group(1) else Action.SQL_READ  # EXPLAIN ANALYZE runs the statement
        return SqlStatement(text, action, kind, s.tables, s.written if m.group(1) else (),
                            s.created if m.group(1) else (), s.columns, s.stars, s.column_patterns, s.files,
                            s.export_path if m.group(1) else None, None, True, macros=s.macros)
    if kind == "EXPORT":
        m = re.search(r"EXPORT\s+DATABASE\s+(?:\w+\s+TO\s+)?'((?:[^']|'')*)'", text, re.I)
        if not m:
            return unknown("EXPORT DATABASE target not understood")
        return SqlStatement(text, Action.SQL_EXPORT, kind, export_path=m.group(1).replace("''", "'"))
    if kind == "PRAGMA" and first == "IMPORT":
        m = re.search(r"IMPORT\s+DATABASE\s+'((?:[^']|'')*)'", text, re.I)
        if not m:
            return unknown("IMPORT DATABASE source not understood")
        return SqlStatement(text, Action.SQL_DDL, kind, files=(m.group(1).replace("''", "'"),))
    if kind == "CREATE" and "SECRET" in words[:4]:
        return SqlStatement(text, Action.SQL_CONFIG, kind, reason="CREATE SECRET stores engine credentials")
    if kind == "DROP" and "SECRET" in words[:4]:
        return SqlStatement(text, Action.SQL_CONFIG, kind)
    if kind == "SET" and first == "RESET":
        return SqlStatement(text, Action.SQL_CONFIG, kind)
    if kind == "LOAD":
        return SqlStatement(text, Action.SQL_EXTENSION, kind)
    if kind == "CALL":
        if first in ("CHECKPOINT", "FORCE"):
            return SqlStatement(text, Action.SQL_CONFIG, kind)
        m = re.match(r"\s*CALL\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(", text, re.I)
        fname = m.group(1).lower() if m else ""
        if fname in READ_FUNCS or fname.startswith("duckdb_"):
            try:
                node = sqlglot.parse_one("SELECT * FROM " + text.strip().rstrip(";")[m.end(1) - len(fname):],
                                         dialect="duckdb") if m else None
            except sqlglot.errors.SqlglotError as e:
                return unknown(f"CALL not understood: {e}")
            facts = Facts(inner=analyze)
            if node is not None:
                collect(node, facts)
            if facts.unknown:
                return unknown(facts.unknown)
            return SqlStatement(text, Action.SQL_READ, kind, tuple(facts.tables), columns=tuple(facts.columns),
                                stars=tuple(facts.stars), files=tuple(facts.files), returns_rows=True,
                                macros=tuple(facts.macros))
        return unknown(f"CALL of {fname or 'something'}() is not known to be read-only")
    if kind == "VACUUM" or (kind == "SELECT" and first == "SHOW" and len(words) < 2):
        return SqlStatement(text, Action.SQL_CONFIG, kind)
    if kind == "SELECT" and first == "SHOW":  # sqlglot reads only some SHOW forms
        return SqlStatement(text, Action.SQL_READ, kind, returns_rows=True,
                            tables=() if words[1] in ("TABLES", "ALL", "DATABASES") else
                            (TableRef(words[1].lower()),))

    try:
        trees = [t for t in _parse(text) if t is not None]
    except sqlglot.errors.SqlglotError as e:
        trees = parse_pivot(text) if first in ("PIVOT", "UNPIVOT") else []
        if not trees:
            return unknown(f"sqlglot could not parse it: {str(e).splitlines()[0][:200]}")
    if len(trees) != 1:
        return unknown(f"DuckDB saw one statement, sqlglot {len(trees)}")
    tree = trees[0]
    if isinstance(tree, exp.Command):
        return unknown(f"{tree.name} is not parsed by the classifier")
    agree = _AGREE.get(kind)
    if kind == "MULTI" and isinstance(tree, (exp.Select, exp.SetOperation)) and _pivots(tree):
        agree = (exp.Select, exp.SetOperation)  # a query with a PIVOT … ON inside: DuckDB adds ENUM types
    if agree is None or not isinstance(tree, agree):
        return unknown(f"DuckDB says {kind}, sqlglot says {type(tree).__name__}")
    return _classify(text, kind, tree)


_UNLOCK = re.compile(r"\bREAD\s+WRITE\b|\b(?:default_)?transaction_read_only\b|\bquery_only\b|"
                     r"\bRESET\s+ALL\b|\bSESSION\s+AUTHORIZATION\b|\bROLE\b", re.I)
"""Words of a SET/RESET/BEGIN/START/PRAGMA that could lift the read-only lock on a source connection."""
_KINDS = tuple((types, kind) for kind, types in _AGREE.items() if kind != "MULTI")
_EXPLAIN = re.compile(r"\s*(?:(?:--[^\n]*\n?)|(?:/\*.*?\*/)|\s)*EXPLAIN\s+(\(([^)]*)\)\s*|ANALY[SZ]E\s+)?", re.I | re.S)
_PRAGMA = re.compile(r"\s*PRAGMA\s+(?:\"?(\w+)\"?\s*\.\s*)?(\w+)\s*(=|\()?\s*[\"'`]?(\w*)", re.I)


def _server_statement(text: str, d: SqlDialect) -> SqlStatement:
    """Classify one statement of a server dialect (PostgreSQL, SQLite): its kind is sqlglot's."""
    words = _words(text, 3)
    first = words[0] if words else ""

    def unknown(reason: str) -> SqlStatement:
        return SqlStatement(text, Action.SQL_UNKNOWN, first or "EMPTY", reason=reason)

    if (first in ("SET", "RESET", "BEGIN", "START", "PRAGMA", "DISCARD") and _UNLOCK.search(text)
            and (first != "PRAGMA" or re.search(r"query_only\s*(=|\()", text, re.I))):
        return SqlStatement(text, Action.SQL_CONFIG, first, unlocks=True,
                            reason="it would lift the read-only lock the guard put on the connection")
    if first in ("RESET", "DISCARD"):
        return SqlStatement(text, Action.SQL_CONFIG, first)
    if first in ("START", "SAVEPOINT", "RELEASE") or (first == "ROLLBACK" and "TO" in words):
        return SqlStatement(text, Action.SQL_READ, "TRANSACTION", reason="transaction control")
    if d.name == "spark":
        special = spark_statement(text, words)
        if special is not None:
            return special
    if d.name == "postgres" and first == "SHOW":  # a setting's value
        return SqlStatement(text, Action.SQL_READ, "SHOW", returns_rows=True)
    if first == "EXPLAIN":
        m = _EXPLAIN.match(text)
        if not m:
            return unknown("EXPLAIN not understood")
        runs = bool(m.group(1)) and ("ANALY" in m.group(1).upper())  # EXPLAIN ANALYZE runs the statement
        inner = analyze(text[m.end():], d.name)
        if len(inner) != 1 or inner[0].action is Action.SQL_UNKNOWN:
            return unknown(inner[0].reason or "EXPLAIN of an unknown statement" if inner else "empty EXPLAIN")
        s = inner[0]
        if runs and s.action is not Action.SQL_READ:
            return unknown("EXPLAIN ANALYZE runs the statement it explains; explain a read, or run it plainly")
        return SqlStatement(text, Action.SQL_READ, "EXPLAIN", s.tables, columns=s.columns, stars=s.stars,
                            returns_rows=True, macros=s.macros)
    if d.name == "sqlite" and first == "PRAGMA":
        m = _PRAGMA.match(text)
        if not m:
            return unknown("PRAGMA not understood")
        name, op, arg = m.group(2).lower(), m.group(3), m.group(4).lower()
        if name in d.vocabulary.read_pragmas and op != "=":
            tables = (TableRef(arg, m.group(1).lower() if m.group(1) else None),) if op == "(" and arg else ()
            return SqlStatement(text, Action.SQL_READ, "PRAGMA", tables, returns_rows=True)
        return SqlStatement(text, Action.SQL_CONFIG, "PRAGMA")
    try:
        trees = [t for t in _parse(text, d.name) if t is not None]
    except sqlglot.errors.SqlglotError as e:
        return unknown(f"sqlglot ({d.name}) could not parse it: {str(e).splitlines()[0][:200]}")
    if len(trees) != 1:
        return unknown(f"one statement expected, sqlglot ({d.name}) read {len(trees)}")
    tree = trees[0]
    if isinstance(tree, exp.Command):
        return unknown(f"{tree.name} statements are not understood by the guard ({d.name})")
    kind = next((k for types, k in _KINDS if isinstance(tree, types)), None)
    if kind is None or isinstance(tree, (exp.Install, exp.Use, exp.Summarize, exp.Pivot, exp.Show)):
        return unknown(f"{type(tree).__name__} is not a statement the guard knows in {d.name}")
    vocab = d.vocabulary
    for f in tree.find_all(exp.Func):
        name = func_name(f)
        why = vocab.denied_functions.get(name) or next((w for p, w in vocab.denied_prefixes if name.startswith(p)),
                                                       None)
        if why:
            return unknown(f"{name}() {why}")
    if isinstance(tree, exp.Copy):
        return _server_copy(text, tree, d)
    if isinstance(tree, exp.Attach):  # SQLite: a file the guard cannot hold to read-only
        target = tree.this.this if isinstance(tree.this, exp.Alias) else tree.this
        path = target.this if isinstance(target, exp.Literal) and target.is_string else None
        if path is None:
            return unknown("ATTACH needs a literal path")
        return SqlStatement(text, Action.SQL_ATTACH, kind, attach=Attach(path, None, False, True))
    if isinstance(tree, exp.Select) and tree.args.get("into") is not None:
        return unknown("SELECT … INTO creates a table: use CREATE TABLE … AS SELECT")
    if kind == "SELECT" and tree.find(exp.Insert, exp.Update, exp.Delete, exp.Merge) is not None:
        return unknown("a query with a data-modifying WITH clause: run the write as a statement of its own")
    if isinstance(tree, exp.Create) and str(tree.args.get("kind") or "").upper() in ("TRIGGER", "RULE", "POLICY"):
        return unknown("a trigger, rule or policy runs code on another table's reads and writes")
    if d.name == "spark":
        if tree.find(exp.QueryTransform) is not None:
            return unknown("TRANSFORM … USING runs a program on the executors")
        if isinstance(tree, exp.Create) and str(tree.args.get("kind") or "").upper() == "FUNCTION":
            return unknown("CREATE FUNCTION loads code (a JVM class or a jar) into Spark")
    return _classify(text, kind, tree, vocab.read_functions)


_SPARK_TABLE = re.compile(r"\s*(?:CACHE\s+(?:LAZY\s+)?|UNCACHE\s+|REFRESH\s+)TABLE\s+(?:IF\s+EXISTS\s+)?"
                          r"([`\w.]+)\s*(?:OPTIONS\s*\([^)]*\)\s*)?(AS\s+)?", re.I)


def spark_statement(text: str, words: list[str]) -> SqlStatement | None:
    """Spark statements sqlglot does not read or reads as another kind, or None for the tree.

    ``CACHE``/``UNCACHE``/``REFRESH``/``CLEAR CACHE`` change no data (``CACHE TABLE c AS SELECT``
    reads its query and makes a temporary view); ``SHOW``/``USE`` read the catalog.
    """
    first = words[0] if words else ""
    if first in ("CACHE", "UNCACHE", "REFRESH"):
        if first == "REFRESH" and words[1:2] != ["TABLE"]:  # REFRESH FUNCTION / REFRESH 'path'
            return SqlStatement(text, Action.SQL_READ, "REFRESH", reason="cache maintenance")
        m = _SPARK_TABLE.match(text)
        if m is None:
            return SqlStatement(text, Action.SQL_UNKNOWN, first, reason=f"{first} not understood")
        parts = m.group(1).replace("`", "").lower().split(".")
        ref = TableRef(parts[-1], parts[-2] if len(parts) > 1 else None)
        if not m.group(2):
            return SqlStatement(text, Action.SQL_READ, first, (ref,), reason="cache maintenance")
        inner = analyze(text[m.end():], "spark")
        if len(inner) != 1 or inner[0].action is not Action.SQL_READ:
            return SqlStatement(text, Action.SQL_UNKNOWN, first, reason=inner[0].reason if inner else "empty query")
        s = inner[0]
        view = TableRef(ref.name, "temp")
        return SqlStatement(text, Action.SQL_DDL, first, (*s.tables, view), (view,), (view,), s.columns, s.stars,
                            s.column_patterns, s.files, temporary=True, macros=s.macros)
    if first == "CLEAR" and words[1:2] == ["CACHE"]:
        return SqlStatement(text, Action.SQL_READ, "CLEAR", reason="cache maintenance")
    if first == "SHOW":
        return SqlStatement(text, Action.SQL_READ, "SHOW", returns_rows=True)
    if first == "USE":
        return SqlStatement(text, Action.SQL_READ, "USE", reason="changes the current database")
    return None


def _server_copy(text: str, tree: exp.Copy, d: SqlDialect) -> SqlStatement:
    """PostgreSQL COPY: only STDIN (a write of the table) and STDOUT (an export of rows the row
    cap cannot count) stay on the client's side; a server file or PROGRAM does not."""
    files = tree.args.get("files") or []
    ends = [f.name.upper() for f in files if isinstance(f, exp.Identifier)]
    if len(files) != 1 or len(ends) != 1 or ends[0] not in ("STDIN", "STDOUT"):
        what = "runs a program on the database server" if "PROGRAM" in ends else \
            "reaches a file on the database server, which the guard cannot judge"
        return SqlStatement(text, Action.SQL_UNKNOWN, "COPY", reason=f"COPY {what}; use COPY … TO STDOUT / FROM STDIN")
    facts = Facts(inner=analyze)
    target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
    if ends[0] == "STDIN":
        if not isinstance(target, exp.Table):
            return SqlStatement(text, Action.SQL_UNKNOWN, "COPY", reason="COPY FROM STDIN needs a table")
        ref = table_ref(target)
        return SqlStatement(text, Action.SQL_WRITE, "COPY", (ref,), (ref,))
    if isinstance(tree.this, exp.Table):
        star_of(tree.this, facts)
    else:
        collect(tree.this, facts)
    if facts.unknown:
        return SqlStatement(text, Action.SQL_UNKNOWN, "COPY", reason=facts.unknown)
    return SqlStatement(text, Action.SQL_EXPORT, "COPY", tuple(facts.tables), columns=tuple(facts.columns),
                        stars=tuple(facts.stars), reason="COPY … TO STDOUT: rows leave past the row cap")


def _pivots(tree: exp.Expr) -> bool:
    """Whether *tree* holds a PIVOT (not an UNPIVOT): what makes DuckDB run a query as MULTI."""
    return any(not p.args.get("unpivot") for p in tree.find_all(exp.Pivot))


def _classify(text: str, kind: str, tree: exp.Expr, read_functions: frozenset[str] = frozenset()) -> SqlStatement:
    facts = Facts(inner=analyze, read_functions=read_functions)
    action = Action.SQL_READ
    export_path = None
    attach = None
    temporary = False
    returns_rows = False
    reason = None
    if isinstance(tree, (exp.Select, exp.SetOperation, exp.Values, exp.Subquery, exp.Pivot, exp.Summarize)):
        returns_rows = True
        if isinstance(tree, (exp.Summarize, exp.Pivot)):
            star_of(tree.this, facts)
        collect(tree, facts)
    elif isinstance(tree, (exp.Describe, exp.Show)):
        returns_rows = True
        collect(tree, facts)
        facts.stars.clear()  # DESCRIBE t shows the schema, not the values
        facts.columns.clear()
    elif isinstance(tree, (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.TruncateTable)):
        action = Action.SQL_DDL if isinstance(tree, exp.TruncateTable) else Action.SQL_WRITE
        targets = tree.expressions if isinstance(tree, exp.TruncateTable) else [tree.this]
        for t in targets:
            t = t.this if isinstance(t, exp.Schema) else t
            if isinstance(t, exp.Table):
                facts.written[table_ref(t)] = None
        collect(tree, facts)
        returns_rows = tree.args.get("returning") is not None
    elif isinstance(tree, exp.Create):
        action = Action.SQL_DDL
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        props = tree.args.get("properties")
        temporary = bool(props and any(isinstance(p, exp.TemporaryProperty) for p in props.expressions))
        if isinstance(target, exp.Index) and isinstance(target.args.get("table"), exp.Table):
            facts.written[table_ref(target.args["table"])] = None  # an index changes the table it is on
        elif isinstance(target, exp.Table):
            ref = table_ref(target)
            if temporary and ref.catalog is None:
                ref = TableRef(ref.name, "temp")
            facts.created[ref] = None
            facts.written[ref] = None
        elif isinstance(target, (exp.UserDefinedFunction, exp.Identifier, exp.Dot)):
            name = target.this if isinstance(target, exp.UserDefinedFunction) else target
            qualified = table_ref(name) if isinstance(name, exp.Table) else TableRef(str(getattr(name, "name", name)).lower())
            ref = TableRef(qualified.name, "temp" if temporary and qualified.catalog is None else qualified.catalog)
            facts.created[ref] = None
            facts.written[ref] = None  # a macro or type made in a catalog: owned there like a table
        if tree.expression is not None:
            collect(tree.expression, facts)
        for ref in list(facts.tables):
            if ref in facts.created:
                del facts.tables[ref]
    elif isinstance(tree, (exp.Alter, exp.Drop, exp.Comment)):
        action = Action.SQL_DDL
        targets = tree.args.get("tables") or [] if isinstance(tree, exp.Drop) else [tree.this]
        for t in targets:
            if isinstance(t, exp.Table):
                facts.written[table_ref(t)] = None
            elif isinstance(t, exp.Column):  # COMMENT ON COLUMN t.c
                facts.written[TableRef(t.table.lower() or t.name.lower())] = None
    elif isinstance(tree, exp.Copy):
        files = [f.this for f in tree.args.get("files") or [] if isinstance(f, exp.Literal) and f.is_string]
        if len(files) != len(tree.args.get("files") or []) or len(files) != 1:
            return SqlStatement(text, Action.SQL_UNKNOWN, kind, reason="COPY needs one literal file path")
        if tree.args.get("kind"):  # COPY t FROM 'file': writes the table, reads the file
            action = Action.SQL_WRITE
            t = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
            if isinstance(t, exp.Table):
                facts.written[table_ref(t)] = None
                facts.tables[table_ref(t)] = None
            facts.files[files[0]] = None
        else:
            action = Action.SQL_EXPORT
            export_path = files[0]
            if isinstance(tree.this, exp.Table):
                star_of(tree.this, facts)
            else:
                collect(tree.this, facts)
    elif isinstance(tree, exp.Attach):
        action = Action.SQL_ATTACH
        target = tree.this
        alias = None
        if isinstance(target, exp.Alias):
            alias = target.alias.lower()
            target = target.this
        if not (isinstance(target, exp.Literal) and target.is_string):
            return SqlStatement(text, Action.SQL_UNKNOWN, kind, reason="ATTACH needs a literal path")
        path = target.this
        opts = [o.sql("duckdb").upper().replace(" ", "") for o in tree.expressions]
        ro = any(o in ("READ_ONLY", "READ_ONLYTRUE", "READ_ONLY=TRUE") for o in opts)
        types = [o[4:].strip("'\"").lower() for o in opts if o.startswith("TYPE")]
        engine = types[0] if types else "duckdb"
        prefix, _, rest = path.partition(":")
        if prefix.lower() in ("sqlite", "postgres", "postgresql") and not rest.startswith("//"):
            engine, path = prefix.lower(), rest  # DuckDB's scanner prefixes
        elif prefix.lower() in ("postgres", "postgresql"):
            engine = "postgres"  # a postgresql:// URL
        engine = {"postgresql": "postgres", "postgres_scanner": "postgres", "sqlite_scanner": "sqlite"}.get(
            engine, engine)
        if engine not in ("duckdb", "sqlite", "postgres"):
            return SqlStatement(text, Action.SQL_UNKNOWN, kind,
                                reason=f"ATTACH of TYPE {engine} reaches a database the guard does not judge")
        if alias is None:
            base = os.path.basename(path.split(":", 1)[-1]) if ":" in path and not URL.match(path) else \
                os.path.basename(path)
            alias = (base.split(".", 1)[0] or "memory").lower()
        attach = Attach(path, alias, ro, bool(opts), engine=engine)
    elif isinstance(tree, exp.Detach):
        action = Action.SQL_ATTACH
        attach = Attach(None, tree.this.name.lower() if tree.this else None, True, verb="detach")
    elif isinstance(tree, exp.Use):
        action = Action.SQL_ATTACH
        attach = Attach(None, tree.this.sql("duckdb").lower() if tree.this else None, True, verb="use")
    elif isinstance(tree, exp.Set):
        action = Action.SQL_CONFIG
        for item in tree.expressions:  # SET VARIABLE x = (SELECT …): the value is a read
            if isinstance(item, exp.SetItem) and isinstance(item.this, exp.EQ):
                collect(item.this.expression, facts)
    elif isinstance(tree, exp.Pragma):
        f = tree.this
        name = (func_name(f) if isinstance(f, exp.Func) else getattr(f, "name", "") or "").lower()
        if name in _READ_PRAGMAS:
            returns_rows = True
            if isinstance(f, exp.Func):
                facts.tables.update(dict.fromkeys(TableRef(s.lower()) for s in literal_strings(f)))
        else:
            action = Action.SQL_CONFIG
    elif isinstance(tree, exp.Install):
        action = Action.SQL_EXTENSION
    elif isinstance(tree, exp.Analyze):
        action = Action.SQL_CONFIG
    elif isinstance(tree, (exp.Transaction, exp.Commit, exp.Rollback)):
        reason = "transaction control"
    else:  # pragma: no cover - _AGREE lists only the types above
        return SqlStatement(text, Action.SQL_UNKNOWN, kind, reason=f"{type(tree).__name__} not understood")
    if facts.unknown:
        return SqlStatement(text, Action.SQL_UNKNOWN, kind, reason=facts.unknown)
    created_macros, dropped_macros = _macro_ddl(tree)
    written = tuple(facts.written)
    tables = tuple(dict.fromkeys((*facts.tables, *written)))
    cap_append, own_limit = cap_plan(tree) if returns_rows and isinstance(tree, exp.Select) else (False, None)
    return SqlStatement(
        text, action, kind, tables, written, tuple(facts.created), tuple(facts.columns), tuple(facts.stars),
        tuple(facts.patterns), tuple(facts.files), export_path, attach, returns_rows, temporary, reason,
        cap_append, own_limit, tuple(facts.macros), created_macros, dropped_macros, tuple(facts.functions),
    )


def _macro_ddl(tree: exp.Expr) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(table macros created, macros dropped or replaced by a scalar one) by *tree*."""
    if str(tree.args.get("kind") or "").upper() not in ("MACRO", "FUNCTION"):
        return (), ()
    if isinstance(tree, exp.Create) and isinstance(tree.this, exp.UserDefinedFunction):
        target = tree.this.this  # the function's name, parsed as a Table
        name = str(getattr(target, "name", target)).lower()
        return ((name,), ()) if isinstance(tree.expression, exp.Query) else ((), (name,))
    if isinstance(tree, exp.Drop):
        return (), tuple(str(t.name).lower() for t in tree.args.get("tables") or [] if isinstance(t, exp.Table))
    return (), ()


@lru_cache(maxsize=4096)
def analyze(text: str, dialect: str = "duckdb") -> tuple[SqlStatement, ...]:
    """Classify every statement of *text* in *dialect* (cached by both; never raises)."""
    try:
        d = dialects.get(dialect)
    except KeyError:
        return (SqlStatement(text, Action.SQL_UNKNOWN, "INVALID", reason=f"unknown SQL dialect {dialect!r}"),)
    pieces = d.split(text)
    if isinstance(pieces, str):  # the statements cannot be told apart: nothing runs
        return (SqlStatement(text, Action.SQL_UNKNOWN, "INVALID", reason=pieces),)
    return tuple(_checked(p.text, p.kind, d) for p in pieces)


def _checked(text: str, kind: str, d: SqlDialect) -> SqlStatement:
    """:func:`_statement` (or :func:`_server_statement`), with an analysis bug turned into a
    denial instead of a crash."""
    try:
        return _statement(text, kind) if kind else _server_statement(text, d)
    except Exception as e:
        return SqlStatement(text, Action.SQL_UNKNOWN, kind, reason=f"classifier error {type(e).__name__}: {_first(e)}")


def _first(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]
