"""What a parsed statement touches: tables, columns (through aliases), stars, files, table functions.

Columns are recorded as ``table.col`` when the table is known through its alias, else ``col``
(conservative: an unqualified name counts against every table in scope).  A ``*`` inside a
derived table or CTE counts only for the columns the outer query takes from it (:func:`demand`);
a ``*`` that reaches the result, a CREATE/INSERT/COPY or an IN list is a whole-row read.

Why not sqlglot's ``qualify`` against the catalog's schema (issue 14 asked; measured): names are
enough to be safe here, because every way to a column's value names the column, reads the whole
row (``*``, ``t``, ``t.*``, ``row_to_json(t)``, positional ``#3``, ``AS t(a, b, x)``, ``COLUMNS``,
``SUMMARIZE``/``PIVOT``) or goes through an object the guard cannot see into (a view stored in
a source: :func:`through_views`, denied when it reads a protected table; ``query('…')``: read;
an unknown table function: ``sql.unknown``).  Counting an unqualified name against every table in
scope over-approximates instead of resolving, and the three engines' own answers check it
(tests/enforce/duckdb/test_gate.py and tests/enforce/dbapi/test_deny_columns.py run grids of
query shapes unguarded and guarded).  ``qualify`` alone costs about 2.5× this whole classifier
on the benchmark corpus (median 1.15 ms against 0.47 ms per statement seen for the first time,
tree reused, no schema; a schema adds the catalog reads and star expansion), where the budget
for the step was a few per cent; it would also need a catalog read on DuckDB, which today needs
none.  So there is one resolver, this one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from guard_kernel.decision.request import StarRef, TableRef
from guard_kernel.policy.actions import Action
from guard_kernel.policy.paths import URL

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
    macros: dict[str, None] = field(default_factory=dict)
    """Table functions the guard does not know: callable only as the session's own table macros."""
    functions: dict[str, None] = field(default_factory=dict)
    """Functions sqlglot does not know (lower-case): maybe stored in the database (:func:`through_views`)."""
    unknown: str | None = None
    read_functions: frozenset[str] = frozenset()
    """Table functions of the statement's dialect that only produce rows."""
    inner: Callable[[str], tuple[Any, ...]] | None = field(default=None, compare=False)
    """How the statement inside ``query('…')`` is classified: the classifier passes its own entry
    point (this module sits below it and does not import it)."""


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
    # the cheap `in` tests first: a suffix needs a dot and a URL a colon
    return ("/" in name or "*" in name or ("." in name and _FILE_SUFFIX.search(name) is not None)
            or (":" in name and URL.match(name) is not None))


_SCOPES = (exp.Select, exp.Update, exp.Delete)


_UNSEEN = object()


class _Tables:
    """Per-walk memo of what each ``exp.Table`` node names: its TableRef, or None for a file
    or a table function (both the table pass and every scope ask about the same nodes)."""

    __slots__ = ("refs",)

    def __init__(self) -> None:
        self.refs: dict[int, TableRef | None] = {}

    def ref(self, t: exp.Table) -> TableRef | None:
        """The real table *t* names (None: a file, a table function, or not an identifier)."""
        key = id(t)
        out = self.refs.get(key, _UNSEEN)
        if out is not _UNSEEN:
            return out  # type: ignore[return-value]
        out = table_ref(t) if isinstance(t.this, exp.Identifier) and not looks_like_file(t.name) else None
        self.refs[key] = out
        return out


