"""``%load_ext guard_kernel``: wire every layer of the guard into one IPython shell.

Loading builds the session's :class:`~guard_kernel.decision.guard.Guard` from ``GUARD_KERNEL_*``
(a bad policy raises, and nothing is installed), installs the runtime layers that exist
(audit hook, DuckDB gate, dataframe writers — the last two on each library right after user
code imports it, so loading imports neither DuckDB nor pandas), registers the cell transformer, wraps
``magics_manager.find`` and the shell's ``system``/``getoutput`` so magics, aliases and
``!cmd`` are decided by the same function, and writes a ``cell`` audit record for every
cell.  Any failure while loading undoes what was done and raises: a session is either
guarded or visibly not.  Under ``lock: true`` the guard refuses to be unloaded.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from guard_kernel._package import PACKAGE
from guard_kernel.analysis.python.scan import DEFAULT_ALIASES, magic_intent
from guard_kernel.audit.live import LiveNotebook, after_cell
from guard_kernel.audit.pipe import PipeSink
from guard_kernel.audit.session import MAX_INNER, kernel_identity, worst
from guard_kernel.decision import guard as session
from guard_kernel.decision.errors import GuardDenied, GuardUnavailable
from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.decision.messages import Code, facts
from guard_kernel.decision.request import Request
from guard_kernel.enforce import lazy
from guard_kernel.enforce.ipython import notices, outputs, pins, unavailable
from guard_kernel.enforce.ipython.cell import CellTransformer, analyze_source
from guard_kernel.enforce.ipython.config import configured_environ
from guard_kernel.enforce.layer import Layer, ModuleLayer
from guard_kernel.policy.actions import Action
from guard_kernel.policy.paths import glob_base, resolve

LAYERS = {
    "duckdb_gate": "guard_kernel.enforce.duckdb.gate",
    "dataframe": "guard_kernel.enforce.dataframe.writers",
    "sqlite": "guard_kernel.enforce.dbapi.sqlite",
    "psycopg": "guard_kernel.enforce.dbapi.psycopg",
    "sqlalchemy": "guard_kernel.enforce.dbapi.sqlalchemy",
    "children": "guard_kernel.enforce.runtime.children",
    "spark": "guard_kernel.enforce.spark.layer",
    "runtime": "guard_kernel.enforce.runtime.hook",
}
"""Runtime layers installed on load (name in the audit → module), in this order; the
process audit hook comes last so the other layers' own imports are not judged as the user's."""
_ON_IMPORT = {"duckdb_gate": "duckdb", "sqlite": "sqlite3", "psycopg": "psycopg", "sqlalchemy": "sqlalchemy",
              "spark": "pyspark"}
"""Layers that import their library: installed right after user code imports it (at once if it is
imported already), so loading the guard does not import DuckDB (and sqlglot) for sessions without it."""

IN_FORCE = (
    {"layer": "cell_gate", "what": "each cell's code decided as a whole before any line runs"},
    {"layer": "magics_and_shell", "what": "magics, aliases and !cmd decided before they run"},
    {"layer": "duckdb_gate", "what": "every DuckDB connection and statement; row caps (once duckdb is imported)"},
    {"layer": "dataframe", "what": "dataframe writers; row caps on source readers"},
    {"layer": "runtime", "what": "sys.addaudithook: files, processes, sockets, imports"},
)
"""What ``%load_ext`` puts in force, as the session header lists it (in-process layers only)."""

_SYSTEM_METHODS = ("system", "system_piped", "system_raw")
_GUARDED_LINE_MAGICS = frozenset({"save", "logstart", "notebook", "store", "run", "unload_ext", "reload_ext"})
_GUARDED_CELL_MAGICS = frozenset({"writefile", "file", "bash", "sh", "script", "perl", "ruby", "python",
                                  "python2", "python3", "pypy", "zsh", "system", "sx"})
_OWN_NAMES = (PACKAGE, __name__)
"""What ``%unload_ext`` / ``%reload_ext`` name when they mean the guard."""


@dataclass
class _Loaded:
    """Everything one load installed, so it can be undone exactly."""

    ip: Any
    guard: session.Guard
    transformer: CellTransformer
    layers: list[Layer] = field(default_factory=list)
    callbacks: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)
    shell_attrs: list[str] = field(default_factory=list)
    wrappers: dict[str, Any] = field(default_factory=dict)
    """attribute name (on the shell, or ``find`` on the magics manager) → the guard's wrapper."""
    find_wrapped: bool = False
    refused: dict[tuple[str, str], str] = field(default_factory=dict)
    """(kind, magic name) → why it is refused in this session (the guarded kernel's debugger magics)."""
    kernel_wrapped: bool = False
    outputs_undo: Callable[[], None] | None = None
    """Removes the display caps (:mod:`.outputs`)."""
    live: LiveNotebook | None = None
    """The live audit notebook (audit/live.py), updated after every cell."""
    pinned: pins.Pins | None = None
    """The guard's own recording path as loaded (:mod:`.pins`)."""


