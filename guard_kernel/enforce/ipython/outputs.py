"""What leaves through cell outputs: tables shown at most ``limits.display_rows`` rows, text at most
``limits.display_bytes`` characters; each cut is noted in the output and recorded in the audit.

Two places are wrapped, both on the shell's own objects (nothing global is patched):

* the shell's ``display_formatter.format`` — every cell value and every ``display(...)`` passes
  through it.  A table (pandas DataFrame/Series, polars DataFrame, pyarrow Table, DuckDB relation)
  longer than ``display_rows`` is replaced by its first rows *before* it is rendered, so no
  representation (text, HTML, JSON…) holds more; a ``text/plain`` longer than ``display_bytes``
  is cut.  One audit record per cut object.
* ``write`` of the streams ``sys.stdout`` / ``sys.stderr`` (ipykernel's ``OutStream``; its
  watcher of a subprocess's output writes through it too): each stream shows at most
  ``display_bytes`` characters per cell, then one note; the rest of that cell's stream is
  dropped.  The audit records the cut when the cell ends, with how much was written.

In-process and best effort like every layer here: code that writes to the kernel's socket or
calls the stream class's own ``write`` is not cut (docs/threat-model.md).
"""

from __future__ import annotations

import html
import sys
from collections.abc import Callable
from typing import Any

from guard_kernel.decision.guard import Guard
from guard_kernel.decision.messages import Code, facts, json_line

__all__ = ["install"]

_STREAMS = ("stdout", "stderr")


def _record(g: Guard, kind: str, shown: int, total: int | None, unit: str, key: str) -> None:
    of = f"{total}" if total is not None else f"more than {shown}"
    g.record("display", action=None, resource=kind, decision="truncate", rules=[],
             message=f"cell output cut to {shown} of {of} {unit} (limits.{key})", shown=shown, total=total,
             unit=unit)


_HINTS = {
    "rows": "Show fewer rows (df.head(n), a filter, an aggregate), or write the result to scratch and read it there.",
    "characters": "Print less (a summary, len(), the first lines), or write the text to a file in scratch.",
}


def _note(shown: int, total: int | None, unit: str, key: str, more: str = "") -> str:
    """The note under a cut output: the short line (*more* appended), then its ``json:`` line."""
    of = f"{total}" if total is not None else f"more than {shown}"
    line = f"… output cut to {shown} of {of} {unit} (limits.{key} of the guard's policy){more}"
    return line + "\n" + json_line(facts(Code.TRUNCATED, line.lstrip("… "), _HINTS[unit], effect="truncate",
                                          returned=shown, more=True, total=total, reader="display", unit=unit,
                                          via=f"limits.{key}"))


def _type_name(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__.split('.')[0]}.{t.__name__}"


def _first_rows(obj: Any, n: int) -> tuple[Any, int | None] | None:
    """(*obj* cut to its first *n* rows, its row count or None when unknown) for a table longer
    than *n*; None for anything else (by type name: showing a value imports no data library)."""
    name = _type_name(obj)
    if name in ("pandas.DataFrame", "pandas.Series", "polars.DataFrame", "polars.Series"):
        total = len(obj)
        return (obj.head(n), total) if total > n else None
    if name == "pyarrow.Table":
        total = obj.num_rows
        return (obj.slice(0, n), total) if total > n else None
    if name in ("duckdb.DuckDBPyRelation", "_duckdb.DuckDBPyRelation"):
        # counting every row would run the whole query again: one more row than shown says "more"
        more = len(obj.limit(n + 1).fetchall()) > n
        return (obj.limit(n), None) if more else None
    return None


