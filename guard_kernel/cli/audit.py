"""``guard-kernel verify``: audit files checked."""

from __future__ import annotations

import argparse
import os
import sys


def _cmd_verify(args: argparse.Namespace) -> int:
    from guard_kernel.audit.integrity import verify

    status = 0
    for path in args.audit:
        if not os.path.isfile(path):
            print(f"{path}: no such file", file=sys.stderr)
            status = max(status, 2)
            continue
        res = verify(path)
        if res.ok:
            print(f"{path}: ok, hash chain intact ({res.records} records)")
        else:
            print(f"{path}: BROKEN after {res.records} record(s): {res.problem}")
            status = max(status, 1)
    return status


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``verify``."""
    v = sub.add_parser("verify", help="check the hash chain of audit files")
    v.add_argument("audit", nargs="+", metavar="AUDIT.jsonl")
    v.set_defaults(func=_cmd_verify)



__all__ = ["add_parsers"]
