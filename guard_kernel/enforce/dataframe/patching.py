"""Plumbing shared by the dataframe writer and reader wrappers: the patch list, re-entry, arguments, targets.

:mod:`guard_kernel.enforce.dataframe.writers` (writers) and :mod:`guard_kernel.enforce.dataframe.readers` (source-read row
caps) both replace library functions with wrappers.  Every replacement goes through
:func:`patch`, so one list (``_patches``) can put all originals back in reverse order.
A wrapper consults the guard only for the outermost call on its thread (:class:`Nested`):
``to_excel`` calling ``ExcelWriter`` or ``read_csv`` calling another reader is the same
action, decided once.  Wrappers keep the original's name and docstring but not its
``__wrapped__`` (:func:`hide`), so ``df.to_csv.__wrapped__`` is no way around them.  A
wrapper that cannot decide fails closed (:func:`fail_closed`).
"""

from __future__ import annotations

import functools
import inspect
import io
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from guard_kernel.decision import guard as _session
from guard_kernel.decision.errors import GuardDenied
from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.decision.guard import Guard
from guard_kernel.decision.request import Request
from guard_kernel.enforce.layer import Wrappers
from guard_kernel.policy.actions import Action
from guard_kernel.policy.paths import remote_host, resolve

lock = threading.RLock()
_patches: list[tuple[Any, str, Any]] = []
"""(owner, attribute, original) of every patch, in the order applied."""
wrapped = Wrappers()
"""Every patch's wrapper: what :func:`tampered` expects to find in place."""
shared: dict[int, tuple[Any, Any]] = {}
"""id(original) and id(wrapper) → (original, wrapper): one wrapper per function re-exported under two names."""
_local = threading.local()


class Nested:
    """Marks that a wrapped call is running on this thread: inner wrapped calls are its own."""

    def __enter__(self) -> None:
        _local.depth = getattr(_local, "depth", 0) + 1

    def __exit__(self, *exc: object) -> None:
        _local.depth -= 1


def active_guard() -> Guard | None:
    """The guard to consult, or None when the call is not ours to decide."""
    guard = _session.current()
    depth: int = getattr(_local, "depth", 0)
    if guard is None or guard.busy or depth > 0:
        return None
    return guard


def guarded(orig: Any, body: Callable[[Guard, tuple[Any, ...], dict[str, Any]], Any]) -> Any:
    """Wrap *orig*: with a guard to consult, ``body(guard, args, kwargs)`` decides and calls it;
    otherwise (no guard, the guard's own work, a nested call) *orig* runs as it is."""

    @functools.wraps(orig)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        guard = active_guard()
        if guard is None:
            return orig(*args, **kwargs)
        return body(guard, args, kwargs)

    return hide(wrapper)


def hide(wrapper: Any) -> Any:
    try:
        del wrapper.__wrapped__  # df.to_csv.__wrapped__ must not be a way around the check
    except AttributeError:
        pass
    wrapper._guard_kernel_wrapper = True
    return wrapper


def is_wrapper(obj: Any) -> bool:
    """Whether *obj* is one of the guard's wrappers (installing twice must not wrap a wrapper)."""
    return getattr(obj, "_guard_kernel_wrapper", False) is True


def patch(owner: Any, name: str, wrapper: Any) -> None:
    wrapped.add(owner, name, wrapper)
    _patches.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
    setattr(owner, name, wrapper)


def patch_shared(owner: Any, name: str, orig: Any, make: Callable[[], Any]) -> None:
    """Replace ``owner.name`` (now *orig*) by a wrapper made once per original function.

    Libraries re-export functions (``pyarrow.parquet.write_table`` is
    ``pyarrow.parquet.core.write_table``): both names get the same wrapper.  A module
    imported after its source module was wrapped re-exports the wrapper itself; that name
    is recorded too, so :func:`undo_patches` puts the original back there as well.
    """
    entry = shared.get(id(orig))
    if is_wrapper(orig):
        if entry is not None and entry[1] is orig:
            _patches.append((owner, name, entry[0]))
        return
    wrapper = entry[1] if entry is not None and entry[0] is orig else make()
    shared[id(orig)] = shared[id(wrapper)] = (orig, wrapper)
    patch(owner, name, wrapper)


def signature(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def argument(sig: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any],
              name: str, index: int) -> Any:
    """The value of parameter *name* (position *index*) in a call, without running it."""
    if name in kwargs:
        return kwargs[name]
    if sig is not None:
        try:
            bound = sig.bind_partial(*args, **kwargs)
        except TypeError:
            bound = None
        if bound is not None:
            return bound.arguments.get(name)
    return args[index] if len(args) > index else None


def in_memory(target: Any) -> bool:
    if isinstance(target, (io.StringIO, io.BytesIO)):
        return True
    if target is sys.stdout or target is sys.stderr or target is sys.__stdout__ or target is sys.__stderr__:
        return True  # the notebook's own output
    mod = type(target).__module__ or ""
    return mod.startswith("pyarrow") and type(target).__name__ in ("BufferOutputStream", "MockOutputStream")


def _url(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def check_url(guard: Guard, target: Any, via: str, kind: str) -> bool:
    """Decide *target* as ``net.connect`` when it is a URL that reaches the network; whether it was.

    pyarrow and polars open URLs natively, past the socket hooks, so their wrappers ask here."""
    if not isinstance(target, (str, bytes, os.PathLike)):
        return False
    text = os.fsdecode(os.fspath(target))
    host = remote_host(text)
    if host is None:
        return False
    with guard.quiet():
        guard.check(Request(Action.NET_CONNECT, text, host=host or None, code=via), kind, via=via)
    return True


def target_path(target: Any) -> str | None:
    """The real path a target writes to, or None when it is not a local path."""
    if isinstance(target, (str, bytes, os.PathLike)):
        text = os.fsdecode(os.fspath(target))
        if _url(text):
            return None
        return resolve(text[7:] if text.startswith("file://") else text)
    name = getattr(target, "name", None)
    if isinstance(name, (str, bytes)) and name and not str(name).startswith("<"):
        return resolve(name)
    path = getattr(target, "path", None)  # pyarrow OSFile, fsspec files
    if isinstance(path, str) and path and not _url(path):
        return resolve(path)
    return None


def fail_closed(guard: Guard, via: str, exc: BaseException) -> NoReturn:
    d = Decision(Effect.DENY, Action.EXPORT_DATAFRAME, via, (RuleHit("dataframe-hook-error", "<guard>", 0),),
                 f"The guard could not decide {via} and denied it: {type(exc).__name__}: {exc}",
                 "Write to a plain path under the scratch area.")
    try:
        guard.record_decision(d, "export", via=via)
    finally:
        raise GuardDenied(d) from None


def tampered() -> list[str]:
    """The writers and readers whose guard wrapper code has replaced (a pandas writer put back…)."""
    return wrapped.tampered()


def repair() -> None:
    """Put every wrapper back where code replaced it."""
    wrapped.repair()


def undo_patches() -> None:
    wrapped.clear()
    while _patches:
        owner, name, orig = _patches.pop()
        setattr(owner, name, orig)
