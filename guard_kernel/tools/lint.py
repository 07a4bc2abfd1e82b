"""``guard-kernel policy check``: a policy file checked like a linter — the schema and beyond it.

Errors (the policy cannot be used): anything :func:`~guard_kernel.policy.load.load_policy` refuses,
a glob or a ``where.command`` pattern that does not compile.  Warnings (the policy works, but
probably not as meant): a declared DuckDB or SQLite source that is not on disk, tables and columns
a source does not have — in ``deny_columns`` and ``mask_columns`` — (when it can be opened read-only), a rule that can never match (an action no rule
decides, a ``where`` key its actions never carry, an actor or environment ``applies_to`` excludes),
and an ``allow``/``warn`` rule shadowed by a broader ``deny``.  Every finding is
``file:line: field: reason`` (a warning's reason starts ``warning:``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from guard_kernel.policy.actions import Action, action_matches
from guard_kernel.policy.load import load_policy
from guard_kernel.policy.model import Policy, PolicyError, Rule, Source


class Severity(str, Enum):
    """How bad a finding is."""

    ERROR = "error"
    """The policy cannot be used (exit 1)."""
    WARNING = "warning"
    """The policy works, probably not as meant (exit 0; 1 with ``--strict``)."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Finding:
    """One message of the linter."""

    file: str
    line: int | None
    field: str
    reason: str
    severity: Severity = Severity.WARNING

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        tag = "warning: " if self.severity is Severity.WARNING else ""  # an error reads as the loader says it
        return f"{where}: {self.field or '<top>'}: {tag}{self.reason}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "field": self.field, "severity": self.severity.value,
                "reason": self.reason}


# which actions carry the fact a ``where`` key tests: a rule whose actions carry none never matches
_PATH_ACTIONS = ("file.*", "export.*", "sql.export", "sql.attach", "sql.write", "sql.ddl")
_CARRIERS: dict[str, tuple[str, ...]] = {
    "paths": _PATH_ACTIONS, "tables": ("sql.*", "export.dataframe"), "columns": ("sql.*", "export.dataframe"),
    "modules": ("python.import",), "commands": ("shell.exec",), "hosts": ("net.connect",),
}
_WHERE_KEY = {"paths": "path", "tables": "tables", "columns": "columns", "modules": "module", "commands": "command",
              "hosts": "host"}
_NEVER_DECIDED_BY_RULES = frozenset({Action.SQL_UNKNOWN})


def _actions(patterns: Iterable[str]) -> set[Action]:
    return {a for a in Action if any(action_matches(p, a) for p in patterns)}


def _rule_field(i: int, key: str = "") -> str:
    return f"rules[{i}]" + (f".{key}" if key else "")


def _local(policy: Policy) -> list[int]:
    """Each rule's index in its own file (rules of an ``extends`` chain are numbered per file)."""
    seen: dict[str, int] = {}
    out = []
    for r in policy.rules:
        out.append(seen.get(r.file, 0))
        seen[r.file] = out[-1] + 1
    return out


def _compile_checks(policy: Policy) -> list[Finding]:
    out: list[Finding] = []
    globs = [(policy.file, "scratch", policy.scratch, 0)]
    globs += [(s.file or policy.file, f"sources.{s.name}.paths", s.paths, s.line) for s in policy.sources.values()]
    loc = _local(policy)
    globs += [(r.file, _rule_field(loc[i], "where.path"), r.where.paths, r.line) for i, r in enumerate(policy.rules)]
    for file, field, items, line in globs:
        for g in items:
            try:
                g.matches("/")
            except re.error as exc:
                out.append(Finding(file, line or None, field, f"glob {g.text!r} does not compile: {exc}",
                                   Severity.ERROR))
    for i, r in enumerate(policy.rules):
        for c in r.where.commands:
            try:
                re.compile(c)
            except re.error as exc:
                out.append(Finding(r.file, r.line, _rule_field(loc[i], "where.command"),
                                   f"pattern {c!r} does not compile: {exc}", Severity.ERROR))
    return out


def _catalog(src: Source) -> dict[str, set[str]]:
    """Table → columns of a DuckDB or SQLite source read-only; raises
    :class:`OSError` when it is not on disk and anything else its library raises."""
    if src.duckdb:
        if not os.path.exists(src.duckdb):
            raise OSError(f"{src.duckdb} does not exist (yet): its tables and columns are not checked")
        import duckdb

        con = duckdb.connect(src.duckdb, read_only=True)
        try:
            rows = con.execute("SELECT table_name, column_name FROM duckdb_columns()").fetchall()
        finally:
            con.close()
        return _by_table(rows)
    path = src.sqlite or ""
    if not os.path.exists(path):
        raise OSError(f"{path} does not exist (yet): its tables and columns are not checked")
    import sqlite3
    from urllib.parse import quote

    lite = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)  # read-only: the linter never writes
    try:
        rows = lite.execute("SELECT m.name, p.name FROM sqlite_schema m, pragma_table_info(m.name) p "
                            "WHERE m.type IN ('table', 'view')").fetchall()
    finally:
        lite.close()
    return _by_table(rows)


def _by_table(rows: Iterable[tuple[object, object]]) -> dict[str, set[str]]:
    cols: dict[str, set[str]] = {}
    for t, c in rows:
        cols.setdefault(str(t).lower(), set()).add(str(c).lower())
    return cols


