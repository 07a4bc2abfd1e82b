"""Who sent a cell: the server stamps ``metadata.guard_actor`` on every execute_request it forwards.

The kernel websocket connection class the server is configured with is subclassed
(:func:`guarded_connection_class`) so that, before an ``execute_request`` goes to the kernel (shell or
control channel: ipykernel answers both), the server:

- drops whatever ``guard_actor`` the client put in the metadata (clients do not declare who they are);
- sets it from the authenticated identity: ``agent`` for identities configured as agents, otherwise
  the started kernelspec's actor (the kernel accepts a lowering human → agent, never a raise);
- writes one ``server.execute`` record in the server chain (the shared contract in docs/server.md:
  ``guard-kernel audit crosscheck`` matches it against the kernel's own cell records).

A request whose record cannot be written is not forwarded (fail closed).  Both wire protocols are
handled: ``v1.kernel.websocket.jupyter.org`` and the legacy JSON / binary one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_binary_message,
    serialize_msg_to_ws_v1,
)

from jupyter_ext.identity import identity_of
from jupyter_ext.kernels import KernelGuard
from jupyter_ext.server_audit import AuditUnavailable, ServerAudit, code_sha256

V1 = "v1.kernel.websocket.jupyter.org"
ACTOR_KEY = "guard_actor"
"""The request metadata key the guarded kernel reads (set by the server only)."""
STAMPED_CHANNELS = frozenset({"shell", "control"})
"""Where an execute_request is stamped: ipykernel serves the shell's message types on control too."""


@dataclass(frozen=True)
class ChannelGuard:
    """What the stamping needs: the server chain, the kernels started, the agent identities."""

    audit: ServerAudit
    kernels: KernelGuard
    agents: frozenset[str]

    def stamp(self, conn: Any, header: dict[str, Any], metadata: dict[str, Any], content: dict[str, Any]) -> None:
        """Set ``metadata.guard_actor`` for *conn*'s user and record the request (raises
        :class:`AuditUnavailable`: the request must not be forwarded)."""
        handler = getattr(conn, "websocket_handler", None)
        identity = identity_of(getattr(handler, "current_user", None), self.agents)
        kid = str(conn.kernel_id)
        started = self.kernels.kernel(kid)
        actor = identity.actor(started.actor)
        metadata.pop(ACTOR_KEY, None)
        metadata[ACTOR_KEY] = actor
        req = getattr(handler, "request", None)
        code = content.get("code")
        code = code if isinstance(code, str) else ""
        self.audit.write(
            "server.execute", action=None, resource=f"kernel/{kid}", decision="allow", rules=[], message="",
            kernel={"id": kid, "name": started.name, "requested": started.requested},
            request={"msg_id": header.get("msg_id"), "session": header.get("session"),
                     "username": header.get("username")},
            identity=identity.as_dict(),
            client={"ip": getattr(req, "remote_ip", None),
                    "user_agent": req.headers.get("User-Agent") if req is not None else None},
            actor=actor, code=code, code_sha256=code_sha256(code), via="websocket")


def rewrite(guard: ChannelGuard, conn: Any, ws_msg: Any) -> Any:
    """*ws_msg* with the execute_request stamped (other messages unchanged)."""
    if conn.subprotocol == V1:
        channel, parts = deserialize_msg_from_ws_v1(ws_msg)
        if channel not in STAMPED_CHANNELS or len(parts) < 4:
            return ws_msg
        header = json.loads(parts[0])
        if header.get("msg_type") != "execute_request":
            return ws_msg
        metadata, content = json.loads(parts[2] or b"{}"), json.loads(parts[3] or b"{}")
        guard.stamp(conn, header, metadata, content)
        parts = list(parts)
        parts[2] = json.dumps(metadata).encode("utf-8")
        return serialize_msg_to_ws_v1(parts, channel)
    binary = isinstance(ws_msg, bytes)
    msg = deserialize_binary_message(ws_msg) if binary else json.loads(ws_msg)
    channel = msg.get("channel") or "shell"
    if channel not in STAMPED_CHANNELS or (msg.get("header") or {}).get("msg_type") != "execute_request":
        return ws_msg
    msg["metadata"] = dict(msg.get("metadata") or {})
    guard.stamp(conn, msg["header"], msg["metadata"], msg.get("content") or {})
    return serialize_binary_message(msg) if binary else json.dumps(msg)


def guarded_connection_class(base: type, guard: ChannelGuard) -> type:
    """A subclass of the configured connection class *base* that stamps and records execute requests."""

    def handle_incoming_message(self: Any, incoming_msg: Any) -> None:
        if self.channels:  # closed: the base class ignores the message (and so do we)
            try:
                incoming_msg = rewrite(guard, self, incoming_msg)
            except AuditUnavailable as exc:
                self.log.error("guard_kernel: execute_request not forwarded, the server audit cannot be written: %s",
                               exc)
                return
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                # a message the guard cannot read is not forwarded unread (it could carry a cell)
                self.log.warning("guard_kernel: unreadable message not forwarded: %s", exc)
                return
        base.handle_incoming_message(self, incoming_msg)  # type: ignore[attr-defined]

    return type(f"Guarded{base.__name__}", (base,), {
        "handle_incoming_message": handle_incoming_message,
        "__doc__": f"{base.__name__} whose execute requests carry the server's guard_actor (jupyter_ext).",
    })


__all__ = ["ACTOR_KEY", "ChannelGuard", "guarded_connection_class", "rewrite"]
