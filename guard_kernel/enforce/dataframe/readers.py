"""Row caps on reads of policy source files: pandas, polars and pyarrow readers bring at most ``guard.max_rows`` rows.

Readers of files under a policy source path (``pd.read_csv``…, polars' eager ``pl.read_*``
and pyarrow's readers)
bring at most ``guard.max_rows`` rows into Python: ``nrows=max+1`` is pushed into the
reader where it supports it (so the file is not read to the end and truncation is
detected), otherwise the result is cut.  One read, chunked or not, is reported once.
Past the cap the policy's ``limits.on_exceed`` decides: record the truncation, or deny.
Reads of other files are not touched.  Installed and removed with the writers by
:func:`guard_kernel.enforce.dataframe.writers.install` / ``uninstall`` (each library right after its import).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from guard_kernel.decision.errors import GuardDenied
from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.decision.guard import Guard
from guard_kernel.decision.request import Request
from guard_kernel.enforce.dataframe.patching import (
    Nested,
    argument,
    check_url,
    fail_closed,
    guarded,
    in_memory,
    is_wrapper,
    patch,
    patch_shared,
    signature,
    target_path,
)
from guard_kernel.policy.actions import Action


def _native_read(guard: Guard, target: Any, via: str) -> None:
    """Decide a read the audit hook will not see: pyarrow and polars open files and URLs from C++
    and Rust.  A URL is ``net.connect`` (polars fetches it itself, past the socket hooks); a
    local file is ``file.read`` when the policy decides reads at all."""
    if target is None or in_memory(target) or not isinstance(target, (str, bytes, os.PathLike)):
        return  # file objects were opened by Python, where the hook saw them
    if check_url(guard, target, via, "read"):
        return
    # the runtime layer knows whether this policy checks reads
    from guard_kernel.enforce.runtime.hook import reads_checked

    if reads_checked(guard):
        real = target_path(target)
        if real is not None:
            with guard.quiet():
                guard.check(Request(Action.FILE_READ, real, path=real, code=via), "read", via=via)


def _source_read(guard: Guard, target: Any) -> str | None:
    """The real path of *target* when it is a file under a policy source, else None."""
    if target is None or in_memory(target):
        return None
    real = target_path(target)
    if real is None:
        return None
    for _src, glob in guard.policy.source_paths():
        if glob.matches(real):
            return real
    return None


def _over_cap(guard: Guard, resource: str, limit: int, via: str, total: int | None = None) -> None:
    """Past the cap: deny (``on_exceed: deny``) or record the truncation."""
    if guard.policy.limits.on_exceed == "deny":
        d = Decision(Effect.DENY, Action.FILE_READ, resource,
                     (RuleHit("limits.max_rows", os.path.basename(guard.policy.file), 0),),
                     f"Reading {resource} would bring more than {limit} rows into Python "
                     f"(row cap for {guard.actor}; limits.on_exceed is deny).",
                     "Aggregate or filter in DuckDB (read_csv/read_parquet in SQL), or pass nrows=.")
        guard.record_decision(d, "read", via=via)
        raise GuardDenied(d)
    guard.truncated(resource, returned=limit, via=via, total=total, reader="dataframe")


def _cut(guard: Guard, result: Any, limit: int, resource: str, via: str, exact: bool = False) -> Any:
    """*result* cut to *limit* rows (DataFrame, Series, pyarrow Table, or a dict of them); *exact*: it
    holds every row (no row limit was pushed down), so its length is the total."""
    if isinstance(result, dict):
        over = [k for k, v in result.items() if _rows(v) > limit]
        if over:
            _over_cap(guard, resource, limit, via)
            return {k: (_head(v, limit) if k in over else v) for k, v in result.items()}
        return result
    if _rows(result) > limit:
        _over_cap(guard, resource, limit, via, _rows(result) if exact else None)
        return _head(result, limit)
    return result


def _rows(obj: Any) -> int:
    n = getattr(obj, "num_rows", None)  # pyarrow
    if isinstance(n, int):
        return n
    n = getattr(obj, "height", None)  # polars
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
            nrows_if: Callable[[dict[str, Any]], bool] | None = None, nrows_param: str = "nrows",
            native: bool = False) -> Any:
    """Wrap a reader so reads of source files honour the row cap (*nrows_param*: the reader's own
    row limit, pushed down when *nrows*).  *native*: the library opens its input itself, so the
    read is decided here (:func:`_native_read`)."""
    sig = signature(orig)

    def body(guard: Guard, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            target = argument(sig, args, kwargs, param, 0)
            if native:
                _native_read(guard, target, via)
            real = _source_read(guard, target)
        except GuardDenied:
            raise
        except Exception as exc:
            fail_closed(guard, via, exc)
        if real is None:
            with Nested():
                return orig(*args, **kwargs)
        limit = guard.max_rows
        pushdown = nrows and (nrows_if is None or nrows_if(kwargs))
        if pushdown:
            asked = kwargs.get(nrows_param)
            if asked is not None and asked <= limit:
                with Nested():
                    return orig(*args, **kwargs)
            kwargs = {**kwargs, nrows_param: limit + 1}  # the engine stops early; one extra row detects truncation
        with Nested():
            result = orig(*args, **kwargs)
        if chunks and (kwargs.get("chunksize") is not None or kwargs.get("iterator")):
            return _CappedReader(result, guard, limit, real, via)
        return _cut(guard, result, limit, real, via, exact=not pushdown)

    return guarded(orig, body)


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

ARROW_READERS: tuple[tuple[str, str, str], ...] = (
    # module, function, path parameter
    ("pyarrow.parquet", "read_table", "source"),
    ("pyarrow.parquet.core", "read_table", "source"),
    ("pyarrow.parquet", "read_pandas", "source"),
    ("pyarrow.csv", "read_csv", "input_file"),
    ("pyarrow.json", "read_json", "input_file"),
    ("pyarrow.feather", "read_table", "source"),
    ("pyarrow.feather", "read_feather", "source"),
    ("pyarrow.orc", "read_table", "source"),
)


def install_pandas_readers(pd: ModuleType) -> None:
    """Cap pandas' readers of source files (``pd.read_csv`` and the module it comes from)."""
    for name, param, nrows, chunks in _PANDAS_READERS:
        orig = getattr(pd, name, None)
        if orig is None or is_wrapper(orig):
            continue
        nrows_if = (lambda kw: bool(kw.get("lines"))) if name == "read_json" else None  # nrows needs lines=True
        wrapper = _reader(orig, param, f"pandas.{name}", nrows=nrows, chunks=chunks, nrows_if=nrows_if)
        patch(pd, name, wrapper)
        home = sys.modules.get(getattr(orig, "__module__", "") or "")
        if home is not None and getattr(home, name, None) is orig:
            patch(home, name, wrapper)


