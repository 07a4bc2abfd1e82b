"""The Python runtime layer: one ``sys.addaudithook`` that sees what static analysis cannot.

``getattr(df, "to_" + "csv")``, ``exec`` of built strings, ``__import__``, threads,
timers and ``atexit`` callbacks all end in the same few interpreter events (``open``,
``os.remove``, ``subprocess.Popen``, ``socket.connect``…).  The hook turns those into
:class:`~guard_kernel.decision.Request` objects and asks the session's guard, so the
answer is the same as for a cell or a SQL statement.

An audit hook can never be removed, so :func:`install` adds it once per process and the
hook consults :func:`guard_kernel.decision.guard.current` on every event: with no current guard
it is inert.  Its first step is a dict lookup on the event name, so the events it does
not handle (almost all of them) cost a fraction of a microsecond.

Imports, ``ctypes.dlopen`` during imports and ``compile`` of strings are judged only when user code
started them (:mod:`guard_kernel.enforce.runtime.initiator`): numpy's own ``import ctypes`` is not the user's.

What this layer cannot see (documented in the threat model): native code that writes
files or opens sockets without going through Python's audit events — DuckDB, pyarrow,
ZeroMQ, C extensions — and paths relative to a ``dir_fd`` for ``os.open``.  The
dataframe and DuckDB layers guard the native writers they know about.
"""

from __future__ import annotations

import importlib
import os
import shlex
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from guard_kernel.decision import guard as _session
from guard_kernel.decision.errors import GuardDenied
from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.decision.guard import Guard
from guard_kernel.decision.request import Request
from guard_kernel.enforce.runtime.exec_helper import unwrap, unwrap_text
from guard_kernel.enforce.runtime.initiator import audit_writer_on_stack, library_initiated
from guard_kernel.enforce.runtime.initiator import prepare as _prepare_initiator
from guard_kernel.policy.actions import Action, ActionClass, action_matches
from guard_kernel.policy.model import Policy
from guard_kernel.policy.paths import PathGlob, any_match, resolve

Handler = Callable[[Guard, tuple[Any, ...]], None]

_install_lock = threading.Lock()
_installed = False

# O_WRONLY/O_RDWR, or creating/truncating: a write (O_RDONLY|O_CREAT still creates a file)
_ACCMODE = 3
_WRITE_FLAGS = os.O_CREAT | os.O_TRUNC
_EXCL_CREATE = os.O_CREAT | os.O_EXCL
_LOOPBACK_NAMES = frozenset({None, "", "localhost", "127.0.0.1", "::1", b"localhost", b"127.0.0.1"})
_DEVICES = frozenset({"/dev/null", "/dev/tty", "/dev/stdout", "/dev/stderr"})


# ------------------------------------------------------------------ per-policy facts


@dataclass(frozen=True)
class _Prep:
    """Facts computed once per (guard, policy) so the hot path stays cheap."""

    policy: Policy
    check_reads: bool
    """The read default is not allow, or a rule names file.read: reads need a decision."""
    check_imports: bool
    """Some rule names python.import: imports (and ctypes.dlopen) need a decision."""
    audit_dir: str
    root: str
    tempdir: str
    internal: tuple[str, ...]
    """Caches and state directories of the runtime itself (IPython, Jupyter, matplotlib)."""
    sources: tuple[PathGlob, ...]
    module_paths: tuple[tuple[str, str], ...] = ()
    """(module, "/module/path") of modules named by python.import rules: importlib.import_module
    raises no ``import`` event, so a module body starting to run (``exec``) is matched by file."""
    allowed: set[str] = field(default_factory=set, compare=False)
    """Module names and files already allowed under this policy (imports are decided once)."""


_prep_slot: tuple[Guard, Policy, _Prep] | None = None


