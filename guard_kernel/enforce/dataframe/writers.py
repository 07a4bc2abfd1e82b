"""Dataframe writers: pandas, polars, pyarrow and numpy exports, checked where Python calls them.

Writers (``DataFrame.to_csv`` and every other ``to_*`` that takes a path or buffer,
``pd.to_pickle``, ``ExcelWriter``, ``HDFStore``, polars ``write_*``/``sink_*``,
``pyarrow.parquet.write_table``…) are decided as ``export.dataframe`` on the resolved target
path before they run.  pyarrow and polars write natively, so the runtime audit hook never
sees their files: these wrappers are what stops them.  A target of ``None`` (``to_csv()`` returning a string) or an in-memory buffer
(``io.StringIO``/``BytesIO``, pyarrow buffers, the notebook's stdout) is allowed with no
record: nothing leaves the process.

:func:`install` wraps each library right after its import (:mod:`guard_kernel.enforce.lazy`), so
loading the guard imports none of them; a library imported already is wrapped at once.
It also puts in place the row caps on reads of policy source files
(:mod:`guard_kernel.enforce.dataframe.readers`); :func:`uninstall` removes both.  The wrapper plumbing they
share is in :mod:`guard_kernel.enforce.dataframe.patching`.

The wrappers keep the original's name and docstring (``functools.wraps``) but not its
``__wrapped__``, so ``df.to_csv.__wrapped__`` is no way around them.  Code that took a
reference before :func:`install` (``from pyarrow.parquet import write_table``) keeps the
original; the audit hook still sees writes that go through Python's ``open``.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

from guard_kernel.decision import guard as _session
from guard_kernel.decision.errors import GuardDenied
from guard_kernel.decision.guard import Guard
from guard_kernel.decision.request import Request
from guard_kernel.enforce import lazy as _lazy
from guard_kernel.enforce.dataframe import patching
from guard_kernel.enforce.dataframe.patching import (
    Nested,
    active_guard,
    argument,
    check_url,
    fail_closed,
    guarded,
    in_memory,
    is_wrapper,
    lock,
    patch,
    patch_shared,
    shared,
    signature,
    target_path,
    undo_patches,
)
from guard_kernel.enforce.dataframe.readers import (
    ARROW_READERS,
    install_arrow_readers,
    install_pandas_readers,
    install_polars_readers,
)
from guard_kernel.policy.actions import Action
from guard_kernel.policy.paths import resolve

_TARGET_PARAMS = ("path_or_buf", "path", "buf", "excel_writer", "path_or_buffer", "fname", "filepath_or_buffer")
_installed = False
_unhooks: list[Callable[[], None]] = []
"""Removers of this layer's post-import hooks."""
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
    if action is Action.EXPORT_DATAFRAME and (target is None or in_memory(target)):
        return None
    check_url(guard, target, via, "export")  # a write to a URL is also a connection
    real = target_path(target) if action is Action.EXPORT_DATAFRAME else None
    res = resource or real or _describe(target)
    req = Request(action, res, path=real, owned=bool(real and real in guard.owned_files), code=via)
    with guard.quiet():
        guard.check(req, "export", via=via)
    return real


def _run_export(guard: Guard, real: str | None, call: Callable[[], Any]) -> Any:
    existed = real is None or os.path.lexists(real)
    with Nested():
        result = call()
    if not existed and real is not None and os.path.lexists(real):
        guard.owned_files.add(real)
    return result


# ------------------------------------------------------------------ writers


