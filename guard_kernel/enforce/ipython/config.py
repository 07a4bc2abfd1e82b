"""``GuardConfig``: the guard configured the Jupyter way, beside the ``GUARD_KERNEL_*`` variables.

``c.GuardConfig.policy = "policies/analyst.yaml"`` in ``ipython_config.py`` (or ``%config
GuardConfig.policy = …`` before ``%load_ext guard_kernel``) sets what a variable would.  A
variable set in the environment wins (it was set for this launch), and the values are read
once, when the guard starts: changing them later cannot weaken a running, locked session.  The
guarded kernel loads no configuration file at all; its kernelspec fixes its settings.  The
class name is used by nothing else, so a misspelt section cannot silently do nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from traitlets import Enum, Unicode
from traitlets.config import Configurable

from guard_kernel.decision.guard import ENV_ACTOR, ENV_AUDIT_DIR, ENV_ENVIRONMENT, ENV_POLICY, ENV_ROOT


class GuardConfig(Configurable):
    """Where a ``%load_ext guard_kernel`` session takes its policy, actor and audit from."""

    policy = Unicode("", help="Policy file (as GUARD_KERNEL_POLICY); empty: the strict built-in default.").tag(
        config=True)
    root = Unicode("", help="Project root the policy's relative paths mean (as GUARD_KERNEL_ROOT).").tag(config=True)
    actor = Enum(["", "agent", "human"], "", help="Who drives the session (as GUARD_KERNEL_ACTOR).").tag(config=True)
    environment = Unicode("", help="Environment label matched by applies_to and rules (as "
                                   "GUARD_KERNEL_ENVIRONMENT).").tag(config=True)
    audit_dir = Unicode("", help="Where the session's audit file is written (as GUARD_KERNEL_AUDIT_DIR).").tag(
        config=True)

    def environ(self, env: Mapping[str, str]) -> dict[str, str]:
        """*env* with this configuration filling what it leaves unset."""
        out = dict(env)
        for var, value in ((ENV_POLICY, self.policy), (ENV_ROOT, self.root), (ENV_ACTOR, self.actor),
                           (ENV_ENVIRONMENT, self.environment), (ENV_AUDIT_DIR, self.audit_dir)):
            if value and not out.get(var):
                out[var] = value
        return out


def configured_environ(ip: Any, env: Mapping[str, str]) -> dict[str, str]:
    """The settings of the session in *ip*: its environment, then its ``GuardConfig``."""
    config = getattr(ip, "config", None)
    return GuardConfig(config=config).environ(env) if config is not None else dict(env)


__all__ = ["GuardConfig", "configured_environ"]
