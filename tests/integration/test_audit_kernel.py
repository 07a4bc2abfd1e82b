"""The audit in a real kernel: fail closed when it cannot be written, and what a killed kernel leaves.

A full disk is a real small tmpfs mounted for the test (skipped where the machine does not let
the tests mount one; tests/audit/test_audit.py covers the same path with a test double at the
write call).  A removed audit folder needs nothing special.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import GuardedKernel, blocked

from guard_kernel.audit import verify
from guard_kernel.demo import Workspace

WRITE = "import pandas as pd\npd.DataFrame({{'a': [1, 2]}}).to_csv('scratch/{name}', index=False)"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a disk the test can fill."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the write-call double covers it")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_refuses_actions_until_there_is_room_again(
        kernel_factory: Callable[..., GuardedKernel], project: Workspace, tmpfs: Path) -> None:
    k = kernel_factory(policy="default", actor="agent", audit_dir=tmpfs / "audit")
    assert k.load_result is not None and k.load_result.ok, k.load_result
    assert k.run("import pandas as pd\nx = 40").ok
    filler = _fill(tmpfs)
    written: list[Path] = []
    try:
        # the audit file's last page still has room: exports go on (and are recorded) until a
        # record no longer fits; that export must not happen
        for i in range(40):
            out = project.scratch / f"full-disk-{i}.csv"
            res = k.run(WRITE.format(name=out.name))
            if not res.ok:
                break
            written.append(out)
        assert blocked(res), res
        assert "the audit cannot be written" in res.traceback and "No space left" in res.traceback
        assert not out.exists()  # the denied action did not happen
        assert all(p.exists() for p in written)
        res = k.run("x = x + 2")  # nothing runs while the audit cannot be written
        assert blocked(res) and "nothing in this cell ran" in res.traceback, res
    finally:
        filler.unlink()
        for p in written:
            p.unlink()
    assert k.run("x = x + 1").ok
    assert k.value("x") == 41  # the refused cell did not run
    res = k.run(WRITE.format(name=out.name))
    assert res.ok and out.exists(), res
    out.unlink()
    recs = k.records()
    gaps = [r for r in recs if r["kind"] == "audit_gap"]
    assert len(gaps) == 1 and gaps[0]["refused"] >= 2 and "No space left" in gaps[0]["reason"]
    assert verify(str(k.audit_files()[0])).ok


def test_a_removed_audit_folder_refuses_every_action(
        kernel_factory: Callable[..., GuardedKernel], project: Workspace, tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    k = kernel_factory(policy="default", actor="agent", audit_dir=audit)
    assert k.load_result is not None and k.load_result.ok, k.load_result
    assert k.run("import pandas as pd").ok
    shutil.rmtree(audit)
    out = project.scratch / "no-audit.csv"
    res = k.run(WRITE.format(name=out.name))
    assert blocked(res) and "removed or replaced" in res.traceback, res
    assert not out.exists()
    audit.mkdir()  # a new folder does not bring the session's audit back: it keeps refusing
    for code in ("1 + 1", WRITE.format(name=out.name)):
        res = k.run(code)
        assert blocked(res) and "start a new session" in res.traceback, res
    assert not out.exists()
    assert list(audit.iterdir()) == []