_loaded: _Loaded | None = None


def loaded() -> _Loaded | None:
    """The current load state (None when the extension is not active)."""
    return _loaded


def loaded_guard() -> session.Guard | None:
    """The guard this extension installed (even if code pushed it aside)."""
    return _loaded.guard if _loaded is not None else None


def refuse_magics(magics: dict[str, str], reason: str) -> None:
    """Refuse these magics (name → ``line``/``cell``) in this session, saying *reason*."""
    if _loaded is None:
        raise RuntimeError("guard_kernel is not loaded")
    for name, kind in magics.items():
        _loaded.refused[(kind, name)] = reason


# --------------------------------------------------------------- load / unload


def load_ipython_extension(ip: Any) -> None:
    """Guard *ip*: policy from the environment, every layer, the cell gate, magics, audit."""
    global _loaded
    if _loaded is not None and _loaded.ip is ip and session.current() is _loaded.guard:
        notices.note(ip, "already loaded; nothing changed.")
        return
    if _loaded is not None and _loaded.ip is ip and _loaded.guard.locked:
        # the guard was pushed aside by code (set_current): a locked guard is put back, not replaced
        session.set_current(_loaded.guard)
        _heal(_loaded)
        notices.note(ip, "already loaded with a locked policy; its hooks were restored.")
        return
    if _loaded is not None:  # a stale load (another shell, or an unlocked guard replaced): undo it first
        _teardown(_loaded)
        _loaded = None
    existing = session.current()
    try:
        guard = existing if existing is not None else session.guard_from_env(
            default_actor="human", environ=configured_environ(ip, os.environ),
            header={"kernel": _kernel_info(ip), "in_force": IN_FORCE})
    except Exception as exc:  # fail closed: no guard, no cells (until %guard policy FILE loads one)
        gate = unavailable.block(ip, f"{type(exc).__name__}: {exc}", lambda file: _load_with_policy(ip, file))
        raise GuardUnavailable(gate.decision()) from exc
    unavailable.unblock(ip)
    state = _Loaded(ip, guard, CellTransformer(ip), pinned=pins.pin(guard))
    try:
        session.set_current(guard)
        with guard.quiet():  # the guard's own imports and set-up are not the user's actions
            _install(state)
    except BaseException:
        _teardown(state)
        session.set_current(existing)
        raise
    _loaded = state
    guard.record("extension", action=None, resource="guard_kernel", decision="allow", rules=[],
                 message="guard_kernel loaded", layers=[layer.name for layer in state.layers])
    notices.banner(ip, guard)


def _load_with_policy(ip: Any, file: str) -> None:
    """``%guard policy FILE`` in a session whose guard could not start: start it with *file*."""
    env = {**os.environ, session.ENV_POLICY: os.path.abspath(os.path.expanduser(file))}
    session.set_current(session.guard_from_env(default_actor="human", environ=env))
    load_ipython_extension(ip)


def _install(state: _Loaded) -> None:
    ip, guard = state.ip, state.guard
    # every layer is part of the package: one that fails to import is a broken install, and
    # the error propagates (load_ipython_extension undoes what was done): fail closed
    for name, module in LAYERS.items():
        layer = ModuleLayer(name, module, guard, library=_ON_IMPORT.get(name))
        state.layers.append(layer)  # before install: a failure undoes the hook too
        layer.install()
    ip.ast_transformers.append(state.transformer)
    guard.notify = notices.notify(ip)  # warnings and truncations as display outputs, not stderr
    _register_events(state)
    state.outputs_undo = outputs.install(ip, guard)
    _wrap_shell(state)
    _wrap_find(state)
    ip.register_magic_function(_percent_guard, "line_cell", "guard")
    _wrap_shutdown(state)


