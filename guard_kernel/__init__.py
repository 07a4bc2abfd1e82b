"""guard_kernel: access guardrails for Jupyter notebooks and the AI agents that drive them.

One subpackage per stage of the pipeline; each imports only the stages below it::

    cli/, tools/, demo/   command line, headless notebook runner, the make-demo project
    enforce/              where actions are stopped: ipython/ (cells, magics, shell), duckdb/,
                          dataframe/ (writers, source readers), runtime/ (audit hook), lazy.py
    analysis/             what code means: python/ (cell AST), sql/ (statements, tables, caps)
    decision/             request → decide() → Decision; errors; the session's Guard
    audit/                hash-chained JSONL: chain format, the one writer, verify (beside decision)
    policy/               actions vocabulary, path globs, the model, loading and validation

``%load_ext guard_kernel`` installs it in IPython (:mod:`guard_kernel.enforce.ipython.extension`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from guard_kernel.audit import AuditWriter, read_records, verify
from guard_kernel.decision import (
    CellRejected,
    Decision,
    Effect,
    Guard,
    GuardDenied,
    GuardLocked,
    GuardUnavailable,
    ImportRefused,
    PolicyViolation,
    Request,
    RuleHit,
    StarRef,
    TableRef,
    current,
    decide,
    guard_from_env,
    policy_from_env,
)
from guard_kernel.policy import (
    Action,
    ActionClass,
    Policy,
    PolicyError,
    builtin_policy,
    load_policy,
    parse_policy,
)

if TYPE_CHECKING:
    from guard_kernel.analysis.preflight import Report

__version__ = "0.1.0"
"""The one place the version is written (``pyproject.toml`` reads it from here)."""

__all__ = [
    "Action", "ActionClass", "AuditWriter", "CellRejected", "Decision", "Effect", "Guard", "GuardDenied",
    "GuardLocked", "GuardUnavailable", "ImportRefused", "Policy", "PolicyError", "PolicyViolation", "Report",
    "Request", "RuleHit", "StarRef",
    "TableRef", "builtin_policy", "check", "current", "decide", "guard_from_env",
    "load_ipython_extension", "load_policy", "parse_policy", "policy_from_env", "read_records",
    "unload_ipython_extension", "verify",
]


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext guard_kernel``: guard this IPython session."""
    from guard_kernel.enforce.ipython.extension import load_ipython_extension as _load

    _load(ip)


def unload_ipython_extension(ip: Any) -> None:
    """``%unload_ext guard_kernel``: refused while the policy is locked."""
    from guard_kernel.enforce.ipython.extension import unload_ipython_extension as _unload

    _unload(ip)


def check(code_or_sql: str, *, policy: Policy | str | os.PathLike[str] | None = None, actor: str | None = None,
          environment: str | None = None, cwd: str | None = None, language: str = "auto",
          database: str | None = None) -> Report:
    """Would *code_or_sql* be allowed?  Decided by the session's own analysis and :func:`decide`
    without executing anything; see :func:`guard_kernel.analysis.preflight.check`."""
    from guard_kernel.analysis.preflight import check as _check  # IPython and sqlglot stay off import

    return _check(code_or_sql, policy=policy, actor=actor, environment=environment, cwd=cwd, language=language,
                  database=database)


def __getattr__(name: str) -> Any:
    if name == "Report":  # the pre-flight's result type, imported on first use like check()
        from guard_kernel.analysis.preflight import Report

        return Report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
