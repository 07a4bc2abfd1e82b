"""A small ctypes binding of Linux Landlock: the three system calls, and the access rights we use.

Landlock lets an unprivileged process restrict itself (and every thread and child it will
have, across ``execve``) to the file-system hierarchies and TCP ports it names.  The guarded
kernel's launcher builds a ruleset and applies it in the kernel's process before the kernel runs,
and the exec helper in each command a ``%load_ext`` session starts (:mod:`guard_kernel.enforce.confine`).  Rights not "handled" by a ruleset stay
allowed everywhere: the guard handles the rights that *change* the file system (and TCP
``connect``), so reading and executing remain allowed, writing only beneath the rules' paths.

Reference: the kernel's ``include/uapi/linux/landlock.h`` (struct layouts, flag values) and
``Documentation/userspace-api/landlock.rst`` (the ABI versions).
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass

# system call numbers: the generic table, shared by x86_64 and aarch64
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_PR_SET_NO_NEW_PRIVS = 38

# file-system rights (ABI 1 unless noted)
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2: link or rename a file into another directory
FS_TRUNCATE = 1 << 14  # ABI 3
# network rights (ABI 4)
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1

FS_CHANGES_V1 = (FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_CHAR | FS_MAKE_DIR | FS_MAKE_REG
                 | FS_MAKE_SOCK | FS_MAKE_FIFO | FS_MAKE_BLOCK | FS_MAKE_SYM)
"""Every right that changes the file system, in ABI 1."""
FS_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE
"""The rights that make sense on a file (a rule on a file may name only these)."""


class LandlockError(OSError):
    """Landlock is unavailable or refused a request."""


class _PathBeneath(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is __attribute__((packed)): 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPort(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The Landlock ABI this kernel offers (0: none — not Linux, too old, or disabled)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"):
        return 0
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    v = libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), None, ctypes.c_size_t(0),
                     ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return int(v) if v > 0 else 0


def fs_changes(abi: int) -> int:
    """The file-system rights that change something, for *abi*."""
    rights = FS_CHANGES_V1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    return rights


@dataclass
class Ruleset:
    """A ruleset being built: handle some rights, allow them beneath some paths and on some ports."""

    handled_fs: int
    handled_net: int = 0
    fd: int = -1

    def __post_init__(self) -> None:
        libc = _libc()
        libc.syscall.restype = ctypes.c_long
        attr = _RulesetAttr(self.handled_fs, self.handled_net)
        fd = libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                          ctypes.c_uint32(0))
        if fd < 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"landlock_create_ruleset: {os.strerror(err)}")
        self.fd = int(fd)

    def allow_path(self, path: str, access: int) -> None:
        """Allow *access* (limited to what the ruleset handles) beneath *path* (a file or directory)."""
        flags = os.O_PATH | os.O_CLOEXEC
        fd = os.open(path, flags)
        try:
            access &= self.handled_fs
            if not os.path.isdir(path):
                access &= FS_FILE_RIGHTS
            if not access:
                return
            rule = _PathBeneath(access, fd)
            self._add(_RULE_PATH_BENEATH, ctypes.byref(rule), path)
        finally:
            os.close(fd)

    def allow_port(self, port: int, access: int = NET_CONNECT_TCP) -> None:
        """Allow *access* (TCP connect by default) to *port*."""
        rule = _NetPort(access & self.handled_net, port)
        self._add(_RULE_NET_PORT, ctypes.byref(rule), f"port {port}")

    def _add(self, rule_type: int, rule: object, what: str) -> None:
        libc = _libc()
        libc.syscall.restype = ctypes.c_long
        r = libc.syscall(ctypes.c_long(_SYS_ADD_RULE), ctypes.c_int(self.fd), ctypes.c_int(rule_type), rule,
                         ctypes.c_uint32(0))
        if r < 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"landlock_add_rule ({what}): {os.strerror(err)}")

    def restrict_self(self) -> None:
        """Apply the ruleset to this thread and everything it starts from now on (irreversible)."""
        libc = _libc()
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
        libc.syscall.restype = ctypes.c_long
        r = libc.syscall(ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(self.fd), ctypes.c_uint32(0))
        if r < 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"landlock_restrict_self: {os.strerror(err)}")
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


__all__ = ["FS_FILE_RIGHTS", "NET_BIND_TCP", "NET_CONNECT_TCP", "LandlockError", "Ruleset", "abi_version",
           "fs_changes"]