def _internal_dirs() -> tuple[str, ...]:
    home = os.path.expanduser("~")
    dirs = [
        os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"),
        os.environ.get("MPLCONFIGDIR") or os.path.join(home, ".config", "matplotlib"),
        os.environ.get("IPYTHONDIR") or os.path.join(home, ".ipython"),
    ]
    try:  # where the kernel keeps connection files and its own state
        from jupyter_core.paths import jupyter_data_dir, jupyter_runtime_dir

        dirs += [jupyter_runtime_dir(), jupyter_data_dir()]
    except Exception:
        pass
    return tuple(sorted({os.path.realpath(d) for d in dirs}))


def _prep(guard: Guard) -> _Prep:
    global _prep_slot
    slot = _prep_slot
    if slot is not None and slot[0] is guard and slot[1] is guard.policy:
        return slot[2]
    with guard.quiet():  # computing this imports and stats: those events are the guard's own
        prep = _make_prep(guard, guard.policy)
    _prep_slot = (guard, prep.policy, prep)
    return prep


def reads_checked(guard: Guard) -> bool:
    """Whether *guard*'s policy decides file reads at all (a read default or a rule that names them)."""
    return _prep(guard).check_reads


def _make_prep(guard: Guard, policy: Policy) -> _Prep:
    reads = policy.default_for(ActionClass.READ) != "allow" or any(
        action_matches(p, Action.FILE_READ) for r in policy.rules for p in r.actions if p != "*")
    import_rules = [r for r in policy.rules if any(action_matches(p, Action.PYTHON_IMPORT) for p in r.actions)]
    imports = bool(import_rules)
    modules = sorted({m for r in import_rules for m in r.where.modules})
    return _Prep(
        policy=policy, check_reads=reads, check_imports=imports,
        audit_dir=os.path.realpath(os.path.dirname(guard.audit_path)), root=os.path.realpath(policy.root),
        tempdir=os.path.realpath(tempfile.gettempdir()), internal=_internal_dirs(),
        sources=tuple(g for _, g in policy.source_paths()),
        module_paths=tuple((m, "/" + m.replace(".", "/")) for m in modules),
    )


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# ------------------------------------------------------------------ deciding


def _deny(guard: Guard, action: Action, resource: str, rule: str, message: str, hint: str,
          event: str) -> NoReturn:
    """A fixed denial of the runtime layer itself (audit directory, hook errors): record and raise."""
    d = Decision(Effect.DENY, action, resource, (RuleHit(rule, "<guard>", 0),), message, hint)
    try:
        guard.record_decision(d, "runtime", event=event)
    finally:
        raise GuardDenied(d)


def _check(guard: Guard, req: Request, event: str, *, quiet_allow: bool = False) -> Decision:
    """Decide *req* (recorded unless *quiet_allow* and allowed); raise when it is blocked."""
    d = guard.decide(req)
    if quiet_allow and d.effect is Effect.ALLOW:
        return d
    with guard.quiet():
        return guard.check(req, "runtime", event=event)


def _real(path: Any, dir_fd: Any = None, *, nofollow: bool = False) -> str:
    """The real path of an event's path argument (relative to *dir_fd* when one is given).

    With *nofollow* the last component is kept as is: removing or renaming a symlink acts on
    the link, not on what it points at.
    """
    base = None
    if isinstance(dir_fd, int) and dir_fd >= 0 and not isinstance(path, int):
        base = resolve(dir_fd)
    if nofollow and not isinstance(path, int):
        p = os.path.expanduser(os.fsdecode(os.fspath(path)))
        p = p if os.path.isabs(p) else os.path.join(base or os.getcwd(), p)
        if os.path.islink(p):
            return os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))
    return resolve(path, base)


def _owned(guard: Guard, prep: _Prep, real: str) -> bool:
    if real in guard.owned_files:
        return True
    # files inside a temporary directory the session made itself (TemporaryDirectory, mkdtemp)
    return _under(real, prep.tempdir) and os.path.dirname(real) in guard.owned_files


