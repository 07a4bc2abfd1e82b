"""Magics: ``%guard`` (what the guard is doing, and why it said no), and what other magics do.

:func:`magic_intent` says which magics run shell commands or write files, for the cell
analysis and the magic wrappers alike.

``%guard status``              policy, mode, lock, actor, environment, counts, audit path
``%guard explain [N] [--json]`` the last (or N-th last) decision with the rules (file:line) that made it
``%guard audit [--json]``      this session's audit: its path, counts, denials with their rules
``%guard policy FILE``         switch policy (only when the current one has ``lock: false``)
``%guard check [--json] CODE`` the pre-flight in this session (``%%guard check`` for a cell)
``%guard help`` / ``-h``       the usage; unknown sub-commands and stray arguments are usage errors
"""

from __future__ import annotations

import json
import os
import shlex
from typing import Any

from IPython.core.error import UsageError

from guard_kernel.analysis.python.scan import (
    DEFAULT_ALIASES,
    PACKAGE_MAGICS,
    PYTHON_MAGICS,
    SCRIPT_MAGICS,
    magic_intent,
)
from guard_kernel.decision import guard as session
from guard_kernel.decision.evaluate import Decision
from guard_kernel.policy.load import load_policy

SUBCOMMANDS = ("status", "explain", "audit", "policy", "check")


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


def explain_text(guard: session.Guard, decision: Decision | None = None) -> str:
    """A decision (default: the last one), rendered with its rules."""
    d = decision if decision is not None else guard.last
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
    from guard_kernel.audit.live import notebook_path
    from guard_kernel.audit.summary import summarize, summary_text

    failure = getattr(guard.audit, "failure", None)
    if not os.path.isfile(guard.audit_path):
        return (f"audit:     {guard.audit_path}\nthe audit file is gone"
                + (f": {failure}" if failure else "") + "; every action is refused. Start a new session.")
    s = summarize(guard.audit_path)
    live = notebook_path(guard.audit_path) if guard.policy.audit.live_notebook else None
    if failure is not None and not as_json:
        return f"{summary_text(s)}\n\nthe audit cannot be written now: {failure}; every action is refused until it can."
    if as_json:
        return json.dumps({**s.as_dict(), "live_notebook": live}, indent=2)
    folder = os.path.dirname(guard.audit_path)
    return (f"{summary_text(s)}\n\nthe audit folder: {folder}\n"
            f"live notebook: {live or 'off (audit: {live_notebook: false})'}"
            + ("  (open it in JupyterLab; rewritten after every cell)\n" if live else "\n") +
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


USAGE = """usage: %guard [SUBCOMMAND] [ARGS]
  %guard status [--json]        policy, mode, lock, actor, environment, counts, audit path (the default)
  %guard explain [N] [--json]   the last decision (N: the N-th last one recorded) and the rules that made it
  %guard audit [--json]         this session's audit: its path, counts, denials with their rules
  %guard policy FILE            switch policy (only when the current one has lock: false)
  %guard check [--json] CODE    would CODE be allowed here? decided without running it (%%guard check: a cell)
  %guard help | -h              this help"""


def _usage(problem: str) -> UsageError:
    return UsageError(f"%guard: {problem}\n{USAGE}")


def _flags(words: list[str], allowed: tuple[str, ...], max_positional: int) -> tuple[set[str], list[str]]:
    """The flags and positional words of a sub-command; anything else is a usage error."""
    flags = {w for w in words if w.startswith("-")}
    positional = [w for w in words if not w.startswith("-")]
    bad = sorted(flags - set(allowed))
    if bad:
        raise _usage(f"unknown option {bad[0]!r}")
    if len(positional) > max_positional:
        raise _usage(f"unexpected argument {positional[max_positional]!r}")
    return flags, positional


def explain_nth(guard: session.Guard, n: int) -> Decision | None:
    """The *n*-th last decision the session recorded (1: the latest), or None."""
    return guard.history[-n] if 0 < n <= len(guard.history) else None


def check_text(guard: session.Guard, code: str, *, as_json: bool, shell: Any = None) -> str:
    """``%guard check``: the pre-flight for *code* in this session (nothing runs, nothing is recorded)."""
    from guard_kernel.analysis.preflight import check  # loaded on first use, not at start-up

    report = check(code, guard=guard, shell=shell)
    return report.to_json() if as_json else report.render()


def guard_magic(line: str = "", cell: str | None = None) -> None:
    """``%guard``: show what the guard does in this session (registered by the extension)."""
    line = line.strip()
    command, _, rest = line.partition(" ")
    command = command or "status"
    if command in ("help", "-h", "--help"):
        print(USAGE)
        return
    if command.startswith("-"):  # `%guard --json`: options of the default sub-command
        command, rest = "status", line
    if command not in SUBCOMMANDS:
        raise _usage(f"unknown subcommand {command!r}")
    if cell is not None and command != "check":
        raise _usage(f"%%guard takes a cell only for check, not {command!r}")
    if command == "check":
        as_json = rest.lstrip().startswith("--json")
        code = rest.lstrip()[len("--json"):] if as_json else rest
        code = cell if cell is not None else code.strip()
        if code.strip() in ("-h", "--help"):
            print(USAGE)
            return
        if not code.strip():
            raise _usage("check needs the code to check: %guard check CODE, or a %%guard check cell")
    try:
        words = shlex.split(rest) if command != "check" else []
    except ValueError as exc:
        raise _usage(str(exc)) from None
    if "-h" in words or "--help" in words:
        print(USAGE)
        return
    guard = session.current()
    if guard is None:
        print("guard_kernel is not active in this session (use %load_ext guard_kernel).")
        return
    if command == "status":
        flags, _ = _flags(words, ("--json",), 0)
        print(json.dumps(guard.status(), indent=2) if "--json" in flags else status_text(guard))
    elif command == "explain":
        flags, pos = _flags(words, ("--json",), 1)
        if pos and not (pos[0].isdigit() and int(pos[0]) > 0):
            raise _usage(f"explain takes a positive number (the N-th last decision), not {pos[0]!r}")
        d = explain_nth(guard, int(pos[0])) if pos else guard.last
        if "--json" in flags:
            print(json.dumps(d.as_dict() if d else None, indent=2))
        elif pos and d is None:
            print(f"No decision {pos[0]} back: this session has recorded {len(guard.history)} "
                  f"(the last {session.HISTORY} are kept).")
        else:
            print(explain_text(guard, d))
    elif command == "audit":
        flags, _ = _flags(words, ("--json",), 0)
        print(audit_text(guard, as_json="--json" in flags))
    elif command == "policy":
        _, pos = _flags(words, (), 1)
        if not pos:
            raise _usage("policy needs a FILE: %guard policy FILE")
        print(switch_policy(guard, os.path.expanduser(pos[0])))
    else:
        from IPython import get_ipython

        print(check_text(guard, code, as_json=as_json, shell=get_ipython()))


__all__ = ["DEFAULT_ALIASES", "PACKAGE_MAGICS", "PYTHON_MAGICS", "SCRIPT_MAGICS", "USAGE", "audit_text", "check_text",
           "explain_nth", "explain_text", "guard_magic", "magic_intent", "status_text", "switch_policy"]
