"""The first and last records of a session: the header (who, where, what was in force) and the end.

The header makes a session rebuildable from its audit alone: session id, actor, environment,
OS user and host, the kernel (name or ``extension``, id, connection file), the notebook path
when Jupyter tells the kernel (``JPY_SESSION_NAME``), the working directory, library versions,
the policy (name, file, SHA-256 and full text) and what is in force layer by layer.  A kernel
that restarts starts a new session whose header names the previous one (same kernel id), so
readers chain them.  Callers (the session's ``Guard``, the guarded kernel) pass what they know;
this module reads nothing of the guard and imports nothing above ``audit``.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from guard_kernel.audit.integrity import HEADER_KINDS

HEADER_FORMAT = 1
"""Version of the header's fields (readers of older files see no ``format``)."""

LIBRARIES = ("ipykernel", "ipython", "duckdb", "pandas", "sqlglot", "pyarrow", "polars")
"""Whose versions the header records (those installed)."""

END_REASONS = {
    "shutdown": "the kernel was shut down",
    "restart": "the kernel was restarted (the next session of this kernel continues it)",
    "unload": "the guard was unloaded (%unload_ext)",
    "exit": "the process exited",
    "close": "the guard was closed",
    "died": "the kernel process died (recorded afterwards by the process that owns the audit)",
}
"""Why a session ended, as its ``session_end`` record says (``reason``)."""

_DIST = re.compile(r"^([A-Za-z0-9_.\-]+?)-([0-9][^-]*?)\.dist-info$")


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """Installed versions of *names*, from the ``*.dist-info`` folders on ``sys.path``
    (``importlib.metadata`` costs ~70 ms here; listing the folders ~1 ms)."""
    want = {n.lower().replace("-", "_"): n for n in names}
    found: dict[str, str] = {}
    for entry in sys.path:
        if len(found) == len(want):
            break
        try:
            names_here = os.listdir(entry or ".")
        except OSError:
            continue
        for item in names_here:
            m = _DIST.match(item)
            if m is None:
                continue
            key = m.group(1).lower().replace("-", "_").replace(".", "_")
            if key in want and want[key] not in found:
                found[want[key]] = m.group(2)
    return dict(sorted(found.items()))


def policy_text(file: str, sha256: str) -> tuple[str | None, str | None]:
    """The text of the policy file if it is still the one that was loaded, else a note why not."""
    try:
        with open(file, "rb") as f:
            data = f.read()
    except OSError as exc:
        return None, f"not readable: {exc.strerror}"
    if hashlib.sha256(data).hexdigest() != sha256:
        return None, "the file changed after the policy was loaded (its SHA-256 differs)"
    return data.decode("utf-8", errors="replace"), None


def previous_session(audit_dir: str, connection_file: str | None, session: str) -> str | None:
    """The latest other session in *audit_dir* whose kernel had the same *connection_file*: a
    restarted kernel keeps it (and its ports), a new kernel gets a new one."""
    if not connection_file:
        return None
    best: tuple[str, str] | None = None
    try:
        names = os.listdir(audit_dir)
    except OSError:
        return None
    for name in names:
        if not name.endswith(".jsonl") or ".fork-" in name or name == f"{session}.jsonl":
            continue
        head = read_header(os.path.join(audit_dir, name))
        if head is None or (head.get("kernel") or {}).get("connection_file") != connection_file:
            continue
        key = (str(head.get("ts", "")), str(head.get("session")))
        if best is None or key > best:
            best = key
    return best[1] if best else None


def kernel_identity(connection_file: str | None, kernel_id: str | None = None) -> dict[str, Any]:
    """The ``id`` and ``connection_file`` of a kernel for its session header.  The id is *kernel_id*
    when given, else the one Jupyter put in the connection file's name (``kernel-<id>.json``: a
    Jupyter Server's kernel manager names it so), so the header's ``kernel.id`` is the server's id
    for this kernel (what ``audit crosscheck`` matches the server's records by)."""
    info: dict[str, Any] = {"id": kernel_id or None}
    if connection_file:
        info["connection_file"] = os.path.abspath(connection_file)
        base = os.path.basename(connection_file)
        if info["id"] is None and base.startswith("kernel-") and base.endswith(".json") and len(base) > 12:
            info["id"] = base[len("kernel-"):-len(".json")]
    return info


