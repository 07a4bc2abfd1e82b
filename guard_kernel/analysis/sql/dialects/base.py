"""What a dialect tells the classifier: statement boundaries and kinds, and its vocabulary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Piece", "SqlDialect", "Vocabulary"]


@dataclass(frozen=True)
class Piece:
    """One statement of a string: its text (as the engine will see it) and its kind.

    *kind* is the engine's statement type when the engine said (DuckDB: SELECT, INSERT…);
    empty when the classifier must read it from sqlglot's tree.
    """

    text: str
    kind: str = ""


@dataclass(frozen=True)
class Vocabulary:
    """Names a dialect gives special meaning to (all lower-case)."""

    read_functions: frozenset[str] = frozenset()
    """Table functions that only produce rows (beyond the shared list in ``refs``)."""
    denied_functions: dict[str, str] = field(default_factory=dict)
    """Function → why it is denied wherever it appears (it reaches files, programs, other
    servers or the session's settings, not data)."""
    denied_prefixes: tuple[tuple[str, str], ...] = ()
    """(name prefix, why): families such as ``lo_`` or ``dblink``."""
    read_pragmas: frozenset[str] = frozenset()
    """PRAGMAs that only report (SQLite)."""


class SqlDialect(Protocol):
    """A dialect of the one classifier."""

    name: str
    """sqlglot's name of the dialect (``duckdb``, ``postgres``, ``sqlite``)."""
    vocabulary: Vocabulary

    def split(self, text: str) -> list[Piece] | str:
        """The statements of *text*, or why they cannot be told apart (then nothing may run)."""
        ...
