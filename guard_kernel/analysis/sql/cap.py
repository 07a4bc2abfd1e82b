"""Row caps pushed into the engine: rewrite a read so DuckDB returns at most *limit* rows.

A plain SELECT (ORDER BY included, so the engine keeps its Top-N plan) gets ``LIMIT n``
appended.  Everything else that returns rows — set operations, OFFSET, a LIMIT that is larger,
a percentage or a parameter, CTEs, DESCRIBE/SHOW/SUMMARIZE/PIVOT — is wrapped as
``SELECT * FROM (<q>) LIMIT n``.  Statements that are not one row-returning read are left as
they are (the fetch layer still trims what reaches Python).

Which of these applies is decided by the classifier while it holds the parse tree
(:attr:`SqlStatement.cap_append`, :attr:`SqlStatement.own_limit`), so the rewrite here is
string work on a cached analysis: no second parse.
"""

from __future__ import annotations

from typing import Protocol

from sqlglot import exp

__all__ = ["Cappable", "cap_plan", "cap_statement"]


class Cappable(Protocol):
    """What the rewrite needs of an analyzed statement (:class:`~guard_kernel.analysis.sql.classify.SqlStatement`)."""

    @property
    def text(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def returns_rows(self) -> bool: ...
    @property
    def own_limit(self) -> int | None: ...
    @property
    def cap_append(self) -> bool: ...


def _strip(text: str) -> str:
    """*text* without trailing whitespace and semicolons (a regex ``[\\s;]+\\Z`` retries at every
    blank of a long statement; ``rstrip`` looks at the end only)."""
    out = text.rstrip()
    while out.endswith(";"):
        out = out[:-1].rstrip()
    return out


def _wrap(body: str, limit: int) -> str:
    # the newline ends a trailing `-- comment` of the body
    return f"SELECT * FROM (\n{body}\n) AS __guard_capped LIMIT {limit}"


def cap_statement(stmt: Cappable, limit: int) -> str:
    """The row cap of one analyzed statement (the last of a string runs alone, capped): its text
    rewritten, or as it is; string work only, so a statement taken from a longer string is not
    analyzed a second time."""
    out = _rewrite(stmt, limit)
    return stmt.text if out is None else out


def _rewrite(s: Cappable, limit: int) -> str | None:
    """The capped text of *s*, or None to leave it as it is."""
    if not s.returns_rows or s.kind not in ("SELECT", "MULTI"):
        return None  # PRAGMA/CALL reads are not allowed inside a subquery: trimmed on fetch
    if s.own_limit is not None and s.own_limit <= limit:
        return None  # already within the cap
    body = _strip(s.text)
    return f"{body}\nLIMIT {limit}" if s.cap_append else _wrap(body, limit)


def cap_plan(tree: exp.Select) -> tuple[bool, int | None]:
    """How the row cap applies to a SELECT: (append ``LIMIT n``?, its own literal LIMIT).

    (False, None) means wrap as a subquery: a CTE, OFFSET, a LIMIT that is a percentage, WITH
    TIES, a parameter or an expression, a parameter anywhere next to a LIMIT, locks or INTO.
    """
    if tree.args.get("with_") is not None or tree.args.get("offset"):
        return False, None
    lim = tree.args.get("limit")
    if lim is None:
        return not (tree.args.get("locks") or tree.args.get("into")), None
    if tree.find(exp.Placeholder) is not None:
        return False, None
    value = lim.expression
    opts = lim.args.get("limit_options")
    if (isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit()
            and not (opts and (opts.args.get("percent") or opts.args.get("with_ties")))):
        return False, int(value.this)
    return False, None
