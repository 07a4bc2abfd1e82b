"""What the operating system holds for a guarded kernel: a plan from the policy, applied with Landlock.

The guarded kernel's launcher computes a :class:`Plan` before it starts the kernel, and applies
it in the kernel's process before any kernel code runs (:func:`apply`), so it holds for the
kernel and everything the kernel starts, native code and shell commands included.  In a
``%load_ext`` session the same plan is applied by the confining exec helper to each command the
session starts (:mod:`guard_kernel.enforce.runtime.exec_helper`).

- the file system is read-only everywhere except the policy's scratch directories (each
  scratch glob becomes the literal directory in front of its first wildcard: ``scratch/**`` →
  ``scratch/``; a directory that does not exist yet is created), a private temporary directory
  (``TMPDIR``, the kernel's ``IPYTHONDIR``, caches) and the devices cells need (``/dev/null``,
  ``/dev/zero``, ``/dev/tty``, ``/dev/ptmx``, ``/dev/pts``, ``/dev/shm``).  Sources, the policy
  file and the audit folder are never writable: one that lies inside a writable directory is a
  configuration error, refused at start (Landlock cannot carve a read-only hole out of a
  writable tree);
- with Landlock ABI ≥ 4, TCP ``connect`` is refused when the policy denies the network by
  default, except to the ports its ``net.connect`` allow rules name (``where: {port: …}``):
  Landlock enforces the port, the in-process layer the host. An allow rule without ports
  leaves ``connect`` to the in-process layer. ``bind`` is never restricted (ZMQ binds the kernel's ports);
- with ``confine: {exec: deny}``, no program but the kernel's own Python can be started.

Where the OS cannot confine (no Landlock: an old kernel, not Linux), ``confine: {mode:
required}`` refuses to run cells with the reason; ``best_effort`` (the default) runs, says so
once and records ``confinement: unavailable``; ``off`` does not confine.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from guard_kernel.enforce import landlock

if TYPE_CHECKING:
    from guard_kernel.policy.model import Policy

# The policy modules are imported where a plan is made, not here: the confining exec helper
# (exec_helper.py) applies a plan it is given and loads only this module and landlock.py.

DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/ptmx", "/dev/pts", "/dev/shm")
"""Devices ordinary cells write: discarding output, terminals for ``!cmd``, shared memory for joblib."""


class State(str, Enum):
    """What the OS layer does for a session."""

    IN_FORCE = "in force"
    """Landlock applied to the kernel and its children."""
    UNAVAILABLE = "unavailable"
    """The OS cannot confine here; the session runs on the in-process layers (best_effort)."""
    OFF = "off"
    """The policy says ``confine: {mode: off}``."""
    REFUSED = "refused"
    """The session must not run: confinement is required but unavailable, or the policy is inconsistent."""


@dataclass(frozen=True)
class Plan:
    """The confinement of one guarded kernel."""

    state: State
    reason: str = ""
    """Why it is not in force (or why the session is refused)."""
    writable: tuple[str, ...] = ()
    """Directories (and device files) the kernel may change, real paths."""
    tcp_ports: tuple[int, ...] | None = None
    """Ports TCP ``connect`` may reach; None: connect is not restricted by the OS."""
    exec_only: str | None = None
    """With ``exec: deny``: the one program that may be started (the kernel's Python)."""
    abi: int = 0

    def describe(self) -> dict[str, object]:
        """What is in force, for ``%guard status`` and the audit."""
        return {"state": self.state.value, "reason": self.reason, "landlock_abi": self.abi,
                "writable": list(self.writable), "tcp_connect_ports": None if self.tcp_ports is None
                else list(self.tcp_ports), "exec": "python only" if self.exec_only else "allowed"}

    def to_json(self) -> str:
        """The plan as one JSON text (what the confining exec helper is given)."""
        return json.dumps({"state": self.state.value, "reason": self.reason, "writable": list(self.writable),
                           "tcp_ports": None if self.tcp_ports is None else list(self.tcp_ports),
                           "exec_only": self.exec_only, "abi": self.abi}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """The plan :meth:`to_json` wrote."""
        d = json.loads(text)
        ports = d.get("tcp_ports")
        return cls(State(d["state"]), str(d.get("reason", "")), tuple(d.get("writable") or ()),
                   None if ports is None else tuple(int(p) for p in ports), d.get("exec_only"), int(d.get("abi", 0)))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _tcp_ports(policy: Policy, actor: str) -> tuple[int, ...] | None:
    from guard_kernel.policy.actions import Action, ActionClass, action_matches

    if policy.default_for(ActionClass.NETWORK) != "deny":
        return None
    ports: set[int] = set()
    for rule in policy.rules:
        if rule.effect == "deny" or (rule.actors and actor not in rule.actors):
            continue
        if not any(action_matches(a, Action.NET_CONNECT) for a in rule.actions):
            continue
        if not rule.where.ports:
            return None  # a host rule without ports: only the in-process layer can enforce it
        ports.update(rule.where.ports)
    return tuple(sorted(ports))


def plan(policy: Policy, *, actor: str, private_dirs: tuple[str, ...], protected: tuple[str, ...],
         abi: int | None = None) -> Plan:
    """The confinement for *policy* and *actor*; *private_dirs* are the session's own writable
    directories, *protected* the paths that must stay read-only (the audit folder…)."""
    from guard_kernel.policy.paths import glob_base, resolve

    if policy.confine_mode == "off":
        return Plan(State.OFF, "confine: {mode: off} in the policy")
    abi = landlock.abi_version() if abi is None else abi
    if abi < 1:
        why = "Landlock is not available on this system (Linux ≥ 5.13 with Landlock enabled is needed)"
        state = State.REFUSED if policy.confine_mode == "required" else State.UNAVAILABLE
        return Plan(state, why, abi=abi)
    scratch = []
    for g in policy.scratch:
        base = resolve(glob_base(g.absolute) or "/")
        os.makedirs(base, exist_ok=True)
        scratch.append(base)
    writable = tuple(dict.fromkeys([*scratch, *(resolve(d) for d in private_dirs),
                                    *(d for d in DEVICES if os.path.exists(d))]))
    never = [resolve(glob_base(g.absolute) or "/") for _, g in policy.source_paths()]
    never += [resolve(p) for p in protected]
    if os.path.isabs(policy.file):
        never.append(resolve(policy.file))
    for path in never:
        for folder in writable:
            if _inside(path, folder) or (folder not in DEVICES and _inside(folder, path) and folder in scratch):
                return Plan(State.REFUSED, f"{path} must stay read-only but lies inside (or holds) the writable "
                                           f"directory {folder}: move the scratch area or the source apart",
                            abi=abi)
    ports = _tcp_ports(policy, actor) if abi >= 4 else None
    exec_only = os.path.realpath(sys.executable) if policy.confine_exec == "deny" else None
    return Plan(State.IN_FORCE, "", writable, ports, exec_only, abi)


def apply(p: Plan) -> None:
    """Restrict this process (and all it starts) as *p* says.  Runs in the child, before ``exec``."""
    if p.state is not State.IN_FORCE:
        return
    changes = landlock.fs_changes(p.abi)
    handled = changes | (landlock.FS_EXECUTE if p.exec_only else 0)
    net = landlock.NET_CONNECT_TCP if p.tcp_ports is not None else 0
    rs = landlock.Ruleset(handled, net)
    try:
        for path in p.writable:
            rs.allow_path(path, changes)
        if p.exec_only:
            rs.allow_path(p.exec_only, landlock.FS_EXECUTE)
            # the dynamic loader maps shared libraries; it is not an exec, but the ELF interpreter is
            for lib in ("/lib64", "/lib", "/usr/lib", "/usr/lib64", "/usr/local/lib"):
                if os.path.isdir(lib):
                    rs.allow_path(lib, landlock.FS_EXECUTE)
        for port in p.tcp_ports or ():
            rs.allow_port(port)
        rs.restrict_self()
    finally:
        rs.close()


__all__ = ["DEVICES", "Plan", "State", "apply", "plan"]
