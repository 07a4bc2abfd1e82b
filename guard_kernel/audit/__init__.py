"""Audit: one hash-chained JSON Lines file per session (docs/audit.md).

``chain`` (record format, hash, reading) → ``writer`` (the one writer every hook's records go
through), ``session`` (header and end records), ``redact`` (what never enters the audit),
``integrity`` (:func:`verify`) and ``summary`` (:func:`summarize`, what ``audit show | list``
print).  Used by ``decision``; uses nothing above it.
"""

from guard_kernel.audit.chain import GENESIS, chain_hash, read_records
from guard_kernel.audit.integrity import ChainCheck, VerifyResult, verify
from guard_kernel.audit.summary import Summary, SummaryBuilder, sessions, summarize
from guard_kernel.audit.writer import AuditSink, AuditUnavailable, AuditWriter, new_session_id

__all__ = ["GENESIS", "AuditSink", "AuditUnavailable", "AuditWriter", "ChainCheck", "Summary", "SummaryBuilder",
           "VerifyResult", "chain_hash", "new_session_id", "read_records", "sessions", "summarize", "verify"]
