"""Policy: the action vocabulary, path globs, the frozen model, and loading with validation.

``actions`` (what can happen) → ``paths`` (globs judged by real path) → ``model`` (Policy
and its parts) → ``load`` (parse YAML, validate against ``policy.schema.json`` — ``schema``
is the fast check for valid input — and build).  Imports nothing above it.
"""

from guard_kernel.policy.actions import Action, ActionClass
from guard_kernel.policy.load import builtin_policy, load_policy, parse_policy, schema
from guard_kernel.policy.model import (
    AuditSettings,
    Limits,
    Policy,
    PolicyError,
    Rule,
    Source,
    SourceTable,
    Where,
)

__all__ = [
    "Action", "ActionClass", "AuditSettings", "Limits", "Policy", "PolicyError", "Rule", "Source", "SourceTable", "Where",
    "builtin_policy", "load_policy", "parse_policy", "schema",
]
