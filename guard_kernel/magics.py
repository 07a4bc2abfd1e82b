"""Magics: ``%guard`` (what the guard is doing, and why it said no), and what other magics do.

:func:`magic_intent` says which magics run shell commands or write files, for the cell
analysis and the magic wrappers alike.

``%guard status``            policy, mode, lock, actor, environment, counts, audit path
``%guard explain [--json]``  the last decision with the rules (file:line) that made it
``%guard audit``             this session's audit file
``%guard policy FILE``       switch policy (only when the current one has ``lock: false``)
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from . import session
from .actions import Action
from .policy import load_policy

SUBCOMMANDS = ("status", "explain", "audit", "policy")

SCRIPT_MAGICS = frozenset({"bash", "sh", "script", "perl", "ruby", "python", "python2", "python3", "pypy",
                            "zsh", "system", "sx"})
PACKAGE_MAGICS = frozenset({"pip", "conda", "mamba", "micromamba", "uv"})
PYTHON_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})
"""Magics whose argument or body is Python: analysed like the cell itself."""
DEFAULT_ALIASES = frozenset({"cat", "clear", "cp", "ldir", "less", "lf", "lk", "ll", "ls", "lx", "man", "mkdir",
                             "more", "mv", "rm", "rmdir"})
"""IPython's default shell aliases (``%rm`` …): every alias is a ``shell.exec``."""

def _magic_args(line: str) -> list[str]:
    """Shell-like words of a magic's argument line, options removed."""
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    return [w for w in words if not w.startswith("-")]


def magic_intent(name: str, line: str, body: str | None, *,
                 aliases: Iterable[str] = DEFAULT_ALIASES) -> tuple[Action, str, dict[str, Any]] | None:
    """What running magic *name* does, when it is a shell command or a file write.

    Returns (action, resource, extra request fields), or None for magics that do neither
    (``%time``, ``%pwd``, ``%who`` …).  File writes return the target path as written.
    """
    if body is not None:  # a cell magic
        if name in ("system", "sx"):
            return Action.SHELL_EXEC, (body.strip().splitlines() or [""])[0][:200], {"command": body}
        if name in SCRIPT_MAGICS:
            prog = line.strip() if name == "script" else (name + " " + line).strip()
            cmd = f"{prog}\n{body}"
            return Action.SHELL_EXEC, f"%%{prog}: " + (body.strip().splitlines() or [""])[0][:160], {"command": cmd}
        if name in ("writefile", "file"):
            args = _magic_args(line)
            return (Action.FILE_WRITE, args[0], {}) if args else None
        return None
    if name in ("system", "sx"):
        return Action.SHELL_EXEC, line.strip()[:200], {"command": line.strip()}
    if name in PACKAGE_MAGICS:
        cmd = f"{name} {line}".strip()
        return Action.SHELL_EXEC, cmd[:200], {"command": cmd}
    if name in aliases:
        cmd = f"{name} {line}".strip()
        return Action.SHELL_EXEC, cmd[:200], {"command": cmd}
    args = _magic_args(line)
    if name == "save" and args:
        fname = args[0]
        if not fname.endswith((".py", ".ipy")):
            fname += ".ipy" if "-r" in line.split() else ".py"
        return Action.FILE_WRITE, fname, {}
    if name == "logstart":
        return Action.FILE_WRITE, args[0] if args else "ipython_log.py", {}
    if name == "notebook" and args:
        return Action.FILE_WRITE, args[0], {}
    if name == "store":
        if ">" in line:
            target = line.split(">")[-1].strip()
            return (Action.FILE_WRITE, target, {}) if target else None
        words = line.split()
        if not words or words[0] == "-r" or (words[0] == "-d" and len(words) == 1):
            return None  # listing or restoring: nothing is written
        return Action.FILE_WRITE, "<ipython db>", {}
    return None




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


def switch_policy(guard: session.Guard, file: str) -> str:
    """Replace the guard's policy with *file* (refused under ``lock: true``); returns a summary."""
    from .extension import refuse_locked

    if guard.policy.lock:
        refuse_locked(guard, "%guard policy")
    new = load_policy(file, root=guard.policy.root)
    old = guard.policy
    guard.set_policy(new)
    guard.record("policy", action=None, resource=new.file, decision="allow", rules=[],
                 message=f"policy switched from {old.name} to {new.name}",
                 old={"name": old.name, "file": old.file, "sha256": old.sha256},
                 new={"name": new.name, "file": new.file, "sha256": new.sha256})
    return f"guard_kernel: policy switched from {old.name} to {new.name} ({new.mode}, lock: {str(new.lock).lower()})"


@magics_class
class GuardMagics(Magics):
    """The ``%guard`` line magic."""

    @magic_arguments()
    @argument("command", nargs="?", default="status", help="status | explain | audit | policy")
    @argument("file", nargs="?", default=None, help="policy file (for `%%guard policy FILE`)")
    @argument("--json", action="store_true", help="print JSON (status, explain)")
    @line_magic
    def guard(self, line: str = "") -> None:
        """Show what the guard does in this session; see ``%guard?``."""
        args = parse_argstring(self.guard, line)
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
            print(guard.audit_path)
        else:
            if not args.file:
                raise UsageError("usage: %guard policy FILE")
            print(switch_policy(guard, os.path.expanduser(args.file)))


def load(ip: Any) -> None:
    """Register ``%guard`` on *ip*."""
    ip.register_magics(GuardMagics)
