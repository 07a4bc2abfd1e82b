"""The audit: hash-chained writes at each fsync schedule, verifying a long file, and showing it.

"Plain" for writes is the same record as plain JSON Lines through ``os.write`` with no
chain and no fsync — what any append-only log would pay — so the ratio shows what the
chain and the fsync schedule cost on top.  "Plain" for verify is reading and parsing
the same file without checking hashes.
"""

from __future__ import annotations

import json
import os
import time

from .harness import Config, Result, Stats, Timer, alternate, at_least, at_most, silenced_gc

GROUP = "audit"

# A typical decision record, as Guard.record_decision writes it for a DuckDB statement.
FIELDS = {
    "action": "sql.read", "resource": "warehouse.orders", "decision": "allow",
    "rules": [{"id": "defaults.read", "file": "default.yaml", "line": 0}], "message": "",
    "statement": "SELECT channel, sum(amount) AS revenue FROM orders GROUP BY channel",
}
POLICY_REF = {"name": "agent-default", "sha256": "0" * 64}


def _writer(path: str, fsync_every: int = 100) -> object:
    from guard_kernel.audit.writer import AuditWriter

    w = AuditWriter(path, session="bench", actor="human", environment="default", policy=POLICY_REF,
                    fsync_every=fsync_every)
    w.write("session", action=None, resource=None, decision="allow", rules=[], message="bench")  # type: ignore[attr-defined]
    return w


def _write_timer(workdir: str, n: int, tag: str, fsync_every: int = 100) -> Timer:
    """Records per second of the real writer (fsync every *fsync_every* records), into a fresh file per run."""
    runs = iter(range(10**6))

    def run() -> float:
        path = os.path.join(workdir, f"{tag}-{next(runs)}.jsonl")
        w = _writer(path, fsync_every)
        write = w.write  # type: ignore[attr-defined]
        with silenced_gc():
            t0 = time.perf_counter()
            for _ in range(n):
                write("sql", **FIELDS)
            dt = time.perf_counter() - t0
        w.close()  # type: ignore[attr-defined]
        os.remove(path)
        return n / dt

    return run


def _plain_timer(workdir: str, n: int) -> Timer:
    """Records per second of unchained JSON Lines with ``os.write`` and no fsync."""
    import datetime as dt

    runs = iter(range(10**6))

    def run() -> float:
        path = os.path.join(workdir, f"plain-{next(runs)}.jsonl")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        dumps, now, utc = json.dumps, dt.datetime.now, dt.UTC
        with silenced_gc():
            t0 = time.perf_counter()
            for seq in range(1, n + 1):
                rec = {"seq": seq, "ts": now(utc).isoformat(), "session": "bench", "actor": "human",
                       "environment": "default", "policy": POLICY_REF, "kind": "sql", **FIELDS}
                os.write(fd, dumps(rec).encode() + b"\n")
            elapsed = time.perf_counter() - t0
        os.close(fd)
        os.remove(path)
        return n / elapsed

    return run


def _pipe_timers(workdir: str, n: int) -> tuple[Timer, Timer, list[float]]:
    """Seconds per record: through the guarded kernel's pipe (the kernel's PipeSink → the launcher's
    reader thread → the writer, until the last record is written) and into the writer in-process.
    The third list collects the kernel side's own share (the sends alone) of each pipe run."""
    import socket
    import threading

    from guard_kernel.audit.pipe import PipeSink, serve

    runs = iter(range(10**6))
    sender: list[float] = []

    def pipe() -> float:
        path = os.path.join(workdir, f"pipe-{next(runs)}.jsonl")
        w = _writer(path)
        launcher, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        done, count = threading.Event(), [0]

        def on_record(kind: str, fields: dict[str, object]) -> None:
            count[0] += 1
            if count[0] == n:
                done.set()

        reader = threading.Thread(target=serve, args=(launcher, w, on_record), daemon=True)
        reader.start()
        sink = PipeSink(kernel.detach(), path, POLICY_REF)
        with silenced_gc():
            t0 = time.perf_counter()
            for _ in range(n):
                sink.write("sql", **FIELDS)
            sent = time.perf_counter() - t0
            done.wait(60)
            dt = time.perf_counter() - t0
        sink.sock.close()
        reader.join(10)
        launcher.close()
        w.close()  # type: ignore[attr-defined]
        os.remove(path)
        sender.append(sent / n)
        return dt / n

    def in_process() -> float:
        path = os.path.join(workdir, f"inproc-{next(runs)}.jsonl")
        w = _writer(path)
        write = w.write  # type: ignore[attr-defined]
        with silenced_gc():
            t0 = time.perf_counter()
            for _ in range(n):
                write("sql", **FIELDS)
            dt = time.perf_counter() - t0
        w.close()  # type: ignore[attr-defined]
        os.remove(path)
        return dt / n

    return pipe, in_process, sender


