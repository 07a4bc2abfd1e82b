"""The guarded kernel's process: an isolated start-up, then ipykernel's app with :class:`GuardedKernel`.

The kernelspec runs ``python -I -m guard_kernel.kernel --policy … -f {connection_file}``.
``-I`` makes Python ignore ``PYTHONPATH``, ``PYTHONSTARTUP`` and the user's site-packages;
this module then gives IPython an empty ``IPYTHONDIR`` of its own and loads no configuration
file, so no ``ipython_config.py``, ``startup/*.py`` or ``exec_lines`` of the user's runs before
the guard.  Settings given on the command line were fixed by the kernelspec: they win over
the launching environment's ``GUARD_KERNEL_*`` (a client cannot weaken them); settings not
fixed come from that environment; the actor is ``agent`` unless one of them says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from ipykernel.kernelapp import IPKernelApp
from traitlets import Type, Unicode

from guard_kernel.decision.guard import (
    ENV_ACTOR,
    ENV_AUDIT_DIR,
    ENV_ENVIRONMENT,
    ENV_POLICY,
    ENV_POLICY_SHA256,
    ENV_ROOT,
)
from guard_kernel.kernel.kernel import GuardedKernel

FIXED = {"policy": ENV_POLICY, "actor": ENV_ACTOR, "environment": ENV_ENVIRONMENT, "root": ENV_ROOT,
         "audit_dir": ENV_AUDIT_DIR, "policy_sha256": ENV_POLICY_SHA256}
"""Launcher option → the variable it fixes."""
UNSAFE_ENV = ("PYTHONSTARTUP", "PYTHONPATH", "PYTHONINSPECT", "PYTHONHOME", "IPYTHONDIR", "JUPYTER_CONFIG_DIR")
"""Variables that could run or load the user's code before the guard: dropped at start."""


class GuardedKernelApp(IPKernelApp):
    """ipykernel's app, with the guarded kernel and no configuration files."""

    name = "guard-kernel"
    kernel_class = Type(GuardedKernel, klass="ipykernel.kernelbase.Kernel",  # type: ignore[assignment]
                        help="The kernel class: the guarded kernel (not configurable away: no config is loaded).")
    guarded_kernel_name = Unicode("guarded", help="The kernelspec name this kernel was started as (for the audit)."
                                  ).tag(config=True)

    def load_config_file(self, *args: Any, **kwargs: Any) -> None:
        """Load nothing: a configuration file could run code or change the kernel before the guard."""

    def init_kernel(self) -> None:
        super().init_kernel()
        kernel = self.kernel
        assert isinstance(kernel, GuardedKernel)
        kernel.kernel_name = self.guarded_kernel_name
        kernel.start_guard()


def launcher_parser() -> argparse.ArgumentParser:
    """The options the kernelspec fixes (everything else goes to ipykernel: ``-f {connection_file}``)."""
    p = argparse.ArgumentParser(prog="python -I -m guard_kernel.kernel", add_help=False)
    for opt in FIXED:
        p.add_argument("--" + opt.replace("_", "-"), dest=opt, default=None)
    p.add_argument("--name", default="guarded", help="the kernelspec name (recorded in the audit)")
    return p


def isolate(environ: dict[str, str] | os._Environ[str], fixed: dict[str, str | None]) -> str:
    """Drop start-up variables, apply the fixed settings, give IPython an empty directory; returns it."""
    for name in UNSAFE_ENV:
        environ.pop(name, None)
    for opt, var in FIXED.items():
        value = fixed.get(opt)
        if value is not None:
            environ[var] = value
    environ.setdefault(ENV_ACTOR, "agent")
    ipython_dir = tempfile.mkdtemp(prefix="guard-kernel-ipython-")
    environ["IPYTHONDIR"] = ipython_dir
    return ipython_dir


def main(argv: Sequence[str] | None = None) -> None:
    """Start the guarded kernel (the kernelspec's ``argv``)."""
    args, rest = launcher_parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    isolate(os.environ, {k: getattr(args, k) for k in FIXED})
    GuardedKernelApp.launch_instance(argv=[*rest, f"--GuardedKernelApp.guarded_kernel_name={args.name}"])


__all__ = ["FIXED", "GuardedKernelApp", "isolate", "launcher_parser", "main"]
