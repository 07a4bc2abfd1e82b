"""``GuardExtension``: the server extension's configuration and where its parts are wired in.

The parts live in their own modules (the server guard: files, kernels, terminals, identity;
the audit pages); this module only reads the configuration and hands it to them.
"""

from __future__ import annotations

from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Unicode


class GuardExtension(ExtensionApp):  # type: ignore[misc]
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

    def audit_path(self) -> Path:
        """The audit folder in force (configured, else ``.guard_audit`` under the server's root)."""
        if self.audit_dir:
            return Path(self.audit_dir).expanduser().resolve()
        root_dir = getattr(self.serverapp, "root_dir", None) or "."
        return (Path(root_dir) / ".guard_audit").resolve()

    def initialize_settings(self) -> None:
        """Share the configuration with the handlers (``settings['guard_extension']``)."""
        self.settings["guard_extension"] = self

    def initialize_handlers(self) -> None:
        """Register the extension's HTTP handlers: the audit pages under ``/guard/``."""
        from jupyter_ext.pages import page_handlers

        self.handlers.extend(page_handlers(self))
