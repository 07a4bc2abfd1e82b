"""guard_kernel: access guardrails for Jupyter notebooks and the AI agents that drive them.

Pipeline: policy (load, validate) → analysis (Python AST, SQL) → decision (one
function) → enforcement (IPython gate, DuckDB gate, dataframe writers, runtime audit
hook) → audit (one writer).  ``%load_ext guard_kernel`` installs it in IPython.
"""

from __future__ import annotations

from typing import Any

from .actions import Action, ActionClass
from .audit import AuditWriter, read_records, verify
from .decision import Decision, Effect, Request, RuleHit, StarRef, TableRef, decide
from .policy import Policy, PolicyError, builtin_policy, load_policy, parse_policy, policy_from_env
from .session import CellRejected, Guard, GuardDenied, current, guard_from_env

__version__ = "0.1.0"

__all__ = [
    "Action", "ActionClass", "AuditWriter", "CellRejected", "Decision", "Effect", "Guard", "GuardDenied",
    "Policy", "PolicyError", "Request", "RuleHit", "StarRef", "TableRef", "builtin_policy", "current",
    "decide", "guard_from_env", "load_ipython_extension", "load_policy", "parse_policy", "policy_from_env",
    "read_records", "unload_ipython_extension", "verify",
]


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext guard_kernel``: guard this IPython session."""
    from .extension import load_ipython_extension as _load

    _load(ip)


def unload_ipython_extension(ip: Any) -> None:
    """``%unload_ext guard_kernel``: refused while the policy is locked."""
    from .extension import unload_ipython_extension as _unload

    _unload(ip)
