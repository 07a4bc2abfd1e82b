"""The audit writer: records, the hash chain, verify, torn lines, and a killed writer."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from guard_kernel.audit import GENESIS, AuditUnavailable, AuditWriter, chain_hash, read_records, verify

REPO = Path(__file__).resolve().parents[2]
POLICY = {"name": "p", "sha256": "ab" * 32, "file": "/x/p.yaml"}
REQUIRED = {"seq", "ts", "session", "actor", "environment", "policy", "kind", "prev", "hash"}


def writer(path: Path, **kw: object) -> AuditWriter:
    """A writer on *path*; a new file gets its session header first (seq 1)."""
    w = AuditWriter(str(path), session="s1", actor="agent", environment="default", policy=POLICY, **kw)  # type: ignore[arg-type]
    if w.count == 0:
        w.write("session", action=None, resource=None, decision="allow", rules=[], message="header")
    return w


def write_some(path: Path, n: int = 5) -> list[dict[str, object]]:
    w = writer(path)
    out = [w.write("sql", action="sql.read", resource=f"t{i}", decision="allow", rules=[], message="")
           for i in range(n)]
    w.close()
    return out


def test_records_have_the_fields_and_a_valid_chain(tmp_path: Path) -> None:
    path = tmp_path / "a" / "s1.jsonl"  # the directory is created
    written = write_some(path, 5)
    recs = list(read_records(str(path)))
    assert recs[1:] == written and recs[0]["kind"] == "session"
    for i, r in enumerate(recs, 1):
        assert r.keys() >= REQUIRED
        assert r["seq"] == i and r["ts"].endswith("Z") and "T" in r["ts"]
        assert r["policy"] == {"name": "p", "sha256": POLICY["sha256"]}
        assert r["prev"] == (GENESIS if i == 1 else recs[i - 2]["hash"])
        assert r["hash"] == chain_hash(r["prev"], r)
    assert verify(str(path)).ok and verify(str(path)).records == 6


def test_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    w = writer(path)
    w.write("cell", code="print('a\\nb')\n# naïve ünïcode", decision="allow")
    w.close()
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2 and lines[1].endswith(b"\n")
    assert json.loads(lines[1])["code"] == "print('a\\nb')\n# naïve ünïcode"


def _edit(path: Path, lineno: int, change: dict[str, object]) -> None:
    lines = path.read_text().splitlines(keepends=True)
    rec = json.loads(lines[lineno])
    rec.update(change)
    lines[lineno] = json.dumps(rec) + "\n"
    path.write_text("".join(lines))


TAMPERING = {
    # how the file is changed → what verify must say, and the line it must name
    "edit-decision": ("record seq 3 was edited", 3),
    "edit-resource": ("record seq 5 was edited", 5),
    "drop": ("seq 4 where 3 was expected (a record was deleted)", 3),
    "swap": ("seq 3 where 2 was expected", 2),
    "duplicate": ("seq 6 where 7 was expected (a record was duplicated or reordered)", 7),
    "fake-hash": ("record seq 3 does not follow the previous record's hash", 3),
    "truncate-mid-line": ("line 6 is cut short", 6),
    "splice": ("belongs to session 'other', not 's1' (spliced in from another session's file)", 4),
    "splice-rechained": ("belongs to session 'other'", 4),
    "drop-header": ("the session header is missing", 1),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERING))
def test_verify_detects_tampering_and_names_the_record(tmp_path: Path, tamper: str) -> None:
    path = tmp_path / "s.jsonl"
    write_some(path, 5)  # header + 5 records
    lines = path.read_text().splitlines(keepends=True)
    if tamper == "edit-decision":
        _edit(path, 2, {"decision": "deny"})
    elif tamper == "edit-resource":
        _edit(path, 4, {"resource": "nothing to see"})
    elif tamper == "drop":
        path.write_text("".join(lines[:2] + lines[3:]))
    elif tamper == "swap":
        path.write_text("".join([lines[0], lines[2], lines[1], *lines[3:]]))
    elif tamper == "duplicate":
        path.write_text("".join([*lines, lines[-1]]))
    elif tamper == "fake-hash":  # recompute this record's hash: the next record's prev no longer matches
        rec = json.loads(lines[1])
        rec["decision"] = "deny"
        rec["hash"] = chain_hash(rec["prev"], rec)
        lines[1] = json.dumps(rec) + "\n"
        path.write_text("".join(lines))
    elif tamper == "truncate-mid-line":
        path.write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    elif tamper in ("splice", "splice-rechained"):
        other = tmp_path / "other.jsonl"
        w = AuditWriter(str(other), session="other", actor="agent", environment="default", policy=POLICY)
        w.write("session", decision="allow")
        for i in range(5):
            w.write("sql", resource=f"o{i}", decision="allow")
        w.close()
        theirs = other.read_text().splitlines(keepends=True)
        if tamper == "splice-rechained":  # even with seq, prev and hash made to fit, the session differs
            prev = json.loads(lines[2])["hash"]
            rec = json.loads(theirs[3])
            rec.update(seq=4, prev=prev)
            rec["hash"] = chain_hash(prev, rec)
            theirs[3] = json.dumps(rec) + "\n"
        path.write_text("".join(lines[:3] + theirs[3:4] + lines[4:]))
    elif tamper == "drop-header":
        path.write_text("".join(lines[1:]))
    res = verify(str(path))
    why, line = TAMPERING[tamper]
    assert not res.ok and why in str(res.problem), res
    assert res.line == line and str(res.problem).startswith(f"line {line}"), res


def test_torn_last_line_is_skipped_by_readers(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_some(path, 3)
    with open(path, "ab") as f:
        f.write(b'{"seq": 5, "kind": "sql", "resou')  # a write cut short by a power cut
    recs = list(read_records(str(path)))
    assert [r["seq"] for r in recs] == [1, 2, 3, 4]
    res = verify(str(path))
    assert not res.ok and res.records == 4 and res.partial_tail == 32
    assert "cut short" in str(res.problem) and "after record 4" in str(res.problem)


def test_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert list(read_records(str(tmp_path / "none.jsonl"))) == []


def test_a_restarted_writer_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_some(path, 3)
    w = writer(path)
    assert w.count == 4
    w.write("sql", decision="allow")
    w.close()
    assert [r["seq"] for r in read_records(str(path))] == [1, 2, 3, 4, 5]
    assert verify(str(path)).ok


def test_closed_writer_refuses(tmp_path: Path) -> None:
    w = writer(tmp_path / "s.jsonl")
    w.close()
    w.close()  # closing twice is harmless
    with pytest.raises(ValueError):
        w.write("sql")


def test_threads_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    w = writer(path, fsync_every=7)

    def work(t: int) -> None:
        for i in range(50):
            w.write("runtime", thread=t, i=i, decision="allow")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    res = verify(str(path))
    assert res.ok and res.records == 201


KILLED = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from guard_kernel.audit import AuditWriter
w = AuditWriter({path!r}, session="s1", actor="agent", environment="default",
                policy={{"name": "p", "sha256": "0" * 64}}, fsync_every=1000)
w.write("session", decision="allow")
for i in range({n}):
    w.write("sql", action="sql.read", resource="t%d" % i, decision="allow", rules=[], message="")
print("written", flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close(), no fsync, no atexit
"""


