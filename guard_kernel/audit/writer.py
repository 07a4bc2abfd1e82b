"""The one audit writer: append-only JSON Lines, one file per session, hash-chained.

Each record is written with one ``pwrite`` at the end of the file before the action it
describes proceeds, so a killed kernel loses no completed record, and the file is plain JSON
Lines at every moment (``tail``, ``grep``, ``jq``).  ``fsync`` runs every ``fsync_every``
records (on a helper thread) and at close, for power loss.  Each record carries ``prev`` and
``hash`` (:mod:`guard_kernel.audit.chain`), so an edited, dropped or reordered record breaks
the chain (:func:`guard_kernel.audit.integrity.verify`).

Why ``pwrite`` and not a shared memory map (the previous design): a write into a map's
unallocated page on a full disk raises SIGBUS and kills the kernel, where ``pwrite`` raises
``ENOSPC`` that the guard turns into a denial; and a map needs the file grown ahead of its
records, so the live file ended in NUL bytes that ``grep`` calls binary.

**Fail closed.**  A record that cannot be written raises :class:`AuditUnavailable`; the
guard denies the action the record describes.  The writer remembers the failure: while it
lasts every write is refused; a transient one (disk full, I/O error) is retried by the next
write, which first records an ``audit_gap`` (what was refused meanwhile, and why).  A file
removed or replaced under the writer (its path no longer names the file it writes) is
permanent: the session refuses until it ends.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

from guard_kernel.audit.chain import GENESIS, canonical, records_with_offsets


class AuditSink(Protocol):
    """Where a session's records go: the file writer here, or a pipe to a process that owns the file."""

    path: str
    policy: dict[str, str]

    @property
    def closed(self) -> bool: ...

    def write(self, kind: str, **fields: Any) -> dict[str, Any]: ...

    def close(self) -> None: ...


class AuditUnavailable(OSError):
    """A record could not be written: the action it describes must not proceed."""

    def __init__(self, path: str, reason: str, *, permanent: bool) -> None:
        super().__init__(f"the audit file {path} cannot be written: {reason}")
        self.path, self.reason, self.permanent = path, reason, permanent


