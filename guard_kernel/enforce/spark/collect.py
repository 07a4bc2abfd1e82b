"""Row caps where Spark results reach Python: ``limit(max + 1)`` pushed into the plan.

``collect``, ``toPandas``, ``toArrow``, ``toLocalIterator``, ``take``/``head`` (beyond the cap),
``tail`` and ``show`` run on ``df.limit(max + 1)``: Spark stops after that many rows, the extra
row says there was more, and the cut is recorded and shown exactly as the DuckDB gate does
(:func:`guard_kernel.enforce.dbapi.core.take`; ``on_exceed: deny`` refuses instead).  A query
that returns fewer rows (an aggregation) is unchanged: the limit sits on top of its plan.

Before the rows are fetched, the plan is checked for ``deny_columns`` of Spark source tables
(:mod:`guard_kernel.enforce.spark.columns`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from guard_kernel.enforce.dbapi.core import Pending, take
from guard_kernel.enforce.spark import columns

if TYPE_CHECKING:
    from guard_kernel.decision.guard import Guard

__all__ = ["wrappers"]

_RESOURCE = "spark DataFrame"
_local = threading.local()


def _outer(active: Callable[[], Guard | None]) -> Guard | None:
    """The guard, unless a guarded collect path is already running on this thread (PySpark's
    ``toPandas`` calls ``collect`` on the frame that is already limited)."""
    return None if getattr(_local, "inside", False) else active()


class _Inside:
    def __enter__(self) -> None:
        _local.inside = True

    def __exit__(self, *exc: object) -> None:
        _local.inside = False


def _pending(g: Guard, via: str) -> Pending:
    return Pending(g.max_rows, f"DataFrame.{via}", _RESOURCE)


def wrappers(original: Callable[[Any, str], Any], active: Callable[[], Guard | None]) -> dict[str, Callable[..., Any]]:
    """Guarded versions of a DataFrame class's collect paths; *original(df, name)* is the unwrapped method."""

    def limited(g: Guard, df: Any) -> Any:
        with g.quiet():
            return original(df, "limit")(df, g.max_rows + 1)

    def cap_list(name: str) -> Callable[..., Any]:
        def guarded(df: Any, *args: Any, **kwargs: Any) -> Any:
            g = _outer(active)
            if g is None:
                return original(df, name)(df, *args, **kwargs)
            columns.check(g, df, f"DataFrame.{name}")
            with _Inside():
                rows = original(df, name)(limited(g, df), *args, **kwargs)
            return take(g, _pending(g, name), rows, name)
        guarded.__name__ = name
        return guarded

    def cap_n(name: str) -> Callable[..., Any]:
        """take(n)/head(n)/tail(n): the caller's own n when it is within the cap."""
        def guarded(df: Any, n: Any = None, *args: Any, **kwargs: Any) -> Any:
            g = _outer(active)
            call = original(df, name)
            if g is None:
                return call(df, *args, **kwargs) if n is None else call(df, n, *args, **kwargs)
            columns.check(g, df, f"DataFrame.{name}")
            if n is None or not isinstance(n, int) or n <= g.max_rows:
                return call(df, *args, **kwargs) if n is None else call(df, n, *args, **kwargs)
            with _Inside():
                rows = call(df, g.max_rows + 1)
            kept = take(g, _pending(g, name), rows, name)
            return rows[len(rows) - len(kept):] if name == "tail" else kept  # tail keeps the last rows
        guarded.__name__ = name
        return guarded

    def to_pandas(df: Any, *args: Any, **kwargs: Any) -> Any:
        g = _outer(active)
        if g is None:
            return original(df, "toPandas")(df, *args, **kwargs)
        columns.check(g, df, "DataFrame.toPandas")
        with _Inside():
            pdf = original(df, "toPandas")(limited(g, df), *args, **kwargs)
        kept = take(g, _pending(g, "toPandas"), list(range(len(pdf))), "toPandas")
        return pdf if len(kept) == len(pdf) else pdf.iloc[:len(kept)]

    def to_arrow(df: Any, *args: Any, **kwargs: Any) -> Any:
        g = _outer(active)
        if g is None:
            return original(df, "toArrow")(df, *args, **kwargs)
        columns.check(g, df, "DataFrame.toArrow")
        with _Inside():
            table = original(df, "toArrow")(limited(g, df), *args, **kwargs)
        kept = take(g, _pending(g, "toArrow"), list(range(table.num_rows)), "toArrow")
        return table if len(kept) == table.num_rows else table.slice(0, len(kept))

    def to_local_iterator(df: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        g = _outer(active)
        if g is None:
            return original(df, "toLocalIterator")(df, *args, **kwargs)  # type: ignore[no-any-return]
        columns.check(g, df, "DataFrame.toLocalIterator")
        with _Inside():
            it = original(df, "toLocalIterator")(limited(g, df), *args, **kwargs)
        p = _pending(g, "toLocalIterator")

        def rows() -> Iterator[Any]:
            for row in it:
                if not take(g, p, [row], "toLocalIterator"):
                    return
                yield row
        return rows()

    def show(df: Any, n: int = 20, *args: Any, **kwargs: Any) -> Any:
        g = _outer(active)
        if g is None:
            return original(df, "show")(df, n, *args, **kwargs)
        columns.check(g, df, "DataFrame.show")
        if isinstance(n, int) and n > g.max_rows:
            with _Inside():
                over = original(df, "count")(limited(g, df)) > g.max_rows
            n = g.max_rows
            if over:
                take(g, _pending(g, "show"), [None] * (n + 1), "show")
        with _Inside():
            return original(df, "show")(df, n, *args, **kwargs)

    out: dict[str, Callable[..., Any]] = {
        "collect": cap_list("collect"), "take": cap_n("take"), "head": cap_n("head"), "tail": cap_n("tail"),
        "toPandas": to_pandas, "toArrow": to_arrow, "toLocalIterator": to_local_iterator, "show": show,
    }
    return out
