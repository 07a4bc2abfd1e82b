"""Decision: one :class:`Request` in, one :class:`Decision` out, from one function.

``request`` (what hooks ask) → ``evaluate`` (:func:`decide`: protections, then rules — deny
wins — then defaults) → ``errors`` (every exception a user can meet) → ``guard`` (the
session's :class:`Guard`: decide, record in the audit, count, raise).  Uses ``policy`` and
``audit``, nothing above them.
"""

from guard_kernel.decision.errors import (
    CellRejected,
    GuardDenied,
    GuardLocked,
    GuardUnavailable,
    ImportRefused,
    PolicyViolation,
)
from guard_kernel.decision.evaluate import Decision, Effect, RuleHit, decide
from guard_kernel.decision.guard import (
    ENV_ACTOR,
    ENV_AUDIT_DIR,
    ENV_ENVIRONMENT,
    ENV_POLICY,
    ENV_POLICY_SHA256,
    ENV_ROOT,
    Guard,
    current,
    guard_from_env,
    policy_from_env,
)
from guard_kernel.decision.request import Request, StarRef, TableRef

__all__ = [
    "ENV_ACTOR", "ENV_AUDIT_DIR", "ENV_ENVIRONMENT", "ENV_POLICY", "ENV_POLICY_SHA256", "ENV_ROOT",
    "CellRejected", "Decision", "Effect", "Guard",
    "GuardDenied", "GuardLocked", "GuardUnavailable", "ImportRefused", "PolicyViolation", "Request", "RuleHit",
    "StarRef", "TableRef", "current",
    "decide", "guard_from_env", "policy_from_env",
]
