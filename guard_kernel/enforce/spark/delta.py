"""Delta Lake's Python API: ``DeltaTable`` writes decided with their table before Spark runs them.

A ``DeltaTable`` remembers what it stands for when it is made (``forName`` → a catalog table,
``forPath``/``convertToDelta`` → a path, ``alias`` → the same); ``delete``, ``update``,
``merge``, ``vacuum``, ``restoreToVersion/Timestamp``, ``optimize``, ``generate``,
``upgradeTableProtocol``, ``add/dropFeatureSupport`` are ``sql.write`` of that table (a source
is read-only, a table the session created is its own) or of that path (source paths read-only,
scratch allowed, the rest by ``defaults.write``); ``clone*`` writes a new table at its target
path.  A ``DeltaTable`` made any other way has no known target: its writes are denied.

Not tested against a live Delta table: Delta's jars come from Maven at start-up
(``configure_spark_with_delta_pip``), which cannot run offline; the decisions are tested on
``DeltaTable`` objects carrying a target (tests/enforce/spark/test_delta.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from guard_kernel.decision.errors import GuardDenied
from guard_kernel.decision.request import Request
from guard_kernel.enforce.spark import statements
from guard_kernel.policy.actions import Action
from guard_kernel.policy.paths import remote_host, resolve

if TYPE_CHECKING:
    from guard_kernel.decision.guard import Guard

__all__ = ["TARGET", "WRITES", "check_write", "wrappers"]

TARGET = "_guard_target"
"""Attribute of a DeltaTable: ("name", table) or ("path", path)."""
WRITES = ("delete", "update", "merge", "vacuum", "restoreToVersion", "restoreToTimestamp", "optimize", "generate",
          "upgradeTableProtocol", "addFeatureSupport", "dropFeatureSupport")
CLONES = ("clone", "cloneAtVersion", "cloneAtTimestamp")


def _path_request(g: Guard, spark: Any, path: str, via: str) -> Request:
    host = remote_host(path)
    if host is not None:
        return Request(Action.SQL_WRITE, path, code=via)  # a bucket: the write default (and never a source path)
    with g.quiet():
        root = statements.spark_cwd(spark)
    return Request(Action.SQL_WRITE, path, path=resolve(path[7:] if path.startswith("file:") else path, root),
                   code=via)


def check_write(g: Guard, table: Any, via: str) -> None:
    """Decide a write through *table* (a DeltaTable) before it runs."""
    target = table.__dict__.get(TARGET)
    spark = getattr(table, "_spark", None)
    if target is None:
        d = g.decide(Request(Action.SQL_UNKNOWN, "DeltaTable", code=via,
                             reason="a DeltaTable whose table is unknown (use DeltaTable.forName or forPath)"))
        g.record_decision(d, "sql", via=via)
        raise GuardDenied(d)
    kind, what = target
    if kind == "name":
        statements.table_written(g, spark, str(what), Action.SQL_WRITE, via, creates=False)
    else:
        g.check(_path_request(g, spark, str(what), via), "sql", via=via)


def wrappers(cls: Any, active: Callable[[], Guard | None]) -> dict[str, Any]:
    """Guarded DeltaTable methods (class methods remember the target on the table they make)."""
    out: dict[str, Any] = {}

    def maker(name: str, kind: str, arg: int, key: str) -> Any:
        orig = cls.__dict__[name].__func__

        def made(klass: Any, *args: Any, **kwargs: Any) -> Any:
            dt = orig(klass, *args, **kwargs)
            target = kwargs.get(key, args[arg] if len(args) > arg else None)
            if target is not None:
                dt.__dict__[TARGET] = (kind, os.fspath(target) if isinstance(target, os.PathLike) else str(target))
            return dt
        made.__name__ = name
        return classmethod(made)

    out["forPath"] = maker("forPath", "path", 1, "path")
    out["forName"] = maker("forName", "name", 1, "tableOrViewName")
    out["convertToDelta"] = maker("convertToDelta", "path", 1, "identifier")

    orig_alias = cls.__dict__["alias"]

    def alias(dt: Any, *args: Any, **kwargs: Any) -> Any:
        new = orig_alias(dt, *args, **kwargs)
        if TARGET in dt.__dict__:
            new.__dict__[TARGET] = dt.__dict__[TARGET]
        return new
    out["alias"] = alias

    def write(name: str) -> Callable[..., Any]:
        orig = cls.__dict__[name]

        def guarded(dt: Any, *args: Any, **kwargs: Any) -> Any:
            g = active()
            if g is not None:
                check_write(g, dt, f"DeltaTable.{name}")
            return orig(dt, *args, **kwargs)
        guarded.__name__ = name
        return guarded

    def clone(name: str) -> Callable[..., Any]:
        orig = cls.__dict__[name]

        def guarded(dt: Any, *args: Any, **kwargs: Any) -> Any:
            g = active()
            target = kwargs.get("target", args[1] if name != "clone" and len(args) > 1 else args[0] if args else None)
            if g is not None:
                via = f"DeltaTable.{name}"
                if target is None:
                    raise GuardDenied(g.check(Request(Action.SQL_UNKNOWN, "DeltaTable clone", code=via,
                                                      reason="the clone's target is unknown"), "sql", via=via))
                g.check(_path_request(g, getattr(dt, "_spark", None), str(target), via), "sql", via=via)
            return orig(dt, *args, **kwargs)
        guarded.__name__ = name
        return guarded

    for n in WRITES:
        if n in cls.__dict__:
            out[n] = write(n)
    for n in CLONES:
        if n in cls.__dict__:
            out[n] = clone(n)
    return out