def scope_sources(select: exp.Expr, derived: set[str], memo: _Tables | None = None) -> dict[str, TableRef | None]:
    """alias/name → real table (None: derived table, CTE or table function) of one SELECT/UPDATE/DELETE."""
    memo = memo or _Tables()
    out: dict[str, TableRef | None] = {}
    items: list[exp.Expr] = []
    args = select.args
    if isinstance(select, (exp.Update, exp.Delete)) and isinstance(select.this, exp.Table):
        items.append(select.this)
    for key in ("from_", "using"):
        frm = args.get(key)
        if isinstance(frm, exp.From):
            items.append(frm.this)
            # sqlglot hangs the joins of a FROM-first `FROM (SELECT …), t` on the subquery
            items.extend(j.this for j in frm.this.args.get("joins") or [])
        elif isinstance(frm, list):
            items.extend(frm)
    joins = args.get("joins")
    if joins:
        items.extend(j.this for j in joins)
    for it in items:
        ref = memo.ref(it) if isinstance(it, exp.Table) else None
        if ref is not None:
            alias = it.alias.lower() or ref.name
            if ref.name in derived and ref.catalog is None:
                out[alias] = None
            else:
                out[alias] = ref
                out.setdefault(ref.name, ref)
        else:
            alias = it.alias_or_name.lower() if it.alias_or_name else ""
            if alias:
                out[alias] = None
    return out


class _Scope:
    """The sources of one SELECT/UPDATE/DELETE, with what every column of it needs precomputed."""

    __slots__ = ("derived_here", "real", "sources")

    def __init__(self, sources: dict[str, TableRef | None]) -> None:
        self.sources = sources
        self.real = tuple(dict.fromkeys(r for r in sources.values() if r is not None))
        """The real tables in scope, each once, in order."""
        self.derived_here = None in sources.values()


_NO_SCOPE = _Scope({})
_KIND: dict[type, int] = {}
"""Expression class → what the walk does with it (see :func:`_kind`); computed once per class,
so the walk costs one dict lookup per node."""
_SKIP, _COL, _TABLE, _STAR, _COLUMNS, _CTE, _FILE_FUNC, _ANON, _POSITIONAL, _WHOLE, _JOIN = range(11)
_LEAVES = frozenset({exp.Identifier, exp.Literal})
"""Node classes whose arguments are strings and flags only: the walk does not visit them."""


def _kind(t: type) -> int:
    k = _KIND.get(t)
    if k is None:
        if t is exp.Column:
            k = _COL
        elif t is exp.Table:
            k = _TABLE
        elif t is exp.Star:
            k = _STAR
        elif t is exp.Columns:
            k = _COLUMNS
        elif t is exp.PositionalColumn:
            k = _POSITIONAL
        elif t is exp.Summarize or t is exp.Pivot:
            k = _WHOLE
        elif t is exp.CTE:
            k = _CTE
        elif t is exp.Join:
            k = _JOIN
        elif t is exp.Anonymous:
            k = _ANON
        elif issubclass(t, exp.Func):
            k = _FILE_FUNC if str(getattr(t, "sql_name", lambda: t.__name__)()).lower() in FILE_FUNCS else _SKIP
        else:
            k = _SKIP
        _KIND[t] = k
    return k