def _kernel_info(ip: Any) -> dict[str, Any]:
    """The kernel this shell runs in, for the session header: its connection file, and its id
    when the file is Jupyter's ``kernel-<id>.json``; nothing in a terminal IPython."""
    app = sys.modules.get("ipykernel.kernelapp")
    try:
        kernel_app = app.IPKernelApp if app is not None and app.IPKernelApp.initialized() else None
        conn = kernel_app.instance().connection_file if kernel_app is not None else ""
    except Exception:  # not a kernel, or one without a connection file
        conn = ""
    return {"name": "extension", **kernel_identity(conn)}


def _wrap_shutdown(state: _Loaded) -> None:
    """Note why the kernel stops (shutdown or restart) for the session's end record."""
    kernel = getattr(state.ip, "kernel", None)
    orig = getattr(kernel, "do_shutdown", None)
    if orig is None:
        return

    def do_shutdown(restart: bool, *args: Any, **kwargs: Any) -> Any:
        state.guard.end_reason = "restart" if restart else "shutdown"
        return orig(restart, *args, **kwargs)

    kernel.__dict__["do_shutdown"] = do_shutdown
    state.kernel_wrapped = True


def _percent_guard(line: str = "", cell: str | None = None) -> None:
    """What the guard does in this session: ``%guard status | explain [N] | audit | policy FILE | check CODE | help``.

    ``status`` (default): policy, mode, lock, actor, environment, counts, audit path;
    ``explain [N]``: the last (N-th last) decision and the rules (file:line) that made it; ``audit``:
    this session's audit file; ``policy FILE``: switch policy (only when the current one has
    ``lock: false``); ``check CODE`` (or a ``%%guard check`` cell): would it be allowed, decided
    without running it; ``--json``: the same as JSON (status, explain, check).
    """
    # loaded on first use, not at start-up
    from guard_kernel.enforce.ipython.magics import guard_magic

    guard_magic(line, cell)


def unload_ipython_extension(ip: Any) -> None:
    """Remove the guard — refused (``GuardLocked``) while the policy is locked."""
    global _loaded
    state = _loaded
    guard = session.current()
    if guard is not None and guard.locked:
        guard.refuse_locked("unload")
    if state is None:
        return
    _teardown(state)
    _loaded = None
    if session.current() is state.guard:
        session.set_current(None)
    try:
        state.guard.close("unload")
    except ValueError:  # already closed
        pass
    notices.note(ip, "unloaded; this session is no longer guarded.")


def _teardown(state: _Loaded) -> None:
    """Undo what *state* installed (best effort: every step is tried)."""
    ip = state.ip
    try:
        while state.transformer in ip.ast_transformers:
            ip.ast_transformers.remove(state.transformer)
    except Exception:  # pragma: no cover - a list removal
        pass
    for event, cb in state.callbacks:
        try:
            ip.events.unregister(event, cb)
        except ValueError:
            pass
    state.callbacks.clear()
    if state.outputs_undo is not None:
        state.outputs_undo()
        state.outputs_undo = None
    for name in state.shell_attrs:
        ip.__dict__.pop(name, None)
    state.shell_attrs.clear()
    state.wrappers.clear()
    if state.find_wrapped:
        ip.magics_manager.__dict__.pop("find", None)
        state.find_wrapped = False
    if state.kernel_wrapped:
        getattr(ip, "kernel", None).__dict__.pop("do_shutdown", None)
        state.kernel_wrapped = False
    for layer in reversed(state.layers):
        try:
            layer.uninstall()
        except Exception as exc:  # keep undoing the rest; say what failed
            print(f"guard_kernel: could not uninstall the {layer.name} layer: {exc}", file=sys.stderr)
    state.layers.clear()


# ---------------------------------------------------------------- cell records


