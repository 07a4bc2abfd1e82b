"""What every hook asks about: a :class:`Request` (one action about to happen) and the
tables and stars the analysis found in it.  Answered by :func:`guard_kernel.decision.evaluate.decide`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

from guard_kernel.policy.actions import Action


@dataclass(frozen=True)
class TableRef:
    """A table a statement touches, resolved as far as the caller could."""

    name: str
    """Lower-case table name."""
    catalog: str | None = None
    """Catalog (attached database alias), when known."""
    source: str | None = None
    """Name of the policy source this table belongs to, when the caller resolved it."""

    def __str__(self) -> str:
        return f"{self.catalog}.{self.name}" if self.catalog else self.name


@dataclass(frozen=True)
class StarRef:
    """A ``*``-like reference that reads every column of *table* (None: every table in scope)."""

    table: str | None = None
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Request:
    """One action about to happen, with the facts the analysis found."""

    action: Action
    resource: str
    """What is acted on, as shown to users: a table, a path, a command, a host, a module."""
    path: str | None = None
    """Resolved real path for file-like actions (file.*, export.*, sql.export, attach)."""
    tables: tuple[TableRef, ...] = ()
    """Tables read or written."""
    written: tuple[TableRef, ...] = ()
    """The subset of tables this action changes."""
    columns: tuple[str, ...] = ()
    """Columns referenced, lower-case, ``table.column`` where the table is known."""
    stars: tuple[StarRef, ...] = ()
    """Whole-row reads (``SELECT *``, ``SUMMARIZE``, ``COLUMNS(...)``, the relation API)."""
    column_patterns: tuple[str, ...] = ()
    """Regexes of ``COLUMNS('regex')`` references."""
    module: str | None = None
    command: str | None = None
    host: str | None = None
    owned: bool = False
    """The target was created by this session (exempt from the ``write`` default)."""
    read_only: bool = False
    """For ``sql.attach``: the database is attached READ_ONLY."""
    reason: str | None = None
    """Why the analysis could not classify (``sql.unknown``) or other analysis notes."""
    line: int | None = None
    """Line of the cell the action comes from, when known."""
    code: str | None = None
    """The statement or line of code."""
    _hash: int = field(init=False, compare=False, repr=False, default=0)

    def __post_init__(self) -> None:
        # requests are dict keys of the decision cache: hash the 16 fields once, not per lookup
        object.__setattr__(self, "_hash", hash(_request_key(self)))

    def __hash__(self) -> int:
        return self._hash


_REQUEST_FIELDS = tuple(f for f in Request.__dataclass_fields__ if f != "_hash")
_request_key = operator.attrgetter(*_REQUEST_FIELDS)


__all__ = ["Request", "StarRef", "TableRef"]
