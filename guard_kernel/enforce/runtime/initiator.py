"""Who started an interpreter event: the user's code, or a library acting on its own behalf.

The runtime hook judges imports (and ``compile`` of strings, and ``ctypes.dlopen`` during an
import) only when the user's code started them.  The initiator is the first frame outside
the import machinery: a cell, ``<string>`` code and any file outside the standard library
and site-packages (the project's own modules included) are the user's; numpy importing
``ctypes`` is numpy's.  Frames are classified by file name, once per file.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import site
import sys
import sysconfig
from types import FrameType

from guard_kernel._package import PACKAGE_DIR, package_path

_SKIP, _CTYPES, _LIBRARY, _USER = range(4)
_kinds: dict[str, int] = {}


@functools.lru_cache(maxsize=1)
def _code_places() -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """(import machinery prefixes, library directories, the ctypes package directory).

    Computed by :func:`prepare`, before the hook exists: computing it inside the hook would
    raise the events it is meant to judge.
    """
    stdlib = os.path.dirname(os.__file__)
    # the post-import hook runs the importer's import: it is machinery, not an initiator
    machinery = [os.path.dirname(importlib.__file__) + os.sep, package_path("enforce", "lazy.py")]
    # helpers that import a module by the name their caller gives: the caller is the importer
    machinery += [os.path.join(stdlib, f) for f in ("runpy.py", "pkgutil.py", "pydoc.py")]
    paths = sysconfig.get_paths()
    libs = {paths.get(k) or "" for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    libs |= set(site.getsitepackages()) | {site.getusersitepackages()}
    libs |= {p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")}
    libs.add(PACKAGE_DIR)  # the guard's own imports are not the user's (every module below the package)
    dirs = {d for d in libs if d} | {os.path.realpath(d) for d in libs if d}
    spec = importlib.util.find_spec("ctypes")  # where ctypes lives, found without importing it
    ctypes_dir = os.path.dirname(spec.origin) + os.sep if spec is not None and spec.origin else "<no ctypes>"
    return (tuple(machinery) + tuple(os.path.realpath(m) for m in machinery),
            tuple(sorted(d.rstrip(os.sep) + os.sep for d in dirs)), ctypes_dir)


def _kind(filename: str) -> int:
    """Whose code a file is: import machinery (skipped), ctypes, a library, or the user's."""
    kind = _kinds.get(filename)
    if kind is not None:
        return kind
    machinery, libs, ctypes_dir = _code_places()
    if filename.startswith(("<frozen importlib.", "<frozen zipimport>", "<frozen runpy>")) or \
            filename.startswith(machinery):
        kind = _SKIP
    elif filename.startswith("<frozen "):
        kind = _LIBRARY  # a frozen standard-library module (os, codecs…)
    elif filename.startswith(ctypes_dir):
        kind = _CTYPES
    elif filename.startswith(libs):
        kind = _LIBRARY
    else:
        kind = _USER  # cells, <string> (exec of built code), files of the project and the user's own scripts
    if len(_kinds) > 4096:
        _kinds.clear()
    _kinds[filename] = kind
    return kind


def library_initiated(frame: FrameType | None, *, past_ctypes: bool = False, during_import: bool = False) -> bool:
    """Whether the event was started by library code rather than by the user's code.

    The initiator is the first frame outside the import machinery (and, with *past_ctypes*,
    outside ctypes itself): ``numpy``'s ``import ctypes`` is numpy's, ``exec("import ctypes")``
    and ``importlib.import_module("ctypes")`` from a cell are the cell's.  With
    *during_import*, library code counts only while it runs as part of an import (a library
    function called from a cell at run time acts for the cell).  A library helper that
    imports a name the user passes it (``pickle.loads``' pure-Python twin, say) counts as the
    library: a guardrail, not a sandbox.
    """
    f = frame
    kind = _USER
    while f is not None:
        kind = _kind(f.f_code.co_filename)
        if kind == _SKIP or (past_ctypes and kind == _CTYPES):
            f = f.f_back
            continue
        break
    if f is None or kind == _USER:
        return False
    if not during_import:
        return True
    f = f.f_back
    while f is not None:
        filename = f.f_code.co_filename
        if filename.startswith("<frozen importlib._bootstrap"):
            return True
        if _kind(filename) == _USER:
            return False
        f = f.f_back
    return True


def audit_writer_on_stack(frame: FrameType | None) -> bool:
    """True when the guard's own audit writer is among the callers of *frame* (a new session's file)."""
    from guard_kernel.audit import writer as audit

    target = audit.__file__
    while frame is not None:
        if frame.f_code.co_filename == target:
            return True
        frame = frame.f_back
    return False


def prepare() -> None:
    """Work out where code lives — before the audit hook exists (it would judge these very imports)."""
    _code_places()


__all__ = ["audit_writer_on_stack", "library_initiated", "prepare"]
