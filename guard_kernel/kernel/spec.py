"""The guarded kernelspec: install it under any name (``python3`` included), and list what Jupyter sees.

``guard-kernel install`` has the shape of ``python -m ipykernel install`` and is built on
``jupyter_client``'s :meth:`KernelSpecManager.install_kernel_spec`.  What it is given is fixed
in the kernelspec twice: in ``argv`` (the launcher applies it over the launching environment,
so a client cannot weaken it) and in ``env`` (absolute paths, for people reading the file).
``metadata.guard_kernel`` says the kernel is guarded and pins the policy's SHA-256: a kernel
whose policy file changed after the install refuses to run cells.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from guard_kernel import __version__
from guard_kernel.decision.guard import (
    ENV_ACTOR,
    ENV_AUDIT_DIR,
    ENV_ENVIRONMENT,
    ENV_POLICY,
    ENV_POLICY_SHA256,
    ENV_ROOT,
)
from guard_kernel.policy.load import load_policy

DEFAULT_NAME = "guarded"
DEFAULT_DISPLAY_NAME = "Python 3 (guarded)"


def kernel_json(*, name: str = DEFAULT_NAME, display_name: str = DEFAULT_DISPLAY_NAME, policy: str | None = None,
                root: str | None = None, actor: str = "agent", environment: str | None = None,
                audit_dir: str | None = None, python: str | None = None) -> dict[str, Any]:
    """The kernelspec's ``kernel.json``; a policy is validated (PolicyError) and pinned by its SHA-256."""
    fixed: dict[str, str] = {ENV_ACTOR: actor}
    meta: dict[str, Any] = {"guarded": True, "version": __version__, "actor": actor}
    if policy is not None:
        policy = os.path.abspath(policy)
        root = os.path.abspath(root) if root else None
        loaded = load_policy(policy, root)  # an invalid policy is refused here, with file:line
        fixed[ENV_POLICY] = policy
        fixed[ENV_POLICY_SHA256] = loaded.sha256
        meta.update(policy=policy, policy_name=loaded.name, policy_sha256=loaded.sha256, root=loaded.root)
    if root:
        fixed[ENV_ROOT] = os.path.abspath(root)
    if environment:
        fixed[ENV_ENVIRONMENT] = environment
    if audit_dir:
        fixed[ENV_AUDIT_DIR] = os.path.abspath(audit_dir)
    options = {ENV_POLICY: "--policy", ENV_POLICY_SHA256: "--policy-sha256", ENV_ROOT: "--root",
               ENV_ACTOR: "--actor", ENV_ENVIRONMENT: "--environment", ENV_AUDIT_DIR: "--audit-dir"}
    # -I: no PYTHONPATH, PYTHONSTARTUP or user site-packages; -B: no bytecode written into the environment
    argv = [python or sys.executable, "-I", "-B", "-m", "guard_kernel.kernel", "--name", name]
    for var, value in fixed.items():
        argv += [options[var], value]
    return {
        "argv": [*argv, "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
        "env": fixed,
        "metadata": {"guard_kernel": meta, "debugger": False},
    }


def install(*, name: str = DEFAULT_NAME, user: bool = False, prefix: str | None = None, **settings: Any) -> str:
    """Install the guarded kernelspec; returns the directory it was written to."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = kernel_json(name=name, **settings)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "kernel.json"), "w", encoding="utf-8") as f:
            json.dump(spec, f, indent=1)
        return str(KernelSpecManager().install_kernel_spec(tmp, name, user=user, prefix=prefix))


@dataclass(frozen=True)
class KernelEntry:
    """A kernelspec Jupyter sees."""

    name: str
    """Its name (what clients ask for)."""
    resource_dir: str
    """Where its ``kernel.json`` is."""
    display_name: str
    guarded: bool
    """Whether it starts the guarded kernel."""
    policy: str | None
    """The policy it fixes (None: the launching environment's, else the built-in default)."""
    policy_sha256: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "resource_dir": self.resource_dir, "display_name": self.display_name,
                "guarded": self.guarded, "policy": self.policy, "policy_sha256": self.policy_sha256}


def kernels() -> list[KernelEntry]:
    """Every kernelspec Jupyter sees, the first found for each name (as ``jupyter_client`` picks them)."""
    from jupyter_client.kernelspec import KernelSpecManager

    out = []
    for name, info in sorted(KernelSpecManager().get_all_specs().items()):
        spec = info.get("spec", {})
        meta = (spec.get("metadata") or {}).get("guard_kernel") or {}
        argv = spec.get("argv") or []
        guarded = bool(meta.get("guarded")) and "guard_kernel.kernel" in argv
        out.append(KernelEntry(name, info.get("resource_dir", ""), spec.get("display_name", name), guarded,
                               meta.get("policy"), meta.get("policy_sha256")))
    return out


__all__ = ["DEFAULT_DISPLAY_NAME", "DEFAULT_NAME", "KernelEntry", "install", "kernel_json", "kernels"]