def _writer(orig: Any, param: str, index: int, via: str, *,
            skip: Callable[[Any, tuple[Any, ...], dict[str, Any]], bool] | None = None,
            default: str | None = None) -> Any:
    """Wrap *orig* so its target (parameter *param*, position *index*) is decided first.

    *default*: the file the writer creates when no target is given (else None means "returned
    in memory")."""
    sig = signature(orig)

    def body(guard: Guard, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            target = argument(sig, args, kwargs, param, index)
            if target is None and default is not None:
                target = default
            if skip is not None and skip(target, args, kwargs):
                with Nested():
                    return orig(*args, **kwargs)
            real = check_export(guard, target, via)
        except GuardDenied:
            raise
        except Exception as exc:  # fail closed
            fail_closed(guard, via, exc)
        return _run_export(guard, real, lambda: orig(*args, **kwargs))

    return guarded(orig, body)


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
    sig = signature(orig)

    def body(guard: Guard, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            name = argument(sig, args, kwargs, "name", 1)
            con = argument(sig, args, kwargs, "con", 2)
            real, resource, memory = _sql_target(con, name)
            if not memory:
                req = Request(Action.EXPORT_DATAFRAME, resource, path=real,
                              owned=bool(real and real in guard.owned_files), code=via)
                with guard.quiet():
                    guard.check(req, "export", via=via)
        except GuardDenied:
            raise
        except Exception as exc:
            fail_closed(guard, via, exc)
        return _run_export(guard, real, lambda: orig(*args, **kwargs))

    return guarded(orig, body)


def _fixed(orig: Any, via: str, action: Action, resource_of: Callable[[tuple[Any, ...], dict[str, Any]], str]) -> Any:
    """Wrap a writer whose target is not a path (clipboard, catalog tables)."""

    def body(guard: Guard, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        req = Request(action, resource_of(args, kwargs), code=via)
        with guard.quiet():
            guard.check(req, "export", via=via)
        with Nested():
            return orig(*args, **kwargs)

    return guarded(orig, body)


def pandas_writer_names(cls: type) -> list[tuple[str, str]]:
    """(method, target parameter) of every ``to_*`` writer *cls* defines itself, read from pandas."""
    out = []
    for name, fn in vars(cls).items():
        if not name.startswith("to_") or name in _NOT_WRITERS or not callable(fn):
            continue
        sig = signature(fn)
        params = list(sig.parameters) if sig is not None else []
        if name in ("to_clipboard", "to_sql", "to_iceberg"):
            out.append((name, name))
        elif len(params) > 1 and params[1] in _TARGET_PARAMS:
            out.append((name, params[1]))
    return out


def _install_pandas(pd: ModuleType) -> None:
    """Wrap the writers of pandas (called right after ``import pandas``, or at install if imported)."""
    # pandas' __init__ has imported these already: plain lookups, no import of anything new
    generic = importlib.import_module("pandas.core.generic")
    classes: list[type] = [generic.NDFrame, pd.DataFrame, pd.Series]
    for cls in classes:
        _install_class_writers(cls)
    pickle_mod = importlib.import_module("pandas.io.pickle")
    if not is_wrapper(pickle_mod.to_pickle):
        to_pickle = _writer(pickle_mod.to_pickle, "filepath_or_buffer", 1, "pandas.to_pickle")
        patch(pickle_mod, "to_pickle", to_pickle)
        if getattr(pd, "to_pickle", None) is not to_pickle:
            patch(pd, "to_pickle", to_pickle)
    excel = importlib.import_module("pandas.io.excel._base")
    if not is_wrapper(vars(excel.ExcelWriter)["__init__"]):
        patch(excel.ExcelWriter, "__init__", _writer(excel.ExcelWriter.__init__, "path", 1, "pandas.ExcelWriter"))
    pytables = importlib.import_module("pandas.io.pytables")
    if not is_wrapper(vars(pytables.HDFStore)["__init__"]):
        patch(pytables.HDFStore, "__init__",
               _writer(pytables.HDFStore.__init__, "path", 1, "pandas.HDFStore", skip=_read_mode))
    install_pandas_readers(pd)


_POLARS_TARGETS = ("file", "path", "target", "workbook")


def polars_writer_names(cls: type) -> list[tuple[str, str]]:
    """(method, target parameter) of every ``write_*``/``sink_*`` writer *cls* defines, read from polars."""
    out = []
    for name, fn in vars(cls).items():
        if not name.startswith(("write_", "sink_")) or not callable(fn) or name == "sink_batches":
            continue  # sink_batches hands each batch to a Python callable, which the other layers see
        sig = signature(fn)
        params = list(sig.parameters) if sig is not None else []
        if name in ("write_clipboard", "write_database"):
            out.append((name, name))
        elif len(params) > 1 and params[1] in _POLARS_TARGETS:
            out.append((name, params[1]))
    return out


def _install_polars(pl: ModuleType) -> None:
    """Wrap the writers of polars: it writes from Rust, so the audit hook never sees its files."""
    for cls in (pl.DataFrame, pl.LazyFrame):
        for name, param in polars_writer_names(cls):
            orig = vars(cls)[name]
            if is_wrapper(orig):
                continue
            via = f"polars.{cls.__name__}.{name}"
            if name == "write_clipboard":
                wrapper = _fixed(orig, via, Action.EXPORT_CLIPBOARD, lambda a, k: "clipboard")
            elif name == "write_database":
                wrapper = _fixed(orig, via, Action.EXPORT_DATAFRAME,
                                 lambda a, k: f"database:{k.get('table_name', a[1] if len(a) > 1 else '?')}")
            else:  # write_excel() with no workbook writes ./dataframe.xlsx
                wrapper = _writer(orig, param, 1, via, default="dataframe.xlsx" if name == "write_excel" else None)
            patch(cls, name, wrapper)
    install_polars_readers(pl)


def _install_styler(style: ModuleType) -> None:
    """``DataFrame.style`` writers: pandas imports its Styler module (and jinja2) on first use."""
    _install_class_writers(style.Styler)


def _install_class_writers(cls: type) -> None:
    for name, param in pandas_writer_names(cls):
        orig = vars(cls)[name]
        if is_wrapper(orig):
            continue  # a reload of pandas keeps its classes: they are wrapped already
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
        patch(cls, name, wrapper)


def _writer_object_skip(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """An ExcelWriter/HDFStore passed as the target was decided when it was made."""
    name = type(target).__name__
    return name == "HDFStore" or any(c.__name__ == "ExcelWriter" for c in type(target).__mro__)


def _read_mode(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    mode = kwargs.get("mode", args[2] if len(args) > 2 else "a")
    return bool(mode == "r")


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


def _install_module_writers(mod: ModuleType) -> None:
    """Wrap the writers that module *mod* (numpy, pyarrow or one of its submodules) defines or re-exports."""
    modname = mod.__name__
    for owner, fname, param, index in _PYARROW_WRITERS:
        if owner != modname:
            continue
        orig = getattr(mod, fname, None)
        if orig is None:
            continue
        patch_shared(mod, fname, orig, functools.partial(_writer, orig, param, index, f"{modname}.{fname}"))
    if modname == "pyarrow.parquet.core":
        writer_cls = mod.ParquetWriter
        if not is_wrapper(vars(writer_cls)["__init__"]):
            patch(writer_cls, "__init__", _writer(writer_cls.__init__, "where", 1, "pyarrow.parquet.ParquetWriter"))
    elif modname == "pyarrow" and not is_wrapper(mod.OSFile):
        patch(mod, "OSFile", _guarded_osfile(mod.OSFile))


def _guarded_osfile(base: Any) -> type:
    """``pyarrow.OSFile`` opens in its C constructor: decide in ``__new__``, before it runs."""

    def __new__(cls: type, path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        guard = active_guard()
        if guard is None or mode == "r":
            return base.__new__(cls, path, mode, *args, **kwargs)
        try:
            real = check_export(guard, path, "pyarrow.OSFile")
        except GuardDenied:
            raise
        except Exception as exc:
            fail_closed(guard, "pyarrow.OSFile", exc)
        return _run_export(guard, real, lambda: base.__new__(cls, path, mode, *args, **kwargs))

    return type("OSFile", (base,), {"__new__": __new__, "__module__": base.__module__, "__doc__": base.__doc__,
                                    "_guard_kernel_wrapper": True})


# ------------------------------------------------------------------ public API


def _installers() -> list[tuple[str, Callable[[ModuleType], None]]]:
    """(module, what to do right after it is imported), in import order (numpy before pandas)."""
    out: list[tuple[str, Callable[[ModuleType], None]]] = []
    for modname in dict.fromkeys([m for m, *_ in _PYARROW_WRITERS] + [m for m, *_ in ARROW_READERS]):
        out.append((modname, _install_native))
    out.append(("pandas", _install_pandas))
    out.append(("pandas.io.formats.style", _install_styler))
    out.append(("polars", _install_polars))
    order = {"numpy": 0, "pyarrow": 1, "pyarrow.parquet.core": 2}
    return sorted(out, key=lambda item: order.get(item[0], 3 if item[0].startswith("pyarrow") else 4))


def _install_native(mod: ModuleType) -> None:
    _install_module_writers(mod)
    install_arrow_readers(mod)


def install(guard: Guard | None = None) -> None:
    """Wrap the pandas / polars / pyarrow / numpy writers and readers (idempotent).

    Libraries already imported are wrapped now; the others right after their import
    (:mod:`guard_kernel.enforce.lazy`), before the importing code gets the module, so loading
    the guard does not import pandas.  The wrappers consult
    :func:`guard_kernel.decision.guard.current` at call time; *guard*, when given, is made the
    current guard.
    """
    global _installed
    if guard is not None and _session.current() is not guard:
        _session.set_current(guard)
    with lock:
        if _installed:
            return
        try:
            for modname, installer in _installers():
                _unhooks.append(_lazy.when_imported(modname, installer))
        except BaseException:
            _remove()
            raise
        _installed = True


def _remove() -> None:
    while _unhooks:
        _unhooks.pop()()
    undo_patches()
    shared.clear()


def uninstall() -> None:
    """Put every original writer and reader back, and stop wrapping libraries imported later."""
    global _installed
    with lock:
        _remove()
        _installed = False


def tampered() -> list[str]:
    """Writers and readers whose wrapper code has replaced."""
    return patching.tampered()


def repair() -> None:
    """Put the wrappers back."""
    patching.repair()


def installed() -> bool:
    """Whether the layer is installed (the wrappers are on every guarded library imported so far)."""
    return _installed


__all__ = ["check_export", "install", "installed", "pandas_writer_names", "polars_writer_names", "repair", "tampered", "uninstall"]
