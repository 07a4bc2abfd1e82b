"""Every command a ``%load_ext`` session starts runs confined: the exec helper goes in front of it.

A running kernel cannot confine itself, but the processes it starts can be: this layer puts
the confining exec helper (:mod:`.exec_helper`) in front of every command the session starts
through Python — ``subprocess`` (``Popen``, ``run``, ``check_output``…, and what is built on it:
``os.popen``, ``%%bash``, ``%sx`` and ``x = !cmd``, asyncio), ``os.system``, and ``os.execv``/
``os.execve`` (a forked child becoming a program: ``!cmd`` and aliases through pexpect,
``pty.spawn``).  The helper applies the same Landlock plan the guarded kernel's launcher applies
to the kernel (:func:`guard_kernel.enforce.confine.plan`: writable are the scratch directories,
a private temporary directory and the devices; sources, the policy and the audit never), then
becomes the command.  Whatever the command is, it cannot write a source.

Best effort, like every in-process layer: code that calls ``_posixsubprocess.fork_exec`` (or
``os.fork`` with ``ctypes``) directly starts processes this layer never sees; only the guarded
kernel, confined as a whole, stops those.  In the guarded kernel this layer does nothing: its
children inherit the kernel's confinement.  Where Landlock is unavailable it says so (the
session's ``confinement`` in ``%guard status`` and an audit record) and commands run as before.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from guard_kernel.decision.errors import GuardDenied
from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.enforce import confine
from guard_kernel.enforce.layer import Wrappers
from guard_kernel.enforce.runtime import exec_helper
from guard_kernel.policy.actions import Action

if TYPE_CHECKING:
    from guard_kernel.decision.guard import Guard

SCOPE = "the commands this session starts (exec helper); the kernel process itself is not confined"
"""What the OS layer covers in a ``%load_ext`` session (``%guard status``, the audit)."""

_wrappers = Wrappers()
_originals: dict[tuple[Any, str], Any] = {}
_installed = False
_plan: confine.Plan | None = None
_plan_json = ""
_tmpdir: str | None = None


def _resolve(exe: str, cwd: str | None, env: Any) -> str | None:
    """The program *exe* names as ``exec`` would find it (None: none there, or not executable)."""
    if os.path.dirname(exe):
        path = os.path.join(os.fsdecode(cwd), exe) if cwd is not None and not os.path.isabs(exe) else exe
        return exe if os.path.isfile(path) and os.access(path, os.X_OK) else None
    for folder in os.get_exec_path(env):
        path = os.path.join(folder, exe)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _refuse(guard: Guard | None, what: str) -> NoReturn:
    """Confinement is required here but cannot hold: the command does not run (fail closed)."""
    reason = _plan.reason if _plan is not None else "no plan"
    d = Decision(Effect.DENY, Action.SHELL_EXEC, what[:200], (RuleHit("confinement-refused", "<guard>", 0),),
                 f"{what[:200]} was not started: its confinement cannot hold ({reason})",
                 "Fix the policy (confine:, scratch: apart from the sources), then reload the guard.", None,
                 what[:500])
    if guard is not None:
        guard.record_decision(d, "runtime", event="exec helper")
    raise GuardDenied(d)


def _current() -> Guard | None:
    from guard_kernel.decision import guard as session

    return session.current()


def _wrap_execute_child(orig: Callable[..., Any]) -> Callable[..., Any]:
    names = list(inspect.signature(orig).parameters)[1:]  # after self: args, executable, …
    i_shell, i_env, i_cwd = names.index("shell"), names.index("env"), names.index("cwd")
    i_restore = names.index("restore_signals")

    @functools.wraps(orig)
    def _execute_child(self: subprocess.Popen[Any], *a: Any) -> Any:
        args, executable = a[0], a[1]
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        argv = [os.fsdecode(w) if isinstance(w, (str, bytes, os.PathLike)) else w for w in argv]
        if a[i_shell]:
            argv = ["/bin/sh", "-c", *argv]
            if executable:
                argv[0] = os.fsdecode(executable)
        exe = os.fsdecode(executable) if executable is not None else argv[0] if argv else ""
        if "pyspark.java_gateway" in sys.modules:
            from guard_kernel.enforce.spark.gateway import is_gateway_launch

            # PySpark's own JVM (the installed spark-submit, from its launcher, checked word by word)
            # runs as before: it writes its port into the kernel's temporary folder, which the
            # helper's plan does not open. Spark's actions are decided at the driver API instead.
            if is_gateway_launch((executable, args, a[i_cwd], a[i_env])):
                return orig(self, *a)
        if _plan is not None and _plan.state is confine.State.REFUSED:
            _refuse(_current(), " ".join(str(w) for w in argv))
        path = _resolve(exe, a[i_cwd], a[i_env]) if isinstance(exe, str) and exe else None
        words = [w for w in argv if isinstance(w, str)]
        if path is None or len(words) != len(argv):
            return orig(self, *a)  # nothing to start: Popen raises as it would (FileNotFoundError…)
        rest = list(a)
        rest[0] = exec_helper.command(_plan_json, path, words, restore_signals=bool(a[i_restore]), tmpdir=_tmpdir)
        rest[1], rest[i_shell] = None, False
        return orig(self, *rest)

    return _execute_child


def _wrap_system(orig: Callable[[Any], int]) -> Callable[[Any], int]:
    @functools.wraps(orig)
    def system(command: Any) -> int:
        text = os.fsdecode(command)
        if _plan is not None and _plan.state is confine.State.REFUSED:
            _refuse(_current(), text)
        import shlex

        return orig(shlex.join(exec_helper.command(_plan_json, "/bin/sh", ["sh", "-c", text], tmpdir=_tmpdir)))

    return system


def _wrap_exec(orig: Callable[..., NoReturn], with_env: bool) -> Callable[..., NoReturn]:
    # runs in a forked child (pexpect's, pty.spawn's) just before it becomes the program: plain list work only
    @functools.wraps(orig)
    def execv(path: Any, argv: Sequence[Any], *env: Any) -> NoReturn:
        exe = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else None
        if exe is None or _resolve(exe, None, env[0] if env else None) is None or _plan is None \
                or _plan.state is not confine.State.IN_FORCE:
            orig(path, argv, *env)  # execvp's search of PATH tries names that fail: let them fail
        else:
            helper = exec_helper.command(_plan_json, exe, [os.fsdecode(w) for w in argv], tmpdir=_tmpdir)
            orig(helper[0], helper, *env)
        raise AssertionError("exec returned")  # pragma: no cover - exec replaces the process or raises

    return execv


def _remove(path: str) -> None:
    """At exit: the private TMPDIR goes, as the guard's own doing (not a denial of the session's)."""
    guard = _current()
    if guard is None:
        shutil.rmtree(path, True)
        return
    with guard.quiet():
        shutil.rmtree(path, True)


def _plan_for(guard: Guard, abi: int | None) -> confine.Plan:
    global _tmpdir
    if _tmpdir is None:
        _tmpdir = tempfile.mkdtemp(prefix="guard-children-")
        atexit.register(_remove, _tmpdir)
    return confine.plan(guard.policy, actor=guard.actor, private_dirs=(_tmpdir,), protected=guard.protected, abi=abi)


def install(guard: Guard, *, abi: int | None = None) -> None:
    """Confine the commands *guard*'s session starts (nothing in the guarded kernel: it is confined whole).

    *abi*: the Landlock ABI to plan for (None: this system's; 0 behaves as a system without Landlock)."""
    global _installed, _plan, _plan_json
    if guard.confinement is not None and guard.confinement.get("scope") != SCOPE:
        return  # the guarded kernel's launcher confined the kernel, and so everything it starts
    if _installed:
        repair()
        return
    _plan = _plan_for(guard, abi)
    _plan_json = _plan.to_json()
    guard.confinement = {**_plan.describe(), "scope": SCOPE}
    guard.record("confinement", action=None, resource="child processes",
                 decision="deny" if _plan.state is confine.State.REFUSED else "allow", rules=[],
                 message=f"commands this session starts: confinement {_plan.state.value}"
                         + (f" ({_plan.reason})" if _plan.reason else ""), confinement=guard.confinement)
    if _plan.state not in (confine.State.IN_FORCE, confine.State.REFUSED):
        return  # off, or no Landlock here: said above; commands run as before
    items: list[tuple[Any, str, Any]] = [
        (subprocess.Popen, "_execute_child", _wrap_execute_child(subprocess.Popen.__dict__["_execute_child"])),
        (os, "system", _wrap_system(os.system)),
    ]
    if _plan.state is confine.State.IN_FORCE:
        items += [(os, "execv", _wrap_exec(os.execv, False)), (os, "execve", _wrap_exec(os.execve, True))]
    for owner, name, wrapper in items:
        _originals[(owner, name)] = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        setattr(owner, name, wrapper)
        _wrappers.add(owner, name, wrapper)
    _installed = True


def uninstall() -> None:
    """Put the originals back (tests, and unloading an unlocked guard)."""
    global _installed, _plan, _plan_json
    for (owner, name), orig in _originals.items():
        setattr(owner, name, orig)
    _originals.clear()
    _wrappers.clear()
    _installed, _plan, _plan_json = False, None, ""


def installed() -> bool:
    """Whether the layer is on (or has nothing to do here)."""
    return True


def tampered() -> list[str]:
    """The wrappers code replaced."""
    return _wrappers.tampered()


def repair() -> None:
    """Put replaced wrappers back."""
    _wrappers.repair()


def plan() -> confine.Plan | None:
    """The plan commands run under (None: the layer is not on)."""
    return _plan


__all__ = ["SCOPE", "install", "installed", "plan", "repair", "tampered", "uninstall"]