def _judge_path(guard: Guard, action: Action, path: Any, event: str, *, dir_fd: Any = None,
                metadata: bool = False, exclusive: bool = False, nofollow: bool = False) -> None:
    """Decide a write-like action on *path*; mark files the session creates as owned."""
    prep = _prep(guard)
    real = _real(path, dir_fd, nofollow=nofollow)
    if _under(real, prep.audit_dir) and not audit_writer_on_stack(sys._getframe(1)):
        _deny(guard, action, real, "audit-protected",
              f"{action} on {real}: the audit directory {prep.audit_dir} is written only by the guard.",
              "Read the audit with %guard audit or guard_kernel.read_records; leave its files as they are.",
              event)
    if real in _DEVICES:
        return
    in_source = any_match(prep.sources, real) is not None
    if not in_source:
        if ("/__pycache__/" in real and ".pyc" in real.rsplit("/", 1)[-1]) or real.endswith("/__pycache__"):
            return  # the import system caching bytecode (and making its folder)
        outside_root = not _under(real, prep.root)
        for internal in prep.internal:
            if _under(real, internal) and (outside_root or _under(internal, prep.root)):
                return  # the runtime's own caches and state (IPython history, font cache…)
        if outside_root and _under(real, prep.tempdir):
            if exclusive:
                guard.owned_files.add(real)  # a new, unique temporary file or directory: clobbers nothing
                return
            if _owned(guard, prep, real):
                if action is Action.FILE_WRITE:
                    guard.owned_files.add(real)
                return  # the session's own temporary files (TemporaryDirectory and its cleanup)
    owned = _owned(guard, prep, real)
    existed = action is not Action.FILE_WRITE or os.path.lexists(real)
    req = Request(action, real, path=real, owned=owned, code=event)
    d = _check(guard, req, event, quiet_allow=metadata)
    if action is Action.FILE_WRITE and not existed and d.effect in (Effect.ALLOW, Effect.WARN):
        guard.owned_files.add(real)


# ------------------------------------------------------------------ handlers


def _on_open(guard: Guard, args: tuple[Any, ...]) -> None:
    path, mode, flags = args[0], args[1], args[2]
    if isinstance(mode, str):
        write = "w" in mode or "a" in mode or "x" in mode or "+" in mode
    else:
        write = isinstance(flags, int) and ((flags & _ACCMODE) != os.O_RDONLY or bool(flags & _WRITE_FLAGS))
    if not write:
        if _prep(guard).check_reads and not isinstance(path, int):
            with guard.quiet():
                real = resolve(path)
                _check(guard, Request(Action.FILE_READ, real, path=real, code="open"), "open")
        return
    if isinstance(path, int):
        return  # an already-open descriptor: decided when it was opened
    if os.path.isdir(path):
        # a directory cannot be opened for writing: with an opener (tempfile) or O_TMPFILE the
        # file is made by another call (its own event), or gets a name later (os.link: checked)
        return
    exclusive = (isinstance(mode, str) and "x" in mode) or (
        isinstance(flags, int) and (flags & _EXCL_CREATE) == _EXCL_CREATE)
    with guard.quiet():
        _judge_path(guard, Action.FILE_WRITE, path, "open", exclusive=exclusive)


def _on_remove(guard: Guard, args: tuple[Any, ...]) -> None:
    real = _real(args[0], args[1] if len(args) > 1 else None, nofollow=True)
    _judge_path(guard, Action.FILE_DELETE, real, "os.remove", nofollow=True)
    guard.owned_files.discard(real)


def _on_rmdir(guard: Guard, args: tuple[Any, ...]) -> None:
    _judge_path(guard, Action.FILE_DELETE, args[0], "os.rmdir", dir_fd=args[1] if len(args) > 1 else None)


def _on_rmtree(guard: Guard, args: tuple[Any, ...]) -> None:
    _judge_path(guard, Action.FILE_DELETE, args[0], "shutil.rmtree", dir_fd=args[1] if len(args) > 1 else None)


def _on_truncate(guard: Guard, args: tuple[Any, ...]) -> None:
    _judge_path(guard, Action.FILE_DELETE, args[0], "os.truncate")


