"""The one decision function.  Every hook asks :func:`decide`; nothing else says yes or no.

Order, as in Cedar: fixed protections first (``sql.unknown``, read-only sources,
``deny_columns``), then rules — any matching ``deny`` wins, otherwise a matching ``warn``
or ``allow`` — then the default of the action's class.  ``mode: audit`` (of the policy
or of a rule) turns a denial into ``would_deny``: recorded, not enforced.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any

from guard_kernel.decision.messages import MESSAGE_VERSION, Code
from guard_kernel.decision.request import Request
from guard_kernel.policy.actions import Action, ActionClass, action_class, action_matches
from guard_kernel.policy.model import Policy, Rule
from guard_kernel.policy.paths import any_match


class Effect(str, Enum):
    """What happens to an action (and what the audit records)."""

    ALLOW = "allow"
    """It runs."""
    DENY = "deny"
    """It does not run; the user sees why."""
    WARN = "warn"
    """It runs; the rule's message is shown and recorded."""
    WOULD_DENY = "would_deny"
    """It runs because the deciding rule or policy is in audit mode; recorded as a denial."""
    TRUNCATE = "truncate"
    """It ran, and its result was cut at the row cap (recorded by the row-cap layer)."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RuleHit:
    """A rule (or built-in protection) that took part in a decision."""

    id: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.id} ({self.file}:{self.line})" if self.line else self.id

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "file": self.file, "line": self.line}


@dataclass(frozen=True)
class Decision:
    """The answer to a :class:`Request`, carrying its reason."""

    effect: Effect
    action: Action
    resource: str
    rules: tuple[RuleHit, ...] = ()
    message: str = ""
    hint: str | None = None
    line: int | None = None
    code: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def blocked(self) -> bool:
        """True when the action must not run."""
        return self.effect is Effect.DENY

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape agents and the audit read."""
        d: dict[str, Any] = {
            "v": MESSAGE_VERSION,
            "code": _CODES[self.effect].value,
            "effect": self.effect.value,
            "action": self.action.value,
            "resource": self.resource,
            "rules": [r.as_dict() for r in self.rules],
            "message": self.message,
            "hint": self.hint,
        }
        if self.line is not None:
            d["line"] = self.line
        if self.code is not None:
            d["statement"] = self.code
        d.update(self.extra)  # facts only this kind of decision has (a truncation's row counts)
        return d

    @cached_property
    def audit_fields(self) -> dict[str, Any]:
        """The fields of this decision's audit record (built once: cached decisions repeat)."""
        d: dict[str, Any] = {"action": self.action.value, "resource": self.resource, "decision": self.effect.value,
                             "rules": [r.as_dict() for r in self.rules], "message": self.message}
        if self.line is not None:
            d["line"] = self.line
        if self.code is not None:
            d["statement"] = self.code
        if self.hint and self.effect is not Effect.ALLOW:
            d["hint"] = self.hint
        return d

    def to_json(self) -> str:
        return json.dumps(self.as_dict())

    def render(self) -> str:
        """One short human-readable paragraph."""
        where = f" (line {self.line})" if self.line else ""
        rules = ", ".join(str(r) for r in self.rules) or "default"
        text = f"{self.effect.value.upper()}: {self.message}{where}\n  rule: {rules}"
        if self.code:
            text += f"\n  code: {self.code.strip().splitlines()[0][:200]}"
        if self.hint:
            text += f"\n  instead: {self.hint}"
        return text


_CODES = {Effect.DENY: Code.POLICY_VIOLATION, Effect.WOULD_DENY: Code.WARNING, Effect.WARN: Code.WARNING,
          Effect.TRUNCATE: Code.TRUNCATED, Effect.ALLOW: Code.ALLOWED}
"""``code`` of a decision's JSON facts (:mod:`.messages`), by effect."""


# ------------------------------------------------------------------- matching

WRITE_LIKE = frozenset({
    Action.SQL_WRITE, Action.SQL_DDL, Action.SQL_CONFIG, Action.FILE_WRITE, Action.FILE_DELETE,
    Action.EXPORT_DATAFRAME, Action.SQL_EXPORT, Action.SQL_ATTACH, Action.EXPORT_CLIPBOARD,
})

