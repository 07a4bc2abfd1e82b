"""The audit across a process boundary: the kernel sends records, the launcher that owns the file writes them.

In the guarded kernel the audit file is owned by the launcher, a parent process the kernel
cannot write to: the kernel's :class:`PipeSink` sends each record as one message on a
``SOCK_SEQPACKET`` Unix socket (message boundaries kept, each send atomic — so forked
children of the kernel, multiprocessing and joblib workers, can share it), and the launcher's
:func:`serve` hands each to the one :class:`~guard_kernel.audit.writer.AuditWriter`: same
format, same hash chain, same ``verify``.  Code in the kernel can add records (lies), but
cannot erase or rewrite what was recorded, nor set the fields the writer owns (sequence,
time, session, actor, chain).  A send that fails — the launcher is gone — raises: the guard
fails closed.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from guard_kernel.audit.chain import ENCODE
from guard_kernel.audit.writer import AuditUnavailable, AuditWriter

RESERVED = frozenset({"seq", "ts", "session", "actor", "environment", "policy", "kind", "prev", "hash"})
"""Fields only the writer sets: a message cannot forge them."""
MAX_FIELD = 65536
"""A longer string field (a huge cell's code) is recorded cut, with the SHA-256 of the whole."""
MAX_MESSAGE = 200_000
"""A message must fit the socket's send buffer (Linux' default ceiling is ~208 KiB)."""


def _fit(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if isinstance(v, str) and len(v) > MAX_FIELD:
            out[k] = v[:MAX_FIELD]
            out[k + "_sha256"] = hashlib.sha256(v.encode("utf-8", "replace")).hexdigest()
            out[k + "_cut_at"] = MAX_FIELD
        else:
            out[k] = v
    return out


class PipeSink:
    """The kernel's side: an audit sink that sends records to the launcher."""

    def __init__(self, fd: int, path: str, policy: dict[str, str]) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE + 4096)
        self.path = path
        """The audit file the launcher writes (the kernel cannot write it)."""
        self.policy = policy
        self._closed = False
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Send one record; raises ``OSError`` when the launcher cannot receive it (fail closed)."""
        if self._closed:
            raise ValueError("audit sink is closed")
        data = ENCODE({"kind": kind, "fields": _fit(fields), "pid": os.getpid()}).encode()
        if len(data) > MAX_MESSAGE:  # still too large: say so rather than lose the record silently
            data = ENCODE({"kind": kind, "fields": {"message": "record too large to send", "bytes": len(data)},
                           "pid": os.getpid()}).encode()
        try:
            with self._lock:  # threads of this process; other processes: each send is one whole message
                self.sock.send(data)
        except OSError as exc:  # the launcher is gone: nothing can be recorded, so nothing may run
            raise AuditUnavailable(self.path, f"the launcher that owns the audit does not answer: {exc}",
                                   permanent=True) from None
        return {"kind": kind, **fields}

    def close(self) -> None:
        self._closed = True


def serve(sock: socket.socket, writer: AuditWriter, on_record: Callable[[str, dict[str, Any]], None] | None = None,
          ) -> None:
    """The launcher's side: write every record received until every sender has closed the socket."""
    parent = None
    while True:
        try:
            data = sock.recv(MAX_MESSAGE + 1024)
        except OSError:
            return
        if not data:
            return
        try:
            msg = json.loads(data)
            kind = str(msg["kind"])
            fields = {k: v for k, v in dict(msg.get("fields") or {}).items() if k not in RESERVED}
            pid = msg.get("pid")
        except (ValueError, KeyError, TypeError) as exc:
            kind, fields, pid = "audit_error", {"message": f"unreadable record from the kernel: {exc}"}, None
        if parent is None:
            parent = pid
        if pid is not None and pid != parent:
            fields["pid"] = pid  # a forked child of the kernel
        writer.write(kind, **fields)
        if on_record is not None:
            on_record(kind, fields)


__all__ = ["MAX_FIELD", "RESERVED", "PipeSink", "serve"]
