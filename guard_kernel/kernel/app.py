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

import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from ipykernel.kernelapp import IPKernelApp
from traitlets import Type, Unicode

from guard_kernel.decision.guard import ENV_ACTOR
from guard_kernel.kernel.kernel import GuardedKernel
from guard_kernel.kernel.settings import FIXED, UNSAFE_ENV, launcher_parser


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


__all__ = ["GuardedKernelApp", "isolate", "main"]


if __name__ == "__main__":  # started by the launcher (guard_kernel.kernel.launcher)
    main()
