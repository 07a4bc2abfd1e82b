"""How the guard shows what is not an error: a small, distinct display output, never stderr.

JupyterLab paints stderr like an error.  A warning, a truncation, the load banner are not errors:
they are sent as ``display_data`` with ``text/html`` (a small boxed note for people, the JSON
folded away) and a ``text/plain`` fallback (the same note and its ``json: {...}`` line, what a
terminal prints and what jupyter-mcp-server hands to an agent).  Only denials are errors (they
raise; :mod:`guard_kernel.decision.errors`).  Outside IPython the guard prints to stderr instead
(:func:`guard_kernel.decision.guard.Guard.notify`).
"""

from __future__ import annotations

import html
import sys
from collections.abc import Mapping
from typing import Any

from guard_kernel.decision.evaluate import Decision, Effect
from guard_kernel.decision.guard import Guard
from guard_kernel.decision.messages import Code, facts, json_line

META_KEY = "guard_kernel"
"""The display metadata key carrying a notice's JSON facts (for front-ends that want them without parsing)."""
_STYLE = {
    Code.WARNING: ("#8a6d00", "#fff8e1", "warning"),
    Code.TRUNCATED: ("#1f5f99", "#eef5fc", "truncated"),
    Code.NOTICE: ("#3d5a3d", "#f1f7f1", "guard_kernel"),
}
"""Border colour, background and label of each kind of notice (muted: these are not errors)."""


def plain(title: str, lines: list[str], data: Mapping[str, Any]) -> str:
    """The ``text/plain`` form: ``guard_kernel: title``, the detail lines, and the JSON line."""
    return "\n".join([f"guard_kernel: {title}", *(f"  {x}" for x in lines if x), json_line(data)])


def rich(code: Code, title: str, lines: list[str], data: Mapping[str, Any]) -> str:
    """The ``text/html`` form: a small boxed note; the JSON line folded in a ``<details>``."""
    border, background, label = _STYLE.get(code, _STYLE[Code.NOTICE])
    body = "".join(f"<div>{html.escape(x)}</div>" for x in lines if x)
    return (f'<div class="guard-kernel-notice guard-kernel-{code.value}" style="border-left:3px solid {border};'
            f'background:{background};padding:2px 8px;margin:2px 0;font-size:85%;">'
            f"<b>{html.escape(label)}</b> · {html.escape(title)}{body}"
            f'<details><summary style="font-size:90%;opacity:.7">json</summary>'
            f"<code>{html.escape(json_line(data))}</code></details></div>")


def show(ip: Any, code: Code, title: str, lines: list[str], data: Mapping[str, Any]) -> None:
    """Send one notice as a display output of *ip* (stderr if the shell cannot display)."""
    text = plain(title, lines, data)
    pub = getattr(ip, "display_pub", None)
    try:
        if pub is None:
            raise RuntimeError("no display publisher")
        pub.publish(data={"text/plain": text, "text/html": rich(code, title, lines, data)},
                    metadata={META_KEY: dict(data)})
    except Exception:  # no display machinery here (a closing shell): the note must not be lost
        print(text, file=sys.stderr)


def decision_lines(d: Decision) -> list[str]:
    """The detail lines of a decision's notice: rule, code, what to do instead."""
    rules = ", ".join(str(r) for r in d.rules)
    return [f"rule: {rules}" if rules else "",
            f"code: {d.code.strip().splitlines()[0][:200]}" if d.code and d.code.strip() else "",
            f"instead: {d.hint}" if d.hint else ""]


def notify(ip: Any) -> Any:
    """A :attr:`Guard.notify` for *ip*: warnings and truncations as notices."""

    def show_decision(d: Decision) -> None:
        data = d.as_dict()
        code = Code.TRUNCATED if d.effect is Effect.TRUNCATE else Code.WARNING
        where = f" (line {d.line})" if d.line else ""
        title = f"{d.message}{where}" if code is Code.TRUNCATED else f"{d.effect.value.upper()}: {d.message}{where}"
        show(ip, code, title, decision_lines(d), data)

    return show_decision


def banner(ip: Any, guard: Guard) -> None:
    """What ``%load_ext guard_kernel`` says once loaded: policy, mode, lock, actor, audit."""
    p = guard.policy
    lock = "locked" if guard.locked else "unlocked"
    title = f"policy {p.name} ({p.mode}, {lock}), actor {guard.actor}"
    data = facts(Code.NOTICE, f"guard_kernel loaded: {title}", None, policy=p.name, mode=p.mode, lock=guard.locked,
                 actor=guard.actor, audit=guard.audit_path)
    show(ip, Code.NOTICE, title, [f"audit: {guard.audit_path}"], data)


def note(ip: Any, message: str, hint: str | None = None) -> None:
    """A one-line notice about the session itself (already loaded, unloaded, hooks restored)."""
    show(ip, Code.NOTICE, message, [f"instead: {hint}" if hint else ""], facts(Code.NOTICE, message, hint))


__all__ = ["META_KEY", "banner", "decision_lines", "note", "notify", "plain", "rich", "show"]
