"""``guard-kernel policy test``: table-driven cases for a policy, decided by the pre-flight.

A cases file (``policies/tests/<policy>.yaml`` by default) is a YAML list of::

    - name: agent cannot delete source rows
      actor: agent              # default agent
      environment: default      # default "default"
      sql: DELETE FROM orders   # or code: <Python / IPython cell>
      expect: {effect: deny, rules: [source:warehouse]}

``effect`` is the strongest effect among the decisions (deny > would_deny > warn > allow), or
``runtime`` when nothing is denied but something is decided only at run time; ``rules`` (optional)
must all be among the rule ids of the decisions with that effect.  Each case is answered by
:func:`guard_kernel.tools.preflight.check` — the session's own analysis and ``decide()``.
A malformed cases file is refused with ``file:line: field: reason``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from guard_kernel.decision.evaluate import Effect
from guard_kernel.policy._yaml import yaml
from guard_kernel.policy.model import ACTORS, Policy, PolicyError
from guard_kernel.tools.preflight import Outcome, Report, check

EFFECTS = ("allow", "warn", "would_deny", "deny", "runtime")
_STRENGTH = {Effect.ALLOW: 0, Effect.TRUNCATE: 0, Effect.WARN: 1, Effect.WOULD_DENY: 2, Effect.DENY: 3}
_KEYS = {"name", "actor", "environment", "code", "sql", "expect"}


@dataclass(frozen=True)
class Case:
    """One table-driven case."""

    name: str
    code: str
    language: str
    """``python`` or ``sql``."""
    effect: str
    rules: tuple[str, ...] = ()
    actor: str = "agent"
    environment: str = "default"
    file: str = ""
    line: int = 0


@dataclass(frozen=True)
class Result:
    """A case and what the pre-flight said."""

    case: Case
    effect: str
    rules: tuple[str, ...]
    report: Report

    @property
    def passed(self) -> bool:
        return self.effect == self.case.effect and set(self.case.rules) <= set(self.rules)

    def explain(self) -> str:
        """Why a failed case failed."""
        want = f"{self.case.effect}" + (f" by {', '.join(self.case.rules)}" if self.case.rules else "")
        got = f"{self.effect}" + (f" by {', '.join(self.rules)}" if self.rules else "")
        return f"expected {want}, got {got}\n" + "\n".join("    " + x for x in self.report.render().splitlines())


def load_cases(path: str) -> list[Case]:
    """The cases of the file at *path*; :class:`PolicyError` (file:line: field: reason) if malformed."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise PolicyError(path, None, "", f"cannot read cases file: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PolicyError(path, mark.line + 1 if mark else None, "",
                          f"not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(node, yaml.SequenceNode):
        raise PolicyError(path, 1, "", "a cases file is a YAML list of cases")
    data = yaml.safe_load(text)
    return [_case(path, i, item, n) for i, (item, n) in enumerate(zip(data, node.value, strict=True))]


def _case(path: str, i: int, item: Any, node: Any) -> Case:
    line = node.start_mark.line + 1

    def err(field: str, reason: str) -> PolicyError:
        return PolicyError(path, line, f"[{i}]" + (f".{field}" if field else ""), reason)

    if not isinstance(item, dict):
        raise err("", "a case is a mapping: {name, actor, environment, code | sql, expect}")
    extra = sorted(set(item) - _KEYS)
    if extra:
        raise err(extra[0], f"unknown key {extra[0]!r} (allowed: {', '.join(sorted(_KEYS))})")
    if not isinstance(item.get("name"), str) or not item["name"]:
        raise err("name", "required: a non-empty string")
    if ("code" in item) == ("sql" in item) or not isinstance(item.get("code", item.get("sql")), str):
        raise err("code", "give exactly one of code or sql, a string")
    actor = item.get("actor", "agent")
    if actor not in ACTORS:
        raise err("actor", f"must be one of {', '.join(ACTORS)}, not {actor!r}")
    expect = item.get("expect")
    if not isinstance(expect, dict) or expect.get("effect") not in EFFECTS or set(expect) - {"effect", "rules"}:
        raise err("expect", f"required: {{effect: one of {', '.join(EFFECTS)}, rules: [rule ids] (optional)}}")
    rules = expect.get("rules") or []
    if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
        raise err("expect.rules", "a list of rule ids")
    return Case(item["name"], str(item.get("code", item.get("sql"))), "python" if "code" in item else "sql",
                expect["effect"], tuple(rules), actor, str(item.get("environment", "default")), path, line)


def default_cases_file(policy_file: str) -> str:
    """``policies/tests/<policy>.yaml`` for ``policies/<policy>.yaml``."""
    folder, name = os.path.split(os.path.abspath(policy_file))
    return os.path.join(folder, "tests", name)


def outcome(report: Report) -> tuple[str, tuple[str, ...]]:
    """The effect a case compares (the strongest one, or ``runtime``) and the rule ids behind it."""
    if report.outcome is Outcome.RUNTIME:
        return "runtime", ()
    decisions = report.decisions
    if not decisions:
        return "allow", ()
    top = max(_STRENGTH[d.effect] for d in decisions)
    chosen = [d for d in decisions if _STRENGTH[d.effect] == top]
    rules = tuple(dict.fromkeys(r.id for d in chosen for r in d.rules))
    return chosen[0].effect.value, rules


def run_case(policy: Policy, case: Case, cwd: str | None = None) -> Result:
    """Decide *case* under *policy* (nothing is executed)."""
    report = check(case.code, policy=policy, actor=case.actor, environment=case.environment, cwd=cwd,
                   language=case.language)
    effect, rules = outcome(report)
    return Result(case, effect, rules, report)


def run_cases(policy: Policy, cases: Iterable[Case], cwd: str | None = None) -> list[Result]:
    return [run_case(policy, c, cwd) for c in cases]


def summary(results: Sequence[Result]) -> str:
    """The last line: ``N passed, N failed``."""
    failed = sum(not r.passed for r in results)
    return f"{len(results) - failed} passed, {failed} failed"


__all__ = ["Case", "Result", "default_cases_file", "load_cases", "outcome", "run_case", "run_cases", "summary"]
