"""The one audit writer: append-only JSON Lines, one file per session, hash-chained.

Every record is copied into a shared memory map of the file (the OS's page cache) before
the action it describes proceeds, so a killed kernel loses no completed record; ``fsync``
runs every ``fsync_every`` records and at close, for power loss.  Each record carries
``prev`` (the previous record's hash) and ``hash`` = SHA-256 of the previous hash and the
record's canonical JSON (:mod:`guard_kernel.audit.chain`), so an edited, dropped or
reordered record breaks the chain (:func:`guard_kernel.audit.integrity.verify`).

Why a memory map and not ``os.write``: a system call releases the GIL, and in a kernel the
IOPub thread is usually waiting for it right after a cell, so each ``os.write`` cost ~100 µs
of handing the GIL over and back (measured; ~10 µs outside a kernel).  A copy into the map
keeps the GIL.  The price: the file is grown in 1 MiB steps, so while a writer is open (or
after it was killed) the file ends in NUL bytes after the last record.  :func:`read_records`
and :func:`verify` stop there; ``close()`` cuts the file to its records; a writer that
reopens the file continues after the last complete record.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import mmap
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


_CHUNK = 1 << 20
"""The file grows by this much at a time (a sparse tail: no disk is used until written)."""


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
        with quiet():
            self._open()
        _open_writers.add(self)

    def _open(self) -> None:
        self._pid = os.getpid()
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._seq, self._prev, self._end = self._tail()
        size = os.fstat(self._fd).st_size
        if size > self._end:  # what follows the last readable record
            # lines that could not be read stay (verify reports them); an unfinished record
            # or the NUL tail of a killed writer goes, so readers stop after our records
            self._end += os.pread(self._fd, size - self._end, self._end).rfind(b"\n") + 1
            os.ftruncate(self._fd, self._end)
        self._mm: mmap.mmap | None = None
        self._map(self._end)
        self._since_sync = 0
        # fsync (power-loss durability) runs on a helper thread: every record is already in
        # the page cache before its action proceeds, so a killed kernel loses nothing, and
        # the writer does not wait for the disk every fsync_every records
        self._sync_wanted = threading.Event()
        self._syncer: threading.Thread | None = None

    def _map(self, need: int) -> None:
        """(Re)map the file with room past *need* bytes: a shared map, so what is copied into it
        is in the page cache, which outlives this process.  Where the file system has no shared
        maps, records are written with ``os.pwrite`` instead (slower in a kernel, as safe)."""
        assert self._fd is not None
        if self._mm is not None:
            self._mm.close()  # remapped rather than resized: mremap is Linux-only
            self._mm = None
        try:
            os.ftruncate(self._fd, need + _CHUNK)
            self._mm = mmap.mmap(self._fd, 0)
        except (OSError, ValueError):
            os.ftruncate(self._fd, self._end)

    def _drop_inherited(self) -> None:
        """In a forked child: let go of the parent's file (the map is shared: never write it)."""
        with self._quiet():
            if self._mm is not None:
                self._mm.close()
                self._mm = None
            if self._fd is not None:
                os.close(self._fd)

    def _forked(self) -> None:
        """A forked child's first record: it goes to a file of its own.  The map is shared with
        the parent, which keeps writing at the same offsets, so records of both would overwrite
        each other.  Called with the lock held."""
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
        """Append one record of *kind* with *fields*; returns the record as written."""
        with self._lock:
            if self._fd is None:
                raise ValueError("audit writer is closed")
            if self._pid != os.getpid():  # a forked child writes a file of its own
                self._forked()
            return self._append(kind, fields)

    def _append(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Write one record (the lock is held)."""
        self._seq += 1
        rec: dict[str, Any] = {
            "seq": self._seq,
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
        end = self._end + len(line)
        if self._mm is not None and end > len(self._mm):
            with self._quiet():
                self._map(end)
        if self._mm is not None:
            self._mm[self._end:end] = line
        else:
            assert self._fd is not None  # checked by write() under the lock
            os.pwrite(self._fd, line, self._end)
        self._end = end
        self._prev = digest
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
            if self._mm is not None:
                self._mm.close()
                self._mm = None
            os.ftruncate(fd, self._end)  # the file ends with its last record
            os.fsync(fd)
            os.close(fd)