def _on_rename(guard: Guard, args: tuple[Any, ...]) -> None:
    src = _real(args[0], args[2] if len(args) > 2 else None, nofollow=True)
    dst = _real(args[1], args[3] if len(args) > 3 else None, nofollow=True)
    was_owned = src in guard.owned_files
    _judge_path(guard, Action.FILE_DELETE, src, "os.rename", nofollow=True)
    _judge_path(guard, Action.FILE_WRITE, dst, "os.rename", nofollow=True)
    if was_owned:
        guard.owned_files.discard(src)
        guard.owned_files.add(dst)


def _on_mkdir(guard: Guard, args: tuple[Any, ...]) -> None:
    real = _real(args[0], args[2] if len(args) > 2 else None)
    if os.path.isdir(real):
        return  # makedirs(exist_ok=True) on an existing directory changes nothing
    _judge_path(guard, Action.FILE_WRITE, real, "os.mkdir", exclusive=True)


def _on_link(guard: Guard, args: tuple[Any, ...]) -> None:
    src, dst = _real(args[0], args[2] if len(args) > 2 else None), _real(args[1], args[3] if len(args) > 3 else None)
    prep = _prep(guard)
    if any_match(prep.sources, src):  # a second name for a source inode would make it writable
        _judge_path(guard, Action.FILE_WRITE, src, "os.link")
    _judge_path(guard, Action.FILE_WRITE, dst, "os.link")


def _on_symlink(guard: Guard, args: tuple[Any, ...]) -> None:
    # the link itself is judged where it is made; writes through it are judged by the target
    dst = args[1]
    base = resolve(args[2]) if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0 else None
    p = os.fsdecode(os.fspath(dst))
    p = p if os.path.isabs(p) else os.path.join(base or os.getcwd(), p)
    real = os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))
    _judge_path(guard, Action.FILE_WRITE, real, "os.symlink", nofollow=True)


def _two_path(event: str, *, delete_src: bool = False) -> Handler:
    def handler(guard: Guard, args: tuple[Any, ...]) -> None:
        if delete_src:
            _judge_path(guard, Action.FILE_DELETE, args[0], event)
        _judge_path(guard, Action.FILE_WRITE, args[1], event)
    return handler


def _metadata(event: str, index: int = 0) -> Handler:
    def handler(guard: Guard, args: tuple[Any, ...]) -> None:
        dir_fd = args[-1] if event.startswith("os.") and len(args) > 2 else None
        _judge_path(guard, Action.FILE_WRITE, args[index], event, dir_fd=dir_fd, metadata=True)
    return handler


def _command_text(value: Any) -> str:
    """The command line, as the session wrote it: the confining exec helper in front of it taken off."""
    if isinstance(value, (str, bytes, os.PathLike)):
        return unwrap_text(os.fsdecode(value))
    if isinstance(value, Iterable):
        words = [os.fsdecode(a) if isinstance(a, (str, bytes, os.PathLike)) else str(a) for a in value]
        return shlex.join(unwrap(words) or words)
    return repr(value)


def _shell(guard: Guard, command: str, event: str) -> None:
    _check(guard, Request(Action.SHELL_EXEC, command[:500], command=command, code=event), event)


def _on_popen(guard: Guard, args: tuple[Any, ...]) -> None:
    if "pyspark.java_gateway" in sys.modules:  # PySpark's own JVM gateway is recorded as what it is
        from guard_kernel.enforce.spark.gateway import record_gateway

        if record_gateway(guard, args):
            return
    _shell(guard, _command_text(args[1] if args[1] is not None else args[0]), "subprocess.Popen")


def _on_system(guard: Guard, args: tuple[Any, ...]) -> None:
    _shell(guard, _command_text(args[0]), "os.system")


def _on_exec(guard: Guard, args: tuple[Any, ...]) -> None:
    _shell(guard, _command_text(args[1] if len(args) > 1 and args[1] else args[0]), "os.exec")