def _verify_file(workdir: str, n: int) -> str:
    path = os.path.join(workdir, "verify.jsonl")
    if os.path.exists(path):
        os.remove(path)
    w = _writer(path)
    for _ in range(n):
        w.write("sql", **FIELDS)  # type: ignore[attr-defined]
    w.close()  # type: ignore[attr-defined]
    return path


def run(cfg: Config) -> list[Result]:
    from guard_kernel.audit.chain import read_records
    from guard_kernel.audit.integrity import verify

    work = os.path.join(cfg.workdir, "audit-bench")
    os.makedirs(work, exist_ok=True)
    results = []

    n = 20_000 if cfg.quick else 50_000
    for every, label in ((100, "fsync every 100 (default)"), (1, "fsync every record"), (10**9, "fsync at close only")):
        count = n if every > 1 else n // 10  # a sync per record is slow: fewer records, same rate
        s = alternate({"guarded": _write_timer(work, count, f"chain{every}", every), "plain": _plain_timer(work, count)},
                      cfg.rounds)
        g, p = Stats.of(s["guarded"]), Stats.of(s["plain"])
        results.append(Result(GROUP, f"hash-chained writes, {label} ({count:,} records)", "rec/s", g, p, g.median,
                              "rate", "rec/s", at_least(50_000, "≥ 50,000/s") if every == 100 else None,
                              note=f"plain = unchained JSONL via os.write, no fsync; chained/plain throughput "
                                   f"{g.median / p.median:.2f}; fsync runs on a helper thread"))

    np_ = 5_000 if cfg.quick else 20_000
    pipe, in_process, sender = _pipe_timers(work, np_)
    s = alternate({"guarded": pipe, "plain": in_process}, cfg.rounds)
    g, p = Stats.of(s["guarded"]), Stats.of(s["plain"])
    results.append(Result(GROUP, f"audit record through the launcher's pipe vs the in-process writer ({np_:,})",
                          "s", g, p, g.median / p.median, "ratio", "x", None,
                          note=f"per record, sent by PipeSink until written by the launcher's reader: "
                               f"{g.median * 1e6:.1f} µs vs {p.median * 1e6:.1f} µs in-process; the kernel's own "
                               f"share (the send) {Stats.of(sender).median * 1e6:.1f} µs",
                          extra={"sender_s": sender}))

    nv = 20_000 if cfg.quick else 100_000
    path = _verify_file(work, nv)

    def do_verify() -> float:
        t0 = time.perf_counter()
        res = verify(path)
        dt = time.perf_counter() - t0
        if not res.ok or res.records != nv + 1:
            raise RuntimeError(f"verify failed on a clean file: {res}")
        return dt

    def do_read() -> float:
        t0 = time.perf_counter()
        count = sum(1 for _ in read_records(path))
        dt = time.perf_counter() - t0
        if count != nv + 1:
            raise RuntimeError("read_records lost records")
        return dt

    rounds = max(3, cfg.rounds // 2)
    s = alternate({"guarded": do_verify, "plain": do_read}, rounds)
    g, p = Stats.of(s["guarded"]), Stats.of(s["plain"])
    scale = 100_000 / nv
    results.append(Result(GROUP, f"verify {nv:,} records", "s", g, p, g.median * scale, "time/100k", "s",
                          at_most(2.0, "≤ 2 s"),
                          note="plain = read_records (JSON parse only)"
                               + (f"; figure scaled ×{scale:g} to 100,000 records" if scale != 1 else "")))
    def do_show() -> float:
        from guard_kernel.audit.summary import summarize, summary_text

        t0 = time.perf_counter()
        text = summary_text(summarize(path))
        dt = time.perf_counter() - t0
        if "chain:     ok" not in text:
            raise RuntimeError("show: the chain does not verify")
        return dt

    s = alternate({"guarded": do_show, "plain": do_read}, rounds)
    g, p = Stats.of(s["guarded"]), Stats.of(s["plain"])
    results.append(Result(GROUP, f"audit show {nv:,} records", "s", g, p, g.median * scale, "time/100k", "s",
                          at_most(2.0, "≤ 2 s"),
                          note="summary, denials and chain check in one streamed pass; plain = read_records"
                               + (f"; figure scaled ×{scale:g} to 100,000 records" if scale != 1 else "")))
    os.remove(path)
    results += _render_results(cfg, work)
    return results


def _session_file(workdir: str, cells: int) -> str:
    """An audit of *cells* cells, each a DuckDB read and its cell record (2 records a cell), every
    tenth cell denied — what the audit notebook renders."""
    path = os.path.join(workdir, f"render-{cells}.jsonl")
    if os.path.exists(path):
        os.remove(path)
    w = _writer(path)
    for i in range(cells):
        denied = i % 10 == 9
        rec = w.write("sql", **{**FIELDS, "decision": "deny" if denied else "allow",  # type: ignore[attr-defined]
                                "message": "customers.ssn is a deny column" if denied else ""})
        w.write("cell", action=None, resource=f"cell[{i + 1}]", decision=rec["decision"],  # type: ignore[attr-defined]
                rules=FIELDS["rules"], message=rec["message"], code=f"con.sql({FIELDS['statement']!r}).df()",
                execution_count=i + 1, status="error" if denied else "ok", duration_ms=3.2,
                inside=[{"seq": rec["seq"], "kind": "sql", "decision": rec["decision"], "rules": ["defaults.read"]}])
    w.close()  # type: ignore[attr-defined]
    return path


def _render_results(cfg: Config, work: str) -> list[Result]:
    from guard_kernel.audit.chain import read_records
    from guard_kernel.audit.live import LiveNotebook
    from guard_kernel.audit.notebook import render, to_ipynb

    results = []
    for records, goal in ((1_000, at_most(0.100, "≤ 100 ms")), (100_000, at_most(5.0, "≤ 5 s"))):
        path = _session_file(work, records // 2)

        def do_render(path: str = path) -> float:
            t0 = time.perf_counter()
            nb = render(path)
            to_ipynb(nb)
            dt = time.perf_counter() - t0
            if not nb["metadata"]["guard_kernel"]["chain_ok"]:
                raise RuntimeError("render: the chain does not verify")
            return dt

        def do_read(path: str = path) -> float:
            t0 = time.perf_counter()
            sum(1 for _ in read_records(path))
            return time.perf_counter() - t0

        rounds = max(3, cfg.rounds // 2) if records <= 1_000 else (1 if cfg.quick else 3)
        s = alternate({"guarded": do_render, "plain": do_read}, rounds)
        g, p = Stats.of(s["guarded"]), Stats.of(s["plain"])
        results.append(Result(GROUP, f"audit notebook render, {records:,} records ({records // 2:,} cells) → ipynb",
                              "s", g, p, g.median, "time", "s", goal,
                              note="chain check, notebook and its JSON in one streamed pass; plain = read_records"))
        os.remove(path)

    # the live notebook: the rewrite after one cell, in a session already N cells long
    for cells in (100, 1_000):
        full = _session_file(work, cells + 1)
        with open(full, "rb") as f:
            lines = f.readlines()
        part = os.path.join(work, f"live-{cells}.jsonl")
        with open(part, "wb") as f:
            f.writelines(lines[: 1 + 2 * cells])  # header and N cells

        samples = []
        for _ in range(max(3, cfg.rounds // 2)):
            with open(part, "wb") as f:
                f.writelines(lines[: 1 + 2 * cells])
            live = LiveNotebook(part)
            live.update()
            with open(part, "ab") as f:
                f.writelines(lines[1 + 2 * cells: 3 + 2 * cells])  # one more cell
            t0 = time.perf_counter()
            live.update()
            samples.append(time.perf_counter() - t0)
        g = Stats.of(samples)
        results.append(Result(GROUP, f"live audit notebook rewrite after a cell, session of {cells:,} cells",
                              "s", g, None, g.median, "time/cell", "s", None,
                              note="the new records read from where the last update stopped, the notebook "
                                   "rewritten and renamed into place (audit: {live_notebook: false} skips it)"))
        for p in (full, part, part[:-6] + ".ipynb"):
            os.remove(p)
    return results
