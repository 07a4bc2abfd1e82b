"""What a parsed statement touches: tables, columns (through aliases), stars, files, table functions.

Columns are recorded as ``table.col`` when the table is known through its alias, else ``col``
(conservative: an unqualified name counts against every table in scope).  A ``*`` inside a
derived table or CTE counts only for the columns the outer query takes from it (:func:`demand`);
a ``*`` that reaches the result, a CREATE/INSERT/COPY or an IN list is a whole-row read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from .actions import Action
from .decision import StarRef, TableRef

# ------------------------------------------------------------------- vocabulary

FILE_FUNCS = frozenset({
    "read_csv", "read_csv_auto", "read_parquet", "parquet_scan", "read_json", "read_json_auto",
    "read_json_objects", "read_json_objects_auto", "read_ndjson", "read_ndjson_auto", "read_ndjson_objects",
    "read_text", "read_blob", "sniff_csv", "glob", "parquet_metadata", "parquet_schema",
    "parquet_file_metadata", "parquet_kv_metadata", "parquet_bloom_probe", "read_xlsx",
})
READ_FUNCS = FILE_FUNCS | frozenset({
    "range", "generate_series", "unnest", "repeat", "repeat_row", "json_each", "json_tree", "test_all_types",
    "pragma_version", "pragma_table_info", "pragma_show", "pragma_storage_info", "pragma_database_size",
    "pragma_platform", "pragma_metadata_info", "pragma_user_agent", "pragma_collations", "pragma_show_tables",
    "pragma_show_tables_expanded", "pragma_database_list", "pragma_functions", "which_secret", "query", "query_table",
})
_FILE_SUFFIX = re.compile(r"\.(csv|tsv|parquet|json|jsonl|ndjson|txt|gz|zst|xlsx|arrow|avro)$", re.I)
URL = re.compile(r"^([a-z][a-z0-9+.-]*)://([^/?#]*)", re.I)

# --------------------------------------------------------------------- analysis


@dataclass
class Facts:
    tables: dict[TableRef, None] = field(default_factory=dict)
    written: dict[TableRef, None] = field(default_factory=dict)
    created: dict[TableRef, None] = field(default_factory=dict)
    columns: dict[str, None] = field(default_factory=dict)
    stars: dict[StarRef, None] = field(default_factory=dict)
    patterns: dict[str, None] = field(default_factory=dict)
    files: dict[str, None] = field(default_factory=dict)
    unknown: str | None = None


def table_ref(t: exp.Table) -> TableRef:
    catalog = t.catalog or t.db or None  # `a.b`: DuckDB tries catalog a before schema a
    return TableRef(t.name.lower(), catalog.lower() if catalog else None)


def func_name(f: exp.Expr) -> str:
    if isinstance(f, exp.Anonymous):
        return str(f.name).lower()
    return str(getattr(f, "sql_name", lambda: type(f).__name__)()).lower()


def literal_strings(f: exp.Expr) -> list[str]:
    """String literals among a function's positional arguments (named options skipped)."""
    out: list[str] = []
    args = [f.args.get("this"), *(f.args.get("expressions") or [])]
    for a in args:
        if isinstance(a, exp.Literal) and a.is_string:
            out.append(a.this)
        elif isinstance(a, exp.Array):
            out.extend(x.this for x in a.expressions if isinstance(x, exp.Literal) and x.is_string)
    return out


def file_paths(f: exp.Expr, facts: Facts) -> None:
    """Record the literal paths a file-reading function names; a computed path cannot be judged."""
    # Anonymous functions keep their name in "this" and every argument in "expressions"
    args = [a for a in (f.args.get("this"), *(f.args.get("expressions") or [])) if isinstance(a, exp.Expr)]
    first = args[0] if args else None
    literal = (isinstance(first, exp.Literal) and first.is_string) or (
        isinstance(first, exp.Array) and all(isinstance(x, exp.Literal) and x.is_string for x in first.expressions))
    if not literal:
        shown = first.sql(dialect="duckdb")[:80] if first is not None else "nothing"
        facts.unknown = (f"{func_name(f)}() reads a path computed at run time ({shown}), which the guard "
                         "cannot judge; write the path as a string literal")
    facts.files.update(dict.fromkeys(literal_strings(f)))


def looks_like_file(name: str) -> bool:
    return "/" in name or "*" in name or bool(_FILE_SUFFIX.search(name)) or bool(URL.match(name))


_SCOPES = (exp.Select, exp.Update, exp.Delete)


