"""Masked columns: the statement is rewritten so a masked value never leaves the engine.

Every reference to a table with ``mask_columns`` (in FROM, JOIN, a derived table, a CTE body,
either side of a set operation, a scalar subquery…) is replaced by a derived table of the same
name whose masked columns are already masked::

    customers  →  (SELECT * REPLACE ('***' AS ssn) FROM customers) AS customers

so whatever the query does afterwards (aliases, CTEs, UNION, ``upper(ssn)``, ``ssn || ''``,
``row_to_json(t)``, whole-row references) only ever sees masked values.  On top of that, a read
that *filters, joins, groups or orders* on a masked column is denied (:class:`MaskDenied`): the
issue's oracle class (``WHERE ssn LIKE '1%'``) is refused outright rather than answered over
masked values.  A masked table named where it cannot be substituted (``COPY t TO``,
``SUMMARIZE t``, ``PIVOT t``, a statement sqlglot cannot parse) is denied: fail closed.

``hash`` is HMAC-SHA-256 computed by the engine from the key's inner and outer pads
(:class:`MaskKey`): the key is never a value a query can read, but the pads are in the guard's
memory and in the rewritten text in this process (see docs/policy.md, "Masked columns").
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

__all__ = ["MASKS", "MaskDenied", "MaskKey", "hmac_hex", "mask_key", "masked_tables", "rewrite", "scrub"]

MASKS = ("redact", "hash", "null", "last4")
KEY_ENV = "GUARD_KERNEL_MASK_KEY_FILE"
"""A file outside the session holding the HMAC key (its bytes); without it, a random key per process."""

_PREDICATES = (exp.Where, exp.Having, exp.Qualify, exp.Group, exp.Order, exp.Join)
_UNSUBSTITUTABLE = (exp.Copy, exp.Summarize, exp.Pivot)
_NO_VALUES = (exp.Describe, exp.Drop, exp.Show) if hasattr(exp, "Show") else (exp.Describe, exp.Drop)


class MaskDenied(Exception):
    """The statement uses a masked column where masking cannot hold; ``table``/``column`` say which."""

    def __init__(self, message: str, table: str, column: str) -> None:
        super().__init__(message)
        self.table = table
        self.column = column


@dataclass(frozen=True)
class MaskKey:
    """The HMAC key as its two pads (``K ⊕ ipad``, ``K ⊕ opad``), the way the engine needs it."""

    inner: bytes
    outer: bytes

    @classmethod
    def of(cls, key: bytes) -> MaskKey:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        return cls(bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key))

    def __repr__(self) -> str:  # never printed, even in a traceback's locals
        return "MaskKey(<hidden>)"


_KEY: list[MaskKey] = []


def mask_key() -> MaskKey:
    """The process's key: read once from ``$GUARD_KERNEL_MASK_KEY_FILE``, else random."""
    if not _KEY:
        path = os.environ.get(KEY_ENV)
        if path:
            with open(path, "rb") as f:
                raw = f.read().strip()
        else:
            raw = os.urandom(32)
        _KEY.append(MaskKey.of(raw))
    return _KEY[0]


def scrub(message: str) -> str:
    """*message* (an engine's error quoting the rewritten statement) without the key's pads."""
    if not _KEY:
        return message
    k = _KEY[0]
    for pad in (k.inner.hex(), k.outer.hex()):
        message = message.replace(pad, "<mask key>").replace(pad.upper(), "<mask key>")
    return message


def hmac_hex(value: object) -> str | None:
    """HMAC-SHA-256 of *value* as text, in hex (SQLite's ``guard_hmac``); NULL stays NULL."""
    if value is None:
        return None
    k = mask_key()
    inner = hashlib.sha256(k.inner + str(value).encode()).digest()
    return hashlib.sha256(k.outer + inner).hexdigest()


def masked_tables(policy_masks: Mapping[str, Mapping[str, str]], sql: str, dialect: str) -> set[str]:
    """The masked tables *sql* names (by name; cheap pre-check on the text first)."""
    low = sql.lower()
    return {t for t in policy_masks if t in low}


def _mask_expr(col: str, kind: str, dialect: str, key: MaskKey) -> exp.Expr:
    c = exp.column(col, quoted=True)
    text = exp.cast(c.copy(), "text" if dialect != "duckdb" else "varchar")
    if kind == "null":
        return exp.null()
    if kind == "redact":
        return exp.Case(ifs=[exp.If(this=exp.Is(this=c, expression=exp.null()), true=exp.null())],
                        default=exp.Literal.string("***"))
    if kind == "last4":
        return exp.DPipe(this=exp.Literal.string("***"),
                         expression=exp.Right(this=text, expression=exp.Literal.number(4)))
    if dialect == "duckdb":
        inner = f"sha256(unhex('{key.inner.hex()}') || encode({text.sql('duckdb')}))"
        sql = f"sha256(unhex('{key.outer.hex()}') || unhex({inner}))"
    elif dialect == "postgres":
        inner = f"sha256('\\x{key.inner.hex()}'::bytea || convert_to({text.sql('postgres')}, 'UTF8'))"
        sql = f"encode(sha256('\\x{key.outer.hex()}'::bytea || {inner}), 'hex')"
    else:  # sqlite: the connection's guard_hmac() function (registered by the guard)
        sql = f"guard_hmac({text.sql('sqlite')})"
    return sqlglot.parse_one(sql, read=dialect)