def _on_posix_spawn(guard: Guard, args: tuple[Any, ...]) -> None:
    _shell(guard, _command_text(args[1] if len(args) > 1 and args[1] else args[0]), "os.posix_spawn")


def _on_spawn(guard: Guard, args: tuple[Any, ...]) -> None:
    _shell(guard, _command_text(args[2] if len(args) > 2 and args[2] else args[1]), "os.spawn")


def _on_fork(event: str) -> Handler:
    def handler(guard: Guard, args: tuple[Any, ...]) -> None:
        _shell(guard, f"{event}()", event)
    return handler


def _net(guard: Guard, host: Any, port: Any, event: str) -> None:
    h = os.fsdecode(host) if isinstance(host, (str, bytes)) else str(host)
    resource = f"[{h}]:{port}" if ":" in h else f"{h}:{port}"
    _check(guard, Request(Action.NET_CONNECT, resource, host=h, code=event), event)


def _on_connect(guard: Guard, args: tuple[Any, ...]) -> None:
    sock, address = args[0], args[1]
    if getattr(sock, "family", None) == getattr(socket, "AF_UNIX", object()):
        return  # local IPC, not the network
    if "pyspark.java_gateway" in sys.modules:  # PySpark talking to the JVM it launched (loopback)
        from guard_kernel.enforce.spark.gateway import is_gateway_socket

        if is_gateway_socket(address):
            return
    if isinstance(address, tuple) and len(address) >= 2:
        _net(guard, address[0], address[1], "socket.connect")
    else:
        _net(guard, address, "-", "socket.connect")


def _on_sendto(guard: Guard, args: tuple[Any, ...]) -> None:
    sock, address = args[0], args[1]
    if address is None or getattr(sock, "family", None) == getattr(socket, "AF_UNIX", object()):
        return  # sendmsg on a connected socket: decided at connect
    if isinstance(address, tuple) and len(address) >= 2:
        _net(guard, address[0], address[1], "socket.sendto")
    else:
        _net(guard, address, "-", "socket.sendto")


def _on_getaddrinfo(guard: Guard, args: tuple[Any, ...]) -> None:
    host = args[0]
    if host in _LOOPBACK_NAMES:
        return  # resolving the local host leaks nothing; the connect is still checked
    _net(guard, host, args[1], "socket.getaddrinfo")


def _on_import(guard: Guard, args: tuple[Any, ...]) -> None:
    prep = _prep(guard)
    if not prep.check_imports:
        return
    name = args[0]
    if not isinstance(name, str) or name in prep.allowed:
        return
    if library_initiated(sys._getframe(2)):
        return  # a library's own import (numpy importing ctypes): not the user's action
    with guard.quiet():
        d = _check(guard, Request(Action.PYTHON_IMPORT, name, module=name, code="import"), "import",
                   quiet_allow=True)
    if d.effect is Effect.ALLOW:
        prep.allowed.add(name)


def _on_exec_code(guard: Guard, args: tuple[Any, ...]) -> None:
    code = args[0]
    if getattr(code, "co_name", None) != "<module>":
        return
    prep = _prep(guard)
    if not prep.module_paths:
        return
    filename = code.co_filename
    for module, path in prep.module_paths:
        if path + "/" in filename or filename.endswith(path + ".py"):
            if filename in prep.allowed:
                return
            with guard.quiet():
                req = Request(Action.PYTHON_IMPORT, module, module=module, code="import")
                if guard.decide(req).effect is Effect.ALLOW:
                    prep.allowed.add(filename)
                elif not library_initiated(sys._getframe(2)):  # the module body runs for its importer
                    _check(guard, req, "import", quiet_allow=True)
            return


