"""``guard-kernel check``: the pre-flight — would this code or SQL be allowed?  Nothing is executed.

Exit codes: 0 everything allowed (warnings included), 3 something denied, 4 nothing denied but
something is decided only at run time, 2 bad input (no such file, a policy that does not load).
"""

from __future__ import annotations

import argparse
import os
import sys

from guard_kernel.decision.guard import ENV_ACTOR, ENV_ENVIRONMENT
from guard_kernel.policy.model import ACTORS


def _cmd_check(args: argparse.Namespace) -> int:
    from guard_kernel.tools.preflight import check, check_cells, notebook_cells

    given = [x for x in (args.code, args.sql, args.file) if x is not None]
    if len(given) != 1:
        print("check: give exactly one of --code STR, --sql STR or FILE.py|FILE.ipynb", file=sys.stderr)
        return 2
    if "-" in (args.code, args.sql):  # an agent pipes a cell or a statement in
        text = sys.stdin.read()
        args.code, args.sql = (text, None) if args.code == "-" else (None, text)
    common = {"policy": args.policy, "actor": args.actor, "environment": args.environment, "cwd": args.cwd}
    if args.file is not None:
        if not os.path.isfile(args.file):
            print(f"check: no such file: {args.file}", file=sys.stderr)
            return 2
        try:
            cells = notebook_cells(args.file)
        except ValueError as exc:  # a .ipynb that is not JSON
            print(f"check: {args.file}: not a notebook: {exc}", file=sys.stderr)
            return 2
        report = check_cells(cells, **common)
    elif args.sql is not None:
        report = check(args.sql, language="sql", database=args.database, **common)
    else:
        report = check(args.code, language="python", **common)
    print(report.to_json() if args.json else report.render())
    return report.exit_code


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``check``."""
    c = sub.add_parser("check", help="pre-flight: would this code or SQL be allowed? (nothing is executed)",
                       description="Decide code, SQL, a .py file or a notebook's cells under a policy without "
                                   "executing anything. Exit 0 allowed, 3 denied, 4 decided at run time, 2 bad input.")
    c.add_argument("file", nargs="?", default=None, help="a .py file (one cell) or a .ipynb notebook")
    c.add_argument("--code", default=None, help="Python (IPython syntax) to check; - reads it from stdin")
    c.add_argument("--sql", default=None, help="DuckDB SQL to check; - reads it from stdin")
    c.add_argument("--policy", default=None, help="policy file (default: $GUARD_KERNEL_POLICY or the built-in)")
    c.add_argument("--actor", default=os.environ.get(ENV_ACTOR, "agent"), choices=ACTORS)
    c.add_argument("--environment", default=os.environ.get(ENV_ENVIRONMENT, "default"))
    c.add_argument("--cwd", default=None, help="project root the code runs in (default: here)")
    c.add_argument("--database", default=None,
                   help="for --sql: the DuckDB file the connection opens (default: the policy's one DuckDB source)")
    c.add_argument("--json", action="store_true", help="JSON for agents: one object per cell or statement")
    c.set_defaults(func=_cmd_check)


__all__ = ["add_parsers"]
