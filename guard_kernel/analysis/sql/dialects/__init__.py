"""SQL dialects behind one seam: how a string splits into statements, and each dialect's vocabulary.

The classifier (:mod:`guard_kernel.analysis.sql.classify`) is the same for every database; a
dialect only says where statements end and of which kind they are (DuckDB: its own lexer and
parser; PostgreSQL and SQLite: sqlglot's tokenizer), which functions reach past the data
(files, programs, other servers, settings) and which statements would undo a read-only lock.
Spark SQL (:mod:`.spark`) is a server dialect too: sqlglot's ``spark`` tokenizer splits it.
"""

from __future__ import annotations

from guard_kernel.analysis.sql.dialects.base import Piece, SqlDialect
from guard_kernel.analysis.sql.dialects.duckdb import DUCKDB
from guard_kernel.analysis.sql.dialects.server import POSTGRES, SQLITE
from guard_kernel.analysis.sql.dialects.spark import SPARK

DIALECTS: dict[str, SqlDialect] = {d.name: d for d in (DUCKDB, POSTGRES, SQLITE, SPARK)}
"""Dialect name (as in policy ``sources``) → dialect."""
ALIASES = {"postgresql": "postgres", "pg": "postgres", "sqlite3": "sqlite", "databricks": "spark"}


def get(name: str) -> SqlDialect:
    """The dialect called *name* (``duckdb``, ``postgres``, ``sqlite``, ``spark``; KeyError otherwise)."""
    return DIALECTS[ALIASES.get(name, name)]


__all__ = ["ALIASES", "DIALECTS", "Piece", "SqlDialect", "get"]
