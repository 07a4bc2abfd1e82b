"""The audit folder as the pages see it: session ids → files, summaries, renderings.

Nothing outside the audit folder is ever opened: a session id is a file name's stem from a
strict alphabet (no ``/``, no leading dot, no ``..``), the file must be a regular file directly
in the folder (a symlink is refused, wherever it points), and its real path must sit in the
folder's real path.  Summaries (one streamed pass of :func:`guard_kernel.audit.summarize`, chain
check included) and renderings are cached per file by (inode, size, mtime): listing many
sessions re-reads only the files that changed since the last listing.
"""

from __future__ import annotations

import io
import os
import re
import stat
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from guard_kernel.audit import Summary, summarize
from guard_kernel.audit.bundle import bundle
from guard_kernel.audit.notebook import NotebookRenderer, to_html, to_ipynb

SESSION_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z")
"""What a session id may be: an audit file's name without ``.jsonl``."""
SUFFIX = ".jsonl"

T = TypeVar("T")


class NotFound(LookupError):
    """No such session in the audit folder (or a name that could only mean a file outside it)."""


@dataclass(frozen=True)
class Session:
    """One audit file, summarised for the list and the API."""

    id: str
    summary: Summary

    @property
    def header(self) -> dict[str, Any]:
        return self.summary.header

    @property
    def role(self) -> str:
        """``server`` for the server's own chain, ``kernel`` for a kernel's session."""
        return "server" if self.header.get("role") == "server" else "kernel"

    @property
    def kernel(self) -> str:
        kern = self.header.get("kernel") if isinstance(self.header.get("kernel"), dict) else {}
        if self.role == "server":
            return "server"
        return " ".join(str(x) for x in (kern.get("name"), kern.get("id")) if x) or "—"

    def as_dict(self) -> dict[str, Any]:
        """The API's JSON for this session (``denials`` are listed by the one-session endpoint only)."""
        d = self.summary.as_dict()
        d.pop("path", None)  # the server's file system layout is not the client's business
        return {"id": self.id, "file": self.id + SUFFIX, "role": self.role, "user": self.header.get("user"),
                "kernel": self.header.get("kernel"), **d}


Key = tuple[int, int, int]


class AuditStore:
    """The sessions of one audit folder; safe to use from several threads."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._summaries: dict[str, tuple[Key, Summary]] = {}
        self._html: dict[str, tuple[Key, str]] = {}

    def _real_folder(self) -> str:
        return os.path.realpath(self.folder)

    def _checked(self, name: str) -> tuple[str, Key]:
        """The path of the audit file *name* (``<id>.jsonl``) and its cache key, if it is one we serve."""
        base = self._real_folder()
        path = os.path.join(base, name)
        try:
            st = os.lstat(path)
        except OSError:
            raise NotFound(name) from None
        if not stat.S_ISREG(st.st_mode) or os.path.dirname(os.path.realpath(path)) != base:
            raise NotFound(name)  # a symlink (in or out of the folder), a folder, a device
        return path, (st.st_ino, st.st_size, st.st_mtime_ns)

    def path(self, sid: str) -> str:
        """The file of session *sid*; :class:`NotFound` for anything else (``..``, ``/``, symlinks)."""
        if not SESSION_ID.match(sid) or ".." in sid:
            raise NotFound(sid)
        return self._checked(sid + SUFFIX)[0]

    def _cached(self, cache: dict[str, tuple[Key, T]], sid: str, make: Callable[[str], T]) -> T:
        if not SESSION_ID.match(sid) or ".." in sid:
            raise NotFound(sid)
        path, key = self._checked(sid + SUFFIX)
        with self._lock:
            hit = cache.get(sid)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = make(path)
        with self._lock:
            cache[sid] = (key, value)
        return value

    def session(self, sid: str) -> Session:
        """Session *sid*, summarised (cached while its file does not change)."""
        return Session(sid, self._cached(self._summaries, sid, summarize))

    def sessions(self, *, actor: str | None = None, denials: bool = False) -> list[Session]:
        """Every session of the folder, newest first; *actor* / *denials* filter them."""
        try:
            names = sorted(e.name for e in os.scandir(self._real_folder())
                           if e.name.endswith(SUFFIX) and e.is_file(follow_symlinks=False))
        except OSError:  # no audit folder yet: no sessions
            return []
        out = []
        for name in names:
            sid = name[: -len(SUFFIX)]
            try:
                s = self.session(sid)
            except NotFound:  # removed meanwhile, or not a name we serve
                continue
            if actor and s.summary.actor != actor:
                continue
            if denials and not s.summary.denial_count:
                continue
            out.append(s)
        with self._lock:  # forget files that are gone
            for gone in set(self._summaries) - {n[: -len(SUFFIX)] for n in names}:
                self._summaries.pop(gone, None)
                self._html.pop(gone, None)
        return sorted(out, key=lambda s: (s.summary.started or "", s.id), reverse=True)

    def html(self, sid: str) -> str:
        """The audit notebook of *sid* as HTML (nbconvert), cached while the file does not change."""
        return self._cached(self._html, sid, lambda p: to_html(NotebookRenderer(os.path.basename(p)).feed_file(p)
                                                               .notebook()))

    def ipynb(self, sid: str) -> str:
        """The audit notebook of *sid* as .ipynb text."""
        path = self.path(sid)
        return to_ipynb(NotebookRenderer(os.path.basename(path)).feed_file(path).notebook())

    def jsonl(self, sid: str) -> bytes:
        """The audit file's bytes as they are now (opened without following a symlink)."""
        path = self.path(sid)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise NotFound(sid)
            return f.read()

    def bundle_zip(self, sid: str) -> bytes:
        """The review bundle of *sid* (``audit bundle``: the .jsonl, .ipynb, .html and VERIFY.txt) as a zip."""
        data = self.jsonl(sid)  # the copy everything in the bundle is made from
        with tempfile.TemporaryDirectory(prefix="guard-bundle-") as tmp:
            src = os.path.join(tmp, sid + SUFFIX)
            with open(src, "wb") as f:
                f.write(data)
            b = bundle(src, os.path.join(tmp, sid))
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for p in b.files:
                    z.write(p, f"{sid}/{os.path.basename(p)}")
        return buf.getvalue()


__all__ = ["SESSION_ID", "AuditStore", "NotFound", "Session"]
