"""Dataframe writers and readers: pandas, pyarrow and numpy, checked where Python calls them.

Writers (``DataFrame.to_csv`` and every other ``to_*`` that takes a path or buffer,
``pd.to_pickle``, ``ExcelWriter``, ``HDFStore``, ``pyarrow.parquet.write_table``…) are
decided as ``export.dataframe`` on the resolved target path before they run.  pyarrow
writes natively, so the runtime audit hook never sees its files: these wrappers are what
stops it.  A target of ``None`` (``to_csv()`` returning a string) or an in-memory buffer
(``io.StringIO``/``BytesIO``, pyarrow buffers, the notebook's stdout) is allowed with no
record: nothing leaves the process.

Readers of files under a policy source path (``pd.read_csv``… and pyarrow's readers)
bring at most ``guard.max_rows`` rows into Python: ``nrows=max+1`` is pushed into the
reader where it supports it (so the file is not read to the end and truncation is
detected), otherwise the result is cut.  One read, chunked or not, is reported once.

The wrappers keep the original's name and docstring (``functools.wraps``) but not its
``__wrapped__``, so ``df.to_csv.__wrapped__`` is no way around them.  Code that took a
reference before :func:`install` (``from pyarrow.parquet import write_table``) keeps the
original; the audit hook still sees writes that go through Python's ``open``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import io
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from . import session as _session
from .actions import Action
from .decision import Decision, Effect, Request, RuleHit
from .paths import resolve
from .session import Guard, GuardDenied

_lock = threading.Lock()
_patches: list[tuple[Any, str, Any]] = []
"""(owner, attribute, original) of every patch, in the order applied."""
_local = threading.local()

_TARGET_PARAMS = ("path_or_buf", "path", "buf", "excel_writer", "path_or_buffer", "fname", "filepath_or_buffer")
_NOT_WRITERS = frozenset({"to_dict", "to_numpy", "to_period", "to_records", "to_timestamp", "to_xarray",
                          "to_frame", "to_list", "to_flat_index", "to_series", "to_pydatetime", "to_julian_date"})


# ------------------------------------------------------------------ helpers


class _Nested:
    """Marks that a wrapped call is running on this thread: inner wrapped calls are its own."""

    def __enter__(self) -> None:
        _local.depth = getattr(_local, "depth", 0) + 1

    def __exit__(self, *exc: object) -> None:
        _local.depth -= 1


def _active() -> Guard | None:
    """The guard to consult, or None when the call is not ours to decide."""
    guard = _session.current()
    depth: int = getattr(_local, "depth", 0)
    if guard is None or guard.busy or depth > 0:
        return None
    return guard


def _hide(wrapper: Any) -> Any:
    try:
        del wrapper.__wrapped__  # df.to_csv.__wrapped__ must not be a way around the check
    except AttributeError:
        pass
    wrapper._guard_kernel_wrapper = True
    return wrapper


def _patch(owner: Any, name: str, wrapper: Any) -> None:
    _patches.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
    setattr(owner, name, wrapper)


def _signature(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _argument(sig: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any],
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


def _in_memory(target: Any) -> bool:
    if isinstance(target, (io.StringIO, io.BytesIO)):
        return True
    if target is sys.stdout or target is sys.stderr or target is sys.__stdout__ or target is sys.__stderr__:
        return True  # the notebook's own output
    mod = type(target).__module__ or ""
    return mod.startswith("pyarrow") and type(target).__name__ in ("BufferOutputStream", "MockOutputStream")


def _url(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def _target_path(target: Any) -> str | None:
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


def _fail(guard: Guard, via: str, exc: BaseException) -> NoReturn:
    d = Decision(Effect.DENY, Action.EXPORT_DATAFRAME, via, (RuleHit("dataframe-hook-error", "<guard>", 0),),
                 f"The guard could not decide {via} and denied it: {type(exc).__name__}: {exc}",
                 "Write to a plain path under the scratch area.")
    try:
        guard.record_decision(d, "export", via=via)
    finally:
        raise GuardDenied(d) from None


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


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:  # optional: pyarrow is not a runtime dependency
        return None


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


# ------------------------------------------------------------------ readers (row caps)


def _source_read(guard: Guard, target: Any) -> str | None:
    """The real path of *target* when it is a file under a policy source, else None."""
    if target is None or _in_memory(target):
        return None
    real = _target_path(target)
    if real is None:
        return None
    for _src, glob in guard.policy.source_paths():
        if glob.matches(real):
            return real
    return None


def _over_cap(guard: Guard, resource: str, limit: int, via: str) -> None:
    """Past the cap: deny (``on_exceed: deny``) or record the truncation."""
    if guard.policy.limits.on_exceed == "deny":
        d = Decision(Effect.DENY, Action.FILE_READ, resource,
                     (RuleHit("limits.max_rows", os.path.basename(guard.policy.file), 0),),
                     f"Reading {resource} would bring more than {limit} rows into Python "
                     f"(row cap for {guard.actor}; limits.on_exceed is deny).",
                     "Aggregate or filter in DuckDB (read_csv/read_parquet in SQL), or pass nrows=.")
        guard.record_decision(d, "read", via=via)
        raise GuardDenied(d)
    guard.truncated(resource, returned=limit, via=via)


def _cut(guard: Guard, result: Any, limit: int, resource: str, via: str) -> Any:
    """*result* cut to *limit* rows (DataFrame, Series, pyarrow Table, or a dict of them)."""
    if isinstance(result, dict):
        over = [k for k, v in result.items() if _rows(v) > limit]
        if over:
            _over_cap(guard, resource, limit, via)
            return {k: (_head(v, limit) if k in over else v) for k, v in result.items()}
        return result
    if _rows(result) > limit:
        _over_cap(guard, resource, limit, via)
        return _head(result, limit)
    return result


def _rows(obj: Any) -> int:
    n = getattr(obj, "num_rows", None)
    if isinstance(n, int):
        return n
    if hasattr(obj, "iloc"):
        return len(obj)
    return -1


def _head(obj: Any, limit: int) -> Any:
    if hasattr(obj, "iloc"):
        return obj.iloc[:limit]
    return obj.slice(0, limit)


class _CappedReader:
    """A chunked reader (``read_csv(chunksize=…)``/``iterator=True``) that stops at the cap."""

    def __init__(self, reader: Any, guard: Guard, limit: int, resource: str, via: str) -> None:
        self._reader, self._guard, self._left = reader, guard, limit
        self._limit, self._resource, self._via = limit, resource, via
        self._reported = False

    def _take(self, chunk: Any) -> Any:
        n = len(chunk)
        if n <= self._left:
            self._left -= n
            return chunk
        keep, self._left = self._left, 0
        if not self._reported:  # a chunked read is one read: reported once
            self._reported = True
            _over_cap(self._guard, self._resource, self._limit, self._via)
        return chunk.iloc[:keep]

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._left == 0 and self._reported:
            raise StopIteration
        chunk = self._take(next(self._reader))
        if len(chunk) == 0 and self._reported:
            raise StopIteration
        return chunk

    def get_chunk(self, size: int | None = None) -> Any:
        if self._left == 0 and self._reported:
            raise StopIteration
        return self._take(self._reader.get_chunk(size))

    def read(self, nrows: int | None = None) -> Any:
        return self._take(self._reader.read(nrows))

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> _CappedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


def _reader(orig: Any, param: str, via: str, *, nrows: bool, chunks: bool = False,
            nrows_if: Callable[[dict[str, Any]], bool] | None = None) -> Any:
    """Wrap a reader so reads of source files honour the row cap."""
    sig = _signature(orig)

    @functools.wraps(orig)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        guard = _active()
        if guard is None:
            return orig(*args, **kwargs)
        try:
            real = _source_read(guard, _argument(sig, args, kwargs, param, 0))
        except Exception as exc:
            _fail(guard, via, exc)
        if real is None:
            with _Nested():
                return orig(*args, **kwargs)
        limit = guard.max_rows
        pushdown = nrows and (nrows_if is None or nrows_if(kwargs))
        if pushdown:
            asked = kwargs.get("nrows")
            if asked is not None and asked <= limit:
                with _Nested():
                    return orig(*args, **kwargs)
            kwargs = {**kwargs, "nrows": limit + 1}  # the engine stops early; one extra row detects truncation
        with _Nested():
            result = orig(*args, **kwargs)
        if chunks and (kwargs.get("chunksize") is not None or kwargs.get("iterator")):
            return _CappedReader(result, guard, limit, real, via)
        return _cut(guard, result, limit, real, via)

    return _hide(wrapper)


_PANDAS_READERS: tuple[tuple[str, str, bool, bool], ...] = (
    # name, path parameter, supports nrows, may return a chunk iterator
    ("read_csv", "filepath_or_buffer", True, True),
    ("read_table", "filepath_or_buffer", True, True),
    ("read_fwf", "filepath_or_buffer", True, True),
    ("read_excel", "io", True, False),
    ("read_json", "path_or_buf", True, True),
    ("read_parquet", "path", False, False),
    ("read_feather", "path", False, False),
    ("read_orc", "path", False, False),
    ("read_pickle", "filepath_or_buffer", False, False),
    ("read_stata", "filepath_or_buffer", False, True),
)

_ARROW_READERS: tuple[tuple[str, str, str], ...] = (
    ("pyarrow.parquet", "read_table", "source"),
    ("pyarrow.parquet.core", "read_table", "source"),
    ("pyarrow.parquet", "read_pandas", "source"),
    ("pyarrow.csv", "read_csv", "input_file"),
    ("pyarrow.json", "read_json", "input_file"),
    ("pyarrow.feather", "read_table", "source"),
    ("pyarrow.feather", "read_feather", "source"),
    ("pyarrow.orc", "read_table", "source"),
)


def _install_readers() -> None:
    import pandas as pd

    for name, param, nrows, chunks in _PANDAS_READERS:
        orig = getattr(pd, name, None)
        if orig is None:
            continue
        nrows_if = (lambda kw: bool(kw.get("lines"))) if name == "read_json" else None  # nrows needs lines=True
        wrapper = _reader(orig, param, f"pandas.{name}", nrows=nrows, chunks=chunks, nrows_if=nrows_if)
        _patch(pd, name, wrapper)
        home = sys.modules.get(getattr(orig, "__module__", "") or "")
        if home is not None and getattr(home, name, None) is orig:
            _patch(home, name, wrapper)
    done: dict[int, Any] = {}
    for modname, fname, param in _ARROW_READERS:
        mod = _module(modname)
        orig = getattr(mod, fname, None) if mod is not None else None
        if orig is None or getattr(orig, "_guard_kernel_wrapper", False):
            continue
        wrapper = done.get(id(orig)) or _reader(orig, param, f"{modname}.{fname}", nrows=False)
        done[id(orig)] = wrapper
        _patch(mod, fname, wrapper)


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


def _undo() -> None:
    while _patches:
        owner, name, orig = _patches.pop()
        setattr(owner, name, orig)


def uninstall() -> None:
    """Put every original writer and reader back."""
    with _lock:
        _undo()


def installed() -> bool:
    """Whether the wrappers are in place."""
    return bool(_patches)


__all__ = ["check_export", "install", "installed", "pandas_writer_names", "uninstall"]
