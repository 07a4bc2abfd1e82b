"""Jupyter Server extension for guard_kernel (audit pages, Contents-API guard).

Placeholder package: the server extension arrives with its own issue.
"""

__all__: list[str] = []
