"""The confining exec helper: a small process that confines itself with Landlock, then becomes the command.

A ``%load_ext`` session cannot confine itself: Landlock's ``restrict_self`` holds for the
calling thread and what it starts from then on, and it would confine the session's own work
too.  So the commands such a session starts run through this helper instead
(:mod:`guard_kernel.enforce.runtime.children` puts it in front of them)::

    python -I -S -B …/exec_helper.py PLAN [--restore-signals] [--tmpdir DIR] -- EXE ARGV0 ARG…

It applies PLAN — a :class:`guard_kernel.enforce.confine.Plan`, the plan the guarded kernel's
launcher applies to the kernel — to itself, then ``exec``\\ s EXE with ARGV.  The command, and
everything it starts, cannot write outside the plan's writable directories whatever it is: a
script, ``bash -c "$(echo rm) …"``, a native program.  A plan that cannot be applied stops the
command (exit 126, the reason on stderr): a command the session meant to confine never runs free.

The helper is started with ``-S`` and loads only ``confine.py`` and ``landlock.py``, not the
package's public API, so it costs one small Python start per command.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the helper's start-up imports as little as it can: it runs in front of every command
    from collections.abc import Sequence
    from typing import NoReturn

HELPER = os.path.abspath(__file__)
"""This file: what a helper command line runs."""
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(HELPER)))
"""The ``guard_kernel`` package's folder."""


def command(plan_json: str, exe: str, argv: Sequence[str], *, restore_signals: bool = False,
            tmpdir: str | None = None) -> list[str]:
    """The command line that runs *exe* with *argv* confined by the plan in *plan_json*."""
    out = [sys.executable, "-I", "-S", "-B", HELPER, plan_json]
    if restore_signals:
        out.append("--restore-signals")
    if tmpdir:
        out += ["--tmpdir", tmpdir]
    return [*out, "--", exe, *argv]


def unwrap(argv: Sequence[str]) -> list[str] | None:
    """The command's own argv when *argv* is a helper command line (None: it is not one)."""
    if len(argv) < 8 or os.fsdecode(argv[4]) != HELPER:
        return None
    words = [os.fsdecode(a) for a in argv]
    try:
        sep = words.index("--", 6)
    except ValueError:
        return None
    return words[sep + 2:]


def unwrap_text(text: str) -> str:
    """*text* (a shell command line) with a helper prefix taken off; ``sh -c CMD`` becomes CMD."""
    if HELPER not in text:
        return text
    import shlex

    try:
        inner = unwrap(shlex.split(text))
    except ValueError:
        return text
    if inner is None:
        return text
    if len(inner) == 3 and inner[1] == "-c" and os.path.basename(inner[0]) in ("sh", "bash", "dash"):
        return inner[2]
    return shlex.join(inner)


def _fail(code: int, message: str) -> NoReturn:
    sys.stderr.write(f"guard_kernel: {message}\n")
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str]) -> NoReturn:
    """Apply the plan, then become the command (never returns)."""
    args = list(argv)
    if "--" not in args or args.index("--") < 1 or len(args) - args.index("--") < 3:
        _fail(2, "usage: exec_helper.py PLAN [--restore-signals] [--tmpdir DIR] -- EXE ARGV0 [ARG…]")
    sep = args.index("--")
    opts, exe, target = args[:sep], args[sep + 1], args[sep + 2:]
    from guard_kernel.enforce import confine

    try:
        confine.apply(confine.Plan.from_json(opts[0]))
    except (OSError, ValueError, KeyError) as exc:  # never run the command unconfined
        _fail(126, f"{exe} was not started: it could not be confined ({exc})")
    if "--tmpdir" in opts[1:]:  # the plan's private temporary directory: the system one is not writable
        os.environ["TMPDIR"] = opts[opts.index("--tmpdir") + 1]
    if "--restore-signals" in opts[1:]:  # Python ignores these at start-up; Popen's restore_signals resets them
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
    try:
        os.execv(exe, target)
    except OSError as exc:
        _fail(127 if exc.errno == errno.ENOENT else 126, f"{exe}: {exc.strerror}")


if __name__ == "__main__":  # pragma: no cover - a process of its own (tests run it)
    # -S: the package is found from this file's place; a bare package object keeps the public
    # API in guard_kernel/__init__ (IPython, the policy loader…) from loading for every command
    _pkg = types.ModuleType("guard_kernel")
    _pkg.__path__ = [_PACKAGE_DIR]
    sys.modules["guard_kernel"] = _pkg
    try:
        main(sys.argv[1:])
    except Exception as exc:  # never run the command unconfined, never a traceback in the cell
        _fail(126, f"the confining exec helper failed: {type(exc).__name__}: {exc}")


__all__ = ["HELPER", "command", "main", "unwrap", "unwrap_text"]
