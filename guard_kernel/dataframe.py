"""Dataframe writers: pandas, pyarrow and numpy exports, checked where Python calls them.

Writers (``DataFrame.to_csv`` and every other ``to_*`` that takes a path or buffer,
``pd.to_pickle``, ``ExcelWriter``, ``HDFStore``, ``pyarrow.parquet.write_table``…) are
decided as ``export.dataframe`` on the resolved target path before they run.  pyarrow
writes natively, so the runtime audit hook never sees its files: these wrappers are what
stops it.  A target of ``None`` (``to_csv()`` returning a string) or an in-memory buffer
(``io.StringIO``/``BytesIO``, pyarrow buffers, the notebook's stdout) is allowed with no
record: nothing leaves the process.

:func:`install` also puts in place the row caps on reads of policy source files
(:mod:`guard_kernel.readcaps`); :func:`uninstall` removes both.  The wrapper plumbing they
share is in :mod:`guard_kernel.patching`.

The wrappers keep the original's name and docstring (``functools.wraps``) but not its
``__wrapped__``, so ``df.to_csv.__wrapped__`` is no way around them.  Code that took a
reference before :func:`install` (``from pyarrow.parquet import write_table``) keeps the
original; the audit hook still sees writes that go through Python's ``open``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from . import session as _session
from .actions import Action
from .decision import Request
from .patching import (
    _active,
    _argument,
    _fail,
    _hide,
    _in_memory,
    _lock,
    _module,
    _Nested,
    _patch,
    _patches,
    _signature,
    _target_path,
    _undo,
)
from .paths import resolve
from .readcaps import _install_readers
from .session import Guard, GuardDenied

_TARGET_PARAMS = ("path_or_buf", "path", "buf", "excel_writer", "path_or_buffer", "fname", "filepath_or_buffer")
_NOT_WRITERS = frozenset({"to_dict", "to_numpy", "to_period", "to_records", "to_timestamp", "to_xarray",
                          "to_frame", "to_list", "to_flat_index", "to_series", "to_pydatetime", "to_julian_date"})


# ------------------------------------------------------------------ helpers


def _describe(target: Any) -> str:
    if isinstance(target, (str, bytes, os.PathLike)):
        return os.fsdecode(os.fspath(target))
    return f"<{type(target).__module__}.{type(target).__name__}>"


def check_export(guard: Guard, target: Any, via: str, *, action: Action = Action.EXPORT_DATAFRAME,
                 resource: str | None = None) -> str | None:
    """Decide writing a dataframe to *target*; return its real path (None if not a local path).

    ``None`` and in-memory targets are allowed without a record (nothing leaves the process).
    Raises :class:`GuardDenied` when the policy says no.
    """
    if action is Action.EXPORT_DATAFRAME and (target is None or _in_memory(target)):
        return None
    real = _target_path(target) if action is Action.EXPORT_DATAFRAME else None
    res = resource or real or _describe(target)
    req = Request(action, res, path=real, owned=bool(real and real in guard.owned_files), code=via)
    with guard.quiet():
        guard.check(req, "export", via=via)
    return real


def _run_export(guard: Guard, real: str | None, call: Callable[[], Any]) -> Any:
    existed = real is None or os.path.lexists(real)
    with _Nested():
        result = call()
    if not existed and real is not None and os.path.lexists(real):
        guard.owned_files.add(real)
    return result


# ------------------------------------------------------------------ writers


def _writer(orig: Any, param: str, index: int, via: str, *,
            skip: Callable[[Any, tuple[Any, ...], dict[str, Any]], bool] | None = None) -> Any:
    """Wrap *orig* so its target (parameter *param*, position *index*) is decided first."""
    sig = _signature(orig)

    @functools.wraps(orig)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        guard = _active()
        if guard is None:
            return orig(*args, **kwargs)
        try:
            target = _argument(sig, args, kwargs, param, index)
            if skip is not None and skip(target, args, kwargs):
                with _Nested():
                    return orig(*args, **kwargs)
            real = check_export(guard, target, via)
        except GuardDenied:
            raise
        except Exception as exc:  # fail closed
            _fail(guard, via, exc)
        return _run_export(guard, real, lambda: orig(*args, **kwargs))

    return _hide(wrapper)


def _sql_target(con: Any, name: Any) -> tuple[str | None, str, bool]:
    """(real path, resource, in memory) of a ``to_sql`` destination."""
    import sqlite3

    if isinstance(con, sqlite3.Connection):
        rows = con.execute("PRAGMA database_list").fetchall()
        file = next((r[2] for r in rows if r[1] == "main"), "")
        if not file:
            return None, f"sqlite::memory:/{name}", True
        real = resolve(file)
        return real, f"{real}:{name}", False
    url = getattr(con, "url", None) or getattr(getattr(con, "engine", None), "url", None) or (
        con if isinstance(con, str) else None)
    text = str(url) if url is not None else f"<{type(con).__name__}>"
    if text.startswith("sqlite"):
        db = getattr(url, "database", None) if not isinstance(url, str) else text.split("///", 1)[-1]
        if not db or db == ":memory:" or text in ("sqlite://", "sqlite:///:memory:"):
            return None, f"sqlite::memory:/{name}", True
        real = resolve(db)
        return real, f"{real}:{name}", False
    return None, f"{text.split('@')[-1]}/{name}", False  # a database server: no local path


def _to_sql(orig: Any, via: str) -> Any:
    sig = _signature(orig)

    @functools.wraps(orig)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        guard = _active()
        if guard is None:
            return orig(*args, **kwargs)
        try:
            name = _argument(sig, args, kwargs, "name", 1)
            con = _argument(sig, args, kwargs, "con", 2)
            real, resource, memory = _sql_target(con, name)
            if not memory:
                req = Request(Action.EXPORT_DATAFRAME, resource, path=real,
                              owned=bool(real and real in guard.owned_files), code=via)
                with guard.quiet():
                    guard.check(req, "export", via=via)
        except GuardDenied:
            raise
        except Exception as exc:
            _fail(guard, via, exc)
        return _run_export(guard, real, lambda: orig(*args, **kwargs))

    return _hide(wrapper)


def _fixed(orig: Any, via: str, action: Action, resource_of: Callable[[tuple[Any, ...], dict[str, Any]], str]) -> Any:
    """Wrap a writer whose target is not a path (clipboard, catalog tables)."""

    @functools.wraps(orig)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        guard = _active()
        if guard is None:
            return orig(*args, **kwargs)
        req = Request(action, resource_of(args, kwargs), code=via)
        with guard.quiet():
            guard.check(req, "export", via=via)
        with _Nested():
            return orig(*args, **kwargs)

    return _hide(wrapper)


def pandas_writer_names(cls: type) -> list[tuple[str, str]]:
    """(method, target parameter) of every ``to_*`` writer *cls* defines itself, read from pandas."""
    out = []
    for name, fn in vars(cls).items():
        if not name.startswith("to_") or name in _NOT_WRITERS or not callable(fn):
            continue
        sig = _signature(fn)
        params = list(sig.parameters) if sig is not None else []
        if name in ("to_clipboard", "to_sql", "to_iceberg"):
            out.append((name, name))
        elif len(params) > 1 and params[1] in _TARGET_PARAMS:
            out.append((name, params[1]))
    return out


def _install_pandas() -> None:
    import pandas as pd
    from pandas.core.generic import NDFrame

    classes: list[type] = [NDFrame, pd.DataFrame, pd.Series]
    try:  # DataFrame.style needs jinja2; without it there is no Styler to guard
        from pandas.io.formats.style import Styler

        classes.append(Styler)
    except ImportError:
        pass
    for cls in classes:
        for name, param in pandas_writer_names(cls):
            orig = vars(cls)[name]
            via = f"{cls.__name__}.{name}"
            if name == "to_clipboard":
                wrapper = _fixed(orig, via, Action.EXPORT_CLIPBOARD, lambda a, k: "clipboard")
            elif name == "to_sql":
                wrapper = _to_sql(orig, via)
            elif name == "to_iceberg":
                wrapper = _fixed(orig, via, Action.EXPORT_DATAFRAME,
                                 lambda a, k: f"iceberg:{k.get('table_identifier', a[1] if len(a) > 1 else '?')}")
            else:
                wrapper = _writer(orig, param, 1, via, skip=_writer_object_skip)
            _patch(cls, name, wrapper)

    import pandas.io.pickle as pickle_mod

    to_pickle = _writer(pickle_mod.to_pickle, "filepath_or_buffer", 1, "pandas.to_pickle")
    _patch(pickle_mod, "to_pickle", to_pickle)
    _patch(pd, "to_pickle", to_pickle)

    from pandas.io.excel._base import ExcelWriter

    _patch(ExcelWriter, "__init__", _writer(ExcelWriter.__init__, "path", 1, "pandas.ExcelWriter"))
    from pandas.io.pytables import HDFStore

    _patch(HDFStore, "__init__", _writer(HDFStore.__init__, "path", 1, "pandas.HDFStore", skip=_read_mode))


def _writer_object_skip(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """An ExcelWriter/HDFStore passed as the target was decided when it was made."""
    name = type(target).__name__
    return name == "HDFStore" or any(c.__name__ == "ExcelWriter" for c in type(target).__mro__)


def _read_mode(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    mode = kwargs.get("mode", args[2] if len(args) > 2 else "a")
    return mode == "r"


_PYARROW_WRITERS: tuple[tuple[str, str, str, int], ...] = (
    # module, function, target parameter, position
    ("pyarrow.parquet", "write_table", "where", 1),
    ("pyarrow.parquet.core", "write_table", "where", 1),
    ("pyarrow.parquet", "write_to_dataset", "root_path", 1),
    ("pyarrow.parquet.core", "write_to_dataset", "root_path", 1),
    ("pyarrow.parquet", "write_metadata", "where", 1),
    ("pyarrow.csv", "write_csv", "output_file", 1),
    ("pyarrow.feather", "write_feather", "dest", 1),
    ("pyarrow.orc", "write_table", "where", 1),
    ("pyarrow.dataset", "write_dataset", "base_dir", 1),
    ("pyarrow.ipc", "new_file", "sink", 0),
    ("pyarrow.ipc", "new_stream", "sink", 0),
    ("pyarrow", "output_stream", "source", 0),
    ("numpy", "save", "file", 0),
    ("numpy", "savez", "file", 0),
    ("numpy", "savez_compressed", "file", 0),
    ("numpy", "savetxt", "fname", 0),
)


def _install_native_writers() -> None:
    done: dict[int, Any] = {}  # one wrapper per original function (re-exported under two names)
    for modname, fname, param, index in _PYARROW_WRITERS:
        mod = _module(modname)
        orig = getattr(mod, fname, None) if mod is not None else None
        if orig is None or getattr(orig, "_guard_kernel_wrapper", False):
            continue
        wrapper = done.get(id(orig)) or _writer(orig, param, index, f"{modname}.{fname}")
        done[id(orig)] = wrapper
        _patch(mod, fname, wrapper)
    pq = _module("pyarrow.parquet")
    if pq is not None:
        writer_cls = pq.ParquetWriter
        _patch(writer_cls, "__init__", _writer(writer_cls.__init__, "where", 1, "pyarrow.parquet.ParquetWriter"))
    pa = _module("pyarrow")
    if pa is not None:
        _patch(pa, "OSFile", _guarded_osfile(pa.OSFile))


def _guarded_osfile(base: Any) -> type:
    """``pyarrow.OSFile`` opens in its C constructor: decide in ``__new__``, before it runs."""

    def __new__(cls: type, path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        guard = _active()
        if guard is None or mode == "r":
            return base.__new__(cls, path, mode, *args, **kwargs)
        try:
            real = check_export(guard, path, "pyarrow.OSFile")
        except GuardDenied:
            raise
        except Exception as exc:
            _fail(guard, "pyarrow.OSFile", exc)
        return _run_export(guard, real, lambda: base.__new__(cls, path, mode, *args, **kwargs))

    return type("OSFile", (base,), {"__new__": __new__, "__module__": base.__module__, "__doc__": base.__doc__})


# ------------------------------------------------------------------ public API


def install(guard: Guard | None = None) -> None:
    """Wrap the pandas / pyarrow / numpy writers and readers (idempotent).

    The wrappers consult :func:`guard_kernel.session.current` at call time; *guard*, when
    given, is made the current guard.
    """
    if guard is not None and _session.current() is not guard:
        _session.set_current(guard)
    with _lock:
        if _patches:
            return
        try:
            _install_pandas()
            _install_native_writers()
            _install_readers()
        except BaseException:
            _undo()
            raise


def uninstall() -> None:
    """Put every original writer and reader back."""
    with _lock:
        _undo()


def installed() -> bool:
    """Whether the wrappers are in place."""
    return bool(_patches)


__all__ = ["check_export", "install", "installed", "pandas_writer_names", "uninstall"]
