"""The pre-flight for the command line and the Python API: :mod:`guard_kernel.analysis.preflight`
(``check``, ``check_cells``, ``Report``) and the cells of a ``.py`` or ``.ipynb`` file."""

from __future__ import annotations

import json

from guard_kernel.analysis.preflight import (
    Outcome,
    Report,
    RuntimeNote,
    Unit,
    check,
    check_cells,
    looks_like_python,
)


def notebook_cells(path: str) -> list[str]:
    """The code cells of a ``.ipynb`` file, in order (a ``.py`` file is one cell)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not path.endswith(".ipynb"):
        return [text]
    nb = json.loads(text)
    out = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            src = cell.get("source", "")
            out.append("".join(src) if isinstance(src, list) else str(src))
    return out


__all__ = ["Outcome", "Report", "RuntimeNote", "Unit", "check", "check_cells", "looks_like_python",
           "notebook_cells"]