def new_session_id() -> str:
    """A sortable, unique session id: UTC timestamp plus random suffix."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


_second: tuple[int, str] = (-1, "")


def _utc_now() -> str:
    """UTC time as ISO 8601 with microseconds and a Z; the date-time part is formatted once a second."""
    global _second
    ns = time.time_ns()
    sec, cached = ns // 1_000_000_000, _second
    if cached[0] != sec:  # a tuple, swapped whole: safe from any thread
        cached = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{cached[1]}.{ns // 1000 % 1_000_000:06d}Z"


_open_writers: weakref.WeakSet[AuditWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for w in list(_open_writers):
        w._lock = threading.Lock()  # a thread of the parent may have held it: none runs here


os.register_at_fork(after_in_child=_after_fork_in_child)


class AuditWriter:
    """Writes one session's records; safe to call from any thread."""

    def __init__(self, path: str, *, session: str, actor: str, environment: str,
                 policy: dict[str, str], fsync_every: int = 100,
                 quiet: Callable[[], AbstractContextManager[Any]] = nullcontext) -> None:
        """*quiet*: the context the writer's own file operations run in (the guard's
        ``quiet()``: the runtime hook must not judge, or record, the audit's own upkeep)."""
        self.path = os.path.abspath(path)
        self.session, self.actor, self.environment = session, actor, environment
        self.policy = {"name": policy["name"], "sha256": policy["sha256"]}
        self.fsync_every = fsync_every
        self._quiet = quiet
        self._lock = threading.Lock()
        self.failure: AuditUnavailable | None = None
        """Why the last write failed (None while records are written)."""
        self._failed_at = ""
        self._refused = 0
        with quiet():
            self._open()
        _open_writers.add(self)

    def _open(self) -> None:
        self._pid = os.getpid()
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        st = os.fstat(self._fd)
        self._seq, self._prev, self._end = self._tail()
        if st.st_size > self._end:  # what follows the last readable record
            # lines that could not be read stay (verify reports them); an unfinished record
            # (or the NUL tail an older writer left) goes, so the file ends with our records
            self._end += os.pread(self._fd, st.st_size - self._end, self._end).rfind(b"\n") + 1
            os.ftruncate(self._fd, self._end)
        self._since_sync = 0
        # fsync (power-loss durability) runs on a helper thread: every record is already in
        # the page cache before its action proceeds, so a killed kernel loses nothing, and
        # the writer does not wait for the disk every fsync_every records
        self._sync_wanted = threading.Event()
        self._syncer: threading.Thread | None = None

    def _drop_inherited(self) -> None:
        """In a forked child: let go of the parent's file descriptor (never write through it)."""
        if self._fd is not None:
            os.close(self._fd)

    def _forked(self) -> None:
        """A forked child's first record: it goes to a file of its own (the parent keeps writing
        at the same offsets, so records of both would overwrite each other).  Lock held."""
        parent, parent_seq = self.session, self._seq
        root, ext = os.path.splitext(self.path)
        self._drop_inherited()
        self.path = f"{root}.fork-{os.getpid()}{ext}"
        self.session = f"{parent}.fork-{os.getpid()}"
        with self._quiet():
            self._open()
        self._append("fork", {"action": None, "resource": None, "decision": "allow", "rules": [],
                              "message": f"forked from session {parent} after its record {parent_seq}",
                              "parent_session": parent, "parent_seq": parent_seq})

    def _sync_loop(self) -> None:
        while True:
            self._sync_wanted.wait()
            self._sync_wanted.clear()
            fd = self._fd
            if fd is None:
                return
            try:
                os.fsync(fd)
            except OSError:  # closed under us: close() syncs itself
                return

    def _request_sync(self) -> None:
        if self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_loop, name="guard-audit-fsync", daemon=True)
            self._syncer.start()
        self._sync_wanted.set()

    def _tail(self) -> tuple[int, str, int]:
        """(seq, hash, byte offset) after the last complete record: a restarted writer on the
        same session continues its chain."""
        last, end = None, 0
        for rec, offset in records_with_offsets(self.path):
            last, end = rec, offset
        return (last["seq"], last["hash"], end) if last else (0, GENESIS, 0)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run (in this process)."""
        return self._fd is None

    @property
    def count(self) -> int:
        """Records written so far in this file."""
        return self._seq

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one record of *kind* with *fields*; returns the record as written.

        Raises :class:`AuditUnavailable` when it cannot be written (see the module's docstring)."""
        with self._lock:
            if self._fd is None:
                raise ValueError("audit writer is closed")
            if self._pid != os.getpid():  # a forked child writes a file of its own
                self._forked()
            if self.failure is not None:
                self._resume()
            return self._append(kind, fields)

    def resume(self) -> None:
        """Raise :class:`AuditUnavailable` unless the audit can be written (again); after a
        failure, the first record written is an ``audit_gap``.  Cheap while nothing failed."""
        if self.failure is None:
            return
        with self._lock:
            if self._fd is None:
                raise ValueError("audit writer is closed")
            if self.failure is not None:
                self._resume()

    def _resume(self) -> None:
        """Try to end a failure by recording it (the lock is held)."""
        failure = self.failure
        assert failure is not None
        if failure.permanent:
            self._refused += 1
            raise failure
        self._append("audit_gap", {"action": None, "resource": None, "decision": "deny", "rules": [],
                                   "message": f"the audit could not be written from {self._failed_at}: "
                                              f"{failure.reason}; {self._refused} action(s) were refused meanwhile",
                                   "reason": failure.reason, "since": self._failed_at,
                                   "refused": self._refused})
        self.failure, self._refused = None, 0

    def _fail(self, reason: str, *, permanent: bool) -> AuditUnavailable:
        """Remember a failure (its first time, and each refusal it causes) and return it."""
        exc = AuditUnavailable(self.path, reason, permanent=permanent)
        self._refused += 1
        if self.failure is None or (permanent and not self.failure.permanent):
            self.failure, self._failed_at = exc, self._failed_at if self.failure else _utc_now()
        return exc

    def _check_place(self) -> None:
        """The file is still where readers look for it: not removed, and not replaced by
        another file (a rename or a delete drops the link count of the file this writer
        writes to 0).  ``fstat`` and not ``stat(path)``: half the cost, same cases but a
        second hard link made on purpose."""
        assert self._fd is not None
        if os.fstat(self._fd).st_nlink == 0:
            raise self._fail("it was removed or replaced (its folder deleted, or the file moved or "
                             "deleted); start a new session", permanent=True)

    def _append(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Write one record (the lock is held); seq and chain move on only once it is written."""
        self._check_place()
        seq = self._seq + 1
        rec: dict[str, Any] = {
            "seq": seq,
            "ts": _utc_now(),
            "session": self.session,
            "actor": self.actor,
            "environment": self.environment,
            "policy": self.policy,
            "kind": kind,
        }
        rec.update(fields)
        rec["prev"] = self._prev
        body = canonical(rec)  # serialised once: hashed, then written with the hash appended
        digest = hashlib.sha256(self._prev.encode() + body).hexdigest()
        rec["hash"] = digest
        line = body[:-1] + b',"hash":"' + digest.encode() + b'"}\n'
        fd = self._fd
        assert fd is not None  # checked by write() under the lock
        try:
            done = os.pwrite(fd, line, self._end)
            while done < len(line):  # a short write: the rest, or the error that cut it short
                done += os.pwrite(fd, line[done:], self._end + done)
        except OSError as exc:
            try:  # the file keeps ending with a whole record
                os.ftruncate(fd, self._end)
            except OSError:
                pass
            permanent = exc.errno in (errno.EBADF, errno.EROFS)
            raise self._fail(exc.strerror or str(exc), permanent=permanent) from None
        self._seq, self._prev = seq, digest
        self._end += len(line)
        self._since_sync += 1
        if self._since_sync >= self.fsync_every:
            self._request_sync()
            self._since_sync = 0
        return rec

    def close(self) -> None:
        """Flush to disk and close; later writes raise."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child that never wrote: the file is the parent's
                self._drop_inherited()
                self._fd = None
                return
            fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._syncer is not None:
            self._sync_wanted.set()  # wakes the helper, which sees _fd is None and ends
            self._syncer.join()
        with self._quiet():
            try:
                os.fsync(fd)
            except OSError:  # a file system that cannot sync: the records are written already
                pass
            os.close(fd)


__all__ = ["AuditUnavailable", "AuditWriter", "new_session_id"]
