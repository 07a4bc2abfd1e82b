"""The Landlock binding against this machine's kernel: a forked child restricts itself and tries."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from guard_kernel.enforce import landlock

ABI = landlock.abi_version()
pytestmark = pytest.mark.skipif(ABI < 1, reason="Landlock is not available on this machine")


def in_child(fn: object) -> int:
    """Run *fn* in a forked child; its return value (0–255) is the child's exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            code = int(fn())  # type: ignore[operator]
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_writes_only_beneath_allowed_paths(tmp_path: Path) -> None:
    ok, no = tmp_path / "ok", tmp_path / "no"
    ok.mkdir()
    no.mkdir()
    (no / "existing.txt").write_text("keep")

    def child() -> int:
        rs = landlock.Ruleset(landlock.fs_changes(ABI))
        rs.allow_path(str(ok), landlock.fs_changes(ABI))
        rs.restrict_self()
        (ok / "a.txt").write_text("written")
        refused = 0
        for attempt in (lambda: (no / "b.txt").write_text("x"), lambda: os.remove(no / "existing.txt"),
                        lambda: os.mkdir(no / "d"), lambda: (no / "existing.txt").open("a")):
            try:
                attempt()
            except PermissionError:
                refused += 1
        assert (no / "existing.txt").read_text() == "keep"  # reading stays allowed
        return refused

    assert in_child(child) == 4
    assert (ok / "a.txt").read_text() == "written"
    assert sorted(p.name for p in no.iterdir()) == ["existing.txt"]


@pytest.mark.skipif(ABI < 4, reason="TCP rules need Landlock ABI 4")
def test_tcp_connect_only_to_allowed_ports() -> None:
    a, b = socket.socket(), socket.socket()
    for s in (a, b):
        s.bind(("127.0.0.1", 0))
        s.listen(1)
    pa, pb = a.getsockname()[1], b.getsockname()[1]

    def child() -> int:
        rs = landlock.Ruleset(landlock.fs_changes(ABI), landlock.NET_CONNECT_TCP)
        rs.allow_port(pa)
        rs.restrict_self()
        socket.create_connection(("127.0.0.1", pa), timeout=5).close()
        try:
            socket.create_connection(("127.0.0.1", pb), timeout=5)
        except PermissionError:
            return 7
        return 0

    try:
        assert in_child(child) == 7
    finally:
        a.close()
        b.close()


def test_a_restriction_survives_exec(tmp_path: Path) -> None:
    def child() -> int:
        rs = landlock.Ruleset(landlock.fs_changes(ABI))
        rs.restrict_self()
        return os.system(f"touch {tmp_path / 'after-exec'} 2>/dev/null") >> 8

    assert in_child(child) != 0
    assert not (tmp_path / "after-exec").exists()
