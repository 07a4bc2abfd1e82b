"""PyYAML, imported without compiling one pattern it only needs for pure-Python parsing.

``yaml.reader.Reader.NON_PRINTABLE`` is a character class over all of Unicode: compiling it
takes ~5 ms, a sixth of the guard's start-up in a kernel (measured; see benchmarks/), and only
PyYAML's pure-Python reader uses it.  Policies are read with libyaml (``CSafeLoader``), so the
pattern is compiled on its first use instead, if there is one.  Any other pattern, and the
same pattern if a PyYAML release changes it, is compiled as usual.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

_NON_PRINTABLE = "[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010ffff]"


class _LazyPattern:
    """Stands in for a compiled pattern; compiles it on the first attribute asked for."""

    __slots__ = ("_compiled", "_flags", "_pattern")

    def __init__(self, pattern: str, flags: int) -> None:
        self._pattern, self._flags = pattern, flags
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, name: str) -> Any:
        if self._compiled is None:
            self._compiled = re.compile(self._pattern, self._flags)
        return getattr(self._compiled, name)


def _import() -> Any:
    if "yaml" in sys.modules:
        return sys.modules["yaml"]
    real = re.compile

    def compile(pattern: Any, flags: int = 0) -> Any:
        if pattern == _NON_PRINTABLE and isinstance(pattern, str):
            return _LazyPattern(pattern, flags)
        return real(pattern, flags)

    re.compile = compile  # only while yaml's modules run their top level (the import lock is held)
    try:
        import yaml
    finally:
        re.compile = real
    return yaml


if TYPE_CHECKING:
    import yaml
else:
    yaml = _import()

__all__ = ["yaml"]
