"""What a session's audit says, in one streaming pass: header, counts, denials, chain, end.

:func:`summarize` reads a file line by line (a 100,000-record audit is never held whole) and
verifies its chain on the way (:class:`~guard_kernel.audit.integrity.ChainCheck`);
:func:`sessions` does it for every file of a folder and links restarts (a header's
``previous_session``) into chains.  ``guard-kernel audit show | list`` and ``%guard audit``
print these.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from guard_kernel.audit.integrity import ChainCheck, VerifyResult, lines

MAX_DENIALS = 500
"""Denials kept for display per file (all are counted)."""

_NOT_DECISIONS = frozenset({"session", "session_end", "cell", "extension", "fork", "launcher"})
"""Record kinds that are not an action's decision (cells repeat the decisions inside them)."""


@dataclass(frozen=True)
class Denial:
    """One denied (or would-be-denied) action, as ``show`` lists it."""

    seq: int
    ts: str
    kind: str
    decision: str
    action: str | None
    resource: str | None
    rules: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class Summary:
    """One audit file, summarised."""

    path: str
    session: str | None
    started: str | None
    last_ts: str | None
    actor: str | None
    environment: str | None
    policy: str | None
    policy_sha256: str | None
    kernel_id: str | None
    notebook: str | None
    previous_session: str | None
    records: int
    cells: int
    decisions: dict[str, int]
    """Action records by decision (``allow``, ``deny``, ``warn``, ``would_deny``, ``truncate``)."""
    denials: tuple[Denial, ...]
    denial_count: int
    chain: VerifyResult
    end_reason: str | None
    """The ``reason`` of the ``session_end`` record; None when the session has none."""
    header: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ended(self) -> str:
        """How the session ended, in words every reader uses."""
        return self.chain.ended

    @property
    def truncations(self) -> int:
        return self.decisions.get("truncate", 0)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``audit show --json`` / ``audit list --json``."""
        return {
            "path": self.path, "session": self.session, "started": self.started, "last": self.last_ts,
            "actor": self.actor, "environment": self.environment, "policy": self.policy,
            "policy_sha256": self.policy_sha256, "kernel_id": self.kernel_id, "notebook": self.notebook,
            "previous_session": self.previous_session, "records": self.records, "cells": self.cells,
            "decisions": self.decisions, "denial_count": self.denial_count, "truncations": self.truncations,
            "chain_ok": self.chain.ok, "chain_problem": self.chain.problem, "ended": self.ended,
            "end_reason": self.end_reason, "partial_tail_bytes": self.chain.partial_tail,
            "denials": [d.__dict__ | {"rules": list(d.rules)} for d in self.denials],
        }


class SummaryBuilder:
    """:func:`summarize` one line at a time: feed it a file's lines in order, ask for the
    :class:`Summary` at any point, and feed it the lines appended since (the audit pages keep one
    per live file, so a growing audit is read once, not once per look)."""

    def __init__(self, path: str, *, max_denials: int = MAX_DENIALS) -> None:
        self.path, self.max_denials = path, max_denials
        self.check = ChainCheck()
        self.header: dict[str, Any] = {}
        self.decisions: Counter[str] = Counter()
        self.denials: list[Denial] = []
        self.denial_count = self.cells = 0
        self.last_ts: str | None = None
        self.end_reason: str | None = None

    def feed(self, raw: bytes) -> None:
        """One line of the file (with its newline)."""
        rec = self.check.feed(raw)
        if rec is None:
            return
        kind = rec.get("kind")
        self.last_ts = rec.get("ts", self.last_ts)
        if not self.header and kind in ("session", "fork"):
            self.header = rec
        if kind == "cell":
            self.cells += 1
            return
        if kind == "session_end":
            self.end_reason = rec.get("reason") or "stop"
        if kind in _NOT_DECISIONS:
            return
        decision = str(rec.get("decision", ""))
        self.decisions[decision] += 1
        if decision in ("deny", "would_deny"):
            self.denial_count += 1
            if len(self.denials) < self.max_denials:
                self.denials.append(Denial(int(rec.get("seq", 0)), str(rec.get("ts", "")), str(kind), decision,
                                           rec.get("action"), rec.get("resource"),
                                           tuple(str(r.get("id")) for r in rec.get("rules") or []
                                                 if isinstance(r, dict)),
                                           str(rec.get("message", ""))))

    def summary(self) -> Summary:
        """The summary of the lines fed so far."""
        chain = self.check.result()
        end_reason = self.end_reason if chain.ended.startswith("closed") else None
        header = self.header
        pol: dict[str, Any] = header["policy"] if isinstance(header.get("policy"), dict) else {}
        kernel: dict[str, Any] = header["kernel"] if isinstance(header.get("kernel"), dict) else {}
        return Summary(self.path, header.get("session"), header.get("ts"), self.last_ts, header.get("actor"),
                       header.get("environment"), pol.get("name"), pol.get("sha256"), kernel.get("id"),
                       header.get("notebook"), header.get("previous_session"), chain.records, self.cells,
                       dict(self.decisions), tuple(self.denials), self.denial_count, chain, end_reason, header)


def summarize(path: str, *, max_denials: int = MAX_DENIALS) -> Summary:
    """Read *path* once: header, counts, the first *max_denials* denials, chain check, end."""
    builder = SummaryBuilder(path, max_denials=max_denials)
    for raw in lines(path):
        builder.feed(raw)
    return builder.summary()


def sessions(folder: str) -> list[Summary]:
    """Every session file of *folder* (forked children's files included), oldest first."""
    out = [summarize(os.path.join(folder, n)) for n in sorted(os.listdir(folder)) if n.endswith(".jsonl")]
    return sorted(out, key=lambda s: (s.started or "", s.path))


def chains(summaries: list[Summary]) -> list[list[Summary]]:
    """Sessions grouped into restart chains (each header's ``previous_session``), oldest first."""
    by_id = {s.session: s for s in summaries if s.session}
    nxt: dict[str, Summary] = {}
    for s in summaries:
        if s.previous_session in by_id:
            nxt[str(s.previous_session)] = s
    out = []
    for s in summaries:
        if s.previous_session in by_id:
            continue  # not the first of its chain
        chain = [s]
        while chain[-1].session in nxt and len(chain) <= len(summaries):
            chain.append(nxt[str(chain[-1].session)])
        out.append(chain)
    return out


def table(rows: Sequence[Sequence[str]], head: Sequence[str]) -> str:
    """*rows* under *head*, in columns."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r).rstrip() for r in [head, *rows])


def short(text: str | None, n: int) -> str:
    """*text* on one line, at most *n* characters."""
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def summary_text(s: Summary) -> str:
    """The terminal summary of one session (``audit show``, ``%guard audit``)."""
    h = s.header
    d = s.decisions
    kern = h.get("kernel") or {}
    lines = [
        f"audit:     {s.path}",
        f"session:   {s.session}  (kernel {kern.get('name', '?')} {kern.get('id') or ''}".rstrip() + ")",
        f"started:   {s.started}  actor {s.actor}, environment {s.environment}, "
        f"{h.get('user')}@{h.get('host')}",
        f"cwd:       {h.get('cwd')}" + (f"  notebook {s.notebook}" if s.notebook else ""),
        f"policy:    {s.policy} (sha256 {str(s.policy_sha256)[:12]}, {h.get('policy_file')})",
        f"records:   {s.records}; cells {s.cells}; allowed {d.get('allow', 0)}, warned {d.get('warn', 0)}, "
        f"denied {d.get('deny', 0)}, would_deny {d.get('would_deny', 0)}, truncated {s.truncations}",
        f"chain:     {'ok' if s.chain.ok else 'BROKEN: ' + str(s.chain.problem)}",
        f"ended:     {s.ended}" + (f" (last record {s.last_ts})" if s.last_ts else ""),
    ]
    if s.chain.partial_tail:
        lines.append(f"partial:   the last line is cut short ({s.chain.partial_tail} bytes): a write did not finish")
    if s.previous_session:
        lines.append(f"restart of: {s.previous_session}")
    if s.denials:
        lines.append(f"\ndenials ({s.denial_count}" + (f", first {len(s.denials)} shown" if s.denial_count > len(s.denials)
                                                     else "") + "):")
        rows = [(str(x.seq), x.ts[11:19], x.decision, x.kind, short(x.action, 14), short(x.resource, 30),
                 ",".join(x.rules) or "-", short(x.message, 70)) for x in s.denials]
        lines.append(table(rows, ("seq", "time", "decision", "kind", "action", "resource", "rule", "message")))
    else:
        lines.append("\nno denials")
    return "\n".join(lines)


__all__ = ["MAX_DENIALS", "Denial", "Summary", "SummaryBuilder", "chains", "sessions", "short", "summarize", "summary_text", "table"]
