"""The Spark layer: put the guard on PySpark's classes right after ``pyspark`` is imported.

Classic (py4j) and Spark Connect classes get the same wrappers (the Connect ones when
``pyspark.sql.connect.session`` is imported).  Every wrapper is listed in one
:class:`~guard_kernel.enforce.layer.Wrappers` list for tamper checks and repair.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from guard_kernel.enforce import lazy
from guard_kernel.enforce.layer import Wrappers
from guard_kernel.enforce.spark import collect, delta, session, writers

if TYPE_CHECKING:
    from guard_kernel.decision.guard import Guard

__all__ = ["install", "installed", "repair", "tampered", "uninstall"]

_guard: Guard | None = None
_wrappers = Wrappers()
_originals: dict[tuple[Any, str], Any] = {}
_unhooks: list[Callable[[], None]] = []
_done: set[str] = set()
_RDD_MODULES = frozenset({"pyspark.rdd", "pyspark.core.rdd"})

_UDF_METHODS = {
    "pyspark.sql.classic.dataframe:DataFrame": ("mapInPandas", "mapInArrow", "foreach", "foreachPartition"),
    "pyspark.sql.pandas.group_ops:PandasGroupedOpsMixin": ("applyInPandas", "applyInPandasWithState",
                                                            "applyInArrow", "transformWithStateInPandas"),
    "pyspark.sql.pandas.group_ops:PandasCogroupedOps": ("applyInPandas", "applyInArrow"),
    "pyspark.sql.udf:UDFRegistration": ("register", "registerJavaFunction", "registerJavaUDAF"),
    "pyspark.sql.udtf:UDTFRegistration": ("register",),
}
_UDF_FUNCTIONS = {
    "pyspark.sql.functions": ("udf", "udtf", "pandas_udf"),
    "pyspark.sql.functions.builtin": ("udf", "udtf"),
    "pyspark.sql.pandas.functions": ("pandas_udf",),
}
_CONNECT_UDF_METHODS = {
    "pyspark.sql.connect.dataframe:DataFrame": ("mapInPandas", "mapInArrow", "foreach", "foreachPartition"),
    "pyspark.sql.connect.group:GroupedData": ("applyInPandas", "applyInPandasWithState", "applyInArrow"),
    "pyspark.sql.connect.group:PandasCogroupedOps": ("applyInPandas", "applyInArrow"),
    "pyspark.sql.connect.udf:UDFRegistration": ("register", "registerJavaFunction", "registerJavaUDAF"),
    "pyspark.sql.connect.udtf:UDTFRegistration": ("register",),
}


def _active() -> Guard | None:
    g = _guard
    return None if g is None or g.busy else g


def _original(obj: Any, name: str) -> Any:
    """The unwrapped method *name* of *obj*'s class."""
    for cls in type(obj).__mro__:
        f = _originals.get((cls, name))
        if f is not None:
            return f
    return getattr(type(obj), name)


def _find(spec: str) -> Any:
    mod, _, attr = spec.partition(":")
    try:
        m = importlib.import_module(mod)
    except ImportError:
        return None
    return getattr(m, attr, None) if attr else m


def _patch(owner: Any, funcs: dict[str, Callable[..., Any]]) -> None:
    if owner is None:
        return
    for name, fn in funcs.items():
        current = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if current is None and isinstance(owner, type):
            if not hasattr(owner, name):
                continue
            current = getattr(owner, name)
        if current is None:
            continue
        _originals.setdefault((owner, name), current)
        setattr(owner, name, fn)
        _wrappers.add(owner, name, fn)


def _udfs(methods: dict[str, tuple[str, ...]]) -> None:
    for spec, names in methods.items():
        cls = _find(spec)
        if cls is None:
            continue
        what = spec.partition(":")[2]
        _patch(cls, {n: session.udf_wrapper(getattr(cls, n), f"{what}.{n}", _active) for n in names
                     if n in cls.__dict__})


def _write_to(original: Callable[[Any, str], Any]) -> dict[str, Callable[..., Any]]:
    def write_to(df: Any, table: str) -> Any:
        w = original(df, "writeTo")(df, table)
        w.__dict__["_guard_table"] = table  # the V2 writer keeps it only on the JVM side
        return w
    return {"writeTo": write_to}