_HINTS: dict[Action, str] = {
    Action.SQL_UNKNOWN: "Send one plain statement the guard can parse (SELECT, CREATE TEMP TABLE …, INSERT into your own tables).",
    Action.SQL_WRITE: "Write into a table you own: CREATE TEMP TABLE mine AS SELECT … and change that.",
    Action.SQL_DDL: "Create and change your own tables (CREATE TEMP TABLE …); source objects stay as they are.",
    Action.SQL_EXPORT: "Keep results in the notebook, or COPY into the scratch area if the policy allows it.",
    Action.SQL_ATTACH: "Attach databases READ_ONLY: ATTACH 'file.duckdb' AS db (READ_ONLY).",
    Action.SQL_CONFIG: "Engine settings are fixed by the guard; leave them as they are.",
    Action.SQL_EXTENSION: "Extensions are fixed by the guard; use the built-in functions.",
    Action.FILE_WRITE: "Write files under the scratch area.",
    Action.FILE_DELETE: "Delete only files you created under the scratch area.",
    Action.EXPORT_DATAFRAME: "Show the result in the notebook, or write it under the scratch area.",
    Action.EXPORT_CLIPBOARD: "Show the result in the notebook instead.",
    Action.NET_CONNECT: "Work with the data already in the project; ask a human to fetch what is missing.",
    Action.SHELL_EXEC: "Use Python (pathlib, pandas, duckdb) in the notebook instead of a shell command.",
    Action.PYTHON_IMPORT: "Use a module the policy allows.",
    Action.SQL_READ: "Read the tables and columns the policy allows (%guard explain names the rule).",
    Action.FILE_READ: "Read the files the policy allows (%guard explain names the rule).",
    Action.KERNEL_REQUEST: "Send the code as an ordinary cell.",
}


def _base(file: str) -> str:
    return file.rsplit("/", 1)[-1]


def _scratch_hint(policy: Policy) -> str:
    return ", ".join(g.text for g in policy.scratch) or "none declared"


def _source_hint(policy: Policy, req: Request) -> str:
    """What to do instead of writing to a source: own tables for SQL, scratch for files."""
    if req.written:
        t = req.written[0]
        return f"Copy what you need into your own table: CREATE TEMP TABLE my_{t.name} AS SELECT … FROM {t}."
    if req.action is Action.SQL_ATTACH:
        return _HINTS[Action.SQL_ATTACH]
    return f"Read it, and write results under the scratch area ({_scratch_hint(policy)})."


_BY_ACTION: dict[int, tuple[Policy, dict[Action, tuple[Rule, ...]]]] = {}
"""id(policy) → (policy, action → its rules whose action patterns cover that action, in order).
The entry holds the policy, so its id cannot be reused while the entry exists."""


def _rules_for(policy: Policy, action: Action) -> tuple[Rule, ...]:
    """The rules of *policy* that name *action* (matching the patterns once per action, not per request)."""
    entry = _BY_ACTION.get(id(policy))
    if entry is None or entry[0] is not policy:
        if len(_BY_ACTION) >= 64:
            _BY_ACTION.clear()
        entry = _BY_ACTION[id(policy)] = (policy, {})
    rules = entry[1].get(action)
    if rules is None:
        rules = entry[1][action] = tuple(r for r in policy.rules if any(action_matches(p, action) for p in r.actions))
    return rules


def _rule_applies(rule: Rule, req: Request, actor: str, environment: str) -> bool:
    """Whether *rule* (one of :func:`_rules_for` the request's action) applies to *req*."""
    if rule.actors and actor not in rule.actors:
        return False
    if rule.environments and environment not in rule.environments:
        return False
    w = rule.where
    if w.paths and not (req.path and any_match(w.paths, req.path)):
        return False
    if w.tables:
        names = {t.name for t in req.tables} | {str(t) for t in req.tables}
        if not names.intersection(w.tables):
            return False
    if w.columns and not _columns_hit(req, w.columns):
        return False
    if w.modules and not (req.module and any(req.module == m or req.module.startswith(m + ".") for m in w.modules)):
        return False
    if w.commands and not (req.command and any(re.search(c, req.command) for c in w.commands)):
        return False
    return not (w.hosts and not (req.host and any(req.host == h or req.host.endswith("." + h) for h in w.hosts)))


