"""The guarded kernel: the kernel AI assistants land in, guarded before its first request.

``kernel`` (:class:`GuardedKernel`: the gate in front of every request), ``app`` (an isolated
start-up; ``python -I -m guard_kernel.kernel``), ``spec`` (``guard-kernel install`` and
``guard-kernel kernels``: the kernelspec, installable under any name, ``python3`` included).
Sits beside ``enforce``: it installs the extension's layers and asks them before each request.
"""
