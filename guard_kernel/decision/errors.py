"""Every exception a user of the guard can meet, each shown by IPython without a traceback.

:class:`GuardDenied` carries the decisions that refused an action (the same facts as JSON for
agents, :meth:`GuardDenied.as_dict`); :class:`CellRejected` is a whole cell refused before
any line ran; :class:`ImportRefused` an import the guard could not put its layer on;
:class:`GuardLocked` an attempt to unload or re-configure a locked guard; :class:`PolicyError`
(from :mod:`guard_kernel.policy.model`) a policy that cannot be used.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.policy.actions import Action
from guard_kernel.policy.model import PolicyError

try:  # IPython is a dependency, but keep the core importable without it
    from IPython.core.error import InputRejected as _InputRejected
except ImportError:  # pragma: no cover
    class _InputRejected(Exception):  # type: ignore[no-redef]
        pass


class GuardDenied(PermissionError):
    """An action was denied by policy.  Shown without a traceback in IPython."""

    def __init__(self, decisions: Decision | Iterable[Decision]) -> None:
        self.decisions: tuple[Decision, ...] = (decisions,) if isinstance(decisions, Decision) else tuple(decisions)
        super().__init__(self.decisions[0].message if self.decisions else "denied by policy")

    @property
    def decision(self) -> Decision:
        return self.decisions[0]

    def as_dict(self) -> dict[str, Any]:
        """The JSON facts for agents (first denial, plus the others if several)."""
        d = self.decision.as_dict()
        if len(self.decisions) > 1:
            d["also"] = [x.as_dict() for x in self.decisions[1:]]
        return d

    def __str__(self) -> str:
        return "\n".join(d.render() for d in self.decisions)

    def _render_traceback_(self) -> list[str]:
        import json

        head = "guard_kernel: blocked by policy" + (" — nothing in this cell ran" if isinstance(self, CellRejected) else "")
        return [head, str(self), "json: " + json.dumps(self.as_dict())]


class CellRejected(GuardDenied, _InputRejected):
    """A whole cell refused before any line ran (IPython's InputRejected)."""


class ImportRefused(GuardDenied):
    """A guard layer could not be put on a library while it was imported: the import failed."""


class GuardLocked(PermissionError):
    """The policy has ``lock: true``: the guard cannot be unloaded or re-configured."""

    def _render_traceback_(self) -> list[str]:
        return [f"guard_kernel: {self}"]


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


def locked_message(policy_name: str) -> str:
    """Why a locked guard refused, and what to do instead."""
    return (f"policy {policy_name!r} is locked (lock: true): the guard cannot be unloaded, reloaded or "
            "re-configured from inside this session. Start a new session with another GUARD_KERNEL_POLICY.")


__all__ = ["CellRejected", "GuardDenied", "GuardLocked", "ImportRefused", "PolicyError", "audit_unavailable",
           "locked_message"]
