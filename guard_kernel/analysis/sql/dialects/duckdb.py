"""DuckDB: the engine's own lexer and parser say how many statements a string holds and of which type.

DuckDB's tokenizer (``duckdb.tokenize``, ~10x cheaper than ``extract_statements``) finds the
``;`` between statements, skipping strings, quoted names and nested comments exactly as the
parser does.  When every statement is plainly a query (:func:`query_texts`) that is enough;
anything else goes through DuckDB's parser (``duckdb.extract_statements``).
"""

from __future__ import annotations

import re
import warnings

import sqlglot
from sqlglot import exp

from guard_kernel.analysis.sql.dialects.base import Piece, Vocabulary

__all__ = ["DUCKDB", "DuckDBDialect", "parse_pivot", "query_texts"]

_QUERY_START = frozenset({"SELECT", "FROM", "WITH", "VALUES", "TABLE", "DESCRIBE", "SHOW", "SUMMARIZE", "UNPIVOT"})
"""First keywords that make a DuckDB statement a SELECT, given no keyword of :data:`_NOT_QUERY`."""
_NOT_QUERY = re.compile(
    r"\b(?:INSERT|UPDATE|DELETE|MERGE|TRUNCATE|COPY|CREATE|DROP|ALTER|ATTACH|DETACH|EXPORT|IMPORT|INSTALL|"
    r"LOAD|PRAGMA|CALL|CHECKPOINT|VACUUM|EXECUTE|PREPARE|DEALLOCATE|EXPLAIN|RETURNING|PIVOT)\b")
"""Words that start (or, after a ``WITH`` clause, make) a statement other than a query.  Searched
in the upper-cased raw text, strings and comments included: a false match only costs the full
parse.  (Upper-casing first is ~4x faster than ``re.I``.)"""
_KEYWORD = re.compile(r"[A-Za-z_]+")


def query_texts(text: str) -> list[str] | None:
    """The statements of *text*, split as DuckDB splits them, when every one is a query; None
    when DuckDB's full parser must say (anything else, or anything unusual).

    A statement whose first keyword is one of :data:`_QUERY_START` is a SELECT in DuckDB's
    grammar unless a WITH clause leads into a write, and a write needs one of the words of
    :data:`_NOT_QUERY`, which must then appear nowhere in the text.  (PIVOT is not among them,
    and in :data:`_NOT_QUERY`: DuckDB runs a PIVOT without an ``IN`` list, even inside a query,
    as several statements, the first creating an ENUM type.)
    """
    # imported here, not at module top: importing duckdb runs the guard's post-import hook,
    # which installs the DuckDB gate, which imports the classifier
    import duckdb

    if _NOT_QUERY.search(text.upper()):
        return None
    try:
        tokens = duckdb.tokenize(text)
    except Exception:
        return None
    comment = duckdb.token_type.comment
    single = ";" not in text  # one statement: only its first token matters
    out: list[str] = []
    start = 0
    started = False
    for pos, kind in tokens:
        if kind == comment:
            continue
        if not started:
            m = _KEYWORD.match(text, pos)
            if m is None or m.group(0).upper() not in _QUERY_START:
                return None  # a statement that starts otherwise, or an empty one (`;;`)
            if single:
                return [text]
            started = True
        elif text[pos] == ";":  # only the `;` operator token starts with `;`
            out.append(text[start:pos + 1])
            start = pos + 1
            started = False
    if started:
        out.append(text[start:])
    elif out:  # DuckDB keeps what follows the last `;` (blanks, comments) with the last statement
        out[-1] += text[start:]
    return out or None


_PIVOT_TAIL = re.compile(r"(?:\s+ORDER\s+BY\s+[\w\s,.\"]+?)?(?:\s+LIMIT\s+\d+)?(?:\s+OFFSET\s+\d+)?[\s;]*\Z", re.I)


def parse_pivot(text: str) -> list[exp.Expr]:
    """sqlglot does not read ORDER BY/LIMIT after a PIVOT statement; they only order and cut
    the pivot's own output (no new columns), so parse the statement without them."""
    body = _PIVOT_TAIL.sub("", text)
    if body == text:
        return []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [t for t in sqlglot.parse(body, dialect="duckdb") if t is not None]
    except sqlglot.errors.SqlglotError:
        return []


class DuckDBDialect:
    """DuckDB, the default dialect: the engine itself splits and types statements."""

    name = "duckdb"
    vocabulary = Vocabulary()

    def split(self, text: str) -> list[Piece] | str:
        queries = query_texts(text)
        if queries is not None:
            return [Piece(q, "SELECT") for q in queries]
        import duckdb  # see query_texts()

        try:
            parsed = duckdb.extract_statements(text)
        except Exception as e:  # DuckDB's parser refuses it: nothing can run anyway, say why
            return f"DuckDB cannot parse it: {(str(e).splitlines() or [type(e).__name__])[0][:200]}"
        return [Piece(st.query, st.type.name) for st in parsed]


DUCKDB = DuckDBDialect()