def _replacement(table: exp.Table, masks: Mapping[str, str], dialect: str, key: MaskKey,
                 columns: list[str] | None) -> exp.Expr:
    """``(SELECT <masked projection> FROM table) AS alias`` for one table reference."""
    alias = table.alias or table.name
    bare = table.copy()
    bare.set("alias", None)
    if columns is None:  # DuckDB: * REPLACE keeps every other column as it is
        star = exp.Star(replace=[exp.alias_(_mask_expr(c, m, dialect, key), c, quoted=True)
                                 for c, m in sorted(masks.items())])
        sel = exp.select(star).from_(bare)
    else:
        sel = exp.select(*[exp.alias_(_mask_expr(c, masks[c.lower()], dialect, key), c, quoted=True)
                           if c.lower() in masks else exp.column(c, quoted=True) for c in columns]).from_(bare)
    return exp.Subquery(this=sel, alias=exp.TableAlias(this=exp.to_identifier(alias)))


def _check_predicates(tree: exp.Expr, masks: Mapping[str, Mapping[str, str]], named: set[str]) -> None:
    """Deny a masked column used to filter, join, group or order (by name: conservative)."""
    cols = {c: t for t in named for c in masks[t]}
    for join in tree.find_all(exp.Join):  # `JOIN … USING (ssn)`: sqlglot keeps ssn as a bare identifier
        for ident in join.args.get("using") or ():
            name = ident.name.lower()
            if name in cols:
                raise MaskDenied(f"this read joins on masked column {cols[name]}.{name}: its value would leak "
                                 "through which rows come back", cols[name], name)
    for col in tree.find_all(exp.Column):
        name = col.name.lower()
        if name not in cols:
            continue
        clause = col.find_ancestor(*_PREDICATES, exp.Select)
        if isinstance(clause, _PREDICATES):
            kind = {exp.Where: "filters", exp.Having: "filters", exp.Qualify: "filters", exp.Join: "joins",
                    exp.Group: "groups", exp.Order: "orders"}[type(clause)]
            raise MaskDenied(f"this read {kind} on masked column {cols[name]}.{name}: its value would leak "
                             "through which rows come back", cols[name], name)


def rewrite(sql: str, dialect: str, masks: Mapping[str, Mapping[str, str]], key: MaskKey | None = None,
            catalog: Mapping[str, list[str] | None] | None = None) -> str:
    """*sql* with every masked table replaced by its masked projection (unchanged when none is named).

    *catalog*: table → its columns in order, needed where the dialect has no ``* REPLACE``
    (PostgreSQL, SQLite); a masked table missing from it is denied.
    """
    if "guard_hmac" in sql.lower():  # SQLite's hash function: never callable by the session
        owner = sorted(masks)[0] if masks else "?"
        raise MaskDenied("guard_hmac() belongs to the guard and cannot be called", owner, "*")
    named = masked_tables(masks, sql, dialect)
    if not named:
        return sql
    try:
        trees = [t for t in sqlglot.parse(sql, read=dialect) if t is not None]
    except SqlglotError as e:
        first = sorted(named)[0]
        raise MaskDenied(f"the guard cannot parse this statement to mask {first}: {str(e)[:120]}", first, "*") from e
    key = key or mask_key()
    out: list[str] = []
    changed = False
    for tree in trees:
        hits = [t for t in tree.find_all(exp.Table) if t.name.lower() in named and isinstance(t.this, exp.Identifier)]
        for lit in tree.find_all(exp.Literal):
            inside = [n for n in named if lit.is_string and n in str(lit.this).lower()
                      and lit.find_ancestor(exp.Table) is not None]
            if inside:  # query('SELECT ssn FROM customers'), query_table('customers'): not substitutable
                raise MaskDenied(f"table {inside[0]} has masked columns and is named inside a string the guard "
                                 "cannot rewrite", inside[0], "*")
        if not hits or isinstance(tree, _NO_VALUES):
            out.append(tree.sql(dialect=dialect))
            continue
        _check_predicates(tree, masks, {t.name.lower() for t in hits})
        for t in hits:
            name = t.name.lower()
            if isinstance(tree, _UNSUBSTITUTABLE) or not isinstance(t.parent, (exp.From, exp.Join)):
                raise MaskDenied(f"table {name} has masked columns and is named where the guard cannot "
                                 "substitute its masked rows", name, "*")
            cols = None
            if dialect != "duckdb":
                cols = (catalog or {}).get(name)
                if cols is None:
                    raise MaskDenied(f"the guard cannot resolve the columns of {name} to mask them", name, "*")
            t.replace(_replacement(t, masks[name], dialect, key, cols))
        changed = True
        out.append(tree.sql(dialect=dialect))
    return ";\n".join(out) if changed else sql
