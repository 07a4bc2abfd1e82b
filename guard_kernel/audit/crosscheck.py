"""Cross-check the server's record of forwarded cells against a kernel's own audit.

The Jupyter Server extension writes one ``server.execute`` record for every ``execute_request``
it forwards to a kernel, in the server's own chain (``server-<session>.jsonl``, outside every
kernel).  A kernel records every request it serves with the request's ``msg_id``.  A cell the
server forwarded that the kernel never recorded means the kernel's guard was subverted (a cell
replaced its writer, an audit was rewritten) — :func:`crosscheck` names each one.

Both chains are verified first: a broken chain is a finding of its own, and nothing is matched
against it.  Cells forwarded before the kernel's audit began (the ``%load_ext guard_kernel``
cell itself, and cells before it) or after its session ended (a restart: pass the next
session's file too) are listed apart, not flagged.  What it cannot see: cells sent straight to
the kernel's ZMQ ports (docs/threat-model.md).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guard_kernel.audit.chain import read_records
from guard_kernel.audit.integrity import VerifyResult, verify
from guard_kernel.audit.session import read_header

SERVER_KIND = "server.execute"
"""The kind of the server's record of one forwarded ``execute_request``."""


class Placement(str, enum.Enum):
    """Where a forwarded cell stands against the kernel's audit."""

    RECORDED = "recorded"
    """The kernel recorded a request with this msg_id."""
    MISSING = "missing"
    """Forwarded while the kernel's audit was open, never recorded by the kernel: flagged."""
    BEFORE = "before"
    """Forwarded before the kernel's audit began (an unguarded kernel, or ``%load_ext`` loading)."""
    AFTER = "after"
    """Forwarded after the kernel's session ended (a restarted kernel's next session)."""


def _mapping(rec: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = rec.get(key)
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class Forwarded:
    """One ``server.execute`` record: a cell the server forwarded to the kernel."""

    seq: int
    ts: str
    msg_id: str | None
    actor: str | None
    username: str | None
    client_ip: str | None
    code: str
    code_sha256: str | None
    placement: Placement = Placement.MISSING

    @classmethod
    def of(cls, rec: Mapping[str, Any], placement: Placement) -> Forwarded:
        request, identity, client = (_mapping(rec, k) for k in ("request", "identity", "client"))
        return cls(int(rec.get("seq", 0)), str(rec.get("ts", "")), request.get("msg_id"), rec.get("actor"),
                   identity.get("username") or request.get("username"), client.get("ip"), str(rec.get("code") or ""),
                   rec.get("code_sha256"), placement)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "placement": self.placement.value}


@dataclass(frozen=True)
class CrossCheck:
    """What :func:`crosscheck` found."""

    server: str
    kernels: tuple[str, ...]
    server_chain: VerifyResult
    kernel_chains: tuple[VerifyResult, ...]
    kernel_id: str | None
    problem: str | None = None
    """Why nothing could be matched (a broken chain, no kernel id); None when the check ran."""
    forwarded: tuple[Forwarded, ...] = ()
    """Every server record for this kernel, with where it stands."""
    unforwarded: tuple[str, ...] = field(default=())
    """msg_ids the kernel recorded that this server never forwarded (another client or server)."""

    @property
    def missing(self) -> tuple[Forwarded, ...]:
        """Cells the server forwarded that the kernel never recorded: the finding."""
        return tuple(f for f in self.forwarded if f.placement is Placement.MISSING)

    @property
    def ok(self) -> bool:
        """Both chains intact and every forwarded cell recorded by the kernel."""
        return self.problem is None and not self.missing

    def count(self, placement: Placement) -> int:
        return sum(1 for f in self.forwarded if f.placement is placement)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``audit crosscheck --json``."""
        return {"ok": self.ok, "problem": self.problem, "server": self.server, "kernels": list(self.kernels),
                "kernel_id": self.kernel_id, "server_chain_ok": self.server_chain.ok,
                "kernel_chains_ok": [c.ok for c in self.kernel_chains],
                "counts": {p.value: self.count(p) for p in Placement},
                "missing": [f.as_dict() for f in self.missing],
                "forwarded": [f.as_dict() for f in self.forwarded], "unforwarded": list(self.unforwarded)}


@dataclass
class _KernelSide:
    """What the kernel's audit files say: its id, when its audit was open, the msg_ids it recorded."""

    ids: set[str] = field(default_factory=set)
    start: str | None = None
    """The first record's time (in the guarded kernel the launcher's: the kernel cannot rewrite it)."""
    ends: list[str | None] = field(default_factory=list)
    """Per file: its ``session_end`` time, None while the session is open."""
    msg_ids: dict[str, str] = field(default_factory=dict)
    """msg_id → the kind of the first record that carries it."""

    def feed(self, records: Iterable[Mapping[str, Any]]) -> None:
        end = None
        for i, rec in enumerate(records):
            ts, kind = str(rec.get("ts", "")), rec.get("kind")
            if i == 0:
                self.start = ts if self.start is None else min(self.start, ts)
            if kind == "session":
                kern = rec.get("kernel")
                if isinstance(kern, dict) and kern.get("id"):
                    self.ids.add(str(kern["id"]))
            request = rec.get("request")
            if isinstance(request, dict) and request.get("msg_id"):
                self.msg_ids.setdefault(str(request["msg_id"]), str(kind))
            if kind == "session_end":
                end = ts
        self.ends.append(end)

    @property
    def end(self) -> str | None:
        """When the last session ended (None while one is open)."""
        return None if not self.ends or None in self.ends else max(e for e in self.ends if e)

    @property
    def kernel_id(self) -> str | None:
        return next(iter(self.ids)) if len(self.ids) == 1 else None


