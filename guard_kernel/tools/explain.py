"""``guard-kernel policy explain``: what one actor may and may not do under a policy, in plain language.

Grouped by action class (read, write, export, network, shell, imports); each line names the rule
(id, file, line) that says so — the file too, since a rule may come from a parent policy
(``extends``).  Also the fixed protections (read-only sources, protected and masked columns,
``sql.unknown``),
the scratch area and the row cap.  The equivalent of datasette's permission debug page.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from guard_kernel.policy.actions import Action, ActionClass, action_class, action_matches
from guard_kernel.policy.model import Policy, Rule

CLASS_TITLES: dict[ActionClass, str] = {
    ActionClass.READ: "read", ActionClass.WRITE: "write", ActionClass.EXPORT: "export",
    ActionClass.NETWORK: "network", ActionClass.SHELL: "shell", ActionClass.NONE: "imports",
}


_MASK_TEXT = {"redact": "as ***", "hash": "as a keyed HMAC", "null": "as NULL", "last4": "as ***+last 4"}
"""How each ``mask_columns`` kind reads in the explanation."""


@dataclass(frozen=True)
class RuleLine:
    """One rule as it applies to one action class."""

    rule: Rule
    actions: tuple[str, ...]
    """The rule's actions that belong to the class."""

    def where_text(self) -> str:
        w = self.rule.where
        parts = [("path", [g.text for g in w.paths]), ("tables", list(w.tables)), ("columns", list(w.columns)),
                 ("module", list(w.modules)), ("command", list(w.commands)), ("host", list(w.hosts))]
        return "; ".join(f"{k} {', '.join(v)}" for k, v in parts if v)

    def text(self) -> str:
        r = self.rule
        verb = {"deny": "denied", "allow": "allowed", "warn": "allowed with a warning"}[r.effect]
        if r.effect == "deny" and (r.mode == "audit"):
            verb = "recorded as would_deny (audit mode: it runs)"
        where = self.where_text()
        return (f"{', '.join(self.actions)}{' where ' + where if where else ''}: {verb}"
                f" — rule {r.id} ({_short(r.file)}:{r.line})")

    def as_dict(self) -> dict[str, Any]:
        r = self.rule
        return {"id": r.id, "file": r.file, "line": r.line, "effect": r.effect, "mode": r.mode,
                "actions": list(self.actions), "where": self.where_text() or None, "message": r.message}


def _short(file: str) -> str:
    return os.path.basename(file)


def _applies(rule: Rule, actor: str, environment: str) -> bool:
    return (not rule.actors or actor in rule.actors) and (not rule.environments or environment in rule.environments)


def _class_actions(cls: ActionClass) -> list[Action]:
    acts = [a for a in Action if action_class(a) is cls]
    if cls is ActionClass.READ:
        acts.append(Action.SQL_ATTACH)  # a READ_ONLY attach is a read
    return acts


def explain(policy: Policy, actor: str, environment: str = "default") -> dict[str, Any]:
    """What *actor* in *environment* may do under *policy*, as data (``policy explain --json``)."""
    out: dict[str, Any] = {
        "policy": policy.ref(), "actor": actor, "environment": environment, "mode": policy.mode,
        "lock": policy.lock, "classes": {}, "not_for_this_actor": [],
        "sources": [{"name": s.name, "duckdb": s.duckdb, "paths": [g.text for g in s.paths],
                     "protected_columns": {t: sorted(st.deny_columns) for t, st in s.tables.items() if st.deny_columns},
                     "masked_columns": {t: dict(sorted(st.mask_columns.items())) for t, st in s.tables.items()
                                        if st.mask_columns},
                     "file": s.file or policy.file, "line": s.line} for s in policy.sources.values()],
        "extends": list(policy.extends),
        "scratch": [g.text for g in policy.scratch],
        "max_rows": policy.limits.for_actor(actor), "on_exceed": policy.limits.on_exceed,
    }
    for cls, title in CLASS_TITLES.items():
        acts = _class_actions(cls)
        lines = []
        for r in policy.rules:
            if not _applies(r, actor, environment):
                continue
            mine = tuple(a.value for a in acts if any(action_matches(p, a) for p in r.actions)
                         and a is not Action.SQL_UNKNOWN)
            if mine:
                lines.append(RuleLine(r, mine))
        out["classes"][title] = {
            "default": policy.default_for(cls),
            "default_rule": {"id": f"defaults.{cls.value}",
                             "file": policy.defaults_at.get(cls, (policy.file, 0))[0],
                             "line": policy.defaults_at.get(cls, (policy.file, 0))[1]}
            if cls is not ActionClass.NONE else None,
            "actions": [a.value for a in acts],
            "rules": [x.as_dict() for x in lines],
            "_lines": lines,
        }
    out["not_for_this_actor"] = [{"id": r.id, "file": r.file, "line": r.line, "actors": list(r.actors),
                                  "environments": list(r.environments)}
                                 for r in policy.rules if not _applies(r, actor, environment)]
    return out


