"""The guarded kernel's settings: what the kernelspec fixes, and what the launcher tells the kernel.

Kept apart from the kernel and the launcher so that the launcher — a parent that starts in
front of every guarded kernel — imports neither ipykernel nor IPython.
"""

from __future__ import annotations

import argparse

from guard_kernel.decision.guard import (
    ENV_ACTOR,
    ENV_AUDIT_DIR,
    ENV_ENVIRONMENT,
    ENV_POLICY,
    ENV_POLICY_SHA256,
    ENV_ROOT,
)

FIXED = {"policy": ENV_POLICY, "actor": ENV_ACTOR, "environment": ENV_ENVIRONMENT, "root": ENV_ROOT,
         "audit_dir": ENV_AUDIT_DIR, "policy_sha256": ENV_POLICY_SHA256}
"""Launcher option → the variable it fixes."""
UNSAFE_ENV = ("PYTHONSTARTUP", "PYTHONPATH", "PYTHONINSPECT", "PYTHONHOME", "IPYTHONDIR", "JUPYTER_CONFIG_DIR")
"""Variables that could run or load the user's code before the guard: dropped at start."""

ENV_AUDIT_FD = "GUARD_KERNEL_AUDIT_FD"
ENV_AUDIT_PATH = "GUARD_KERNEL_AUDIT_PATH"
ENV_SESSION = "GUARD_KERNEL_SESSION"
ENV_CONFINEMENT = "GUARD_KERNEL_CONFINEMENT"
ENV_UNAVAILABLE = "GUARD_KERNEL_UNAVAILABLE"
"""Set by the launcher for the kernel it starts (a client's values are overwritten)."""


def launcher_parser() -> argparse.ArgumentParser:
    """The options the kernelspec fixes (everything else goes to ipykernel: ``-f {connection_file}``)."""
    p = argparse.ArgumentParser(prog="python -I -m guard_kernel.kernel", add_help=False)
    for opt in FIXED:
        p.add_argument("--" + opt.replace("_", "-"), dest=opt, default=None)
    p.add_argument("--name", default="guarded", help="the kernelspec name (recorded in the audit)")
    p.add_argument("--exec-kernel", action="store_true",
                   help="start the kernel as a new Python (exec) rather than a fork of the launcher after its imports")
    p.add_argument("--without-landlock", action="store_true",
                   help="behave as on a system without Landlock (the fallback path; fixed in a kernelspec's argv)")
    return p


__all__ = ["ENV_AUDIT_FD", "ENV_AUDIT_PATH", "ENV_CONFINEMENT", "ENV_SESSION", "ENV_UNAVAILABLE", "FIXED",
           "UNSAFE_ENV", "launcher_parser"]
