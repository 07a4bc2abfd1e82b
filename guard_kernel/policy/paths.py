"""Path globs and resolution: every path is judged by its resolved real path.

Policy globs are relative to the session's project root (the working directory when
the policy is loaded) unless absolute.  ``*`` stays inside one path component and
``**`` crosses any number of them, as in ``.gitignore`` and pathlib.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache

_GLOB_CHARS = re.compile(r"[*?\[]")
URL = re.compile(r"^([a-z][a-z0-9+.-]*)://([^/?#]*)", re.I)
"""A URL: (scheme, authority).  ``file://`` is a local path; any other scheme is the network."""


def remote_host(text: str) -> str | None:
    """The host of *text* when it is a URL that reaches the network ("" when it names none);
    None when it is a local path (``file://`` included)."""
    m = URL.match(text)
    if m is None or m.group(1).lower() == "file":
        return None
    return m.group(2).split("@")[-1].split(":")[0]


@lru_cache(maxsize=512)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):  # "**/" matches zero or more directories
                    i += 1
                    out.append("(?:.*/)?")
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def glob_base(pattern: str) -> str:
    """The literal directory prefix of a glob (``data/raw/**`` → ``data/raw``)."""
    m = _GLOB_CHARS.search(pattern)
    head = pattern if m is None else pattern[: m.start()]
    return head.rstrip("/") if m is None else os.path.dirname(head)


def resolve(path: str | os.PathLike[str] | bytes | int, base: str | None = None) -> str:
    """The real absolute path of *path* (following symlinks in every existing part)."""
    if isinstance(path, int):  # a file descriptor: look its path up where the OS says
        try:
            return os.readlink(f"/proc/self/fd/{path}")
        except OSError:
            return f"<fd {path}>"
    p = os.fsdecode(os.fspath(path))
    p = os.path.expanduser(p)
    if not os.path.isabs(p):
        p = os.path.join(base or os.getcwd(), p)
    return os.path.realpath(p)


@dataclass(frozen=True)
class PathGlob:
    """A policy glob anchored at an absolute, symlink-resolved base."""

    text: str
    """The glob as written in the policy file."""
    absolute: str
    """The glob with its literal prefix resolved to a real absolute path."""

    @classmethod
    def make(cls, text: str, root: str) -> PathGlob:
        base = glob_base(text)
        rest = text[len(base) :].lstrip("/") if base else text
        real_base = resolve(base or ".", root)
        absolute = real_base if not rest else real_base.rstrip("/") + "/" + rest
        return cls(text, absolute)

    def matches(self, real_path: str) -> bool:
        """Whether the resolved *real_path* falls under this glob (or is its directory)."""
        if _glob_regex(self.absolute).match(real_path):
            return True
        # "scratch/**" also covers the directory "scratch" itself
        return self.absolute.endswith("/**") and real_path == self.absolute[:-3]

    @property
    def root(self) -> str:
        """The literal directory under which every match lies."""
        return glob_base(self.absolute) or "/"


def any_match(globs: tuple[PathGlob, ...], real_path: str) -> PathGlob | None:
    """The first glob of *globs* that covers *real_path*, if any."""
    for g in globs:
        if g.matches(real_path):
            return g
    return None