def _on_dlopen(guard: Guard, args: tuple[Any, ...]) -> None:
    if not _prep(guard).check_imports:
        return
    req = Request(Action.PYTHON_IMPORT, f"ctypes.dlopen({args[0]!r})", module="ctypes", code="ctypes.dlopen")
    # ``import ctypes`` opens the interpreter itself (``PyDLL(None)``): part of a library's import that brought it in
    if guard.decide(req).effect is not Effect.ALLOW and not library_initiated(
            sys._getframe(2), past_ctypes=True, during_import=True):
        _check(guard, req, "ctypes.dlopen", quiet_allow=True)


def _on_sqlite_connect(guard: Guard, args: tuple[Any, ...]) -> None:
    # sqlite writes natively; only protect sources and the audit directory (a plain read of a
    # project database must keep working, and the engine opens read-write by default)
    database = args[0]
    if not isinstance(database, (str, bytes, os.PathLike)):
        return
    text = os.fsdecode(os.fspath(database))
    if text in ("", ":memory:") or text.startswith("file:"):
        return
    prep = _prep(guard)
    real = resolve(text)
    if any_match(prep.sources, real) or _under(real, prep.audit_dir):
        _judge_path(guard, Action.FILE_WRITE, real, "sqlite3.connect")


_source_cache: dict[str, bool] = {}
_analyzer: list[Any] = []


def _get_analyzer() -> Any:
    if not _analyzer:  # imported on first use: the cell layer imports this module's neighbours
        analysis = importlib.import_module("guard_kernel.analysis.python.analyze")
        _analyzer.append(analysis.analyze_source)
    return _analyzer[0]


def _on_compile(guard: Guard, args: tuple[Any, ...]) -> None:
    source, filename = args[0], args[1]
    # exec()/eval()/compile() of a string without a file name: code built at run time.  Cells
    # (named by IPython) are decided by the cell layer; modules are judged by their effects.
    if filename != "<string>" or not isinstance(source, (str, bytes)):
        return
    if library_initiated(sys._getframe(2)):
        return  # a library generating its own code (dataclasses, namedtuple): its effects are judged as they happen
    text = source.decode("utf-8", "replace") if isinstance(source, bytes) else source
    if text in _source_cache:
        return
    analyze = _get_analyzer()
    clean = True
    for item in analyze(text, guard=guard):  # returns [] for code that does not parse
        req = getattr(item, "request", item)
        if isinstance(req, Request):
            clean = _check(guard, req, "compile", quiet_allow=True).effect is Effect.ALLOW and clean
    if clean:
        if len(_source_cache) > 2048:
            _source_cache.clear()
        _source_cache[text] = True


def _on_addaudithook(guard: Guard, args: tuple[Any, ...]) -> None:
    # A later hook cannot remove or bypass this one (every hook runs on every event); record it.
    guard.record("runtime", event="sys.addaudithook", action=None, resource="sys.addaudithook",
                 decision="allow", rules=[], message="another audit hook was added (the guard's hook stays active)")


_HANDLERS: dict[str, Handler] = {
    "open": _on_open,
    "os.remove": _on_remove,
    "os.rmdir": _on_rmdir,
    "os.truncate": _on_truncate,
    "os.rename": _on_rename,
    "os.mkdir": _on_mkdir,
    "os.link": _on_link,
    "os.symlink": _on_symlink,
    "os.chmod": _metadata("os.chmod"),
    "os.chown": _metadata("os.chown"),
    "os.utime": _metadata("os.utime"),
    "shutil.rmtree": _on_rmtree,
    "shutil.copyfile": _two_path("shutil.copyfile"),
    "shutil.copytree": _two_path("shutil.copytree"),
    "shutil.move": _two_path("shutil.move", delete_src=True),
    "shutil.copymode": _metadata("shutil.copymode", 1),
    "shutil.copystat": _metadata("shutil.copystat", 1),
    "shutil.chown": _metadata("shutil.chown"),
    "subprocess.Popen": _on_popen,
    "os.system": _on_system,
    "os.exec": _on_exec,
    "os.posix_spawn": _on_posix_spawn,
    "os.spawn": _on_spawn,
    "os.fork": _on_fork("os.fork"),
    "os.forkpty": _on_fork("os.forkpty"),
    "socket.connect": _on_connect,
    "socket.sendto": _on_sendto,
    "socket.sendmsg": _on_sendto,
    "socket.getaddrinfo": _on_getaddrinfo,
    "import": _on_import,
    "exec": _on_exec_code,
    "ctypes.dlopen": _on_dlopen,
    "sqlite3.connect": _on_sqlite_connect,
    "compile": _on_compile,
    "sys.addaudithook": _on_addaudithook,
}
"""Event name → handler: the only events the hook does any work for."""