def test_a_killed_writer_loses_no_completed_record(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    proc = subprocess.run([sys.executable, "-c", KILLED.format(repo=str(REPO), path=str(path), n=250)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "written"
    recs = list(read_records(str(path)))
    assert [r["seq"] for r in recs] == list(range(1, 252))
    res = verify(str(path))
    assert res.ok and res.ended == "ended without a close record after seq 251"


def test_a_writer_continues_a_killed_writers_file(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    proc = subprocess.run([sys.executable, "-c", KILLED.format(repo=str(REPO), path=str(path), n=3)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert path.read_bytes().endswith(b"\n") and b"\0" not in path.read_bytes()  # plain JSON Lines
    with open(path, "ab") as f:  # an unfinished record, as if the power went mid-write
        f.write(b'{"seq": 5, "kind": "sql", "resource": "TORN')
    w = writer(path)
    assert w.count == 4
    w.write("sql", decision="allow")
    w.close()
    data = path.read_bytes()
    assert b"TORN" not in data
    assert [r["seq"] for r in read_records(str(path))] == [1, 2, 3, 4, 5]
    assert verify(str(path)).ok


def test_the_live_file_is_plain_json_lines(tmp_path: Path) -> None:
    """While a writer is open, the file is exactly its records: grep and jq read it as text."""
    path = tmp_path / "s.jsonl"
    w = writer(path)
    for i in range(3):
        w.write("sql", resource=f"t{i}", decision="allow")
        data = path.read_bytes()
        assert b"\0" not in data and data.endswith(b"\n")
        assert [json.loads(x)["resource"] for x in data.splitlines()[1:]] == [f"t{j}" for j in range(i + 1)]
    grep = subprocess.run(["grep", "-c", "t1", str(path)], capture_output=True, text=True)
    assert grep.stdout.strip() == "1"  # not "Binary file matches"
    w.close()


def test_an_older_writers_nul_tail_is_cut_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_some(path, 2)
    with open(path, "ab") as f:
        f.write(b"\0" * 4096)  # what the memory-mapped writer of earlier versions left when killed
    assert [r["seq"] for r in read_records(str(path))] == [1, 2, 3]
    w = writer(path)
    w.write("sql", decision="allow")
    w.close()
    assert b"\0" not in path.read_bytes() and verify(str(path)).ok


# ------------------------------------------------------------------ fail closed


def test_a_removed_file_fails_closed_for_good(tmp_path: Path) -> None:
    path = tmp_path / "d" / "s.jsonl"
    w = writer(path)
    w.write("sql", decision="allow")
    shutil.rmtree(path.parent)
    with pytest.raises(AuditUnavailable) as err:
        w.write("sql", decision="allow")
    assert err.value.permanent and "removed" in str(err.value)
    os.makedirs(path.parent)  # a folder put back does not bring the chain back
    with pytest.raises(AuditUnavailable):
        w.resume()
    w.close()


def test_a_replaced_file_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    w = writer(path)
    w.write("sql", decision="allow")
    other = tmp_path / "other.jsonl"
    other.write_text("")
    os.replace(other, path)
    with pytest.raises(AuditUnavailable, match="replaced"):
        w.write("sql", decision="allow")
    assert path.read_text() == ""  # nothing written into the impostor
    w.close()


def test_a_failed_write_leaves_whole_records_and_resumes_with_a_gap_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test double at the write call (a disk that fills mid-record, then has room again);
    the real full disk is tested on a tmpfs in tests/integration/test_audit_kernel.py."""
    import guard_kernel.audit.writer as mod

    path = tmp_path / "s.jsonl"
    w = writer(path)
    w.write("sql", resource="before", decision="allow")
    real = os.pwrite
    full = True

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if full:
            real(fd, data[:10], offset)  # a short write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(mod.os, "pwrite", pwrite)
    for _ in range(2):
        with pytest.raises(AuditUnavailable, match="No space left") as err:
            w.write("sql", resource="lost", decision="allow")
        assert not err.value.permanent
        assert path.read_bytes().endswith(b"}\n")  # the torn bytes were cut off again
    full = False
    w.write("sql", resource="after", decision="allow")
    w.close()
    recs = list(read_records(str(path)))
    assert [r["kind"] for r in recs] == ["session", "sql", "audit_gap", "sql"]
    assert recs[2]["refused"] == 2 and "No space left" in recs[2]["reason"]
    assert [r["seq"] for r in recs] == [1, 2, 3, 4] and verify(str(path)).ok


def test_an_open_writers_file_reads_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    w = writer(path)
    for i in range(3):
        w.write("sql", resource=f"t{i}", decision="allow")
    assert [r["seq"] for r in read_records(str(path))] == [1, 2, 3, 4]
    assert verify(str(path)).ok and verify(str(path)).records == 4
    w.close()
    assert path.stat().st_size == sum(len(x) for x in path.read_bytes().splitlines(keepends=True))


def test_big_records(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    w = writer(path, fsync_every=10_000)
    big = "x" * 50_000
    for i in range(60):  # ~3 MiB: the map is resized twice
        w.write("cell", code=big, i=i, decision="allow")
    w.close()
    assert [r["i"] for r in list(read_records(str(path)))[1:]] == list(range(60))
    assert verify(str(path)).ok


def test_unreadable_lines_are_kept_when_a_writer_reopens(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_some(path, 3)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"not json\n" + b"".join(lines[1:]))
    w = writer(path)
    w.write("sql", decision="allow")
    w.close()
    assert path.read_bytes().startswith(lines[0] + b"not json\n" + b"".join(lines[1:]))
    assert not verify(str(path)).ok  # the damage stays visible


def _in_a_child(w: AuditWriter, work: Callable[[AuditWriter], object]) -> int:
    """Fork; the child runs ``work(w)`` and exits, the parent waits; returns the child's pid."""
    w.write("sql", resource="before", decision="allow")
    pid = os.fork()
    if pid == 0:
        try:
            work(w)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    w.write("sql", resource="after", decision="allow")
    w.close()
    return pid


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_that_writes_nothing_leaves_the_parents_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    _in_a_child(writer(path), lambda w: w.close())  # closing must not cut or sync the parent's file
    assert [r["resource"] for r in read_records(str(path))][1:] == ["before", "after"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_writes_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    # the child's records must not land on the parent's offsets
    pid = _in_a_child(writer(path), lambda w: (w.write("sql", resource="child", decision="allow"), w.close()))
    assert [r["resource"] for r in read_records(str(path))][1:] == ["before", "after"]
    assert verify(str(path)).ok
    child = tmp_path / f"s.fork-{pid}.jsonl"
    recs = list(read_records(str(child)))
    assert [p.name for p in tmp_path.iterdir() if ".fork-" in p.name] == [child.name]
    assert [r["kind"] for r in recs] == ["fork", "sql"] and recs[1]["resource"] == "child"
    assert recs[0]["parent_seq"] == 2 and recs[0]["session"] == f"s1.fork-{pid}"
    assert verify(str(child)).ok


def test_file_mode_is_not_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_some(path, 1)
    assert os.stat(path).st_mode & 0o007 == 0


def test_verify_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from guard_kernel.cli.main import main

    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    write_some(good, 3)
    write_some(bad, 3)
    _edit(bad, 1, {"decision": "deny"})
    assert main(["verify", str(good)]) == 0
    assert "ok, hash chain intact (4 records)" in capsys.readouterr().out
    assert main(["verify", str(good), str(bad)]) == 1
    assert "BROKEN" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "missing.jsonl")]) == 2


def test_verify_catches_a_byte_edit_that_keeps_the_writers_line_shape(tmp_path: Path) -> None:
    """The fast path hashes a writer-shaped line as its bytes: an edit in place is still caught."""
    path = tmp_path / "s.jsonl"
    write_some(path, 3)
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"resource":"t1"', b'"resource":"t9"')
    path.write_bytes(b"".join(lines))
    res = verify(str(path))
    assert not res.ok and res.problem == "line 3: record seq 3 was edited (its hash does not match its content)"
    # the same record re-spelled (spaces, other key order) but unchanged still verifies
    lines = data.splitlines(keepends=True)
    lines[2] = (json.dumps(dict(reversed(list(json.loads(lines[2]).items()))), indent=None) + "\n").encode()
    path.write_bytes(b"".join(lines))
    assert verify(str(path)).ok