def _register_events(state: _Loaded) -> None:
    tr = state.transformer

    def pre_run_cell(info: Any) -> None:
        frame = tr.begin(getattr(info, "raw_cell", "") or "", getattr(info, "transformed_cell", None))
        frame.request = _request_info(state.ip)
        guard = session.current()
        if guard is not None:
            frame.outer_log, guard.cell_log = guard.cell_log, frame.log
        _heal(state)
        lazy.sweep()  # a guarded library imported around the post-import hook gets its layer now

    def post_run_cell(result: Any) -> None:
        frame = tr.end()
        guard = session.current()
        if frame is None or guard is None:
            return
        if guard.cell_log is frame.log:
            guard.cell_log = frame.outer_log
            if frame.outer_log is not None:  # a cell run from a cell: its records are the outer cell's too
                frame.outer_log.extend(frame.log)
        # a cell that replaced the recording path (the sink, a record method) would silence its own
        # record and every later one: put it back first, then say so after the cell's record
        replaced = state.pinned.broken() if state.pinned is not None else []
        if replaced and state.pinned is not None:
            state.pinned.restore()
        try:
            _record_cell(guard, frame, result)
            if replaced:
                guard.record("tamper", action=None, resource="guard_kernel", decision="deny",
                             rules=[guard.lock_rule()], hooks=replaced,
                             message="this cell replaced the guard's recording path (" + ", ".join(replaced)
                             + "); it was put back and the cell recorded")
        except Exception as exc:  # the cell has run; say the record is missing rather than hide it
            print(f"guard_kernel: could not write the cell record: {exc}", file=sys.stderr)
        if guard.policy.audit.live_notebook and not isinstance(guard.audit, PipeSink):  # the launcher writes it
            with guard.quiet():  # the guard's own write into the audit folder, not the session's
                state.live = after_cell(state.live, guard.audit_path)

    for event, cb in (("pre_run_cell", pre_run_cell), ("post_run_cell", post_run_cell)):
        state.ip.events.register(event, cb)
        state.callbacks.append((event, cb))


def _heal(state: _Loaded) -> None:
    """Before each cell: put back any guard hook that code removed (locked policies only).

    A cell that clears ``ast_transformers`` or restores ``shell.system`` would otherwise run
    every later cell unguarded.  This is a guardrail, not a sandbox: code that unregisters
    this event callback itself is out of its reach (see docs/threat-model.md).
    """
    guard = state.guard
    if not guard.locked:
        return
    repaired = _tampered(state)
    if repaired:
        _repair(state)
        guard.record("guard", action=None, resource="guard_kernel", decision="deny", rules=[guard.lock_rule()],
                     message=f"guard hooks removed by code were restored: {', '.join(repaired)}")
        msg = f"restored guard hooks removed by code ({', '.join(repaired)}); the policy is locked"
        hint = "Do not change the guard's hooks."
        notices.show(state.ip, Code.WARNING, msg, [f"instead: {hint}"], facts(Code.WARNING, msg, hint))


def _tampered(state: _Loaded) -> list[str]:
    """Every hook of *state* that code removed or replaced, IPython's and the layers'."""
    ip, out = state.ip, []
    if session.current() is not state.guard:
        out.append("current guard")
    if state.transformer not in ip.ast_transformers:
        out.append("ast transformer")
    for name, wrapper in state.wrappers.items():
        owner = ip.magics_manager if name == "find" else ip
        if owner.__dict__.get(name) is not wrapper:
            out.append(name)
    for event, cb in state.callbacks:
        if cb not in ip.events.callbacks.get(event, ()):
            out.append(f"{event} callback")
    for layer in state.layers:
        out.extend(layer.tampered())
    if state.pinned is not None:
        out.extend(state.pinned.broken())
    return out


def _repair(state: _Loaded) -> None:
    """Put back every hook of *state* (what :func:`_tampered` lists)."""
    ip = state.ip
    session.set_current(state.guard)
    if state.transformer not in ip.ast_transformers:
        ip.ast_transformers.append(state.transformer)
    for name, wrapper in state.wrappers.items():
        owner = ip.magics_manager if name == "find" else ip
        owner.__dict__[name] = wrapper
    for event, cb in state.callbacks:
        if cb not in ip.events.callbacks.get(event, ()):
            ip.events.register(event, cb)
    for layer in state.layers:
        layer.install()
    if state.pinned is not None:
        state.pinned.restore()


def tampered() -> list[str]:
    """What code removed or replaced among the guard's hooks in this session (``[]``: all in place)."""
    state = _loaded
    return ["guard not loaded"] if state is None else _tampered(state)


def repair() -> None:
    """Put every hook of this session's guard back."""
    if _loaded is not None:
        _repair(_loaded)


