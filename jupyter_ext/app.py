"""``GuardExtension``: the server extension's configuration and where its parts are wired in.

The parts live in their own modules (the server guard: files, kernels, terminals, identity;
the audit pages); this module only reads the configuration and hands it to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, List, Unicode


class RefuseAll(Authorizer):
    """Every request refused (403): what is left when the guard's own modules cannot be imported."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return False


class GuardExtension(ExtensionApp):
    """guard_kernel inside the Jupyter Server."""

    name = "jupyter_ext"
    # No front-end of its own to open at start; the audit pages live under /guard/.
    extension_url = "/guard/"
    load_other_extensions = True

    policy = Unicode(
        "",
        help="Policy file (YAML) the server's own actions are decided by; empty: the built-in default.",
    ).tag(config=True)
    root = Unicode(
        "",
        help="Project root the policy's relative paths mean; empty: the policy's root: key, "
        "else the policy file's folder, else the server's root_dir.",
    ).tag(config=True)
    audit_dir = Unicode(
        "",
        help="Folder of the audits: the kernels' and the server's own chain; empty: "
        ".guard_audit/ under the server's root_dir.",
    ).tag(config=True)
    only_guarded_kernels = Bool(
        False,
        help="Start a guarded kernel for every kernel request, whatever name the client asks for, "
        "and list only guarded kernelspecs.",
    ).tag(config=True)
    guarded_kernel_name = Unicode(
        "",
        help="The guarded kernelspec to start when only_guarded_kernels is set; empty: the first "
        "guarded kernelspec found, else one the extension builds from `policy`.",
    ).tag(config=True)
    allow_terminals = Bool(
        False,
        help="Allow the server's terminals (a shell in the server process, outside every kernel guard).",
    ).tag(config=True)

    agent_identities = List(
        Unicode(), default_value=[],
        help="Usernames of the identities that are agents (AI assistants): their cells are stamped "
             "guard_actor=agent and their file actions decided as an agent's. Tokens name identities through "
             "jupyter_ext.identity.GuardIdentityProvider.named_tokens (or the server's own provider, e.g. JupyterHub).",
    ).tag(config=True)
    server_side_actor = Enum(
        ["agent", "human"], "agent",
        help="Whom the ContentsManager's own actions are decided for when no HTTP request made them "
             "(collaboration rooms, server-side extensions): agent, the stricter, unless set.",
    ).tag(config=True)

    guard: Any = None
    """The running guard's parts (:class:`jupyter_ext.guard.ServerGuard`), once the extension is loaded."""

    def audit_path(self) -> Path:
        """The audit folder in force (configured, else ``.guard_audit`` under the server's root)."""
        if self.audit_dir:
            return Path(self.audit_dir).expanduser().resolve()
        root_dir = getattr(self.serverapp, "root_dir", None) or "."
        return (Path(root_dir) / ".guard_audit").resolve()

    def initialize_settings(self) -> None:
        """Share the configuration with the handlers (``settings['guard_extension']``)."""
        self.settings["guard_extension"] = self
        self._install_guard()

    def _install_guard(self) -> None:
        """Put the server guard in place: files, kernels, terminals, identity, the server chain."""
        server = self.serverapp
        assert server is not None  # linked before settings are prepared
        try:
            from jupyter_ext.guard import ServerGuard

            self.guard = ServerGuard.install(self, self.settings)
        except Exception as exc:  # fail closed: the server would otherwise load without its guard
            reason = f"{type(exc).__name__}: {exc}"
            self.log.error("guard_kernel: the server guard could not start; every request is refused: %s", reason)
            inner = self.settings["authorizer"]
            refusing: Authorizer
            try:
                from jupyter_ext.authz import UnavailableAuthorizer

                refusing = UnavailableAuthorizer(inner, reason, parent=server, log=self.log)
            except Exception:  # the guard's own modules are broken: Jupyter's plain 403 for everything
                refusing = RefuseAll(identity_provider=inner.identity_provider, parent=server, log=self.log)
            self.settings["authorizer"] = server.authorizer = refusing

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Every extension is loaded now: refuse terminals whichever loaded after this one."""
        if self.guard is not None:
            self.guard.late(serverapp.web_app.settings)

    async def stop_extension(self) -> None:
        """End the server chain (its ``session_end`` record)."""
        if self.guard is not None:
            self.guard.close()

    def initialize_handlers(self) -> None:
        """Register the extension's HTTP handlers: the audit pages under ``/guard/``."""
        from jupyter_ext.pages import page_handlers

        self.handlers.extend(page_handlers(self))