def _source_checks(policy: Policy) -> list[Finding]:
    """DuckDB and SQLite sources on disk, and their tables and the columns ``deny_columns`` and
    ``mask_columns`` name (opened read-only; a database server is not contacted)."""
    out: list[Finding] = []
    known: dict[str, set[str]] = {}  # table → columns, over every source that could be opened
    opened_all = True
    for src in policy.sources.values():
        if not (src.duckdb or src.sqlite):
            continue
        try:
            cols = _catalog(src)
        except OSError as exc:
            out.append(Finding(src.file or policy.file, src.line or None,
                               f"sources.{src.name}.{'duckdb' if src.duckdb else 'url'}", str(exc)))
            opened_all = False
            continue
        except Exception as exc:  # locked by a writer, not a database file…: say so, check the rest
            out.append(Finding(src.file or policy.file, src.line or None,
                               f"sources.{src.name}.{'duckdb' if src.duckdb else 'url'}",
                               f"cannot be opened read-only: {exc}"))
            opened_all = False
            continue
        for t in cols:
            known.setdefault(t, set()).update(cols[t])
        base = os.path.basename(src.duckdb or src.sqlite or "")
        for name, table in src.tables.items():
            if name not in cols:
                out.append(Finding(src.file or policy.file, src.line or None, f"sources.{src.name}.tables.{name}",
                                   f"no table {name!r} in {base} (tables: {', '.join(sorted(cols)) or 'none'})"))
                continue
            for c in sorted(table.deny_columns - cols[name]):
                out.append(Finding(src.file or policy.file, src.line or None, f"sources.{src.name}.tables.{name}.deny_columns",
                                   f"table {name!r} has no column {c!r}"))
            for c in sorted(set(table.mask_columns) - cols[name]):
                out.append(Finding(src.file or policy.file, src.line or None, f"sources.{src.name}.tables.{name}.mask_columns",
                                   f"table {name!r} has no column {c!r}: the mask never applies"))
    if known and opened_all:
        loc = _local(policy)
        for i, r in enumerate(policy.rules):
            for c in r.where.columns:
                tname, _, col = c.rpartition(".")
                if tname and tname not in known:
                    out.append(Finding(r.file, r.line, _rule_field(loc[i], "where.columns"),
                                       f"no source has a table {tname!r}: {c!r} never matches a source read"))
                elif tname and col not in known[tname]:
                    out.append(Finding(r.file, r.line, _rule_field(loc[i], "where.columns"),
                                       f"table {tname!r} has no column {col!r}"))
    return out


def _never_matches(policy: Policy, i: int, r: Rule) -> list[Finding]:
    out: list[Finding] = []
    acts = _actions(r.actions)
    if acts and acts <= _NEVER_DECIDED_BY_RULES:
        out.append(Finding(r.file, r.line, _rule_field(i, "actions"),
                           "sql.unknown is always denied before any rule: this rule never decides anything"))
    for attr, carriers in _CARRIERS.items():
        if getattr(r.where, attr) and not (acts & _actions(carriers)):
            out.append(Finding(r.file, r.line, _rule_field(i, f"where.{_WHERE_KEY[attr]}"),
                               f"none of the rule's actions ({', '.join(r.actions)}) carries a "
                               f"{_WHERE_KEY[attr]}: the rule never matches"))
    applies_actors = [a for a in policy.applies_to_actors if a != "*"]
    if r.actors and applies_actors and not set(r.actors) & set(applies_actors):
        out.append(Finding(r.file, r.line, _rule_field(i, "actors"),
                           f"applies_to.actors is {applies_actors}: actors {list(r.actors)} never use this policy"))
    envs = policy.applies_to_environments
    if r.environments and envs and not set(r.environments) & set(envs):
        out.append(Finding(r.file, r.line, _rule_field(i, "environments"),
                           f"applies_to.environments is {list(envs)}: environments {list(r.environments)} "
                           "never use this policy"))
    return out


def _unconditional(r: Rule) -> bool:
    w = r.where
    return not (w.paths or w.tables or w.columns or w.modules or w.commands or w.hosts)


def _shadowed(policy: Policy, i: int, r: Rule, local: int) -> list[Finding]:
    """An allow/warn rule every request of which a broader, enforced deny also matches."""
    if r.effect == "deny":
        return []
    mine = _actions(r.actions)
    for j, d in enumerate(policy.rules):
        if d.effect != "deny" or d.mode == "audit" or j == i or not _unconditional(d):
            continue
        if not mine <= _actions(d.actions):
            continue
        if d.actors and not (r.actors and set(r.actors) <= set(d.actors)):
            continue
        if d.environments and not (r.environments and set(r.environments) <= set(d.environments)):
            continue
        return [Finding(r.file, r.line, _rule_field(local),
                        f"{r.effect} rule {r.id!r} never takes effect: deny rule {d.ref} matches everything it "
                        "does (any matching deny wins)")]
    return []


def lint_policy(path: str, root: str | None = None) -> list[Finding]:
    """Every finding for the policy file at *path* (relative paths against *root*, default cwd)."""
    try:
        policy = load_policy(path, root=root)
    except PolicyError as exc:
        return [Finding(exc.file, exc.line, exc.field, exc.reason, Severity.ERROR)]
    return lint(policy)


def lint(policy: Policy) -> list[Finding]:
    """Every finding beyond the schema for a loaded *policy*."""
    out = _compile_checks(policy) + _source_checks(policy)
    loc = _local(policy)
    for i, r in enumerate(policy.rules):
        out += _never_matches(policy, loc[i], r)
        out += _shadowed(policy, i, r, loc[i])
    return sorted(out, key=lambda f: (f.file, f.line or 0, f.field))


def exit_code(findings: Iterable[Finding], *, strict: bool = False) -> int:
    """0 clean (warnings alone included), 1 when there are errors (or warnings, with *strict*)."""
    found = list(findings)
    if any(f.severity is Severity.ERROR for f in found):
        return 1
    return 1 if strict and found else 0


__all__ = ["Finding", "Severity", "exit_code", "lint", "lint_policy"]
