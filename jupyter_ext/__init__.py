"""Jupyter Server extension for guard_kernel: the server guards its own actions and serves the audits.

Enable it with ``jupyter server extension enable jupyter_ext`` (a plain ``pip install`` never
enables it), or name it on the command line:
``--ServerApp.jpserver_extensions='{"jupyter_ext": true}'``.
"""

from __future__ import annotations

from typing import Any

from guard_kernel import __version__
from jupyter_ext.app import GuardExtension

__all__ = ["GuardExtension", "__version__"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """The server's entry point: one extension app, configured as ``GuardExtension``."""
    return [{"module": "jupyter_ext", "app": GuardExtension}]
