"""The one audit writer: append-only JSON Lines, one file per session, hash-chained.

Every record is handed to the OS (``os.write`` on an ``O_APPEND`` descriptor) before
the action it describes proceeds, so a killed kernel loses no completed record;
``fsync`` runs every ``fsync_every`` records and at close, for power loss.  Each record
carries ``prev`` (the previous record's hash) and ``hash`` = SHA-256 of the previous
hash and the record's canonical JSON, so an edited, dropped or reordered record breaks
the chain (:func:`verify`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


def new_session_id() -> str:
    """A sortable, unique session id: UTC timestamp plus random suffix."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


# one encoder for every record: json.dumps() with options builds a new JSONEncoder per call
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False).encode


_second: tuple[int, str] = (-1, "")


def _utc_now() -> str:
    """UTC time as ISO 8601 with microseconds and a Z; the date-time part is formatted once a second."""
    global _second
    ns = time.time_ns()
    sec, cached = ns // 1_000_000_000, _second
    if cached[0] != sec:  # a tuple, swapped whole: safe from any thread
        cached = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{cached[1]}.{ns // 1000 % 1_000_000:06d}Z"


def _canonical(record: dict[str, Any]) -> bytes:
    return _ENCODE(record).encode()


def chain_hash(prev: str, record: dict[str, Any]) -> str:
    """The hash of *record* (without its ``hash`` field) chained to *prev*."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(prev.encode() + _canonical(body)).hexdigest()


class AuditWriter:
    """Writes one session's records; safe to call from any thread."""

    def __init__(self, path: str, *, session: str, actor: str, environment: str,
                 policy: dict[str, str], fsync_every: int = 100) -> None:
        self.path = os.path.abspath(path)
        self.session, self.actor, self.environment = session, actor, environment
        self.policy = {"name": policy["name"], "sha256": policy["sha256"]}
        self.fsync_every = fsync_every
        self._lock = threading.Lock()
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        # O_APPEND + one os.write per record: no user-space buffer to lose on a kill
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._seq, self._prev = self._tail()
        self._since_sync = 0
        # fsync (power-loss durability) runs on a helper thread: os.write has already handed
        # each record to the OS before its action proceeds, so a killed kernel loses nothing,
        # and the writer does not wait for the disk every fsync_every records
        self._sync_wanted = threading.Event()
        self._syncer: threading.Thread | None = None

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

    def _tail(self) -> tuple[int, str]:
        """Continue an existing file's chain (a restarted writer on the same session)."""
        last = None
        for rec in read_records(self.path):
            last = rec
        return (last["seq"], last["hash"]) if last else (0, GENESIS)

    @property
    def count(self) -> int:
        """Records written so far in this file."""
        return self._seq

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one record of *kind* with *fields*; returns the record as written."""
        with self._lock:
            if self._fd is None:
                raise ValueError("audit writer is closed")
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
            body = _canonical(rec)  # serialised once: hashed, then written with the hash appended
            digest = hashlib.sha256(self._prev.encode() + body).hexdigest()
            rec["hash"] = digest
            os.write(self._fd, body[:-1] + b',"hash":"' + digest.encode() + b'"}\n')
            self._prev = digest
            self._since_sync += 1
            if self._since_sync >= self.fsync_every:
                self._request_sync()
                self._since_sync = 0
            return rec

    def close(self) -> None:
        """Flush to disk and close; later writes raise."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._syncer is not None:
            self._sync_wanted.set()  # wakes the helper, which sees _fd is None and ends
            self._syncer.join()
        os.fsync(fd)
        os.close(fd)


def read_records(path: str) -> Iterator[dict[str, Any]]:
    """The records of an audit file; a torn last line (killed mid-write) is skipped."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return
            try:
                yield json.loads(raw)
            except ValueError:
                return


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`."""

    ok: bool
    records: int
    problem: str | None = None
    seq: int | None = None


def verify(path: str) -> VerifyResult:
    """Check the hash chain and sequence of an audit file."""
    prev, n = GENESIS, 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                rec = json.loads(raw)
            except ValueError:
                return VerifyResult(False, n, f"line {lineno} is not JSON", None)
            n += 1
            if rec.get("seq") != n:
                return VerifyResult(False, n, f"line {lineno}: seq {rec.get('seq')} where {n} was expected", rec.get("seq"))
            if rec.get("prev") != prev or chain_hash(prev, rec) != rec.get("hash"):
                return VerifyResult(False, n, f"line {lineno}: hash chain broken (record edited, dropped or reordered)", n)
            prev = rec["hash"]
    return VerifyResult(True, n)