def as_json(data: dict[str, Any]) -> dict[str, Any]:
    """*data* without the objects only the text rendering uses."""
    return {**data, "classes": {k: {x: y for x, y in v.items() if x != "_lines"} for k, v in data["classes"].items()}}


def render(data: dict[str, Any]) -> str:
    """The plain-language text of ``policy explain``."""
    pol = data["policy"]
    out = [f"policy {pol['name']} ({pol['file']}), actor {data['actor']}, environment {data['environment']}: "
           f"mode {data['mode']}{' (nothing is blocked, denials are recorded)' if data['mode'] == 'audit' else ''}, "
           f"lock {'on' if data['lock'] else 'off'}"]
    if data["extends"]:
        out.append("extends " + " → ".join(data["extends"]) + " (each rule names the file it comes from)")
    out.append("")
    srcs = data["sources"]
    for title, c in data["classes"].items():
        default = c["default"]
        if title == "imports":
            head = "imports — allowed unless a rule denies them"
        else:
            d = c["default_rule"]
            line = f":{d['line']}" if d["line"] else ""
            names = [a + (" READ_ONLY" if title == "read" and a == "sql.attach" else "") for a in c["actions"]
                     if a != "sql.unknown"]
            head = (f"{title} ({', '.join(names)}) — "
                    f"{'allowed' if default == 'allow' else 'denied' if default == 'deny' else 'warned'} by default "
                    f"(defaults.{title}, {_short(d['file'])}{line})")
        out.append(head)
        if title == "read":
            for s in srcs:
                for t, cols in s["protected_columns"].items():
                    out.append(f"  - never: {', '.join(f'{t}.{x}' for x in cols)} of source {s['name']}, "
                               f"SELECT * and whole-row reads included ({_short(s['file'])}:{s['line']})")
                for t, masks in s.get("masked_columns", {}).items():
                    shown = ", ".join(f"{t}.{c} ({_MASK_TEXT[m]})" for c, m in masks.items())
                    out.append(f"  - masked: {shown} of source {s['name']} come back masked, computed in the "
                               f"database; a read that filters, joins, groups or orders on them is denied "
                               f"({_short(s['file'])}:{s['line']})")
            out.append(f"  - row cap: at most {data['max_rows']} rows per query into Python for {data['actor']} "
                       f"(past it: {data['on_exceed']})")
        if title == "write":
            for s in srcs:
                what = ", ".join(([s["duckdb"]] if s["duckdb"] else []) + s["paths"])
                out.append(f"  - never: changes to source {s['name']} ({what}): sources are read-only, whatever "
                           f"the rules say ({_short(s['file'])}:{s['line']})")
            out.append("  - never: SQL the guard cannot classify (sql.unknown)")
        if title in ("write", "export") and default != "allow":
            out.append(f"  - allowed anyway: the session's own tables, views and files, and paths under scratch "
                       f"({', '.join(data['scratch']) or 'none declared'})")
        for x in c["_lines"]:
            out.append(f"  - {x.text()}")
        out.append("")
    if data["not_for_this_actor"]:
        out.append("rules for other actors or environments: "
                   + ", ".join(f"{r['id']} ({_short(r['file'])}:{r['line']})" for r in data["not_for_this_actor"]))
    return "\n".join(out).rstrip() + "\n"


__all__ = ["as_json", "explain", "render"]
