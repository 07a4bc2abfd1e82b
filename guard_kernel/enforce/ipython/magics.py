"""Magics: ``%guard`` (what the guard is doing, and why it said no), and what other magics do.

:func:`magic_intent` says which magics run shell commands or write files, for the cell
analysis and the magic wrappers alike.

``%guard status``            policy, mode, lock, actor, environment, counts, audit path
``%guard explain [--json]``  the last decision with the rules (file:line) that made it
``%guard audit [--json]``    this session's audit: its path, counts, denials with their rules
``%guard policy FILE``       switch policy (only when the current one has ``lock: false``)
"""

from __future__ import annotations

import json
import os

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from guard_kernel.analysis.python.scan import (
    DEFAULT_ALIASES,
    PACKAGE_MAGICS,
    PYTHON_MAGICS,
    SCRIPT_MAGICS,
    magic_intent,
)
from guard_kernel.decision import guard as session
from guard_kernel.policy.load import load_policy

SUBCOMMANDS = ("status", "explain", "audit", "policy")

def status_text(guard: session.Guard) -> str:
    """The lines ``%guard status`` prints."""
    s = guard.status()
    lines = [
        f"policy:      {s['policy']}  ({s['policy_file']}, sha256 {str(s['sha256'])[:12]})",
        f"mode:        {s['mode']}",
        f"lock:        {'true' if s['lock'] else 'false'}",
        f"actor:       {s['actor']}",
        f"environment: {s['environment']}",
        f"row cap:     {s['max_rows']}",
        f"decisions:   allowed {s['allowed']} (warned {s['warned']}), denied {s['denied']}, "
        f"would_deny {s['would_deny']}, truncated {s['truncated']}",
        f"audit:       {s['audit']}",
    ]
    return "\n".join(lines)


def explain_text(guard: session.Guard) -> str:
    """The last decision, rendered with its rules."""
    d = guard.last
    if d is None:
        return "No decision yet in this session."
    rules = "\n".join(f"  - {r}" for r in d.rules) or "  - (no rule: built-in default)"
    out = [
        f"last decision: {d.effect.value} {d.action.value} on {d.resource}",
        f"message: {d.message or '(allowed)'}",
        "rules:",
        rules,
    ]
    if d.line is not None:
        out.append(f"line: {d.line}")
    if d.code:
        out.append(f"code: {d.code.strip().splitlines()[0][:200] if d.code.strip() else ''}")
    if d.hint:
        out.append(f"instead: {d.hint}")
    return "\n".join(out)


def audit_text(guard: session.Guard, *, as_json: bool = False) -> str:
    """This session's audit: its path, then its summary (counts, denials with their rules, chain)."""
    from guard_kernel.audit.summary import summarize, summary_text

    failure = getattr(guard.audit, "failure", None)
    if not os.path.isfile(guard.audit_path):
        return (f"audit:     {guard.audit_path}\nthe audit file is gone"
                + (f": {failure}" if failure else "") + "; every action is refused. Start a new session.")
    s = summarize(guard.audit_path)
    if failure is not None and not as_json:
        return f"{summary_text(s)}\n\nthe audit cannot be written now: {failure}; every action is refused until it can."
    if as_json:
        return json.dumps(s.as_dict(), indent=2)
    folder = os.path.dirname(guard.audit_path)
    return (f"{summary_text(s)}\n\nthe audit folder: {folder}\n"
            f"read it with: guard-kernel audit show {guard.audit_path}   (or list {folder})")


def switch_policy(guard: session.Guard, file: str) -> str:
    """Replace the guard's policy with *file* (refused under ``lock: true``); returns a summary."""
    if guard.locked:
        guard.refuse_locked("%guard policy")
    new = load_policy(file, root=guard.policy.root)
    old = guard.policy
    guard.set_policy(new)
    guard.record("policy", action=None, resource=new.file, decision="allow", rules=[],
                 message=f"policy switched from {old.name} to {new.name}",
                 old={"name": old.name, "file": old.file, "sha256": old.sha256},
                 new={"name": new.name, "file": new.file, "sha256": new.sha256})
    return f"guard_kernel: policy switched from {old.name} to {new.name} ({new.mode}, lock: {str(new.lock).lower()})"


@magic_arguments()
@argument("command", nargs="?", default="status", help="status | explain | audit | policy")
@argument("file", nargs="?", default=None, help="policy file (for `%%guard policy FILE`)")
@argument("--json", action="store_true", help="print JSON (status, explain, audit)")
def guard_magic(line: str = "") -> None:
    """``%guard``: show what the guard does in this session (registered by the extension)."""
    args = parse_argstring(guard_magic, line)
    if args.command not in SUBCOMMANDS:
        raise UsageError(f"%guard: unknown subcommand {args.command!r}; use one of {', '.join(SUBCOMMANDS)}")
    guard = session.current()
    if guard is None:
        print("guard_kernel is not active in this session (use %load_ext guard_kernel).")
        return
    if args.command == "status":
        print(json.dumps(guard.status(), indent=2) if args.json else status_text(guard))
    elif args.command == "explain":
        if args.json:
            print(json.dumps(guard.last.as_dict() if guard.last else None, indent=2))
        else:
            print(explain_text(guard))
    elif args.command == "audit":
        print(audit_text(guard, as_json=args.json))
    else:
        if not args.file:
            raise UsageError("usage: %guard policy FILE")
        print(switch_policy(guard, os.path.expanduser(args.file)))


__all__ = ["DEFAULT_ALIASES", "PACKAGE_MAGICS", "PYTHON_MAGICS", "SCRIPT_MAGICS", "audit_text", "explain_text", "guard_magic",
           "magic_intent", "status_text", "switch_policy"]
