"""The server's own audit chain, and the ``jupyter_events`` event every server-side decision emits.

One chain per server process, ``<audit_dir>/server-<session>.jsonl``, written by guard_kernel's one
:class:`~guard_kernel.audit.AuditWriter` (same hash chain, same ``guard-kernel audit verify``) and
opened by a ``session`` header whose ``role`` is ``server``.  Decisions come from the one
:func:`~guard_kernel.decision.decide`.  Every record is also emitted on the server's event bus
(schema :data:`SCHEMA_ID`, registered here), so tools that listen to Jupyter's events see the guard.

Fail closed: a record that cannot be written raises :class:`AuditUnavailable`; callers refuse the
action it describes.  The shared record format of ``server.execute`` is in docs/server.md.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from typing import Any

from guard_kernel.audit.redact import Redactor, redactor
from guard_kernel.audit.session import end_fields, header_fields
from guard_kernel.audit.writer import AuditUnavailable, AuditWriter, new_session_id
from guard_kernel.decision.evaluate import Decision, decide
from guard_kernel.decision.request import Request
from guard_kernel.policy.model import Policy

SCHEMA_ID = "https://guard-kernel.dev/events/jupyter_ext/decision/v1"
"""``$id`` of the event the extension emits for every server-side record."""
SCHEMA: dict[str, Any] = {
    "$id": SCHEMA_ID,
    "version": "1",
    "title": "guard_kernel server-side decisions",
    "personal-data": True,
    "description": "A decision of the guard_kernel server extension (files, kernels, terminals, forwarded "
                   "execute requests), as written to the server's audit chain.",
    "type": "object",
    "required": ["kind", "decision", "seq", "hash"],
    "properties": {
        "kind": {"type": "string", "description": "Record kind (file, kernel.start, terminal, server.execute…)."},
        "decision": {"type": "string", "description": "allow, deny, warn or would_deny."},
        "action": {"type": ["string", "null"], "description": "The guard action (file.write…), if any."},
        "resource": {"type": ["string", "null"], "description": "What was acted on (API path, kernel/<id>…)."},
        "rules": {"type": "array", "description": "Rules that decided (id, file, line)."},
        "message": {"type": "string", "description": "Why, for people."},
        "actor": {"type": "string", "description": "agent or human: whom the server decided for."},
        "username": {"type": ["string", "null"], "description": "The authenticated identity, if any."},
        "via": {"type": "string", "description": "http, contents_manager, kernel_manager, websocket."},
        "seq": {"type": "integer", "description": "The record's place in the server chain."},
        "hash": {"type": "string", "description": "The record's chain hash."},
        "session": {"type": "string", "description": "The server chain's session id."},
    },
}
ROLE = "server"


class ServerAudit:
    """The server chain: decide with the policy in force, record, emit."""

    def __init__(self, policy: Policy, audit_dir: str, *, event_logger: Any = None, environment: str = "default",
                 protected: tuple[str, ...] = ()) -> None:
        """*protected*: real paths of folders no server action may write (the audit folder is always one)."""
        self.policy = policy
        self.environment = environment
        self.session = new_session_id()
        self.audit_dir = os.path.realpath(audit_dir)
        self.protected = tuple(dict.fromkeys((self.audit_dir, *protected)))
        self.redactor: Redactor = _redactor(policy)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.writer = AuditWriter(os.path.join(self.audit_dir, f"{ROLE}-{self.session}.jsonl"),
                                  session=self.session, actor="server", environment=environment,
                                  policy=policy.ref())
        self.events = event_logger
        if event_logger is not None:
            event_logger.register_event_schema(SCHEMA)
        head = header_fields({**policy.ref(), "mode": policy.mode, "lock": True}, "server", environment,
                             session=self.session, audit_dir=self.audit_dir, kernel={"name": ROLE})
        self.write("session", role=ROLE, **head)

    @property
    def path(self) -> str:
        """The server chain's file."""
        return self.writer.path

    def decide(self, req: Request, actor: str) -> Decision:
        """The one decision function, for *actor*, with the server's protected folders."""
        return decide(self.policy, req, actor, self.environment, self.protected)

    def record_decision(self, d: Decision, kind: str, *, actor: str, **extra: Any) -> dict[str, Any]:
        """Write *d* (raises :class:`AuditUnavailable`: the caller refuses the action)."""
        self.counts[d.effect.value] += 1
        return self.write(kind, **d.audit_fields, actor=actor, **extra)

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one record (redacted like the kernels') and emit it as an event."""
        with self._lock:
            rec = self.writer.write(kind, **self.redactor.fields(fields))
        self._emit(rec)
        return rec

    def _emit(self, rec: dict[str, Any]) -> None:
        if self.events is None:
            return
        identity = rec.get("identity") or {}
        data = {"kind": rec["kind"], "decision": rec.get("decision", "allow"), "action": rec.get("action"),
                "resource": rec.get("resource"), "rules": rec.get("rules") or [], "message": rec.get("message") or "",
                "actor": rec.get("actor") or "", "username": identity.get("username"),
                "via": rec.get("via") or "", "seq": rec["seq"], "hash": rec["hash"], "session": rec["session"]}
        try:
            self.events.emit(schema_id=SCHEMA_ID, data=data)
        except Exception:  # the chain holds the record; an event listener's failure must not undo it
            pass

    def close(self) -> None:
        """End the chain (a ``session_end`` record) and close the file."""
        if self.writer.closed:
            return
        try:
            self.write("session_end", **end_fields("close", self.counts))
        except (AuditUnavailable, ValueError):
            pass
        self.writer.close()


def code_sha256(code: str) -> str:
    """Hex SHA-256 of a cell's source as sent (UTF-8)."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def _redactor(policy: Policy) -> Redactor:
    # the same redaction the kernels' guard applies (guard_kernel.decision.guard): credentials, names
    # of sources, values of denied and masked columns never enter the audit
    names = [n for name, src in policy.sources.items() for n in (name, *src.tables)]
    masked = {c for cols in policy.mask_columns().values() for c in cols}
    return redactor(policy.audit, policy.deny_columns() | masked, names)


__all__ = ["ROLE", "SCHEMA", "SCHEMA_ID", "AuditUnavailable", "ServerAudit", "code_sha256"]
