"""Check an audit file's hash chain and sequence (:func:`verify`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from guard_kernel.audit.chain import GENESIS, chain_hash


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
            if not raw.endswith(b"\n") and not raw.strip(b"\0"):
                break  # the unused tail of an open or killed writer
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


__all__ = ["VerifyResult", "verify"]