def collect(node: exp.Expr, facts: Facts) -> None:
    """Tables, columns, stars, files and table functions anywhere under *node* (one walk)."""
    tables: list[exp.Table] = []
    funcs: list[exp.Func] = []
    stars: list[exp.Star] = []
    patterns: list[exp.Columns] = []
    cols: list[exp.Column] = []
    derived: set[str] = set()
    kinds = _KIND
    Expr = exp.Expr
    # breadth-first like ``node.walk()`` (the order of tables and columns found is the order
    # reported), without the generator and without queueing the leaves (identifiers and
    # literals hold strings only): half the nodes of a typical statement
    queue: list[Any] = [node]  # Any: each node is filed under its exact class below
    for n in queue:
        for v in n.args.values():
            if type(v) is list:
                for x in v:
                    if isinstance(x, Expr) and type(x) not in _LEAVES:
                        queue.append(x)
            elif isinstance(v, Expr) and type(v) not in _LEAVES:
                queue.append(v)
        k = kinds.get(type(n))
        if k is None:
            k = _kind(type(n))
        if k == _SKIP:
            continue
        if k == _COL:
            cols.append(n)
        elif k == _TABLE:
            tables.append(n)
        elif k == _STAR:
            stars.append(n)
        elif k in (_COLUMNS, _POSITIONAL):
            patterns.append(n)
        elif k == _CTE:
            if n.alias:
                derived.add(n.alias.lower())
        elif k == _JOIN:
            # `JOIN … USING (c)` joins on c of both sides, and sqlglot keeps c as a bare
            # identifier: count it as the column c, unqualified, in the join's scope
            for ident in n.args.get("using") or ():
                if isinstance(ident, exp.Identifier):
                    col = exp.Column(this=ident.copy())
                    col.parent = n
                    cols.append(col)
        elif k == _WHOLE:
            # SUMMARIZE t shows every column's min and max; PIVOT/UNPIVOT t passes every other
            # column through: the whole of t is read, wherever the clause sits
            star_of(n.this, facts)
        elif k == _ANON:
            fname = str(n.name).lower()
            facts.functions[fname] = None
            if fname in FILE_FUNCS:
                funcs.append(n)
        elif k == _FILE_FUNC:
            funcs.append(n)
    memo = _Tables()
    for t in tables:
        inner = t.this
        if isinstance(inner, exp.Func):
            table_function(inner, facts)
        elif isinstance(inner, exp.Identifier):
            ref = memo.ref(t)
            if ref is None:
                if not t.db:
                    facts.files[t.name] = None
                else:  # `db.x.csv`: a qualified name is a table, whatever it looks like
                    ref = table_ref(t)
                    if not (ref.name in derived and ref.catalog is None):
                        facts.tables[ref] = None
            elif not (ref.name in derived and ref.catalog is None):
                facts.tables[ref] = None
                if _renames_columns(t):  # `customers AS t(a, b, x)`: x is whichever column is third
                    facts.stars[StarRef(ref.name)] = None
    for f in funcs:
        if not isinstance(f.parent, exp.Table):  # scalar read_text('x') and the like
            file_paths(f, facts)
    if not (cols or stars or patterns):
        return
    scopes: dict[int, _Scope] = {}

    def scope_of(n: exp.Expr) -> _Scope:
        sel = n.find_ancestor(*_SCOPES)
        if sel is None:
            return _NO_SCOPE
        key = id(sel)
        sc = scopes.get(key)
        if sc is None:
            sc = scopes[key] = _Scope(scope_sources(sel, derived, memo))
        return sc

    excluded: set[int] = set()
    for star in stars:
        parent = star.parent
        excepted = star.args.get("except_") or []
        if excepted:
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
        elif not isinstance(parent, exp.Count):
            # COLUMNS(*), and a star anywhere else that DuckDB expands to columns: `* LIKE
            # '%ss%'`, `* SIMILAR TO …`, `(*)`… (only count(*) reads no column)
            for ref in scope_of(star).real:
                facts.stars[StarRef(ref.name, exclude)] = None
    for c in patterns:
        if isinstance(c, exp.PositionalColumn):  # `#3`: the third column of the FROM clause
            for ref in scope_of(c).real:
                facts.stars[StarRef(ref.name)] = None
        elif isinstance(c.this, exp.Literal) and c.this.is_string:
            facts.patterns[c.this.this] = None
        elif not isinstance(c.this, exp.Star):  # a lambda or expression: every column may match
            for ref in scope_of(c).real:
                facts.stars[StarRef(ref.name)] = None
    columns = facts.columns
    Star = exp.Star
    last_parent: exp.Expr | None = None
    scope = _NO_SCOPE
    for col in cols:
        if isinstance(col.this, Star) or (excluded and id(col) in excluded):
            continue
        name = col.name.lower()
        qual = col.table.lower()
        parent = col.parent
        if parent is not last_parent:  # siblings (a, b, c of one SELECT) share the scope lookup
            scope = scope_of(col)
            last_parent = parent
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


def _renames_columns(node: exp.Expr) -> bool:
    """Whether *node*'s alias renames its columns by position (``AS t(a, b, x)``)."""
    alias = node.args.get("alias")
    return isinstance(alias, exp.TableAlias) and bool(alias.args.get("columns"))