def scope_sources(select: exp.Expr, derived: set[str]) -> dict[str, TableRef | None]:
    """alias/name → real table (None: derived table, CTE or table function) of one SELECT/UPDATE/DELETE."""
    out: dict[str, TableRef | None] = {}
    items: list[exp.Expr] = []
    if isinstance(select, (exp.Update, exp.Delete)) and isinstance(select.this, exp.Table):
        items.append(select.this)
    for key in ("from_", "using"):
        frm = select.args.get(key)
        if isinstance(frm, exp.From):
            items.append(frm.this)
        elif isinstance(frm, list):
            items.extend(frm)
    items.extend(j.this for j in select.args.get("joins") or [])
    for it in items:
        alias = it.alias_or_name.lower() if it.alias_or_name else ""
        if isinstance(it, exp.Table) and isinstance(it.this, exp.Identifier) and not looks_like_file(it.name):
            ref = table_ref(it)
            if ref.name in derived and ref.catalog is None:
                out[alias or ref.name] = None
            else:
                out[alias or ref.name] = ref
                out.setdefault(ref.name, ref)
        elif alias:
            out[alias] = None
    return out


class _Scope:
    """The sources of one SELECT/UPDATE/DELETE, with what every column of it needs precomputed."""

    __slots__ = ("derived_here", "real", "sources")

    def __init__(self, sources: dict[str, TableRef | None]) -> None:
        self.sources = sources
        self.real = tuple(dict.fromkeys(r for r in sources.values() if r is not None))
        """The real tables in scope, each once, in order."""
        self.derived_here = any(v is None for v in sources.values())


_NO_SCOPE = _Scope({})
_FILE_FUNC_TYPES: dict[type, bool] = {}
"""Function class → whether its SQL name is a file reader (``sql_name()`` costs a call per node)."""


def _reads_files(n: exp.Func) -> bool:
    t = type(n)
    if t is exp.Anonymous:
        return str(n.name).lower() in FILE_FUNCS
    known = _FILE_FUNC_TYPES.get(t)
    if known is None:
        known = _FILE_FUNC_TYPES[t] = func_name(n) in FILE_FUNCS
    return known


def collect(node: exp.Expr, facts: Facts) -> None:
    """Tables, columns, stars, files and table functions anywhere under *node* (one walk)."""
    tables: list[exp.Table] = []
    funcs: list[exp.Func] = []
    stars: list[exp.Star] = []
    patterns: list[exp.Columns] = []
    cols: list[exp.Column] = []
    derived: set[str] = set()
    buckets: dict[type, list[Any]] = {exp.Column: cols, exp.Table: tables, exp.Star: stars, exp.Columns: patterns}
    Func, CTE = exp.Func, exp.CTE
    for n in node.walk():
        bucket = buckets.get(type(n))
        if bucket is not None:
            bucket.append(n)
        elif type(n) is CTE:
            if n.alias:
                derived.add(n.alias.lower())
        elif isinstance(n, Func) and _reads_files(n):
            funcs.append(n)
    scopes: dict[int, _Scope] = {}

    def scope_of(n: exp.Expr) -> _Scope:
        sel = n.find_ancestor(*_SCOPES)
        if sel is None:
            return _NO_SCOPE
        key = id(sel)
        sc = scopes.get(key)
        if sc is None:
            sc = scopes[key] = _Scope(scope_sources(sel, derived))
        return sc

    for t in tables:
        inner = t.this
        if isinstance(inner, exp.Func):
            table_function(inner, facts)
        elif isinstance(inner, exp.Identifier):
            if looks_like_file(t.name) and not t.db:
                facts.files[t.name] = None
            else:
                ref = table_ref(t)
                if not (ref.name in derived and ref.catalog is None):
                    facts.tables[ref] = None
    for f in funcs:
        if not isinstance(f.parent, exp.Table):  # scalar read_text('x') and the like
            file_paths(f, facts)
    excluded: set[int] = set()
    for star in stars:
        parent = star.parent
        excepted = star.args.get("except_") or []
        excluded.update(id(c) for c in excepted)
        exclude = frozenset(c.name.lower() for c in excepted if isinstance(c, exp.Column))
        if isinstance(parent, exp.Column):  # t.*
            src = scope_of(parent).sources.get(parent.table.lower())
            if src is not None:
                facts.stars[StarRef(src.name, exclude)] = None
        elif isinstance(parent, exp.Select) and star in parent.expressions:
            wanted = demand(parent)  # a star inside a derived table reads only what the outside takes
            for ref in scope_of(star).real:
                if wanted is None:
                    facts.stars[StarRef(ref.name, exclude)] = None
                else:
                    facts.columns.update(dict.fromkeys(f"{ref.name}.{c}" for c in sorted(wanted - exclude)))
        elif isinstance(parent, exp.Columns):
            for ref in scope_of(star).real:
                facts.stars[StarRef(ref.name, exclude)] = None
    for c in patterns:
        if isinstance(c.this, exp.Literal) and c.this.is_string:
            facts.patterns[c.this.this] = None
        elif not isinstance(c.this, exp.Star):  # a lambda or expression: every column may match
            for ref in scope_of(c).real:
                facts.stars[StarRef(ref.name)] = None
    columns = facts.columns
    Star = exp.Star
    for col in cols:
        if isinstance(col.this, Star) or (excluded and id(col) in excluded):
            continue
        name = col.name.lower()
        qual = col.table.lower()
        scope = scope_of(col)
        sources = scope.sources
        if qual:
            src = sources.get(qual)
            if src is not None:
                columns[f"{src.name}.{name}"] = None
            else:
                columns[name] = None
                if qual not in sources:  # maybe a struct column `s.field`
                    columns[qual] = None
            continue
        whole = sources.get(name)
        if whole is not None:  # whole-row reference: SELECT customers FROM customers
            facts.stars[StarRef(whole.name)] = None
        real = scope.real
        if len(real) == 1 and not scope.derived_here:
            columns[f"{real[0].name}.{name}"] = None
        else:
            columns[name] = None


