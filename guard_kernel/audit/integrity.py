"""Check an audit file, streaming: hash chain, sequence, header, session, and how it ended.

:class:`ChainCheck` takes the file's lines one at a time (``verify`` and the summaries of
:mod:`guard_kernel.audit.summary` share it), so a 100,000-record file is never held whole.
It names the first bad record and why: edited (its hash does not match), deleted, duplicated
or reordered (a gap in ``seq``, a ``prev`` that is not the previous hash), truncated mid-record
(a last line without its newline), spliced in from another session, or a missing header.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from guard_kernel.audit.chain import GENESIS, chain_hash

_HASH_TAIL = re.compile(rb',"hash":"([0-9a-f]{64})"}\n\Z')
"""How the writer ends a line: the canonical body's closing brace replaced by the hash field."""


def _line_hash(prev: str, raw: bytes) -> str | None:
    """The chain hash of the record on line *raw*.  A line as the writer wrote it is hashed as
    its bytes (the canonical body is the line without its hash field: no re-encoding, ~2x
    faster); any other spelling of a record is re-encoded canonically first."""
    m = _HASH_TAIL.search(raw, len(raw) - 76)
    if m is not None:
        return hashlib.sha256(prev.encode() + raw[: m.start()] + b"}").hexdigest()
    try:
        return chain_hash(prev, json.loads(raw))
    except ValueError:
        return None

HEADER_KINDS = frozenset({"session", "fork", "launcher"})
"""Kinds a file may open with: a session header, a fork's, or the guarded kernel's launcher record
(written before the kernel it starts sends its own header)."""
"""Kinds a file may start with: a session header, or a forked child's first record."""


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`."""

    ok: bool
    """The chain is intact from the header to the last record."""
    records: int
    """Records read and found good before the first problem (all of them when ``ok``)."""
    problem: str | None = None
    """The first problem, naming the record (None when ``ok``)."""
    seq: int | None = None
    """The ``seq`` of the first bad record, when it has one."""
    line: int | None = None
    """The line of the first bad record."""
    session: str | None = None
    """The session named by the header."""
    ended: str = ""
    """How the session ended: ``closed (reason)``, or ``ended without a close record after seq N``."""
    partial_tail: int = 0
    """Bytes of an unfinished last line (a write cut short), 0 when there is none."""


@dataclass
class ChainCheck:
    """Feed it an audit file's lines in order; it keeps the first problem and the end state."""

    records: int = 0
    problem: str | None = None
    bad_seq: int | None = None
    bad_line: int | None = None
    session: str | None = None
    last: dict[str, Any] | None = None
    partial_tail: int = 0
    _prev: str = GENESIS
    _lineno: int = 0
    _extra: dict[str, Any] = field(default_factory=dict)

    def feed(self, raw: bytes) -> dict[str, Any] | None:
        """Check one line (with its newline); returns its record, or None if it is not one."""
        self._lineno += 1
        if not raw.endswith(b"\n"):
            if raw.strip(b"\0"):  # a NUL-only tail is what writers before 0.2 left: no record
                self.partial_tail = len(raw)
                self._bad(None, f"line {self._lineno} is cut short ({len(raw)} bytes without a newline): "
                                f"the file was truncated mid-record after record {self.records}")
            return None
        try:
            rec = json.loads(raw)
        except ValueError:
            self._bad(None, f"line {self._lineno} is not a JSON record")
            return None
        if not isinstance(rec, dict):
            self._bad(None, f"line {self._lineno} is not a JSON object")
            return None
        if self.problem is None:
            self._check(rec, raw)
        return rec

    def _bad(self, seq: Any, why: str) -> None:
        if self.problem is None:
            self.problem, self.bad_seq, self.bad_line = why, seq if isinstance(seq, int) else None, self._lineno

    def _check(self, rec: dict[str, Any], raw: bytes) -> None:
        n, seq, where = self.records + 1, rec.get("seq"), f"line {self._lineno}"
        if n == 1:
            if rec.get("kind") not in HEADER_KINDS:
                self._bad(seq, f"{where}: the session header is missing (the first record is a "
                               f"{rec.get('kind')!r} record with seq {seq})")
                return
            self.session = rec.get("session")
        elif rec.get("session") != self.session:
            self._bad(seq, f"{where}: record seq {seq} belongs to session {rec.get('session')!r}, not "
                           f"{self.session!r} (spliced in from another session's file)")
            return
        if seq != n:
            how = "deleted" if isinstance(seq, int) and seq > n else "duplicated or reordered"
            self._bad(seq, f"{where}: seq {seq} where {n} was expected (a record was {how})")
            return
        if rec.get("prev") != self._prev:
            self._bad(seq, f"{where}: record seq {seq} does not follow the previous record's hash "
                           "(a record before it was removed, reordered or rewritten)")
            return
        if _line_hash(self._prev, raw) != rec.get("hash"):
            self._bad(seq, f"{where}: record seq {seq} was edited (its hash does not match its content)")
            return
        self._prev = rec["hash"]
        self.records = n
        self.last = rec

    @property
    def ended(self) -> str:
        """How the session ended, as far as the good records say."""
        last = self.last
        if last is None:
            return "no records"
        if last.get("kind") == "session_end":
            return f"closed ({last.get('reason') or 'stop'})"
        return f"ended without a close record after seq {last.get('seq')}"

    def result(self) -> VerifyResult:
        """The outcome so far."""
        problem = self.problem
        if problem is None and self.records == 0:
            problem = "no records (the session header is missing)"
        return VerifyResult(problem is None, self.records, problem, self.bad_seq, self.bad_line, self.session,
                            self.ended, self.partial_tail)


def lines(path: str) -> Iterator[bytes]:
    """The raw lines of *path*, streamed."""
    with open(path, "rb") as f:
        yield from f


def verify(path: str) -> VerifyResult:
    """Check an audit file from its header to its last record (streamed)."""
    check = ChainCheck()
    for raw in lines(path):
        check.feed(raw)
    return check.result()


__all__ = ["HEADER_KINDS", "ChainCheck", "VerifyResult", "lines", "verify"]