def _columns_hit(req: Request, wanted: tuple[str, ...]) -> bool:
    """Whether *req* reads any of *wanted* (``table.col`` or ``col``), stars included."""
    for want in wanted:
        table, _, col = want.rpartition(".")
        for c in req.columns:
            ctable, _, cname = c.rpartition(".")
            if cname == col and (not table or not ctable or ctable == table):
                return True
        for s in req.stars:
            if (col not in s.exclude and (s.table is None or not table or s.table == table)
                    and (not table or any(t.name == table for t in req.tables))):
                return True
        for pat in req.column_patterns:
            if (not table or any(t.name == table for t in req.tables)) and re.search(pat, col):
                return True
    return False


def _protections(policy: Policy, req: Request, protected: tuple[str, ...] = ()) -> tuple[RuleHit, str, str] | None:
    """Fixed protections that no rule can lift: (hit, message, hint) or None."""
    if req.action is Action.SQL_UNKNOWN:
        return (RuleHit("sql-unknown", "<guard>", 0),
                f"The guard could not classify this SQL, so it is denied: {req.reason or 'unknown statement'}.",
                _HINTS[Action.SQL_UNKNOWN])
    if req.action in WRITE_LIKE and not (req.action is Action.SQL_ATTACH and req.read_only):
        if req.path:
            for folder in protected:
                if req.path == folder or req.path.startswith(folder + os.sep):
                    return (RuleHit("audit-dir", "<guard>", 0),
                            f"{req.action} on {req.resource}: the session's audit folder is never writable from the session.",
                            "Write under the scratch area instead.")
            if os.path.isabs(policy.file) and req.path == os.path.realpath(policy.file):
                return (RuleHit("policy-file", "<guard>", 0),
                        f"{req.action} on {req.resource}: the policy file in force is never writable from a guarded session.",
                        "Change the policy outside the session, then start a new one.")
            for src, glob in policy.source_paths():
                if glob.matches(req.path):
                    return (RuleHit(f"source:{src.name}", _base(src.file or policy.file), src.line),
                            f"{req.action} on {req.resource}: source '{src.name}' ({glob.text}) is read-only.",
                            _source_hint(policy, req))
        for t in req.written:
            if t.source:
                owner = policy.sources.get(t.source)
                return (RuleHit(f"source:{t.source}", _base(owner.file or policy.file) if owner else _base(policy.file),
                                owner.line if owner else 0),
                        f"{req.action} on {t}: source '{t.source}' is read-only.",
                        _source_hint(policy, req))
    for src in policy.sources.values():
        for table in src.tables.values():
            if not table.deny_columns:
                continue
            refs = [t for t in req.tables if t.name == table.name and (t.source in (None, src.name))]
            if not refs:
                continue
            scoped = Request(req.action, req.resource, tables=tuple(refs), columns=req.columns,
                             stars=req.stars, column_patterns=req.column_patterns)
            for col in sorted(table.deny_columns):
                if _columns_hit(scoped, (f"{table.name}.{col}",)):
                    return (RuleHit(f"source:{src.name}.{table.name}.deny_columns", _base(src.file or policy.file),
                                    src.line),
                            f"Column {table.name}.{col} of source '{src.name}' may not be read (SELECT * and whole-row reads included).",
                            f"Name the columns you need, without {col}: SELECT * EXCLUDE ({col}) FROM {table.name}.")
    return None


def mask_denial(policy: Policy, err: Any, stmt: Decision) -> Decision:
    """The denial of a statement that uses a masked column where masking cannot hold (*err*: a
    ``MaskDenied`` with ``table``, ``column`` and its message); would-deny in audit mode."""
    src = next((s for s in policy.sources.values() if err.table in s.tables and s.tables[err.table].mask_columns),
               None)
    hit = RuleHit(f"source:{src.name if src else '?'}.{err.table}.mask_columns",
                  _base((src.file if src else "") or policy.file), src.line if src else 0)
    return Decision(Effect.WOULD_DENY if policy.mode == "audit" else Effect.DENY, stmt.action, stmt.resource,
                    (hit,), f"Masked columns: {err}.",
                    f"Read {err.table}.{err.column} only in the select list (it comes back masked), and filter, "
                    "join, group or order on other columns.", stmt.line, stmt.code)