def _cut_format(ip: Any, guard: Guard) -> Callable[[], None]:
    """Wrap ``ip.display_formatter.format``; returns what undoes it."""
    fmt = ip.display_formatter
    orig = fmt.format

    def format(obj: Any, include: Any = None, exclude: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        limits = guard.policy.limits
        try:
            cut = _first_rows(obj, limits.display_rows)
        except Exception:  # a table that cannot say its length: shown as its library shows it
            cut = None
        data, md = orig(cut[0] if cut else obj, include, exclude)
        text = data.get("text/plain")
        n = limits.display_bytes
        if isinstance(text, str) and len(text) > n:  # the output itself, before any note of ours
            _record(guard, "text", n, len(text), "characters", "display_bytes")
            data["text/plain"] = text[:n] + "\n" + _note(n, len(text), "characters", "display_bytes")
        if cut:
            kind = _type_name(obj).rsplit(".", 1)[-1]
            _record(guard, kind, limits.display_rows, cut[1], "rows", "display_rows")
            note = _note(limits.display_rows, cut[1], "rows", "display_rows")
            if isinstance(data.get("text/plain"), str):
                data["text/plain"] += "\n" + note
            if isinstance(data.get("text/html"), str):  # people read the line; programs the text/plain
                data["text/html"] += f"<p><em>{html.escape(note.splitlines()[0])}</em></p>"
        return data, md

    fmt.format = format

    def undo() -> None:
        if fmt.__dict__.get("format") is format:
            del fmt.format
    return undo


class _StreamCut:
    """One stream's budget for the running cell: ``write`` passes text until ``display_bytes``
    characters were shown, then writes one note and drops the rest."""

    def __init__(self, guard: Guard, name: str) -> None:
        self.guard, self.name = guard, name
        self.stream: Any = None
        self.write_orig: Callable[[str], Any] = print
        self.used = 0
        self.cut_at: int | None = None

    def wrap(self) -> None:
        """Put :meth:`write` on the stream of ``sys`` for the cell that starts.  Inside IPython's
        own per-cell ``write`` (its history's tee, put on before ``pre_run_cell`` and taken off
        after ``post_run_cell``): wrapping from ``pre_run_cell`` to ``post_run_cell`` nests in it,
        where a wrapper left on between cells would be chained to by the tee it then wraps."""
        stream: Any = getattr(sys, self.name)
        current = getattr(stream, "write", None)
        if current is None or current == self.write:
            return
        try:
            stream.write = self.write  # the instance's: isinstance checks and the class stay as they are
        except (AttributeError, TypeError):  # a C-level stream without a __dict__ (not a kernel's)
            return
        self.stream, self.write_orig = stream, current

    def unwrap(self) -> None:
        """Put back the ``write`` the stream had before :meth:`wrap`."""
        stream: Any = self.stream
        if stream is not None and getattr(stream, "__dict__", {}).get("write") == self.write:
            if getattr(self.write_orig, "__self__", None) is stream and \
                    getattr(self.write_orig, "__func__", None) is getattr(type(stream), "write", None):
                delattr(stream, "write")  # the class's own
            else:
                stream.write = self.write_orig
        self.stream = None

    def write(self, s: str) -> int:
        used = self.used
        self.used = used + len(s)
        if self.cut_at is not None:
            return len(s)
        n = self.guard.policy.limits.display_bytes
        if used + len(s) <= n:
            self.write_orig(s)
            return len(s)
        self.cut_at = n
        self.write_orig(s[:max(n - used, 0)])
        self.write_orig("\n" + _note(n, None, "characters", "display_bytes",
                                      f"; the rest of this cell's {self.name} is not shown") + "\n")
        return len(s)

    def end_cell(self) -> None:
        """Record a cut of the cell that ends, and start the next cell's budget."""
        if self.cut_at is not None:
            _record(self.guard, self.name, self.cut_at, self.used, "characters", "display_bytes")
        self.used = 0
        self.cut_at = None


def _cut_streams(ip: Any, guard: Guard) -> Callable[[], None]:
    """Cut ``sys.stdout``/``sys.stderr`` per cell; returns what undoes it."""
    cuts = [_StreamCut(guard, name) for name in _STREAMS]

    def start(*_: Any) -> None:
        for c in cuts:
            c.wrap()

    def end(*_: Any) -> None:
        for c in cuts:
            c.unwrap()
            c.end_cell()

    ip.events.register("pre_run_cell", start)
    ip.events.register("post_run_cell", end)

    def undo() -> None:
        for event, cb in (("pre_run_cell", start), ("post_run_cell", end)):
            try:
                ip.events.unregister(event, cb)
            except ValueError:
                pass
        for c in cuts:
            c.unwrap()
    return undo


def install(ip: Any, guard: Guard) -> Callable[[], None]:
    """Cap what cells show on *ip* (display formatter and output streams); returns what undoes it."""
    undo_format = _cut_format(ip, guard)
    undo_streams = _cut_streams(ip, guard)

    def undo() -> None:
        undo_streams()
        undo_format()
    return undo