_EVENT_ACTION: dict[str, Action] = {
    "open": Action.FILE_WRITE, "os.remove": Action.FILE_DELETE, "os.rmdir": Action.FILE_DELETE,
    "os.truncate": Action.FILE_DELETE, "os.rename": Action.FILE_DELETE, "shutil.rmtree": Action.FILE_DELETE,
    "shutil.move": Action.FILE_DELETE, "subprocess.Popen": Action.SHELL_EXEC, "os.system": Action.SHELL_EXEC,
    "os.exec": Action.SHELL_EXEC, "os.posix_spawn": Action.SHELL_EXEC, "os.spawn": Action.SHELL_EXEC,
    "os.fork": Action.SHELL_EXEC, "os.forkpty": Action.SHELL_EXEC, "socket.connect": Action.NET_CONNECT,
    "socket.sendto": Action.NET_CONNECT, "socket.sendmsg": Action.NET_CONNECT,
    "socket.getaddrinfo": Action.NET_CONNECT, "import": Action.PYTHON_IMPORT,
    "ctypes.dlopen": Action.PYTHON_IMPORT, "compile": Action.FILE_WRITE,
}


def _hook(event: str, args: tuple[Any, ...]) -> None:
    handler = _HANDLERS.get(event)
    if handler is None:
        return
    guard = _session._current
    if guard is None or guard.busy:
        return
    try:
        if event == "open" or event == "import" or event == "exec":
            handler(guard, args)  # hot events: the handler returns early itself, quiet only when it works
        else:
            with guard.quiet():  # whatever the handler itself triggers is the guard's own doing
                handler(guard, args)
    except GuardDenied:
        raise
    except Exception as exc:  # fail closed: a hook that cannot decide denies, and says why
        action = _EVENT_ACTION.get(event, Action.FILE_WRITE)
        _deny(guard, action, event, "runtime-hook-error",
              f"The guard's runtime hook could not decide {event} and denied it: {type(exc).__name__}: {exc}",
              "Retry in a simpler form; report this error if it persists.", event)


# ------------------------------------------------------------------ public API


def install(guard: Guard | None = None) -> None:
    """Add the process audit hook (once per process) and make *guard* current if given.

    The hook cannot be removed; it does nothing while :func:`guard_kernel.decision.guard.current`
    is ``None``.  Installing again adds no second hook.
    """
    global _installed
    if guard is not None and _session.current() is not guard:
        _session.set_current(guard)
    with _install_lock:
        if _installed:
            return
        _prepare_initiator()
        _installed = True
        sys.addaudithook(_hook)


_FROZEN_HANDLERS: dict[str, Any] = dict(_HANDLERS)


def tampered() -> list[str]:
    """What code changed in the hook's state: its table of handled events, or the current guard."""
    out = [] if _HANDLERS == _FROZEN_HANDLERS else ["runtime hook handlers"]
    if _installed and _session.current() is None:
        out.append("current guard")
    return out


def repair() -> None:
    """Put the hook's table of handlers back (the hook itself cannot be removed)."""
    _HANDLERS.clear()
    _HANDLERS.update(_FROZEN_HANDLERS)


def installed() -> bool:
    """Whether the process audit hook is in place."""
    return _installed


def handled_events() -> frozenset[str]:
    """The audit events the hook acts on (every other event costs one dict lookup)."""
    return frozenset(_HANDLERS)


__all__ = ["handled_events", "install", "installed", "repair", "tampered"]