def view_denial(policy: Policy, view: str, table: str, stmt: Decision) -> Decision:
    """The denial of a use of *view*, a view or function stored in a source that reads *table*,
    whose columns are denied or masked: the guard does not follow such an object's columns (fail
    closed); would-deny in audit mode."""
    src = next((s for s in policy.sources.values() if table in s.tables), None)
    t = src.tables[table] if src is not None else None
    kind = "deny_columns" if t is not None and t.deny_columns else "mask_columns"
    cols = ", ".join(sorted(t.deny_columns if kind == "deny_columns" else t.mask_columns)) if t is not None else "?"
    hit = RuleHit(f"source:{src.name if src else '?'}.{table}.{kind}",
                  _base((src.file if src else "") or policy.file), src.line if src else 0)
    return Decision(Effect.WOULD_DENY if policy.mode == "audit" else Effect.DENY, stmt.action, stmt.resource,
                    (hit,), f"{view} is stored in the database (a view or a function) and reads {table} (columns "
                    f"{cols} {'denied' if kind == 'deny_columns' else 'masked'}): the guard does not follow its "
                    "columns, so using it is denied.",
                    f"Read {table} itself, naming the columns you need.", stmt.line, stmt.code)


def _render(template: str, policy: Policy, req: Request, rule: str, actor: str, environment: str) -> str:
    try:
        return template.format(action=req.action.value, resource=req.resource, policy=policy.name,
                               rule=rule, actor=actor, environment=environment)
    except (KeyError, IndexError, ValueError):  # validated at load; never crash the guard here
        return template


def decide(policy: Policy, req: Request, actor: str, environment: str, protected: tuple[str, ...] = ()) -> Decision:
    """Decide *req* for *actor* in *environment* under *policy*; *protected*: real paths of folders
    the session may never write (its audit folder), whatever the policy says."""
    audit_mode = policy.mode == "audit"

    def make(effect: Effect, hits: tuple[RuleHit, ...], message: str, hint: str | None) -> Decision:
        if effect is Effect.DENY and audit_mode:
            effect = Effect.WOULD_DENY
        return Decision(effect, req.action, req.resource, hits, message, hint, req.line, req.code)

    fixed = _protections(policy, req, protected)
    if fixed is not None:
        return make(Effect.DENY, (fixed[0],), fixed[1], fixed[2])

    denies: list[Rule] = []
    audits: list[Rule] = []
    warns: list[Rule] = []
    allows: list[Rule] = []
    for rule in _rules_for(policy, req.action):
        if not _rule_applies(rule, req, actor, environment):
            continue
        if rule.effect == "deny":
            (audits if rule.mode == "audit" else denies).append(rule)
        elif rule.effect == "warn":
            warns.append(rule)
        else:
            allows.append(rule)

    def hit(r: Rule) -> RuleHit:
        return RuleHit(r.id, _base(r.file), r.line)

    def message(r: Rule) -> str:
        return _render(r.message or policy.message, policy, req, r.id, actor, environment)

    if denies:
        r = denies[0]
        return make(Effect.DENY, tuple(hit(x) for x in denies), message(r), r.hint or _HINTS.get(req.action))
    if warns or allows:
        r = (warns or allows)[0]
        effect = Effect.WARN if warns else Effect.ALLOW
        result = make(effect, tuple(hit(x) for x in warns + allows), message(r) if warns else "", r.hint)
    else:
        cls = action_class(req.action, read_only=req.read_only)
        default = policy.default_for(cls)
        in_scratch = bool(req.path and any_match(policy.scratch, req.path))
        if default != "allow" and cls in (ActionClass.WRITE, ActionClass.EXPORT) and (req.owned or in_scratch):
            default = "allow"  # the session's own objects and the scratch area
        at_file, at_line = policy.defaults_at.get(cls, (policy.file, 0))
        hits = (RuleHit(f"defaults.{cls.value}", _base(at_file), at_line),)
        if default == "deny":
            hint = _HINTS.get(req.action)
            if req.action in (Action.EXPORT_DATAFRAME, Action.FILE_WRITE, Action.SQL_EXPORT) and policy.scratch:
                hint = f"Write under the scratch area instead ({_scratch_hint(policy)})."
            return make(Effect.DENY, hits, _render(policy.message, policy, req, hits[0].id, actor, environment), hint)
        result = make(Effect.WARN if default == "warn" else Effect.ALLOW, hits,
                      _render(policy.message, policy, req, hits[0].id, actor, environment) if default == "warn" else "",
                      None)
    if audits:  # an audit-mode deny rule matched: the action runs, the record says so
        r = audits[0]
        return Decision(Effect.WOULD_DENY, req.action, req.resource, tuple(hit(x) for x in audits),
                        message(r), r.hint or _HINTS.get(req.action), req.line, req.code)
    return result
