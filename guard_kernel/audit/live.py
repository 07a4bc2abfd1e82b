"""The live audit notebook: ``<audit_dir>/<session-id>.ipynb``, rewritten after every cell.

:class:`LiveNotebook` reads only what the audit file gained since the last cell (a byte offset)
and feeds it to one incremental :class:`~guard_kernel.audit.notebook.NotebookRenderer`, then
replaces the notebook atomically (a temporary file renamed over it), so JupyterLab can open it
at any moment and never sees half a file.  It is made from the audit file alone, so it holds
nothing the audit redacted.  It is a convenience copy, not the proof: if it cannot be written the
session goes on (the ``.jsonl`` is what fails closed), and the reason is said once.  Off with
``audit: {live_notebook: false}``.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import time

from guard_kernel.audit.notebook import NotebookRenderer, to_ipynb


def notebook_path(audit_path: str) -> str:
    """Where the live notebook of the audit file *audit_path* is written."""
    stem = audit_path[: -len(".jsonl")] if audit_path.endswith(".jsonl") else audit_path
    return f"{stem}.ipynb"


class LiveNotebook:
    """The live notebook of one audit file."""

    def __init__(self, audit_path: str) -> None:
        self.audit_path = audit_path
        self.path = notebook_path(audit_path)
        self.renderer = NotebookRenderer(os.path.basename(audit_path))
        self.offset = 0
        self.failure: str | None = None

    def update(self) -> bool:
        """Read the records written since the last update and rewrite the notebook; False (and
        the reason said once, on stderr) when it could not be written."""
        try:
            with open(self.audit_path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
            end = data.rfind(b"\n") + 1  # an unfinished last line waits for the next update
            for raw in data[:end].splitlines(keepends=True):
                self.renderer.feed(raw)
            self.offset += end
            tmp = f"{self.path}.tmp-{os.getpid()}"
            # readable by whoever may read the audit, no one else: it holds the same text
            mode = stat.S_IMODE(os.stat(self.audit_path).st_mode)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with open(fd, "w", encoding="utf-8") as out:
                out.write(to_ipynb(self.renderer.notebook()))
            os.replace(tmp, self.path)
        except Exception as exc:  # a convenience copy must never break a cell
            if self.failure is None:
                print(f"guard_kernel: the live audit notebook {self.path} cannot be written ({exc}); "
                      "the audit itself is unaffected", file=sys.stderr)
            self.failure = str(exc)
            return False
        self.failure = None
        return True


class Background:
    """The live notebook updated on a thread of its own: :meth:`poke` after a cell record never
    waits for the rewrite (the guarded kernel's launcher must keep reading records), and several
    pokes during one rewrite make one more rewrite.

    With *settle*, a rewrite waits until no poke came for that many seconds (at most *at_most*
    after the first): cells that follow each other quickly (an agent, a headless run) make one
    rewrite, in the pause after them, instead of one each that competes with the next cell for
    the CPU."""

    def __init__(self, audit_path: str, settle: float = 0.0, at_most: float = 2.0) -> None:
        self.live = LiveNotebook(audit_path)
        self.settle, self.at_most = settle, at_most
        self._due = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="guard-live-notebook", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._due.set()

    def _run(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            deadline = time.monotonic() + self.at_most
            while self.settle and not self._stop and time.monotonic() < deadline and self._due.wait(self.settle):
                self._due.clear()  # another cell came: wait for the pause after it
            self.live.update()
            if self._stop:
                return

    def stop(self, timeout: float = 10) -> None:
        """One last update (the end record included), then the thread ends."""
        self._stop = True
        self._due.set()
        self._thread.join(timeout)


def after_cell(live: LiveNotebook | None, audit_path: str) -> LiveNotebook:
    """Update the live notebook of *audit_path* (a new one when the session's file changed)."""
    if live is None or live.audit_path != audit_path:
        live = LiveNotebook(audit_path)
    live.update()
    return live


__all__ = ["Background", "LiveNotebook", "after_cell", "notebook_path"]
