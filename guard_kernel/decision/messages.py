"""The one machine-readable line that ends every message the guard shows: ``json: {...}``.

A denial, a warning, a truncation, a lock refusal, a guard that could not start, a kernel that is
not guarded: people read the text above the line, programs and agents read the line.  Its shape
is one JSON Schema, versioned by ``v`` and shipped beside this module (``message.schema.json``);
``docs/assistants.md`` documents it.  A reader finds the line with :func:`find_facts`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

MESSAGE_VERSION = 1
"""``v`` of every JSON line; raised only when a field changes meaning or goes away."""
SCHEMA_FILE = Path(__file__).with_name("message.schema.json")
"""The JSON Schema of the line (draft 2020-12), in the installed package."""
PREFIX = "json: "
"""How the line starts: the last line of every message the guard shows."""


class Code(str, Enum):
    """What a message is about (``code`` of its JSON line)."""

    POLICY_VIOLATION = "policy_violation"
    """An action was denied by the policy while the cell ran; it did not happen (earlier lines did)."""
    CELL_REJECTED = "cell_rejected"
    """A whole cell or request was refused before any of it ran."""
    GUARD_LOCKED = "guard_locked"
    """The guard is locked: it cannot be unloaded, reloaded or re-configured from inside the session."""
    GUARD_UNAVAILABLE = "guard_unavailable"
    """The guard could not start (bad policy, broken install): this session runs no code."""
    NOT_GUARDED = "not_guarded"
    """The kernel asked to run code is not a guarded one (said by tools that check before sending)."""
    TRUNCATED = "truncated"
    """A result was cut at the row cap: it ran, and fewer rows came back than exist."""
    WARNING = "warning"
    """An action ran, with a warning (a ``warn`` rule, or a denial in audit mode: ``would_deny``)."""
    ALLOWED = "allowed"
    """An action was allowed (``%guard explain --json`` of an allowed decision)."""
    NOTICE = "notice"
    """Information about the session itself (loaded, unloaded)."""

    def __str__(self) -> str:
        return self.value


ERRORS = frozenset({Code.POLICY_VIOLATION, Code.CELL_REJECTED, Code.GUARD_LOCKED, Code.GUARD_UNAVAILABLE,
                    Code.NOT_GUARDED})
"""Codes that mean the code did not run (what an agent must treat as a failed call)."""


def facts(code: Code, message: str, hint: str | None = None, **fields: Any) -> dict[str, Any]:
    """A message's JSON facts: version, code, the short human line, what to do instead, and *fields*."""
    return {"v": MESSAGE_VERSION, "code": code.value, "message": message, "hint": hint,
            **{k: v for k, v in fields.items() if v is not None}}


def json_line(data: Mapping[str, Any]) -> str:
    """The machine-readable last line of a message: ``json: {...}`` on one line."""
    return PREFIX + json.dumps(data, default=str)


def iter_facts(text: str) -> Iterator[dict[str, Any]]:
    """Every guard JSON line in *text* (an output, a traceback, a tool's answer), parsed."""
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith(PREFIX + "{"):
            continue
        try:
            data = json.loads(line[len(PREFIX):])
        except ValueError:
            continue
        if isinstance(data, dict) and "code" in data and "v" in data:
            yield data


def find_facts(text: str) -> dict[str, Any] | None:
    """The last guard JSON line in *text*, or None."""
    found = None
    for found in iter_facts(text):  # noqa: B007 - the last one is the message's own
        pass
    return found


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema of the line (a copy is shipped in the package)."""
    data: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return data


__all__ = ["ERRORS", "MESSAGE_VERSION", "PREFIX", "SCHEMA_FILE", "Code", "facts", "find_facts", "iter_facts",
           "json_line", "schema"]