def _request_info(ip: Any) -> dict[str, Any]:
    """Who asked for this cell: the Jupyter request's msg_id, client session and username, the
    cell id, and the sending tool or client when the request's metadata names it."""
    kernel = getattr(ip, "kernel", None)
    try:
        parent = kernel.get_parent() if kernel is not None else None
    except Exception:  # an older or a stand-in kernel
        parent = None
    if not parent:
        return {}
    header, meta = parent.get("header") or {}, parent.get("metadata") or {}
    info = {"msg_id": header.get("msg_id"), "session": header.get("session"), "username": header.get("username")}
    if meta.get("cellId"):
        info["cell_id"] = meta["cellId"]
    for key in ("tool", "client", "agent", "origin"):
        if isinstance(meta.get(key), str | int | float):
            info[key] = meta[key]
    return {k: v for k, v in info.items() if v is not None}


def _record_cell(guard: session.Guard, frame: Any, result: Any) -> None:
    err = None
    count = None
    status = "ok"
    if result is not None:
        count = getattr(result, "execution_count", None)
        exc = result.error_before_exec if result.error_before_exec is not None else result.error_in_exec
        if exc is not None:
            err = f"{type(exc).__name__}: {exc}"[:500]
            status = "error"
    if frame.rejected:
        status = "rejected"
    effects = [d.effect.value for d in frame.decisions] + [str(x.get("decision")) for x in frame.log]
    decision = Effect(worst(effects)) if not frame.rejected else Effect.DENY
    shown = [d for d in frame.decisions if d.effect is decision] if decision is not Effect.ALLOW else []
    rules = list({r.id: r.as_dict() for d in shown for r in d.rules}.values())
    inner = [x for x in frame.log if x.get("decision") == decision.value] if decision is not Effect.ALLOW else []
    messages = [d.message for d in shown] + [str(x.get("message", "")) for x in inner if x.get("message")]
    for x in inner:
        for rid in x.get("rules", []):
            if rid not in {r["id"] for r in rules}:
                rules.append({"id": rid})
    intents = []
    for i, intent in enumerate(frame.intents):
        d = frame.decisions[i] if i < len(frame.decisions) and not frame.rejected else None
        intents.append({"action": intent.request.action.value, "resource": intent.request.resource,
                        "line": intent.request.line, "via": intent.via,
                        **({"decision": d.effect.value} if d is not None else {})})
    output = None
    if guard.redactor.keep_outputs and result is not None and getattr(result, "result", None) is not None:
        try:  # the cell's value as text (what the notebook shows as text/plain), cut to the policy's size
            output = guard.redactor.output(repr(result.result)[: guard.redactor.max_output_bytes * 4 + 16])
        except Exception as exc:  # a value whose repr fails is not the audit's problem
            output = f"<unprintable {type(result.result).__name__}: {type(exc).__name__}>"
    guard.record("cell", action=None, resource=f"cell[{count}]" if count is not None else "cell",
                 decision=decision.value, rules=rules, message="; ".join(dict.fromkeys(messages))[:1000],
                 code=frame.raw, intents=intents, execution_count=count, status=status,
                 duration_ms=round((time.perf_counter() - frame.started) * 1000, 3),
                 static_ms=round(frame.static_seconds * 1000, 3), error=err,
                 inside=frame.log[:MAX_INNER], **({"inside_more": len(frame.log) - MAX_INNER}
                                                  if len(frame.log) > MAX_INNER else {}),
                 **({"request": frame.request} if frame.request else {}),
                 **({"output": output} if output is not None else {}))


# -------------------------------------------------------------- shell commands

_CALL = compile("__guard_fn__(__guard_cmd__)", "<guard_kernel>", "eval")


def _call_in_frame(fn: Callable[[str], Any], cmd: str, frame: FrameType) -> Any:
    """Call ``fn(cmd)`` from a frame whose locals are *frame*'s.

    IPython's ``system`` expands ``{var}``/``$var`` from its caller's frame; called from a
    wrapper, that would be the wrapper's locals.  Running the call under *frame*'s
    locals keeps expansion exactly as without the guard.
    """
    loc = dict(frame.f_locals)
    loc["__guard_fn__"], loc["__guard_cmd__"] = fn, cmd
    return eval(_CALL, frame.f_globals, loc)


def _check_shell(guard: session.Guard, expanded: str, raw: str, via: str) -> None:
    first = expanded.strip().splitlines()[0] if expanded.strip() else expanded
    guard.check(Request(Action.SHELL_EXEC, first[:200], command=expanded, code=raw), "shell", via=via)
    check_shell_writes(guard, expanded, via)


