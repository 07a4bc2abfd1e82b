"""Row caps pushed into the engine: rewrite a read so DuckDB returns at most *limit* rows.

A plain SELECT (ORDER BY included, so the engine keeps its Top-N plan) gets ``LIMIT n``
appended.  Everything else that returns rows — set operations, OFFSET, a LIMIT that is larger,
a percentage or a parameter, CTEs, DESCRIBE/SHOW/SUMMARIZE/PIVOT — is wrapped as
``SELECT * FROM (<q>) LIMIT n``.  Statements that are not one row-returning read are left as
they are (the fetch layer still trims what reaches Python).
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache

import sqlglot
from sqlglot import exp

__all__ = ["cap"]

_TRAILING = re.compile(r"[\s;]+\Z")


def _strip(text: str) -> str:
    return _TRAILING.sub("", text)


def _wrap(body: str, limit: int) -> str:
    # the newline ends a trailing `-- comment` of the body
    return f"SELECT * FROM (\n{body}\n) AS __guard_capped LIMIT {limit}"


@lru_cache(maxsize=2048)
def cap(text: str, limit: int) -> str:
    """*text* rewritten so the engine returns at most *limit* rows (unchanged if it is not one read)."""
    from .sql_parse import analyze

    stmts = analyze(text)
    if len(stmts) != 1 or not stmts[0].returns_rows or stmts[0].kind not in ("SELECT", "MULTI", "PRAGMA", "CALL"):
        return text
    body = _strip(stmts[0].text)
    if stmts[0].kind in ("PRAGMA", "CALL"):
        return text  # not allowed inside a subquery; trimmed on fetch
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = sqlglot.parse_one(body, dialect="duckdb")
    except sqlglot.errors.SqlglotError:
        return _wrap(body, limit)
    if not isinstance(tree, exp.Select) or tree.args.get("with_") is not None or tree.args.get("offset"):
        return _wrap(body, limit)
    if tree.find(exp.Placeholder) is not None and tree.args.get("limit") is not None:
        return _wrap(body, limit)
    lim = tree.args.get("limit")
    if lim is None:
        if tree.args.get("locks") or tree.args.get("into"):
            return _wrap(body, limit)
        return f"{body}\nLIMIT {limit}"
    value = lim.expression
    opts = lim.args.get("limit_options")
    if (isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit()
            and not (opts and (opts.args.get("percent") or opts.args.get("with_ties")))
            and int(value.this) <= limit):
        return text  # already within the cap
    return _wrap(body, limit)