def demand(sel: exp.Expr, depth: int = 0) -> set[str] | None:
    """Column names the enclosing query takes from the derived table *sel* is the body of.

    None means the whole row: *sel* is the statement itself, feeds a CREATE/INSERT/COPY, a set
    operation or an IN list, or an outer query reads it with ``*`` that is itself whole.
    """
    holder = sel.parent
    if depth > 16 or holder is None or _renames_columns(holder):
        return None  # `(…) AS s(a, b, x)`, `WITH c(a, b, x) AS (…)`: names no longer say which column
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
            if isinstance(n, exp.PositionalColumn):
                return None  # `#3` takes a column by place: any of them
            if isinstance(n, exp.Star):
                p = n.parent
                if isinstance(p, exp.Column) and p.table.lower() not in names:
                    continue
                if isinstance(p, exp.Count) or (isinstance(p, exp.Select) and p is not u):
                    continue  # count(*) takes no column; a nested query's select list is its own
                if not (p is u or isinstance(p, exp.Column)):
                    return None  # `* LIKE '%ss%'` and the like: any column
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
        if facts.inner is None:  # fail closed: nothing can look inside it
            facts.unknown = "query() cannot be analysed here"
            return
        inner = facts.inner(args[0])  # query() holds a statement of its own
        if len(inner) != 1 or inner[0].action is not Action.SQL_READ:
            facts.unknown = f"query() of something that is not one read: {args[0][:80]!r}"
            return
        s = inner[0]
        facts.tables.update(dict.fromkeys(s.tables))
        facts.columns.update(dict.fromkeys(s.columns))
        facts.stars.update(dict.fromkeys(s.stars))
        facts.patterns.update(dict.fromkeys(s.column_patterns))
        facts.files.update(dict.fromkeys(s.files))
        facts.macros.update(dict.fromkeys(s.macros))
    elif name == "query_table":
        args = literal_strings(f)
        if not args:
            facts.unknown = "query_table() needs literal table names"
        for a in args:
            ref = TableRef(a.lower().rsplit(".", 1)[-1], a.lower().rsplit(".", 1)[0] if "." in a else None)
            facts.tables[ref] = None
            facts.stars[StarRef(ref.name)] = None
    elif name in READ_FUNCS or name in facts.read_functions or name.startswith("duckdb_"):
        pass
    else:  # a table macro the session made on this connection, or unknown: to_requests decides
        facts.macros[name] = None


def star_of(t: exp.Expr | None, facts: Facts) -> None:
    """The whole of table *t* is read (SUMMARIZE t, COPY t TO, PIVOT t, UNPIVOT t)."""
    if isinstance(t, exp.Table) and isinstance(t.this, exp.Identifier) and not looks_like_file(t.name):
        ref = table_ref(t)
        facts.tables[ref] = None
        facts.stars[StarRef(ref.name)] = None


def through_views(names: Iterable[str], views: Mapping[str, str], protected: Collection[str],
                  dialect: str) -> tuple[str, str] | None:
    """(object, protected table) for the first of *names* that is an object stored in the database
    (*views*: name → its definition, from the catalog: a view, a macro, a function's body) reading a
    *protected* table, directly or through other stored objects; None when none does.  The guard
    does not resolve such an object's columns: one that reads a table with denied or masked
    columns counts as reading all of them.  A definition sqlglot cannot read (a PL/pgSQL body…)
    counts as reading a protected table (fail closed): the first one its text names, else the first."""
    import sqlglot
    from sqlglot.errors import SqlglotError

    seen: set[str] = set()

    def reach(view: str, depth: int) -> str | None:
        if view in seen or depth > 16:
            return None
        seen.add(view)
        try:
            trees = [t for t in sqlglot.parse(views[view], read=dialect) if t is not None]
        except SqlglotError:
            text = views[view].lower()
            named = [p for p in sorted(protected) if p in text]
            return (named or sorted(protected) or ["?"])[0]
        for tree in trees:
            ctes = {c.alias.lower() for c in tree.find_all(exp.CTE) if c.alias}
            used = [t.name.lower() for t in tree.find_all(exp.Table) if not (t.name.lower() in ctes and not t.db)]
            used += [str(f.name).lower() for f in tree.find_all(exp.Anonymous)]
            for name in used:
                if name in protected:
                    return name
                if name in views:
                    hit = reach(name, depth + 1)
                    if hit is not None:
                        return hit
        return None

    for n in names:
        if n in views:
            hit = reach(n, 0)
            if hit is not None:
                return n, hit
    return None