def read_header(path: str) -> dict[str, Any] | None:
    """The header of an audit file: its first record, or its second after a launcher's record."""
    import json

    try:
        with open(path, "rb") as f:
            first = json.loads(f.readline())
            # a guarded kernel's file opens with its launcher's record; the kernel's header follows
            rec = json.loads(f.readline()) if isinstance(first, dict) and first.get("kind") == "launcher" else first
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("kind") in HEADER_KINDS - {"launcher"} else None


def header_fields(policy: Mapping[str, Any], actor: str, environment: str, *, session: str, audit_dir: str,
                  kernel: Mapping[str, Any] | None = None, in_force: Sequence[Mapping[str, Any]] = (),
                  confinement: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fields of a session's ``session`` record.

    *policy*: ``name``, ``file``, ``sha256``, ``mode``, ``lock``.  *kernel*: ``name`` (the
    kernelspec, or ``extension`` for ``%load_ext``), ``id`` (Jupyter's kernel id when known),
    ``connection_file`` (its path: what links a restarted kernel's sessions).  *in_force*:
    one mapping per layer (``layer``, ``what``).  *confinement*: what the OS layer enforces
    (None: in-process layers only)."""
    env = os.environ if environ is None else environ
    kern = {"name": "extension", "id": None, **(kernel or {})}
    text, note = policy_text(str(policy.get("file", "")), str(policy.get("sha256", "")))
    try:
        user: str | None = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = None
    pkg = sys.modules.get("guard_kernel")
    return {
        "action": None, "resource": None, "decision": "allow", "rules": [],
        "message": f"guard started: policy {policy.get('name')} ({policy.get('mode', 'enforce')}), actor {actor}, "
                   f"environment {environment}",
        "format": HEADER_FORMAT,
        "pid": os.getpid(), "user": user, "uid": os.getuid() if hasattr(os, "getuid") else None,
        "host": socket.gethostname(), "cwd": os.getcwd(),
        "kernel": kern, "notebook": env.get("JPY_SESSION_NAME"),
        "previous_session": previous_session(audit_dir, kern.get("connection_file"), session),
        "versions": {"python": sys.version.split()[0], "guard_kernel": getattr(pkg, "__version__", None),
                     **library_versions()},
        "policy_file": policy.get("file"), "policy_mode": policy.get("mode"), "lock": policy.get("lock"),
        "policy_text": text, **({"policy_text_note": note} if note else {}),
        "in_force": [dict(x) for x in in_force],
        "confinement": dict(confinement) if confinement else None,
    }


_INNER_KEYS = ("seq", "kind", "action", "resource", "decision", "line", "via", "statement", "path",
               "returned", "max_rows", "available")
MAX_INNER = 100
"""Decisions a cell record lists (the rest are counted): each is also a record of its own."""
EFFECT_ORDER = ("allow", "warn", "truncate", "would_deny", "deny")
"""Effects from mildest to worst: a cell's decision is the worst inside it."""


def inner_entry(rec: Mapping[str, Any]) -> dict[str, Any]:
    """What a cell record keeps of a record written while the cell ran (a decision, a truncation)."""
    out = {k: rec[k] for k in _INNER_KEYS if rec.get(k) is not None}
    out["rules"] = [r.get("id") for r in rec.get("rules") or () if isinstance(r, Mapping)]
    if rec.get("decision") != "allow" and rec.get("message"):
        out["message"] = rec["message"]
    return out


def worst(effects: Sequence[str]) -> str:
    """The worst of *effects* (``allow`` when there are none)."""
    return max(effects, key=lambda e: EFFECT_ORDER.index(e) if e in EFFECT_ORDER else 0, default="allow")


def end_fields(reason: str, counts: Mapping[str, int]) -> dict[str, Any]:
    """The fields of a session's ``session_end`` record."""
    return {"action": None, "resource": None, "decision": "allow", "rules": [],
            "message": f"session ended: {END_REASONS.get(reason, reason)}", "reason": reason,
            "counts": dict(counts)}


__all__ = ["EFFECT_ORDER", "END_REASONS", "HEADER_FORMAT", "LIBRARIES", "MAX_INNER", "end_fields", "header_fields",
           "inner_entry", "kernel_identity", "library_versions", "policy_text", "previous_session", "read_header", "worst"]