def _place(rec: Mapping[str, Any], kernel: _KernelSide) -> Placement:
    msg_id = _mapping(rec, "request").get("msg_id")
    if msg_id and str(msg_id) in kernel.msg_ids:
        return Placement.RECORDED
    ts = str(rec.get("ts", ""))
    if kernel.start is not None and ts < kernel.start:
        return Placement.BEFORE
    if kernel.end is not None and ts > kernel.end:
        return Placement.AFTER
    return Placement.MISSING


def crosscheck(server: str, kernels: Sequence[str]) -> CrossCheck:
    """Match the server chain *server* against the kernel audit file(s) *kernels* (one session, or
    the sessions of one restarted kernel, in order)."""
    server_chain = verify(server)
    kernel_chains = tuple(verify(k) for k in kernels)

    def result(kernel_id: str | None, problem: str | None, forwarded: Sequence[Forwarded] = (),
               unforwarded: Sequence[str] = ()) -> CrossCheck:
        return CrossCheck(server, tuple(kernels), server_chain, kernel_chains, kernel_id, problem, tuple(forwarded),
                          tuple(unforwarded))

    broken = [(p, c) for p, c in ((server, server_chain), *zip(kernels, kernel_chains, strict=True)) if not c.ok]
    if broken:
        return result(None, "; ".join(f"{p}: chain BROKEN after {c.records} good record(s): {c.problem}"
                                      for p, c in broken))
    role = (read_header(server) or {}).get("role")
    if role != "server":
        return result(None, f"{server} is not the server's chain (its header's role is {role!r}, not 'server'): "
                            "the server's file comes first")
    side = _KernelSide()
    for k in kernels:
        side.feed(read_records(k))
    if side.kernel_id is None:
        return result(None, "the kernel audit names no kernel id (a kernel not started by a Jupyter Server?)"
                      if not side.ids else f"the kernel audits name different kernels: {sorted(side.ids)}")
    forwarded: list[Forwarded] = []
    for rec in read_records(server):
        kern = rec.get("kernel")
        if rec.get("kind") == SERVER_KIND and isinstance(kern, dict) and kern.get("id") == side.kernel_id:
            forwarded.append(Forwarded.of(rec, _place(rec, side)))
    sent = {f.msg_id for f in forwarded if f.msg_id}
    return result(side.kernel_id, None, forwarded, [m for m in side.msg_ids if m not in sent])


def _one_line(text: str, n: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def report_text(c: CrossCheck) -> str:
    """What ``guard-kernel audit crosscheck`` prints."""
    out = [f"server:    {c.server}: " + ("ok, hash chain intact" if c.server_chain.ok else "BROKEN")
           + f" ({c.server_chain.records} records)"]
    out += [f"kernel:    {k}: " + ("ok, hash chain intact" if r.ok else "BROKEN") + f" ({r.records} records)"
            for k, r in zip(c.kernels, c.kernel_chains, strict=True)]
    if c.problem is not None:
        return "\n".join([*out, f"CANNOT CROSS-CHECK: {c.problem}"])
    n = {p: c.count(p) for p in Placement}
    out.append(f"kernel id: {c.kernel_id}: the server forwarded {len(c.forwarded)} execute request(s); "
               f"the kernel recorded {n[Placement.RECORDED]}")
    if n[Placement.BEFORE] or n[Placement.AFTER]:
        out.append(f"not judged: {n[Placement.BEFORE]} forwarded before the kernel's audit began, "
                   f"{n[Placement.AFTER]} after its session ended (pass the restarted session's file too)")
    if c.unforwarded:
        out.append(f"note:      the kernel recorded {len(c.unforwarded)} request(s) this server did not forward "
                   "(another client or server)")
    if c.missing:
        out.append(f"\nNOT RECORDED BY THE KERNEL ({len(c.missing)}): the kernel's guard was subverted, or its "
                   "audit rewritten")
        out += [f"  seq {f.seq}  {f.ts[:19]}  msg_id {f.msg_id}  {f.actor or '?'} {f.username or '?'} "
                f"from {f.client_ip or '?'}: {_one_line(f.code)}" for f in c.missing]
    else:
        out.append("ok: every cell the server forwarded while the kernel's audit was open is in it")
    return "\n".join(out)


__all__ = ["SERVER_KIND", "CrossCheck", "Forwarded", "Placement", "crosscheck", "report_text"]
