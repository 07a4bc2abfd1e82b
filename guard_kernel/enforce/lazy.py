"""Post-import hooks: put a guard layer on a library right after it is imported, before the importer gets it.

Importing pandas, pyarrow or DuckDB costs hundreds of milliseconds; a session that never
uses them should not pay that at ``%load_ext``.  :func:`when_imported` runs a callback on
a module now if it is already imported, and otherwise right after its body has run:
a ``sys.meta_path`` finder (first in the list) finds the module's spec through the other
finders and wraps its loader's ``exec_module``.  The callback runs inside the import, while
the module is still initialising (other threads importing it wait on its module lock),
so no user code, in any thread, gets the module before the wrappers are on it.
``importlib.reload`` finds the spec again and runs the callback again (callbacks are
idempotent).  Submodules are hooked by their own names (``pyarrow.parquet`` is not
``pyarrow``).

Fail closed: a callback that raises makes the import fail with :class:`GuardDenied`
(the importer never gets an unguarded module) and the refusal is recorded.  The guard's
own work inside a callback runs quietly (the runtime hook does not judge it).

Limits (a guardrail, not a sandbox): a finder inserted before this one that returns its own
spec, or a module built by hand from ``spec_from_file_location``, skips the hook;
:func:`sweep` (run before every cell) catches such a module at the next cell.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from guard_kernel.decision import guard as _session
from guard_kernel.decision.errors import GuardDenied, ImportRefused
from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.policy.actions import Action

if TYPE_CHECKING:
    from importlib.abc import Loader

Callback = Callable[[ModuleType], None]

_lock = threading.RLock()
_local = threading.local()
_hooks: dict[str, list[Callback]] = {}
"""Module name → callbacks to run after each (re)import."""
_done: dict[str, int] = {}
"""Module name → id of the module object the callbacks last ran on (for :func:`sweep`)."""


def _refusal(name: str, exc: BaseException) -> ImportRefused:
    d = Decision(Effect.DENY, Action.PYTHON_IMPORT, name, (RuleHit("import-hook-error", "<guard>", 0),),
                 f"guard_kernel could not put its guard on {name!r} while it was imported, so the import "
                 f"was refused (the module stays unimported): {type(exc).__name__}: {exc}",
                 "Report this error; restart the kernel to retry.")
    guard = _session.current()
    if guard is not None:
        try:
            guard.record_decision(d, "import", via="post-import hook")
        except Exception:
            pass
    return ImportRefused(d)


def _run(name: str, module: ModuleType) -> None:
    """Run *name*'s callbacks on *module*; any failure becomes :class:`ImportRefused`."""
    callbacks = list(_hooks.get(name, ()))
    if not callbacks:
        return
    guard = _session.current()
    try:
        if guard is not None:
            with guard.quiet():  # the guard's own patching is not the user's action
                for fn in callbacks:
                    fn(module)
        else:
            for fn in callbacks:
                fn(module)
    except GuardDenied:
        raise
    except BaseException as exc:
        raise _refusal(name, exc) from exc
    _done[name] = id(module)


def _wrap_loader(spec: ModuleSpec, name: str) -> None:
    loader: Any = spec.loader
    exec_module = getattr(loader, "exec_module", None)
    if exec_module is None or getattr(exec_module, "_guard_kernel_hook", False):
        return

    def guarded_exec_module(module: ModuleType) -> None:
        exec_module(module)
        _run(name, module)  # still inside the import: the importer has not got the module yet

    guarded_exec_module._guard_kernel_hook = True  # type: ignore[attr-defined]
    if isinstance(loader, type):  # a class serving many modules (builtins, frozen): never patch it
        spec.loader = cast("Loader", _Loader(loader, guarded_exec_module))
        return
    try:  # on the loader instance (one per spec): the module's __loader__ keeps its type
        loader.exec_module = guarded_exec_module
    except (AttributeError, TypeError):
        spec.loader = cast("Loader", _Loader(loader, guarded_exec_module))


class _Loader:
    """A stand-in for a loader whose instances take no attributes; delegates everything else."""

    def __init__(self, loader: Any, exec_module: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self.exec_module = exec_module

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._loader, attr)


class _Finder:
    """First on ``sys.meta_path``: for hooked names, find the spec elsewhere and wrap its loader."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname not in _hooks:
            return None
        busy: set[str] = _local.__dict__.setdefault("finding", set())
        if fullname in busy:
            return None  # another finder asked importlib.util.find_spec again: let it answer itself
        busy.add(fullname)
        try:
            for finder in list(sys.meta_path):
                if isinstance(finder, _Finder):
                    continue
                find = getattr(finder, "find_spec", None)
                if find is None:
                    continue
                spec = find(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            busy.discard(fullname)
        if spec.loader is not None:
            _wrap_loader(spec, fullname)
        return cast("ModuleSpec | None", spec)

    def invalidate_caches(self) -> None:
        """Nothing cached here (``importlib.invalidate_caches`` calls every finder)."""


_finder = _Finder()


def _ensure_finder() -> None:
    if not sys.meta_path or sys.meta_path[0] is not _finder:
        while _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        sys.meta_path.insert(0, _finder)


def when_imported(name: str, callback: Callback) -> Callable[[], None]:
    """Run ``callback(module)`` on module *name* now if imported, and after every later (re)import.

    An error of the immediate call propagates; after a later import it fails that import
    (:class:`ImportRefused`).  Returns a function that removes the hook.
    """
    with _lock:
        _hooks.setdefault(name, []).append(callback)
        _ensure_finder()
    module = sys.modules.get(name)
    if module is not None:
        guard = _session.current()
        try:
            if guard is not None:
                with guard.quiet():
                    callback(module)
            else:
                callback(module)
        except BaseException:
            remove(name, callback)
            raise
        _done[name] = id(module)

    def unhook() -> None:
        remove(name, callback)

    return unhook


def remove(name: str, callback: Callback) -> None:
    """Remove one hook; the finder leaves ``sys.meta_path`` with the last hook."""
    with _lock:
        callbacks = _hooks.get(name, [])
        if callback in callbacks:
            callbacks.remove(callback)
        if not callbacks:
            _hooks.pop(name, None)
            _done.pop(name, None)
        if not _hooks:
            while _finder in sys.meta_path:
                sys.meta_path.remove(_finder)


def hooked() -> frozenset[str]:
    """The module names with post-import hooks."""
    return frozenset(_hooks)


def sweep() -> list[str]:
    """Run the callbacks of hooked modules that got imported without them; return their names.

    The safety net for imports that went around the finder (a finder inserted before it,
    a module built by hand).  Cheap: one dict lookup per hooked name.
    """
    missed = []
    with _lock:
        _ensure_finder()
        names = list(_hooks)
    for name in names:
        module = sys.modules.get(name)
        if module is not None and _done.get(name) != id(module):
            spec = getattr(module, "__spec__", None)
            if spec is not None and getattr(spec, "_initializing", False):
                continue  # being imported right now: its loader runs the callbacks
            _run(name, module)
            missed.append(name)
    return missed


__all__ = ["ImportRefused", "hooked", "remove", "sweep", "when_imported"]