def check_shell_writes(guard: session.Guard, command: str, via: str) -> None:
    """A command that would write or delete a source, the policy file or the audit is decided as that
    write or delete (best effort: its words, not its semantics; the guarded kernel's Landlock holds)."""
    from guard_kernel.analysis.shell import shell_writes

    policy = guard.policy
    keep = [g for _, g in policy.source_paths()]
    keep_dirs = [glob_base(g.absolute) for g in keep] + [policy.file, *guard.protected]

    def protects(action: Action, path: str) -> bool:
        if any(g.matches(path) for g in keep) or path == policy.file:
            return True
        # writing into, or deleting a folder that holds, a source or the audit
        return any(d == path or d.startswith(path + os.sep) or path.startswith(d + os.sep) for d in keep_dirs
                   if d and (action is Action.FILE_DELETE or d in guard.protected))

    protected = [(a, p) for a, p in shell_writes(command) if protects(a, p)]
    if protected:
        guard.check_all((Request(action, path, path=path, code=command[:500]), "shell", {"via": via})
                        for action, path in protected)


def _wrap_shell(state: _Loaded) -> None:
    ip = state.ip

    def make_system(name: str, orig: Callable[[str], Any]) -> Callable[[str], Any]:
        @functools.wraps(orig)
        def guarded_system(cmd: str) -> Any:
            frame = sys._getframe(1)
            guard = session.current()
            if guard is None or guard.busy:
                return _call_in_frame(orig, cmd, frame)
            expanded = ip.var_expand(cmd, depth=1)
            _check_shell(guard, expanded, cmd, f"shell.{name}")
            with guard.quiet():  # decided here: the runtime hook need not decide the process again
                return _call_in_frame(orig, cmd, frame)
        return guarded_system

    for name in _SYSTEM_METHODS:
        orig = getattr(ip, name, None)
        if orig is not None:
            ip.__dict__[name] = state.wrappers[name] = make_system(name, orig)
            state.shell_attrs.append(name)

    orig_getoutput = ip.getoutput

    @functools.wraps(orig_getoutput)
    def guarded_getoutput(cmd: str, split: bool = True, depth: int = 0) -> Any:
        guard = session.current()
        if guard is None or guard.busy:
            return orig_getoutput(cmd, split=split, depth=depth + 1)
        expanded = ip.var_expand(cmd, depth=depth + 1)
        _check_shell(guard, expanded, cmd, "shell.getoutput")
        with guard.quiet():
            return orig_getoutput(cmd, split=split, depth=depth + 1)

    ip.__dict__["getoutput"] = state.wrappers["getoutput"] = guarded_getoutput
    state.shell_attrs.append("getoutput")


# --------------------------------------------------------------------- magics


def _wrap_find(state: _Loaded) -> None:
    mm = state.ip.magics_manager
    orig_find = mm.find

    def guarded_find(magic_kind: Any, magic_name: str) -> Any:
        fn = orig_find(magic_kind, magic_name)
        if fn is None:
            return fn
        reason = state.refused.get((magic_kind, magic_name))
        if reason is not None:
            return _refused_magic(state, magic_kind, magic_name, reason)
        names = _GUARDED_CELL_MAGICS if magic_kind == "cell" else _GUARDED_LINE_MAGICS
        if magic_name in names or (magic_kind == "cell" and _is_script_magic(fn)):
            return _guard_magic(state, magic_kind, magic_name, fn)
        return fn

    mm.__dict__["find"] = state.wrappers["find"] = guarded_find
    state.find_wrapped = True


