"""Spark's DataFrame writers, decided with their target before any job starts.

A path target (``save``, ``parquet``/``csv``/``json``/``orc``/``text``, a stream's ``start``) is an
``export.dataframe`` of that path (a URL is also ``net.connect``): sources' paths are read-only,
scratch is allowed, the rest follows the ``export`` default.  A table target (``saveAsTable``,
``insertInto``, ``writeTo(...).append/overwrite/create/replace``, a stream's ``toTable``) is
``sql.write`` (``sql.ddl`` when it creates the table) on that catalog table: sources are
read-only, tables the session created are its own.  ``jdbc`` is an export to another database
(``net.connect`` to its host).  The writer's ``format``/``mode``/``option`` calls are remembered
on the writer so the decision sees the path or URL however it was given.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from guard_kernel.decision.request import Request
from guard_kernel.enforce.dataframe.writers import check_export
from guard_kernel.enforce.spark import columns, statements
from guard_kernel.policy.actions import Action
from guard_kernel.policy.databases import redact_text
from guard_kernel.policy.paths import remote_host

if TYPE_CHECKING:
    from guard_kernel.decision.guard import Guard

__all__ = ["PATH_WRITES", "TABLE_WRITES", "wrappers"]

PATH_WRITES = ("save", "parquet", "csv", "json", "orc", "text", "xml")
"""DataFrameWriter methods whose target is a path."""
TABLE_WRITES = ("saveAsTable", "insertInto", "jdbc")
V2_WRITES = ("append", "overwrite", "overwritePartitions", "create", "replace", "createOrReplace")
STREAM_WRITES = ("start", "toTable")
_REMEMBER = ("format", "mode", "option", "options")
_NO_TARGET = frozenset({"memory", "console", "noop", "foreach", "foreachbatch"})
"""Stream and batch formats that write nowhere outside the session."""


def _opts(w: Any) -> dict[str, Any]:
    return w.__dict__.setdefault("_guard_opts", {})  # type: ignore[no-any-return]


def _df(w: Any) -> Any:
    return getattr(w, "_df", None)


def _session(w: Any) -> Any:
    df = _df(w)
    s = getattr(df, "sparkSession", None) if df is not None else None
    return s if s is not None else getattr(w, "_spark", None)


def _jdbc(g: Guard, url: str, table: str, via: str) -> None:
    shown = redact_text(url)
    host = remote_host(url[5:] if url.lower().startswith("jdbc:") else url)
    g.check(Request(Action.NET_CONNECT, shown, host=host or None, code=via), "export", via=via)
    g.check(Request(Action.EXPORT_DATAFRAME, f"{shown} {table}", code=via), "export", via=via)


def _path_write(g: Guard, w: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    o = _opts(w)
    fmt = str(kwargs.get("format") or (args[1] if name == "save" and len(args) > 1 else None) or o.get("format")
              or ("" if name == "save" else name)).lower()
    path = kwargs.get("path") or (args[0] if args else None) or o.get("path")
    via = f"DataFrameWriter.{name}"
    if fmt == "jdbc" and path is None:
        _jdbc(g, str(o.get("url", "")), str(o.get("dbtable", o.get("query", ""))), via)
        return
    if path is None:
        if fmt in _NO_TARGET:
            return
        g.check(Request(Action.EXPORT_DATAFRAME, f"{fmt or 'default'} writer without a path", code=via,
                        reason="the writer's target could not be determined"), "export", via=via)
        return
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    if remote_host(text) is None and not text.startswith("file:") and not os.path.isabs(text):
        with g.quiet():
            text = os.path.join(statements.spark_cwd(_session(w)), text)  # where Spark will write it
    check_export(g, text, via)


def _remembering(original: Callable[[Any, str], Any], name: str, named: tuple[str, ...]) -> Callable[..., Any]:
    """A builder call (``format``, ``mode``, ``option``…) that keeps what it says about the target
    for the write that follows; *named* are the calls whose first argument is kept under their name."""
    def guarded(w: Any, *args: Any, **kwargs: Any) -> Any:
        o = _opts(w)
        if name in named and args:
            o[name] = str(args[0]).lower()
        elif name == "option" and len(args) >= 2:
            o[str(args[0]).lower()] = args[1]
        elif name == "options":
            o.update({str(k).lower(): v for k, v in kwargs.items()})
        elif name in ("foreach", "foreachBatch"):
            o["format"] = name.lower()
        return original(w, name)(w, *args, **kwargs)
    guarded.__name__ = name
    return guarded


def _owning(g: Guard | None, key: Any, call: Callable[[], Any]) -> Any:
    """Run a table write; the table it wrote under the guard becomes the session's own."""
    result = call()
    if g is not None and key is not None:
        g.owned_tables.add(key)
    return result


