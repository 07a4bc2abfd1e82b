"""``guard_kernel.integrations.mcp``: a jupyter-mcp-server plugin — the guard's refusals reach the
agent as MCP tool errors.

Installed with ``pip install 'guard-kernel[mcp]'``; jupyter-mcp-server loads it through the
``reactor.mcp.extensions`` entry point (nothing else imports this module, so guard_kernel never
needs jupyter-mcp-server).  The guarded kernel does the enforcing on its own; this
plugin adds two things:

- before code is sent (``BEFORE_EXECUTE``, stdio mode) it asks the *target kernel*
  (:mod:`.ask`): a kernel whose ``kernel_info`` names no running guard gets nothing (``not_guarded``),
  and code the kernel's ``guard_kernel.check`` pre-flight denies is not sent (``cell_rejected``); the
  MCP process has no policy of its own;
- after a tool ran (``AFTER_TOOL_CALL``), an answer that carries a refusal's ``json:`` line
  (:mod:`guard_kernel.decision.messages`) becomes a tool error whose text is the guard's message, JSON
  line included (without the plugin the MCP server hands it back as ordinary output, ``isError``
  false, and an agent may read a refused cell as a result).  Notices (a warning, a truncation) ran:
  they stay ordinary output, with their JSON line.

What this version of jupyter-mcp-server allows (2.2.x, read from its source): ``AFTER_TOOL_CALL``
handlers with ``propagate_errors=True`` turn the call into an error.  ``BEFORE_EXECUTE`` passes
``metadata={}`` in stdio mode, and as a server extension its metadata reaches
jupyter-server-nbmodel, which does not put it on the kernel's ``execute_request`` either: requests
cannot be tagged with ``guard_actor`` or the sending tool — the kernelspec's actor (``agent``)
applies to every cell.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any, ClassVar

from jupyter_mcp_server.extensions import JupyterMCPExtension
from jupyter_mcp_server.hooks import HookEvent, HookRegistry
from mcp.server.mcpserver.exceptions import ToolError
from reactor.types import PluginManifest

from guard_kernel import __version__
from guard_kernel.decision.messages import ERRORS, iter_facts
from guard_kernel.integrations.ask import ask

log = logging.getLogger("guard_kernel.mcp")
EXECUTING_TOOLS = frozenset({"execute_code", "execute_cell", "insert_execute_code_cell"})
"""The tools whose answer carries a kernel's outputs (and so a guard refusal)."""
DENIAL_CODES = frozenset(code.value for code in ERRORS)
"""``code`` values of the guard's JSON that mean nothing ran (a truncation or a warning ran: not one)."""


def _texts(value: Any) -> Iterator[str]:
    """Every string in a tool's answer (a ToolAnswer, a list of outputs, nested mappings)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _texts(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _texts(v)
    elif hasattr(value, "model_dump"):
        yield from _texts(value.model_dump())


def guard_denial(result: Any) -> tuple[str, dict[str, Any]] | None:
    """The guard's refusal in a tool's answer: (its full message, its JSON facts), or None."""
    for text in _texts(result):
        for facts in iter_facts(text):
            if facts.get("code") in DENIAL_CODES:
                return text, facts
    return None


class GuardDenialHook:
    """``AFTER_TOOL_CALL``: a refused cell becomes a tool error carrying the guard's message and JSON."""

    propagate_errors = True

    async def on_event(self, event: Any, **kwargs: Any) -> None:
        if event != HookEvent.AFTER_TOOL_CALL or kwargs.get("tool_name") not in EXECUTING_TOOLS:
            return
        found = guard_denial(kwargs.get("result"))
        if found is not None:
            text, facts = found
            log.info("guard_kernel refused a cell sent by %s: %s", kwargs.get("tool_name"), facts.get("message"))
            raise ToolError(text.strip())


class GuardPreflightHook:
    """``BEFORE_EXECUTE`` (stdio mode): ask the target kernel before the code is sent; a kernel that is
    not guarded, or whose guard would deny the code, gets nothing and the agent a tool error."""

    propagate_errors = True

    async def on_event(self, event: Any, **kwargs: Any) -> None:
        if event != HookEvent.BEFORE_EXECUTE:
            return
        kernel_id, code, server = kwargs.get("kernel_id"), kwargs.get("code"), _server()
        if not kernel_id or not isinstance(code, str) or server is None:
            return
        refusal = await asyncio.to_thread(ask, server[0], server[1], str(kernel_id), code)
        if refusal is not None:
            log.info("guard_kernel refused code for kernel %s before sending it: %s", kernel_id,
                     refusal.facts.get("message"))
            raise ToolError(refusal.text)


def _server() -> tuple[str, str | None] | None:
    """The Jupyter server this MCP server sends code to (URL, token), or None in the server's own
    process (``local``: the extension mode, where kernels are reached in-process and the kernel's
    own refusal, turned into a tool error by :class:`GuardDenialHook`, is the answer)."""
    from jupyter_mcp_server.config import get_config

    config = get_config()
    url = str(config.code_sandbox_url or "")
    if not url.startswith(("http://", "https://")):
        return None
    return url, config.code_sandbox_token or None


class GuardKernelExtension(JupyterMCPExtension):
    """guard_kernel for jupyter-mcp-server: denials are tool errors (the kernel enforces on its own)."""

    _registered: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        if not GuardKernelExtension._registered:  # one handler per process, however often discovered
            registry = HookRegistry.get_instance()
            registry.register(GuardPreflightHook())
            registry.register(GuardDenialHook())
            GuardKernelExtension._registered = True
            log.info("guard_kernel %s: code is checked by the target kernel before it is sent, refusals are "
                     "tool errors; requests are not tagged (this jupyter-mcp-server forwards no request "
                     "metadata): the kernelspec's actor applies", __version__)

    def manifest(self) -> Any:
        return PluginManifest(name="guard_kernel", version=__version__,
                              description="guard_kernel: the guarded kernel's denials reach the agent as tool errors")


__all__ = ["DENIAL_CODES", "EXECUTING_TOOLS", "GuardDenialHook", "GuardKernelExtension", "GuardPreflightHook",
           "guard_denial"]
