"""The gate a session gets when its guard cannot start: every cell refused, with the reason.

``%load_ext guard_kernel`` with a policy that does not load used to print the error and leave
the session running unguarded.  Now the session gets this gate instead: every cell is refused
(nothing in it runs) with the policy error, until ``%guard policy FILE`` loads a valid policy
and the real guard goes on, or the kernel is restarted.  Fail closed, and say how to get out.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from guard_kernel._package import PACKAGE
from guard_kernel.decision.errors import GuardUnavailable
from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.decision.messages import Code, facts
from guard_kernel.enforce.ipython.notices import show
from guard_kernel.policy.actions import Action
from guard_kernel.policy.model import PolicyError

HINT = ("Load a valid policy with `%guard policy FILE` (check it first: python -m guard_kernel check-policy FILE), "
        "or restart the kernel with a valid GUARD_KERNEL_POLICY.")


class Unavailable(ast.NodeTransformer):
    """An AST transformer that rejects every cell but ``%guard …`` and ``%load_ext guard_kernel`` (IPython
    keeps it registered)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def decision(self, code: str | None = None) -> Decision:
        return Decision(Effect.DENY, Action.KERNEL_REQUEST, "cell", (RuleHit("guard-unavailable", "<guard>", 0),),
                        f"the guard could not start, so this session runs no code: {self.reason}", HINT, None, code)

    def visit_Module(self, node: ast.Module) -> ast.Module:
        if node.body and all(_is_guard_magic(st) for st in node.body):
            return node
        raise GuardUnavailable(self.decision())


def _is_guard_magic(st: ast.stmt) -> bool:
    """``%guard …`` or ``%load_ext guard_kernel`` (a retry): what IPython makes of those lines."""
    call = st.value if isinstance(st, ast.Expr) else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "run_line_magic"
            and len(call.args) >= 2 and all(isinstance(a, ast.Constant) for a in call.args[:2])):
        return False
    name, line = call.args[0].value, call.args[1].value  # type: ignore[attr-defined]
    return name == "guard" or (name in ("load_ext", "reload_ext") and str(line).strip() == PACKAGE)


_gate: Unavailable | None = None


def block(ip: Any, reason: str, load_policy: Callable[[str], None]) -> Unavailable:
    """Refuse every cell of *ip* with *reason*; ``%guard policy FILE`` calls *load_policy* (which installs
    the real guard) and lifts the gate.  Returns the gate."""
    global _gate
    unblock(ip)
    _gate = gate = Unavailable(reason)
    ip.ast_transformers.append(gate)

    def percent_guard(line: str = "") -> None:
        words = line.split()
        if len(words) == 2 and words[0] == "policy":
            try:
                load_policy(words[1])
            except PolicyError as exc:  # still no guard: say so as every refusal does (JSON line included)
                raise GuardUnavailable(Unavailable(f"{reason}; and {words[1]}: {exc}").decision()) from None
            return
        d = _gate.decision() if _gate else Unavailable(reason).decision()
        show(ip, Code.GUARD_UNAVAILABLE, d.message, [f"instead: {HINT}"],
             facts(Code.GUARD_UNAVAILABLE, d.message, HINT, reason=reason))

    ip.register_magic_function(percent_guard, "line", "guard")
    return gate


def unblock(ip: Any) -> None:
    """Lift the gate (the real guard is in place)."""
    global _gate
    if _gate is not None and _gate in ip.ast_transformers:
        ip.ast_transformers.remove(_gate)
    _gate = None


def blocked() -> bool:
    """Whether this session's cells are refused for want of a guard."""
    return _gate is not None


__all__ = ["Unavailable", "block", "blocked", "unblock"]