_POLARS_READERS: tuple[tuple[str, bool], ...] = (
    # reader (path parameter "source"), whether it takes n_rows.  The lazy scan_* are decided but
    # not capped (their LazyFrame has no rows yet: a cap would cut what an aggregation sees)
    ("read_csv", True), ("read_parquet", True), ("read_ipc", True), ("read_ipc_stream", True),
    ("read_ndjson", True), ("read_avro", True), ("read_json", False), ("read_excel", False), ("read_ods", False),
    ("read_delta", False), ("scan_csv", False), ("scan_parquet", False), ("scan_ipc", False),
    ("scan_ndjson", False), ("scan_delta", False), ("scan_iceberg", False),
)


def install_polars_readers(pl: ModuleType) -> None:
    """Cap polars' eager readers of source files (they read from Rust: no other layer sees them)."""
    for name, nrows in _POLARS_READERS:
        orig = getattr(pl, name, None)
        if orig is None or is_wrapper(orig):
            continue
        patch(pl, name, _reader(orig, "source", f"polars.{name}", nrows=nrows, nrows_param="n_rows", native=True))


def install_arrow_readers(mod: ModuleType) -> None:
    """Cap the pyarrow readers module *mod* defines or re-exports (run right after its import)."""
    modname = mod.__name__
    for owner, fname, param in ARROW_READERS:
        if owner != modname:
            continue
        orig = getattr(mod, fname, None)
        if orig is not None:
            patch_shared(mod, fname, orig,
                          functools.partial(_reader, orig, param, f"{modname}.{fname}", nrows=False, native=True))
