"""The guard's recording path is pinned: each way a cell could silence the audit is seen and undone.

Real guard, real audit file: after ``restore`` the next record is on disk and the chain verifies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from guard_kernel.audit import AuditWriter, read_records, verify
from guard_kernel.decision.guard import Guard
from guard_kernel.enforce.ipython import pins
from guard_kernel.policy import builtin_policy


def _noop(*a: Any, **k: Any) -> dict[str, Any]:
    return {}


class _Sink:
    """A sink that writes nothing (what a cell would put in the guard's place)."""

    path = "/nowhere"
    closed = False

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


# (what the cell does, what broken() names)
BREAKS: list[tuple[str, Callable[[Guard], None], str]] = [
    ("sink write on the instance", lambda g: setattr(g.audit, "write", _noop), "audit.write (on the instance)"),
    ("sink write on the class", lambda g: setattr(AuditWriter, "write", _noop), "AuditWriter.write"),
    ("sink replaced", lambda g: setattr(g, "audit", _Sink()), "guard.audit"),
    ("record on the instance", lambda g: setattr(g, "record", _noop), "guard.record (on the instance)"),
    ("_write on the class", lambda g: setattr(Guard, "_write", _noop), "Guard._write"),
    ("redactor's fields", lambda g: object.__setattr__(g.redactor, "fields", lambda f: {}),
     "redactor.fields (on the instance)"),
]


@pytest.fixture
def guard(tmp_path: Path) -> Iterator[Guard]:
    g = Guard(builtin_policy(), actor="agent", audit_dir=str(tmp_path / "audit"))
    yield g
    g.close()


@pytest.mark.parametrize(("what", "brk", "named"), BREAKS, ids=[b[0] for b in BREAKS])
def test_a_replaced_recording_path_is_named_and_put_back(guard: Guard, what: str,
                                                         brk: Callable[[Guard], None], named: str) -> None:
    pinned = pins.pin(guard)
    assert pinned.broken() == []
    before = len(list(read_records(guard.audit_path)))
    brk(guard)
    try:
        assert named in pinned.broken(), (what, pinned.broken())
    finally:
        pinned.restore()  # also puts a class's function back for the other tests
    assert pinned.broken() == []
    guard.record("cell", action=None, resource="cell[1]", decision="allow", rules=[], message="after")
    records = list(read_records(guard.audit_path))
    assert len(records) == before + 1 and records[-1]["message"] == "after"
    assert verify(guard.audit_path).ok


def test_a_new_policy_is_not_a_tamper(guard: Guard) -> None:
    """``set_policy`` makes a new redactor: the guard's own change, not a cell's."""
    pinned = pins.pin(guard)
    guard.set_policy(builtin_policy())
    assert pinned.broken() == []
