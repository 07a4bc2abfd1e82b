"""The policy model: the frozen objects every other layer reads (:class:`Policy` and its parts).

Built only by :mod:`guard_kernel.policy.load`, which validates a file first; a policy that
cannot be used is a :class:`PolicyError` with its file, line, field path and reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from guard_kernel.policy.actions import ActionClass
from guard_kernel.policy.paths import PathGlob

DEFAULT_MESSAGE = "{action} on {resource} is not allowed by policy {policy}."
MESSAGE_FIELDS = frozenset({"action", "resource", "policy", "rule", "actor", "environment"})
ACTORS = ("agent", "human")


class PolicyError(ValueError):
    """A policy file that cannot be used, with where and why."""

    def __init__(self, file: str, line: int | None, field: str, reason: str) -> None:
        self.file, self.line, self.field, self.reason = file, line, field, reason
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field or '<top>'}: {reason}")

    def _render_traceback_(self) -> list[str]:  # IPython: a short message, no traceback
        return [f"PolicyError: {self}"]


# The policy model compares by identity (eq=False): every cache keys on the policy object and
# asks `is`, and the generated __eq__/__hash__ of six classes cost ~1 ms of every kernel start.
@dataclass(frozen=True, eq=False)
class Where:
    """Conditions narrowing a rule to some resources; every given key must match."""

    paths: tuple[PathGlob, ...] = ()
    tables: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    """TCP ports (``port:``): enforced by the OS layer of the guarded kernel (Landlock), not in-process."""


@dataclass(frozen=True, eq=False)
class Rule:
    """One policy rule, with where it was written."""

    id: str
    effect: str
    actions: tuple[str, ...]
    actors: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    where: Where = field(default_factory=Where)
    mode: str | None = None
    message: str | None = None
    hint: str | None = None
    file: str = "<builtin>"
    line: int = 0

    @property
    def ref(self) -> str:
        """``id (file:line)``, as shown to users and written to the audit."""
        return f"{self.id} ({os.path.basename(self.file)}:{self.line})"


@dataclass(frozen=True, eq=False)
class SourceTable:
    """A table of a source with columns that may never be read, and columns read only masked."""

    name: str
    deny_columns: frozenset[str] = frozenset()
    mask_columns: Mapping[str, str] = field(default_factory=dict)
    """column → ``redact`` | ``hash`` | ``null`` | ``last4`` (lower case): rewritten in the engine."""


@dataclass(frozen=True, eq=False)
class Source:
    """A named data source: always read-only, whatever the rules say."""

    name: str
    duckdb: str | None = None
    """Real path of the source DuckDB file, if any."""
    tables: Mapping[str, SourceTable] = field(default_factory=dict)
    paths: tuple[PathGlob, ...] = ()
    line: int = 0
    file: str = ""
    """The policy file that declares it (a parent's, under ``extends``)."""
    url: str | None = None
    """A database's URL as written, without credentials (``postgresql://host:5432/db``, ``sqlite:///x``)."""
    dialect: str | None = None
    """SQL dialect of the database (``postgres``, ``sqlite``)."""
    server: tuple[str, int, str] | None = None
    """(host, port, database) of a database server: connections are matched by these, not by URL text."""
    sqlite: str | None = None
    """Real path of a SQLite database file."""
    scratch_schemas: tuple[str, ...] = ()
    """Schemas of the database the session may write in (lower-case)."""
    spark_tables: tuple[str, ...] = ()
    """Spark catalog tables of the source (lower-case, ``db.table`` or ``table`` in any database)."""
    spark_databases: tuple[str, ...] = ()
    """Spark databases (schemas) all of whose tables belong to the source (lower-case)."""


@dataclass(frozen=True, eq=False)
class Limits:
    """Row caps per actor and what to do past them."""

    max_rows: Mapping[str, int] = field(default_factory=lambda: {"agent": 500, "human": 10000})
    on_exceed: str = "truncate"
    display_rows: int = 50
    """The most rows a DataFrame shows in a cell output."""
    display_bytes: int = 100_000
    """The most characters of a text result shown in a cell output."""

    def for_actor(self, actor: str) -> int:
        """The row cap that applies to *actor*."""
        return self.max_rows.get(actor, min(self.max_rows.values()))


@dataclass(frozen=True)
class AuditSettings:
    """What the session audit keeps (the policy's ``audit:`` section; docs/audit.md)."""

    redact_literals: bool = False
    """SQL string literals in recorded statements become ``'***'`` (values of deny columns always do)."""
    keep_outputs: bool = False
    """Record each cell's value as text."""
    max_output_bytes: int = 2048
    """At most this many bytes of a cell's output are kept."""
    live_notebook: bool = True
    """Rewrite ``<session-id>.ipynb`` next to the audit file after every cell."""


@dataclass(frozen=True, eq=False)
class Policy:
    """A validated policy: the only input of :func:`guard_kernel.decision.evaluate.decide`."""

    name: str
    file: str
    sha256: str
    root: str
    """Project root: relative globs and source paths are resolved against it."""
    description: str = ""
    mode: str = "enforce"
    lock: bool = True
    defaults: Mapping[ActionClass, str] = field(default_factory=dict)
    message: str = DEFAULT_MESSAGE
    sources: Mapping[str, Source] = field(default_factory=dict)
    scratch: tuple[PathGlob, ...] = ()
    limits: Limits = field(default_factory=Limits)
    rules: tuple[Rule, ...] = ()
    applies_to_environments: tuple[str, ...] = ()
    applies_to_actors: tuple[str, ...] = ()
    confine_mode: str = "best_effort"
    """``confine: {mode}``: best_effort (confine where the OS can), required (refuse to run otherwise), off."""
    confine_exec: str = "allow"
    """``confine: {exec}``: deny starts no new program in the guarded kernel (only Python itself)."""
    audit: AuditSettings = field(default_factory=AuditSettings)

    def deny_columns(self) -> frozenset[str]:
        """Every column name some source's table denies (lower case): the audit masks their values."""
        return frozenset(c.lower() for s in self.sources.values() for t in s.tables.values() for c in t.deny_columns)

    def mask_columns(self) -> dict[str, dict[str, str]]:
        """table → {column: mask} over every source (lower case)."""
        out: dict[str, dict[str, str]] = {}
        for s in self.sources.values():
            for t in s.tables.values():
                if t.mask_columns:
                    out.setdefault(t.name, {}).update(t.mask_columns)
        return out

    defaults_at: Mapping[ActionClass, tuple[str, int]] = field(default_factory=dict)
    """Where each class default is written: (file, line of ``defaults.<class>``, else of ``defaults:``;
    0 when the file leaves it to the built-in fallback)."""
    extends: tuple[str, ...] = ()
    """The files this policy extends, nearest parent first (``extends:``); its SHA-256 covers them all."""

    def default_for(self, cls: ActionClass) -> str:
        """The effect when no rule matches an action of class *cls*."""
        return "allow" if cls is ActionClass.NONE else self.defaults.get(cls, "deny")

    def source_paths(self) -> Iterable[tuple[Source, PathGlob]]:
        """Every (source, glob) pair that protects files, DuckDB files included."""
        for src in self.sources.values():
            for g in src.paths:
                yield src, g
            if src.duckdb:
                yield src, PathGlob(src.duckdb, src.duckdb)
                # the engine's write-ahead log is part of the database
                yield src, PathGlob(src.duckdb + ".wal", src.duckdb + ".wal")
            if src.sqlite:  # and SQLite's journals
                for suffix in ("", "-wal", "-journal", "-shm"):
                    yield src, PathGlob(src.sqlite + suffix, src.sqlite + suffix)

    def ref(self) -> dict[str, str]:
        """Name, file and SHA-256, as written to every audit record."""
        return {"name": self.name, "file": self.file, "sha256": self.sha256}
