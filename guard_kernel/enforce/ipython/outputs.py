"""What leaves through cell outputs: DataFrames shown at most ``limits.display_rows`` rows, text
results at most ``limits.display_bytes`` characters; each cut is noted in the output and audited.

IPython formatters are registered for ``pandas.DataFrame`` (``text/plain`` and ``text/html``) and
``str`` (``text/plain``): they cover a cell's value and ``display(...)``.  DuckDB relations are
already shown capped by the DuckDB gate.  What a cell prints to stdout is not cut here.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from guard_kernel.decision.guard import Guard

__all__ = ["install"]

_DF = (("pandas", "DataFrame"), ("pandas.core.frame", "DataFrame"))
"""Where pandas 3 and pandas 2 say DataFrame lives (IPython matches ``__module__``)."""


def _note(g: Guard, kind: str, shown: int, total: int, unit: str, key: str) -> str:
    g.record("display", action=None, resource=kind, decision="truncate", rules=[],
             message=f"cell output cut to {shown} of {total} {unit} (limits.{key})", shown=shown, total=total,
             unit=unit)
    return f"… output cut to {shown} of {total} {unit} (limits.{key} of the guard's policy)"


def install(ip: Any, guard: Guard) -> Callable[[], None]:
    """Register the capping formatters on *ip* (pandas by name: loading the guard imports no data
    library); returns what undoes it."""
    formatters = ip.display_formatter.formatters
    plain, rich = formatters["text/plain"], formatters["text/html"]
    old_plain_str = plain.type_printers.get(str)

    def rows() -> int:
        return guard.policy.limits.display_rows

    def df_plain(df: Any, p: Any, cycle: bool) -> None:
        n = rows()
        if len(df) <= n:
            p.text(repr(df))
            return
        p.text(repr(df.head(n)) + "\n" + _note(guard, "DataFrame", n, len(df), "rows", "display_rows"))

    def df_html(df: Any) -> str:
        n = rows()
        if len(df) <= n:
            return str(df._repr_html_())  # pandas' own rendering
        note = html.escape(_note(guard, "DataFrame", n, len(df), "rows", "display_rows"))
        return f"{df.head(n)._repr_html_()}<p><em>{note}</em></p>"

    def str_plain(s: str, p: Any, cycle: bool) -> None:
        n = guard.policy.limits.display_bytes
        text = repr(s)
        if len(text) <= n:
            p.text(text)
            return
        p.text(text[:n] + "\n" + _note(guard, "text", n, len(text), "characters", "display_bytes"))

    for where in _DF:
        plain.for_type_by_name(*where, df_plain)
        rich.for_type_by_name(*where, df_html)
    plain.for_type(str, str_plain)

    def undo() -> None:
        for fmt, mine in ((plain, df_plain), (rich, df_html)):
            for where in _DF:
                fmt.deferred_printers.pop(where, None)
            for typ, f in list(fmt.type_printers.items()):
                if f is mine:
                    del fmt.type_printers[typ]
        plain.type_printers.pop(str, None)
        if old_plain_str is not None:
            plain.type_printers[str] = old_plain_str

    return undo