def demand(sel: exp.Expr, depth: int = 0) -> set[str] | None:
    """Column names the enclosing query takes from the derived table *sel* is the body of.

    None means the whole row: *sel* is the statement itself, feeds a CREATE/INSERT/COPY, a set
    operation or an IN list, or an outer query reads it with ``*`` that is itself whole.
    """
    holder = sel.parent
    if depth > 16 or holder is None:
        return None
    if isinstance(holder, exp.Subquery) and holder.alias and isinstance(holder.parent, (exp.From, exp.Join)):
        users = [holder.parent.parent]
        names = {holder.alias.lower()}
    elif isinstance(holder, exp.CTE) and holder.alias:
        with_ = holder.parent
        owner = with_.parent if isinstance(with_, exp.With) else None
        if owner is None:
            return None
        alias = holder.alias.lower()
        refs = [t for t in owner.find_all(exp.Table) if t.name.lower() == alias and not t.db]
        if any(not isinstance(t.parent, (exp.From, exp.Join)) for t in refs):
            return None
        users = [t.parent.parent if t.parent is not None else None for t in refs]
        names = {alias} | {t.alias.lower() for t in refs if t.alias}
    else:
        return None
    selects = [u for u in users if isinstance(u, exp.Select)]
    if not selects or len(selects) != len(users):
        return None
    out: set[str] = set()
    for u in selects:
        for n in u.walk():
            if isinstance(n, exp.Star):
                p = n.parent
                if isinstance(p, exp.Column) and p.table.lower() not in names:
                    continue
                if not (p is u or isinstance(p, exp.Column)):
                    continue  # count(*) and the like
                whole = demand(u, depth + 1)
                if whole is None:
                    return None
                excepted = {c.name.lower() for c in n.args.get("except_") or [] if isinstance(c, exp.Column)}
                out |= whole - excepted
            elif isinstance(n, exp.Columns):
                return None
            elif isinstance(n, exp.Column) and not isinstance(n.this, exp.Star):
                if n.name.lower() in names and not n.table:
                    return None  # whole-row reference to the derived table
                if not n.table or n.table.lower() in names:
                    out.add(n.name.lower())
    return out


def table_function(f: exp.Expr, facts: Facts) -> None:
    name = func_name(f)
    if name in FILE_FUNCS:
        file_paths(f, facts)
    elif name == "query":
        args = literal_strings(f)
        if len(args) != 1:
            facts.unknown = "query() needs one literal SQL string"
            return
        from .sql_parse import analyze  # query() holds a statement of its own

        inner = analyze(args[0])
        if len(inner) != 1 or inner[0].action is not Action.SQL_READ:
            facts.unknown = f"query() of something that is not one read: {args[0][:80]!r}"
            return
        s = inner[0]
        facts.tables.update(dict.fromkeys(s.tables))
        facts.columns.update(dict.fromkeys(s.columns))
        facts.stars.update(dict.fromkeys(s.stars))
        facts.patterns.update(dict.fromkeys(s.column_patterns))
        facts.files.update(dict.fromkeys(s.files))
    elif name == "query_table":
        args = literal_strings(f)
        if not args:
            facts.unknown = "query_table() needs literal table names"
        for a in args:
            ref = TableRef(a.lower().rsplit(".", 1)[-1], a.lower().rsplit(".", 1)[0] if "." in a else None)
            facts.tables[ref] = None
            facts.stars[StarRef(ref.name)] = None
    elif name in READ_FUNCS or name.startswith("duckdb_"):
        pass
    else:
        facts.unknown = f"unknown table function {name}()"


def star_of(t: exp.Expr | None, facts: Facts) -> None:
    """The whole of table *t* is read (SUMMARIZE t, COPY t TO, PIVOT t, UNPIVOT t)."""
    if isinstance(t, exp.Table) and isinstance(t.this, exp.Identifier) and not looks_like_file(t.name):
        ref = table_ref(t)
        facts.tables[ref] = None
        facts.stars[StarRef(ref.name)] = None