def wrappers(original: Callable[[Any, str], Any], active: Callable[[], Guard | None]) -> dict[str, Callable[..., Any]]:
    """Guarded versions of DataFrameWriter's methods (path and table writes, option memory)."""
    out: dict[str, Callable[..., Any]] = {}

    def path_write(name: str) -> Callable[..., Any]:
        def guarded(w: Any, *args: Any, **kwargs: Any) -> Any:
            g = active()
            if g is not None:
                df = _df(w)
                if df is not None:
                    columns.check(g, df, f"DataFrameWriter.{name}")
                _path_write(g, w, name, args, kwargs)
            return original(w, name)(w, *args, **kwargs)
        guarded.__name__ = name
        return guarded

    def table_write(name: str) -> Callable[..., Any]:
        def guarded(w: Any, *args: Any, **kwargs: Any) -> Any:
            g = active()
            key = None
            if g is not None:
                via = f"DataFrameWriter.{name}"
                df = _df(w)
                if df is not None:
                    columns.check(g, df, via)
                if name == "jdbc":
                    url = kwargs.get("url") or (args[0] if args else "")
                    table = kwargs.get("table") or (args[1] if len(args) > 1 else "")
                    _jdbc(g, str(url), str(table), via)
                else:
                    if name == "saveAsTable" and (kwargs.get("path") or _opts(w).get("path")):
                        _path_write(g, w, "save", (), {"path": kwargs.get("path") or _opts(w).get("path")})
                    table = kwargs.get("name") or kwargs.get("tableName") or (args[0] if args else "")
                    key = statements.table_written(g, _session(w), str(table), Action.SQL_WRITE, via,
                                                   creates=name == "saveAsTable")
            return _owning(g, key, lambda: original(w, name)(w, *args, **kwargs))
        guarded.__name__ = name
        return guarded

    for n in _REMEMBER:
        out[n] = _remembering(original, n, ("format", "mode"))
    for n in PATH_WRITES:
        out[n] = path_write(n)
    for n in TABLE_WRITES:
        out[n] = table_write(n)
    return out


def v2_wrappers(original: Callable[[Any, str], Any],
                active: Callable[[], Guard | None]) -> dict[str, Callable[..., Any]]:
    """Guarded DataFrameWriterV2 methods (the table comes from ``DataFrame.writeTo``)."""
    out: dict[str, Callable[..., Any]] = {}

    def v2(name: str) -> Callable[..., Any]:
        def guarded(w: Any, *args: Any, **kwargs: Any) -> Any:
            g = active()
            key = None
            if g is not None:
                via = f"DataFrameWriterV2.{name}"
                df = _df(w)
                if df is not None:
                    columns.check(g, df, via)
                table = str(w.__dict__.get("_guard_table", ""))
                creates = name in ("create", "createOrReplace", "replace")
                key = statements.table_written(g, _session(w), table, Action.SQL_WRITE, via, creates=creates)
            return _owning(g, key, lambda: original(w, name)(w, *args, **kwargs))
        guarded.__name__ = name
        return guarded

    for n in V2_WRITES:
        out[n] = v2(n)
    return out


def stream_wrappers(original: Callable[[Any, str], Any],
                    active: Callable[[], Guard | None]) -> dict[str, Callable[..., Any]]:
    """Guarded DataStreamWriter methods: ``start`` (a path or a sink format) and ``toTable``."""
    out: dict[str, Callable[..., Any]] = {}

    def start(w: Any, *args: Any, **kwargs: Any) -> Any:
        g = active()
        if g is not None:
            _path_write(g, w, "save", args, kwargs)
        return original(w, "start")(w, *args, **kwargs)

    def to_table(w: Any, *args: Any, **kwargs: Any) -> Any:
        g = active()
        key = None
        if g is not None:
            table = kwargs.get("tableName") or (args[0] if args else "")
            key = statements.table_written(g, _session(w), str(table), Action.SQL_WRITE, "DataStreamWriter.toTable",
                                           creates=True)
        return _owning(g, key, lambda: original(w, "toTable")(w, *args, **kwargs))

    for n in ("format", "option", "options", "outputMode", "foreach", "foreachBatch"):
        out[n] = _remembering(original, n, ("format", "outputMode"))
    out["start"] = start
    out["toTable"] = to_table
    return out
