"""The server guard put together: one server chain, and the four places it holds.

:meth:`ServerGuard.install` is called once, while the extension's settings are prepared (the web
application exists, no request has been served):

- the server chain (:class:`~jupyter_ext.server_audit.ServerAudit`) with the policy in force;
- kernels (:class:`~jupyter_ext.kernels.KernelGuard`): starts mapped and recorded, kernelspecs listed;
- files: the ContentsManager instance guarded, the configured authorizer wrapped;
- identity: the kernel websocket connection class subclassed to stamp ``guard_actor``;
- terminals refused (also those of an extension loaded after this one: :meth:`late`).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from guard_kernel.decision.evaluate import Decision
from guard_kernel.decision.guard import ENV_AUDIT_DIR
from guard_kernel.policy.load import builtin_policy, load_policy
from guard_kernel.policy.model import Policy
from jupyter_ext.authz import GuardAuthorizer
from jupyter_ext.channels import ChannelGuard, guarded_connection_class
from jupyter_ext.files import FileGuard, guard_contents_manager
from jupyter_ext.identity import Identity
from jupyter_ext.kernels import KernelGuard, guard_terminals
from jupyter_ext.server_audit import ServerAudit


@dataclass
class ServerGuard:
    """The running guard's parts (the extension keeps it as ``GuardExtension.guard``)."""

    policy: Policy
    audit: ServerAudit
    kernels: KernelGuard
    files: FileGuard
    allow_terminals: bool

    @classmethod
    def install(cls, app: Any, settings: dict[str, Any]) -> ServerGuard:
        """Build the guard from *app*'s configuration and put it into the server (*settings*: the
        extension's settings, copied into the web application's after this returns)."""
        server = app.serverapp
        root_dir = str(getattr(server.contents_manager, "root_dir", None) or server.root_dir)
        policy = load_policy(app.policy, app.root or None) if app.policy else builtin_policy(app.root or root_dir)
        audit_dir = str(app.audit_path())
        audit = ServerAudit(policy, audit_dir, event_logger=getattr(server, "event_logger", None),
                            protected=(os.path.realpath(os.path.join(root_dir, ".guard_audit")),))
        kernels = KernelGuard(audit, server.kernel_manager, server.kernel_spec_manager,
                              only_guarded=app.only_guarded_kernels, guarded_name=app.guarded_kernel_name,
                              policy=app.policy, root=app.root, audit_dir=audit_dir,
                              runtime_dir=str(server.runtime_dir))
        audit.protected = tuple(dict.fromkeys((*audit.protected, *_kernel_audit_dirs(kernels))))
        files = FileGuard(audit, root_dir, server_side_actor=app.server_side_actor,
                          policy_files=tuple(kernels.policy_files()))
        guard = cls(policy, audit, kernels, files, app.allow_terminals)
        guard_contents_manager(server.contents_manager, files)
        authorizer = GuardAuthorizer(settings["authorizer"], files, agents=app.agent_identities,
                                     allow_terminals=app.allow_terminals, on_terminal=guard.terminal,
                                     parent=server, log=app.log)
        settings["authorizer"] = server.authorizer = authorizer  # handlers read the setting; extensions the app
        base = settings.get("kernel_websocket_connection_class") or server.kernel_websocket_connection_class
        settings["kernel_websocket_connection_class"] = guarded_connection_class(
            base, ChannelGuard(audit, kernels, frozenset(app.agent_identities)))
        guard.late(settings)
        # extensions load by name: jupyter_server_terminals comes after this one. Its manager exists
        # once loading is over, before the loop serves anything (and _start_jupyter_server_extension
        # asks again where the server calls it)
        asyncio.get_event_loop().call_soon(guard.late, server.web_app.settings)
        app.log.info("guard_kernel: server guard in place (policy %s, audit %s, only guarded kernels: %s → %s)",
                     policy.name, audit.path, app.only_guarded_kernels, kernels.guarded_name or "none")
        return guard

    def late(self, settings: dict[str, Any]) -> None:
        """Refuse terminals in a terminal manager that appeared since (idempotent)."""
        guard_terminals(settings.get("terminal_manager"), self.audit, self.allow_terminals)

    def terminal(self, d: Decision, identity: Identity, handler: Any) -> None:
        """Record a terminal request's decision (the authorizer asks)."""
        req = getattr(handler, "request", None)
        self.audit.record_decision(d, "terminal", actor="agent" if identity.agent else "human", via="http",
                                   identity=identity.as_dict(), op=f"{getattr(req, 'method', '')} "
                                                                   f"{getattr(req, 'path', '')}")

    def close(self) -> None:
        self.audit.close()


def _kernel_audit_dirs(kernels: KernelGuard) -> list[str]:
    """Audit folders the guarded kernelspecs fix: never writable from the server either."""
    out = []
    for info in kernels.specs().values():
        value = ((info.get("spec") or {}).get("env") or {}).get(ENV_AUDIT_DIR)
        if value:
            out.append(os.path.realpath(value))
    return out


__all__ = ["ServerGuard"]
