"""The guard's own recording path, pinned at load: a cell that replaces it is seen and undone.

The layers' tamper checks look at the hooks on *other* libraries (DuckDB, pandas, the shell).
This module looks at the guard itself: the session guard's audit sink and redactor, and the
methods every record goes through (``Guard.record``/``_write``, the sink's ``write``). Without it
one cell — ``guard.audit.write = lambda kind, **f: dict(f)`` — silenced the audit of every later
cell while the decisions went on (found by ``guard-kernel audit crosscheck``).

It is a guardrail like the rest of the in-process guard: code that also unregisters the checks
that call :func:`broken` is out of its reach; the launcher's file and the server's record are
what hold then (docs/threat-model.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# the guard's attributes whose object must stay the one it was given (the redactor is not one:
# `set_policy` makes a new one; its class's functions are pinned instead)
_OBJECTS = ("audit",)


def _functions(cls: type) -> dict[str, Any]:
    """The functions a class defines itself (what a cell would replace to change its behaviour)."""
    return {name: fn for name, fn in vars(cls).items() if callable(fn) or isinstance(fn, (staticmethod, classmethod))}


@dataclass(frozen=True)
class Pins:
    """What the guard's recording path was when the extension loaded."""

    guard: Any
    objects: dict[str, Any]
    """attribute name on the guard → the object it held."""
    functions: tuple[tuple[type, dict[str, Any]], ...]
    """each class on the path → the functions it defined."""

    def _instances(self) -> list[tuple[str, Any]]:
        return [("guard", self.guard), *self.objects.items(), ("redactor", getattr(self.guard, "redactor", None))]

    def broken(self) -> list[str]:
        """What was replaced (``[]``: the recording path is as it was loaded)."""
        out = [f"guard.{name}" for name, obj in self.objects.items() if getattr(self.guard, name, None) is not obj]
        for cls, fns in self.functions:
            out += [f"{cls.__name__}.{name}" for name, fn in fns.items() if vars(cls).get(name) is not fn]
        for label, obj in self._instances():
            own = getattr(obj, "__dict__", {})
            out += [f"{label}.{name} (on the instance)" for name in own if callable(getattr(type(obj), name, None))]
        return out

    def restore(self) -> None:
        """Put the recording path back as it was loaded."""
        for name, obj in self.objects.items():
            setattr(self.guard, name, obj)
        for cls, fns in self.functions:
            for name, fn in fns.items():
                if vars(cls).get(name) is not fn:
                    setattr(cls, name, fn)
        for _label, obj in self._instances():
            own = getattr(obj, "__dict__", {})
            for name in [n for n in own if callable(getattr(type(obj), n, None))]:
                del own[name]


def pin(guard: Any) -> Pins:
    """Pin *guard*'s recording path as it is now."""
    objects = {name: getattr(guard, name) for name in _OBJECTS if hasattr(guard, name)}
    classes = [type(guard), *(type(obj) for obj in objects.values())]
    if getattr(guard, "redactor", None) is not None:
        classes.append(type(guard.redactor))
    return Pins(guard, objects, tuple((cls, _functions(cls)) for cls in dict.fromkeys(classes)))
