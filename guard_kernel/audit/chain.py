"""The audit's record format: one JSON object a line, each chained to the one before by SHA-256.

Each record carries ``prev`` (the previous record's hash) and ``hash`` = SHA-256 of the
previous hash and the record's canonical JSON (sorted keys, no spaces), so an edited,
dropped or reordered record breaks the chain.  Written by :mod:`guard_kernel.audit.writer`,
checked by :mod:`guard_kernel.audit.integrity`; :func:`read_records` is how every reader reads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

GENESIS = "0" * 64
"""The ``prev`` of a file's first record."""

# one encoder for every record: json.dumps() with options builds a new JSONEncoder per call
ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False).encode


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes a record is hashed and written as."""
    return ENCODE(record).encode()


def chain_hash(prev: str, record: dict[str, Any]) -> str:
    """The hash of *record* (without its ``hash`` field) chained to *prev*."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(prev.encode() + canonical(body)).hexdigest()


def read_records(path: str) -> Iterator[dict[str, Any]]:
    """The records of an audit file; an unfinished last line and the NUL tail of an open (or
    killed) writer are skipped."""
    for rec, _ in records_with_offsets(path):
        yield rec


def records_with_offsets(path: str) -> Iterator[tuple[dict[str, Any], int]]:
    """Each complete record with the byte offset just after it."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below; a missing file is no records
    except FileNotFoundError:
        return
    offset = 0
    with f:
        for raw in f:
            if not raw.endswith(b"\n") or raw.startswith(b"\0"):
                return
            try:
                rec = json.loads(raw)
            except ValueError:
                return
            offset += len(raw)
            yield rec, offset


__all__ = ["ENCODE", "GENESIS", "canonical", "chain_hash", "read_records", "records_with_offsets"]
