"""``guard-kernel audit verify | show | list | render | bundle | crosscheck`` (and ``verify``, the older spelling of ``audit verify``).

Every verb streams the files: a 100,000-record audit is never loaded whole.  Exit codes:
0 every chain intact; 1 a chain is broken (or a session file is damaged); 2 a file or folder
that does not exist.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from guard_kernel.audit.integrity import verify
from guard_kernel.audit.notebook import FORMATS, NotebookRenderer, format_for, write_as
from guard_kernel.audit.summary import chains, sessions, short, summarize, summary_text, table

DEFAULT_DIR_ENV = "GUARD_KERNEL_AUDIT_DIR"


def _missing(path: str) -> bool:
    if not os.path.isfile(path):
        print(f"{path}: no such file", file=sys.stderr)
        return True
    return False


def _cmd_verify(args: argparse.Namespace) -> int:
    status = 0
    for path in args.audit:
        if _missing(path):
            status = max(status, 2)
            continue
        res = verify(path)
        if res.ok:
            print(f"{path}: ok, hash chain intact ({res.records} records); {res.ended}")
        else:
            print(f"{path}: BROKEN after {res.records} good record(s): {res.problem}")
            status = max(status, 1)
    return status


def _cmd_show(args: argparse.Namespace) -> int:
    if _missing(args.audit):
        return 2
    s = summarize(args.audit)
    print(json.dumps(s.as_dict(), indent=2) if args.json else summary_text(s))
    return 0 if s.chain.ok else 1


def _cmd_list(args: argparse.Namespace) -> int:
    folder = args.dir or os.environ.get(DEFAULT_DIR_ENV) or ".guard_audit"
    if not os.path.isdir(folder):
        print(f"{folder}: no such folder", file=sys.stderr)
        return 2
    found = sessions(folder)
    if args.json:
        print(json.dumps([[s.as_dict() for s in chain] for chain in chains(found)], indent=2))
    else:
        rows = []
        for chain in chains(found):
            for i, s in enumerate(chain):
                rows.append((("└ " if i else "") + str(s.session), (s.started or "")[:19], str(s.actor),
                             str(s.policy), str(s.cells), str(s.denial_count), str(s.truncations),
                             "ok" if s.chain.ok else "BROKEN", short(s.ended, 48)))
        print(table(rows, ("session", "started", "actor", "policy", "cells", "denials", "truncations",
                            "chain", "ended")) if rows else f"{folder}: no sessions")
    return 0 if all(s.chain.ok for s in found) else 1


def _cmd_render(args: argparse.Namespace) -> int:
    if _missing(args.audit):
        return 2
    fmt = format_for(args.format, args.output)
    out = args.output or (args.audit[: -len(".jsonl")] if args.audit.endswith(".jsonl") else args.audit) + f".{fmt}"
    r = NotebookRenderer(args.audit).feed_file(args.audit)
    text = write_as(r.notebook(), fmt)
    if out == "-":
        sys.stdout.write(text)
    else:
        tmp = f"{out}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, out)
    res = r.check.result()
    print(f"{out}: {fmt} of {args.audit} ({res.records} records, chain "
          f"{'ok' if res.ok else 'BROKEN: ' + str(res.problem)}; {res.ended})", file=sys.stderr)
    return 0 if res.ok else 1


def _cmd_bundle(args: argparse.Namespace) -> int:
    from guard_kernel.audit.bundle import bundle

    if _missing(args.audit):
        return 2
    b = bundle(args.audit, args.output)
    print(b.verify_text + "\n".join(b.files))
    return 0 if b.ok else 1


def _cmd_crosscheck(args: argparse.Namespace) -> int:
    from guard_kernel.audit.crosscheck import crosscheck, report_text

    if any([_missing(p) for p in (args.server, *args.kernel)]):
        return 2
    c = crosscheck(args.server, args.kernel)
    print(json.dumps(c.as_dict(), indent=2) if args.json else report_text(c))
    return 0 if c.ok else 1


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``audit`` (verify, show, list) and ``verify`` (an alias of ``audit verify``)."""
    a = sub.add_parser("audit", help="verify, show and list session audit files")
    verbs = a.add_subparsers(dest="verb", required=True)
    for parser in (verbs.add_parser("verify", help="check the hash chain of audit files (exit 1 if one is broken)"),
                   sub.add_parser("verify", help="check the hash chain of audit files (= audit verify)")):
        parser.add_argument("audit", nargs="+", metavar="AUDIT.jsonl")
        parser.set_defaults(func=_cmd_verify)
    s = verbs.add_parser("show", help="a session's summary and its denials")
    s.add_argument("audit", metavar="AUDIT.jsonl")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_cmd_show)
    li = verbs.add_parser("list", help="the sessions of an audit folder, restarts chained")
    li.add_argument("dir", nargs="?", default=None, help=f"folder (default ${DEFAULT_DIR_ENV} or .guard_audit)")
    li.add_argument("--json", action="store_true", help="print JSON")
    li.set_defaults(func=_cmd_list)
    r = verbs.add_parser("render", help="the audit notebook of a session (ipynb, html or md); exit 1 if its chain is broken")
    r.add_argument("audit", metavar="AUDIT.jsonl")
    r.add_argument("-o", "--output", metavar="OUT", help="file to write ('-': standard output; default AUDIT.<format>)")
    r.add_argument("--format", choices=FORMATS, help="default: the suffix of OUT, else ipynb")
    r.set_defaults(func=_cmd_render)
    b = verbs.add_parser("bundle", help="what a reviewer attaches: the .jsonl, its .ipynb and .html, and VERIFY.txt")
    b.add_argument("audit", metavar="AUDIT.jsonl")
    b.add_argument("-o", "--output", metavar="DIR", required=True, help="folder to write the bundle into")
    b.set_defaults(func=_cmd_bundle)
    x = verbs.add_parser("crosscheck", help="cells the Jupyter Server forwarded to a kernel that the kernel never "
                         "recorded (exit 1 if any, or if a chain is broken)")
    x.add_argument("server", metavar="SERVER.jsonl", help="the server's chain (server-<session>.jsonl)")
    x.add_argument("kernel", nargs="+", metavar="KERNEL.jsonl",
                   help="the kernel's audit (and the next sessions' files of a restarted kernel)")
    x.add_argument("--json", action="store_true", help="print JSON")
    x.set_defaults(func=_cmd_crosscheck)


__all__ = ["add_parsers"]
