"""Audit: one hash-chained JSON Lines file per session.

``chain`` (record format, hash, reading) → ``writer`` (the one writer every hook's records go
through) and ``integrity`` (:func:`verify`).  Used by ``decision``; uses nothing above it.
"""

from guard_kernel.audit.chain import GENESIS, chain_hash, read_records
from guard_kernel.audit.integrity import VerifyResult, verify
from guard_kernel.audit.writer import AuditUnavailable, AuditWriter, new_session_id

__all__ = ["GENESIS", "AuditUnavailable", "AuditWriter", "VerifyResult", "chain_hash", "new_session_id", "read_records", "verify"]
