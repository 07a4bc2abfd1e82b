"""Integrations with the tools assistants drive notebooks through; each is loaded by that tool.

``mcp``: a jupyter-mcp-server plugin (install ``guard-kernel[mcp]``; jupyter-mcp-server loads it from
its ``reactor.mcp.extensions`` entry point).  Nothing in guard_kernel imports an integration, so the
guard never needs the tool it integrates with.
"""