def _rdd() -> None:
    """RDD functions ship Python code to the executors; PySpark's own internal use of RDDs is not
    the user's (only an RDD method the user called is decided)."""
    rdd = _find("pyspark.rdd:RDD")
    if rdd is None:
        return
    orig = rdd.__dict__["mapPartitionsWithIndex"]

    def mapPartitionsWithIndex(self: Any, *args: Any, **kwargs: Any) -> Any:
        g = _active()
        if g is not None:
            f: Any = sys._getframe(1)
            entry = None
            while f is not None and f.f_globals.get("__name__", "").startswith(("pyspark.", "py4j.")):
                entry = f
                f = f.f_back
            if entry is not None and entry.f_globals.get("__name__") in _RDD_MODULES and f is not None \
                    and not f.f_globals.get("__name__", "").startswith("guard_kernel."):
                session.check_udf(g, f"RDD.{entry.f_code.co_name}", f"RDD.{entry.f_code.co_name}")
        return orig(self, *args, **kwargs)

    _patch(rdd, {"mapPartitionsWithIndex": mapPartitionsWithIndex})


def _classic(_module: Any = None) -> None:
    if "classic" in _done:
        return
    _done.add("classic")
    _patch(_find("pyspark.sql.session:SparkSession"), session.session_wrappers(_original, _active))
    _patch(_find("pyspark.sql.session:SparkSession.Builder") or getattr(_find("pyspark.sql.session:SparkSession"),
                                                                        "Builder", None),
           session.builder_wrappers(_original, _active))
    _patch(_find("pyspark.sql.catalog:Catalog"), session.catalog_wrappers(_original, _active))
    df = _find("pyspark.sql.classic.dataframe:DataFrame")
    _patch(df, collect.wrappers(_original, _active))
    _patch(df, _write_to(_original))
    _patch(_find("pyspark.sql.readwriter:DataFrameWriter"), writers.wrappers(_original, _active))
    _patch(_find("pyspark.sql.readwriter:DataFrameWriterV2"), writers.v2_wrappers(_original, _active))
    _patch(_find("pyspark.sql.streaming.readwriter:DataStreamWriter"), writers.stream_wrappers(_original, _active))
    _udfs(_UDF_METHODS)
    for mod, names in _UDF_FUNCTIONS.items():
        m = _find(mod)
        if m is not None:
            _patch(m, {n: session.udf_wrapper(getattr(m, n), n, _active) for n in names if hasattr(m, n)})
    _rdd()


def _connect(_module: Any = None) -> None:
    if "connect" in _done:
        return
    _done.add("connect")
    s = _find("pyspark.sql.connect.session:SparkSession")
    _patch(s, session.session_wrappers(_original, _active))
    _patch(getattr(s, "Builder", None), session.builder_wrappers(_original, _active))
    df = _find("pyspark.sql.connect.dataframe:DataFrame")
    _patch(df, collect.wrappers(_original, _active))
    _patch(df, _write_to(_original))
    _patch(_find("pyspark.sql.connect.readwriter:DataFrameWriter"), writers.wrappers(_original, _active))
    _patch(_find("pyspark.sql.connect.readwriter:DataFrameWriterV2"), writers.v2_wrappers(_original, _active))
    _patch(_find("pyspark.sql.connect.streaming.readwriter:DataStreamWriter"),
           writers.stream_wrappers(_original, _active))
    _udfs(_CONNECT_UDF_METHODS)


def _delta(_module: Any = None) -> None:
    if "delta" in _done:
        return
    _done.add("delta")
    cls = _find("delta.tables:DeltaTable")
    if cls is not None:
        _patch(cls, delta.wrappers(cls, _active))


def install(guard: Guard) -> None:
    """Guard PySpark (now if imported, else right after its import); idempotent."""
    global _guard
    _guard = guard
    if _unhooks:
        return
    _unhooks.append(lazy.when_imported("pyspark.sql", _classic))
    _unhooks.append(lazy.when_imported("pyspark.sql.connect.session", _connect))
    _unhooks.append(lazy.when_imported("delta.tables", _delta))


def installed() -> bool:
    return _guard is not None


def tampered() -> list[str]:
    return _wrappers.tampered()


def repair() -> None:
    _wrappers.repair()


def uninstall() -> None:
    """Put PySpark's methods back."""
    global _guard
    for unhook in _unhooks:
        unhook()
    _unhooks.clear()
    for (owner, name), fn in _originals.items():
        setattr(owner, name, fn)
    _originals.clear()
    _wrappers.clear()
    _done.clear()
    _guard = None
