"""Where the guard's own code is: the package's name and directory, from this file's place.

Security code asks this, not its own ``__file__``: the runtime hook must know every module
of the guard as the guard's own (its imports are not the user's), wherever a module sits in
the tree, and the policy loader reads its data files from one known place.
"""

from __future__ import annotations

import os

PACKAGE = __name__.partition(".")[0]
"""The top-level package name (``guard_kernel``)."""
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
"""The directory holding every module of the guard."""


def package_path(*parts: str) -> str:
    """A file shipped in the package, by its path below the package directory."""
    return os.path.join(PACKAGE_DIR, *parts)


def is_own_module(name: str) -> bool:
    """True for the package and every module below it (``guard_kernel``, ``guard_kernel.x.y``)."""
    return name == PACKAGE or name.startswith(PACKAGE + ".")


__all__ = ["PACKAGE", "PACKAGE_DIR", "is_own_module", "package_path"]
