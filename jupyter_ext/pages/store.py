"""The audit folder as the pages see it: session ids → files, summaries, renderings.

Nothing outside the audit folder is ever opened: a session id is a file name's stem from a
strict alphabet (no ``/``, no leading dot, no ``..``), the file must be a regular file directly
in the folder (a symlink is refused, wherever it points), and its real path must sit in the
folder's real path.

Listing stays cheap: a file's summary (:class:`~guard_kernel.audit.summary.SummaryBuilder`: header,
counts, chain check) is kept with how far it read and the SHA-256 of those bytes.  A file whose
(inode, size, mtime, ctime) did not change is not opened again; a file that grew (a live session)
is read from where the last look stopped, once the bytes already read are found unchanged (hashing
them is ~100x cheaper than parsing them again); anything else (rewritten, truncated, replaced) is
read again from the start.  ctime is in the key because no user can set it: an edit that puts the
size and mtime back still changes it.
"""

from __future__ import annotations

import copy
import hashlib
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

from guard_kernel.audit import Summary, SummaryBuilder
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
        kern = self.header.get("kernel")
        kern = kern if isinstance(kern, dict) else {}
        if self.role == "server":
            return "server"
        return " ".join(str(x) for x in (kern.get("name"), kern.get("id")) if x) or "—"

    def as_dict(self, *, denials: bool = True) -> dict[str, Any]:
        """The API's JSON for this session (the list leaves the denials out: ``denial_count`` says how many)."""
        d = self.summary.as_dict()
        d.pop("path", None)  # the server's file system layout is not the client's business
        if not denials:
            d.pop("denials", None)
        return {"id": self.id, "file": self.id + SUFFIX, "role": self.role, "user": self.header.get("user"),
                "kernel": self.header.get("kernel"), **d}


Key = tuple[int, int, int, int, int]
"""(device, inode, size, mtime, ctime) of a file: unchanged means its bytes are the ones read."""


@dataclass
class _Reading:
    """How far a file was read, and what that said."""

    key: Key
    offset: int
    """Bytes read: whole lines only (a line being written is read at the next look)."""
    digest: bytes
    """SHA-256 of those bytes: a look at a grown file first checks that they did not change."""
    builder: SummaryBuilder
    summary: Summary


def _read(path: str, key: Key, old: _Reading | None) -> _Reading:
    """Summarise *path*, from where *old* stopped when the bytes it read are still there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # gone, or swapped for a symlink since it was checked
        raise NotFound(path) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise NotFound(path)
        h = hashlib.sha256()
        if old is not None and old.key[:2] == key[:2] and key[2] >= old.offset:
            left = old.offset
            while left:
                block = f.read(min(left, 1 << 20))
                if not block:
                    break
                h.update(block)
                left -= len(block)
            if left == 0 and h.digest() == old.digest:
                builder, offset = old.builder, old.offset
            else:
                old = None
        else:
            old = None
        if old is None:
            f.seek(0)
            h, builder, offset = hashlib.sha256(), SummaryBuilder(path), 0
        tail = b""
        for raw in f:
            if not raw.endswith(b"\n"):  # a line being written, or one cut short: not kept in the state
                tail = raw
                break
            builder.feed(raw)
            h.update(raw)
            offset += len(raw)
    if tail:
        cut = copy.deepcopy(builder)
        cut.feed(tail)
        summary = cut.summary()
    else:
        summary = builder.summary()
    return _Reading(key, offset, h.digest(), builder, summary)


class AuditStore:
    """The sessions of one audit folder; safe to use from several threads."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._readings: dict[str, _Reading] = {}
        self._reading = threading.Lock()
        """Held while a file's reading is brought up to date (one builder per file is fed in place)."""
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
        return path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

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
        """Session *sid*, summarised (its file read only as far as it changed since the last look)."""
        if not SESSION_ID.match(sid) or ".." in sid:
            raise NotFound(sid)
        path, key = self._checked(sid + SUFFIX)
        with self._reading:
            old = self._readings.pop(sid, None)  # back only once brought up to date: a failed read
            if old is None or old.key != key:  # leaves no half-fed builder behind
                old = _read(path, key, old)
            self._readings[sid] = old
        return Session(sid, old.summary)

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
        with self._reading, self._lock:  # forget files that are gone
            for gone in set(self._readings) - {n[: -len(SUFFIX)] for n in names}:
                self._readings.pop(gone, None)
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
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            raise NotFound(sid) from None
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
