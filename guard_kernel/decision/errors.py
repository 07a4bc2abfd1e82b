"""Every exception a user of the guard can meet, each shown by IPython without a traceback.

Each has a stable class name, which a kernel's error reply sends as ``ename``: its ``evalue``
(``str(exc)``) is the short human line, and what IPython shows instead of a traceback is the
guard's message ending in the JSON line of :mod:`.messages`:

- :class:`PolicyViolation` — an action denied by the policy (``GuardDenied`` is the same class,
  under the name it had first);
- :class:`CellRejected` — a whole cell refused before any line ran;
- :class:`GuardUnavailable` — a cell refused because the guard could not start;
- :class:`ImportRefused` — an import the guard could not put its layer on;
- :class:`GuardLocked` — an attempt to unload or re-configure a locked guard;
- :class:`PolicyError` (from :mod:`guard_kernel.policy.model`) — a policy that cannot be used.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.decision.messages import Code, facts, json_line
from guard_kernel.policy.actions import Action
from guard_kernel.policy.model import PolicyError

try:  # IPython is a dependency, but keep the core importable without it
    from IPython.core.error import InputRejected as _InputRejected
except ImportError:  # pragma: no cover
    class _InputRejected(Exception):  # type: ignore[no-redef]
        pass


class PolicyViolation(PermissionError):
    """An action was denied by policy (it did not run).  Shown without a traceback in IPython."""

    code: ClassVar[Code] = Code.POLICY_VIOLATION
    """``code`` of the JSON facts."""
    headline: ClassVar[str] = "guard_kernel: blocked by policy"
    """The first line of what IPython shows."""

    def __init__(self, decisions: Decision | Iterable[Decision]) -> None:
        self.decisions: tuple[Decision, ...] = (decisions,) if isinstance(decisions, Decision) else tuple(decisions)
        super().__init__(self.decisions[0].message if self.decisions else "denied by policy")

    @property
    def decision(self) -> Decision:
        return self.decisions[0]

    def as_dict(self) -> dict[str, Any]:
        """The JSON facts for agents (first denial, plus the others if several)."""
        d = self.decision.as_dict()
        d["code"] = self.code.value
        if len(self.decisions) > 1:
            d["also"] = [x.as_dict() for x in self.decisions[1:]]
        return d

    def __str__(self) -> str:
        """The short human line (a kernel's ``evalue``): the first denial's message."""
        if not self.decisions:
            return "denied by policy"
        d = self.decision
        more = f" (and {len(self.decisions) - 1} more)" if len(self.decisions) > 1 else ""
        return f"{d.message}{more}"

    def render(self) -> str:
        """Every denial as a short paragraph: rule, code, what to do instead."""
        return "\n".join(d.render() for d in self.decisions)

    def _render_traceback_(self) -> list[str]:
        return [self.headline, self.render(), json_line(self.as_dict())]


GuardDenied = PolicyViolation
"""The first name of :class:`PolicyViolation` (kept: ``except GuardDenied`` goes on working)."""


class CellRejected(PolicyViolation, _InputRejected):
    """A whole cell refused before any line ran (IPython's InputRejected)."""

    code = Code.CELL_REJECTED
    headline = "guard_kernel: blocked by policy — nothing in this cell ran"


class GuardUnavailable(CellRejected):
    """A cell refused because this session's guard could not start (a bad policy, a broken install)."""

    code = Code.GUARD_UNAVAILABLE
    headline = "guard_kernel: the guard is not running — nothing in this cell ran"


class ImportRefused(PolicyViolation):
    """A guard layer could not be put on a library while it was imported: the import failed."""


class GuardLocked(PermissionError):
    """The policy has ``lock: true``: the guard cannot be unloaded or re-configured."""

    code: ClassVar[Code] = Code.GUARD_LOCKED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint

    def as_dict(self) -> dict[str, Any]:
        """The JSON facts for agents."""
        return facts(self.code, self.message, self.hint)

    def _render_traceback_(self) -> list[str]:
        return [f"guard_kernel: {self.message}", *([f"instead: {self.hint}"] if self.hint else []),
                json_line(self.as_dict())]


def audit_unavailable(exc: OSError, refused: Decision | None, audit_path: str) -> Decision:
    """The denial of an action whose audit record could not be written (fail closed)."""
    what = f"{refused.action.value} on {refused.resource}" if refused is not None else "this action"
    reason = getattr(exc, "reason", None) or str(exc)
    return Decision(Effect.DENY, refused.action if refused is not None else Action.SQL_UNKNOWN,
                    refused.resource if refused is not None else "audit",
                    (RuleHit("audit-unavailable", "<guard>", 0),),
                    f"{what} refused: the audit cannot be written ({reason}); nothing the guard cannot "
                    f"record is allowed to run",
                    f"Make {audit_path} writable again (free disk space, restore its folder); "
                    "the session refuses every action until then, or start a new session.",
                    refused.line if refused is not None else None, refused.code if refused is not None else None)


ERROR_NAMES = frozenset({"PolicyViolation", "CellRejected", "GuardUnavailable", "ImportRefused", "GuardLocked"})
"""The ``ename`` of every refusal a kernel's error reply can carry (stable: clients may match on them)."""
LOCKED_HINT = "Start a new session with another GUARD_KERNEL_POLICY."
"""What to do instead when a policy's ``lock: true`` refused."""
KERNEL_LOCKED_HINT = "Install the kernel with another policy (guard-kernel install --policy FILE) and start it."
"""What to do instead when a guarded kernel (always locked) refused."""


def locked_message(policy_name: str) -> str:
    """Why a locked guard refused, and what to do instead."""
    return (f"policy {policy_name!r} is locked (lock: true): the guard cannot be unloaded, reloaded or "
            f"re-configured from inside this session. {LOCKED_HINT}")


__all__ = ["ERROR_NAMES", "KERNEL_LOCKED_HINT", "LOCKED_HINT", "CellRejected", "GuardDenied", "GuardLocked", "GuardUnavailable",
           "ImportRefused", "PolicyError", "PolicyViolation", "audit_unavailable", "locked_message"]
