"""One small protocol every enforcement layer answers: install, uninstall, and "are you still in place?".

The extension installs layers through it, and the guarded kernel asks it before every request:
a cell that put back ``duckdb.connect``, a pandas writer or the audit hook's handlers is caught
at the next request, recorded as tampering, and its layer put back (see
:func:`guard_kernel.enforce.ipython.extension.tampered`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from guard_kernel.enforce import lazy

if TYPE_CHECKING:
    from guard_kernel.decision.guard import Guard


class Layer(Protocol):
    """An enforcement layer of a session."""

    name: str
    """Its name in the audit (``duckdb_gate``, ``dataframe``, ``runtime``)."""

    def install(self) -> None:
        """Put the layer on (again: repair what code removed)."""

    def uninstall(self) -> None:
        """Take the layer off (tests, and unloading an unlocked guard)."""

    def is_installed(self) -> bool:
        """Whether every hook of the layer is where it was put."""

    def tampered(self) -> list[str]:
        """What code removed or replaced (empty when :meth:`is_installed`)."""


class Wrappers:
    """The wrappers a layer put on a library: what :meth:`tampered` expects to find in place, and
    what :meth:`repair` puts back.  One list per layer module (DuckDB gate, dataframe, psycopg)."""

    def __init__(self) -> None:
        self._items: list[tuple[Any, str, Any]] = []

    def add(self, owner: Any, name: str, wrapper: Any) -> None:
        """Remember that ``owner.name`` is now *wrapper*."""
        self._items.append((owner, name, wrapper))

    def clear(self) -> None:
        self._items.clear()

    @staticmethod
    def _current(owner: Any, name: str) -> Any:
        # a class's own dict: getattr would bind a classmethod and never be the wrapper itself
        return owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)

    def tampered(self) -> list[str]:
        """``owner.name`` of every wrapper code has replaced."""
        return [f"{getattr(o, '__name__', o)}.{n}" for o, n, w in self._items if self._current(o, n) is not w]

    def repair(self) -> None:
        """Put every replaced wrapper back."""
        for owner, name, wrapper in self._items:
            if self._current(owner, name) is not wrapper:
                setattr(owner, name, wrapper)


class ModuleLayer:
    """A layer module (``install(guard)``, ``uninstall()``, ``installed()``, ``tampered()``, ``repair()``),
    installed now or — with *library* — right after user code imports that library."""

    def __init__(self, name: str, module: str, guard: Guard, library: str | None = None) -> None:
        self.name, self.module, self.guard, self.library = name, module, guard, library
        self._unhook: Callable[[], None] | None = None
        self.__name__ = module  # what an error message names

    def _mod(self) -> Any:
        """The layer module if it is in use (imported and installed), else None."""
        return sys.modules.get(self.module) if self.library is None or self.library in sys.modules else None

    def install(self) -> None:
        if self.library is None:
            mod = importlib.import_module(self.module)
            mod.install(self.guard)
            mod.repair()
            return
        if self._unhook is None:
            self._unhook = lazy.when_imported(self.library, self._on_import)
        mod = self._mod()
        if mod is not None:
            mod.repair()

    def _on_import(self, library: Any) -> None:
        importlib.import_module(self.module).install(self.guard)

    def uninstall(self) -> None:
        if self._unhook is not None:
            self._unhook()
            self._unhook = None
        mod = sys.modules.get(self.module)
        if mod is not None:
            mod.uninstall()

    def tampered(self) -> list[str]:
        mod = self._mod()
        if mod is None:
            if self.library is not None and self.library in sys.modules:
                return [f"{self.name} layer missing on {self.library}"]
            return []
        if not mod.installed():
            return [f"{self.name} layer uninstalled"]
        return [f"{self.name}: {what}" for what in mod.tampered()]

    def is_installed(self) -> bool:
        return not self.tampered()


__all__ = ["Layer", "ModuleLayer", "Wrappers"]
