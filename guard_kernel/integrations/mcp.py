"""``guard_kernel.integrations.mcp``: a jupyter-mcp-server plugin — the guard's refusals reach the
agent as MCP tool errors.

Installed with ``pip install 'guard-kernel[mcp]'``; jupyter-mcp-server loads it through the
``reactor.mcp.extensions`` entry point (nothing else imports this module, so guard_kernel never
needs jupyter-mcp-server).  The guarded kernel does the enforcing on its own; this plugin only
changes how a refusal is *delivered*: without it the MCP server hands the kernel's error back as
ordinary output text (``isError`` false), and an agent may read a refused cell as a result.  With
it, a tool answer that carries a refusal's ``json:`` line (:mod:`guard_kernel.decision.messages`)
becomes a tool error whose text is the guard's message, JSON line included.  Notices (a warning, a
truncation) ran: they stay ordinary output, with their JSON line.

What this version of jupyter-mcp-server allows (2.2.x, read from its source): ``AFTER_TOOL_CALL``
handlers with ``propagate_errors=True`` turn the call into an error.  ``BEFORE_EXECUTE`` passes
``metadata={}`` in stdio mode, and as a server extension its metadata reaches
jupyter-server-nbmodel, which does not put it on the kernel's ``execute_request`` either: requests
cannot be tagged with ``guard_actor`` or the sending tool — the kernelspec's actor (``agent``)
applies to every cell.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, ClassVar

from jupyter_mcp_server.extensions import JupyterMCPExtension
from jupyter_mcp_server.hooks import HookEvent, HookRegistry
from mcp.server.mcpserver.exceptions import ToolError
from reactor.types import PluginManifest

from guard_kernel import __version__
from guard_kernel.decision.messages import ERRORS, iter_facts

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


class GuardKernelExtension(JupyterMCPExtension):
    """guard_kernel for jupyter-mcp-server: denials are tool errors (the kernel enforces on its own)."""

    _registered: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        if not GuardKernelExtension._registered:  # one handler per process, however often discovered
            HookRegistry.get_instance().register(GuardDenialHook())
            GuardKernelExtension._registered = True
            log.info("guard_kernel %s: denials are sent as tool errors; requests are not tagged "
                     "(this jupyter-mcp-server forwards no request metadata): the kernelspec's actor applies",
                     __version__)

    def manifest(self) -> Any:
        return PluginManifest(name="guard_kernel", version=__version__,
                              description="guard_kernel: the guarded kernel's denials reach the agent as tool errors")


__all__ = ["DENIAL_CODES", "EXECUTING_TOOLS", "GuardDenialHook", "GuardKernelExtension", "guard_denial"]