def _refused_magic(state: _Loaded, kind: str, name: str, reason: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        via = ("%%" if kind == "cell" else "%") + name
        d = Decision(Effect.DENY, Action.KERNEL_REQUEST, via, (RuleHit("refused-magic", "<guard>", 0),),
                     f"{via} is refused here: {reason}", "Debug in an unguarded kernel on a copy of the data.",
                     None, via)
        state.guard.record_decision(d, "magic", via=via)
        raise GuardDenied(d)
    return refused


def _is_script_magic(fn: Any) -> bool:
    owner = getattr(fn, "__self__", None)
    return type(owner).__name__ == "ScriptMagics"


def _guard_magic(state: _Loaded, kind: str, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def guarded_magic(*args: Any, **kwargs: Any) -> Any:
        guard = session.current()
        if guard is None or guard.busy:
            return fn(*args, **kwargs)
        line = str(args[0]) if args else str(kwargs.get("line", ""))
        body = (str(args[1]) if len(args) > 1 else kwargs.get("cell")) if kind == "cell" else None
        if name in ("unload_ext", "reload_ext"):
            if line.strip() in _OWN_NAMES and guard.locked:
                guard.refuse_locked(f"%{name}")
            return fn(*args, **kwargs)
        if name == "run":
            _check_run(state, guard, line)
            return fn(*args, **kwargs)  # the script runs under the runtime hooks
        if kind == "cell" and name not in _GUARDED_CELL_MAGICS:  # a script magic added by configuration
            intent = magic_intent("script", f"{name} {line}", body or "")
        else:
            intent = magic_intent(name, line, body if kind == "cell" else None, aliases=_aliases(state.ip))
        if intent is None:
            return fn(*args, **kwargs)
        action, resource, extra = intent
        via = ("%%" if kind == "cell" else "%") + name
        if action is Action.FILE_WRITE:
            target = _db_path(state.ip) if resource == "<ipython db>" else resource
            real = resolve(target)
            existed = os.path.exists(real)
            guard.check(Request(action, resource, path=real, owned=real in guard.owned_files, code=via + " " + line),
                        "magic", via=via)
            with guard.quiet():
                out = fn(*args, **kwargs)
            if not existed and os.path.exists(real):
                guard.owned_files.add(real)
            return out
        guard.check(Request(action, resource, code=via + " " + line, **extra), "magic", via=via)
        if action is Action.SHELL_EXEC:
            check_shell_writes(guard, str(extra.get("command") or resource), via)
        with guard.quiet(), _shown_once(guard):
            return fn(*args, **kwargs)

    return guarded_magic


@contextlib.contextmanager
def _shown_once(guard: session.Guard) -> Iterator[None]:
    """While a script magic runs, do not show its process's shell warning a second time.

    ``%%bash`` starts its process from IPython's script event-loop thread, where this thread's
    ``quiet()`` does not reach: the runtime hook decides and records it again (the audit
    keeps both), but the user has just seen the warning for the whole cell magic.
    """
    show, me = guard.notify, threading.get_ident()

    def notify(d: Decision) -> None:
        if d.action is Action.SHELL_EXEC and threading.get_ident() != me:
            return
        show(d)

    guard.notify = notify
    try:
        yield
    finally:
        guard.notify = show


def _aliases(ip: Any) -> frozenset[str]:
    am = getattr(ip, "alias_manager", None)
    try:
        return frozenset(a[0] for a in am.aliases) if am is not None else DEFAULT_ALIASES
    except Exception:
        return DEFAULT_ALIASES


def _db_path(ip: Any) -> str:
    db = getattr(ip, "db", None)
    root = getattr(db, "root", None)
    return os.fspath(root) if root is not None else os.path.join(str(getattr(ip, "ipython_dir", "~")), "db")


_RUN_VALUE_OPTS = frozenset({"-m", "-p", "-N", "-b"})


def _check_run(state: _Loaded, guard: session.Guard, line: str) -> None:
    """``%run file``: decide the script's intents statically before it starts, and record the run."""
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    target: str | None = None
    skip = False
    module = None
    for w in words:
        if skip:
            skip = False
            continue
        if w in _RUN_VALUE_OPTS:
            skip = w != "-m"
            if w == "-m":
                module = ""
            continue
        if w.startswith("-"):
            continue
        if module == "":
            module = w
            break
        target = w
        break
    resource = module if module else (target or line.strip())
    guard.record("magic", action=None, resource=resource, decision="allow", rules=[], message="%run",
                 via="%run", line=line)
    if not target:
        return
    path = target if os.path.isfile(target) else target + ".py"
    if not os.path.isfile(path) or path.endswith(".ipynb") or os.path.getsize(path) > 5_000_000:
        return
    with guard.quiet(), open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if path.endswith(".ipy"):
        text = state.ip.transform_cell(text)
    intents = analyze_source(text, guard=guard, namespace=None, aliases=_aliases(state.ip),
                             transform=state.ip.transform_cell)
    guard.check_all((i.request, i.kind, {"via": f"%run {target}", "stage": "run"}) for i in intents)
