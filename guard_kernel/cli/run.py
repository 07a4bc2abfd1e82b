"""``guard-kernel run`` and ``guard-kernel demo``: notebooks executed headlessly in the guarded kernel.

``run`` exits 0 when every cell ran and every denial was expected (a cell tagged
``raises-exception``, as nbval reads it), 3 on an unexpected denial (0 with
``--allow-denials``), 1 when a cell failed for another reason or the audit does not verify,
2 for bad arguments or an invalid policy.
"""

from __future__ import annotations

import argparse
import os
import sys

from guard_kernel.decision.guard import ENV_ACTOR
from guard_kernel.policy.load import load_policy


def _cmd_demo(args: argparse.Namespace) -> int:
    from guard_kernel.demo.main import demo

    return demo(args.build_dir)


def _progress(number: int, count: int, title: str) -> None:
    """A one-line progress bar on a terminal (nothing when stdout is a file or a pipe)."""
    width = 30
    done = int(width * (number - 1) / max(count, 1))
    sys.stdout.write(f"\r[{'#' * done}{'.' * (width - done)}] {number}/{count} {title[:40]:<40}")
    sys.stdout.flush()


def _cmd_run(args: argparse.Namespace) -> int:
    from guard_kernel.tools.runner import exit_status, print_audit, print_report, print_summary, run_notebook

    cwd = os.path.abspath(args.cwd)
    if not os.path.isfile(args.notebook):
        print(f"run: {args.notebook}: no such notebook", file=sys.stderr)
        return 2
    if args.policy:
        load_policy(args.policy, root=args.root or cwd)  # refuse a bad policy before starting a kernel
    tty = sys.stdout.isatty()
    result = run_notebook(args.notebook, cwd=cwd, policy=args.policy, actor=args.actor, root=args.root,
                          audit_dir=args.audit_dir, environment=args.environment, kernel=args.kernel,
                          timeout=args.timeout, output=args.output, progress=_progress if tty else None)
    if tty:
        print("\r" + " " * 80 + "\r", end="")
    print_report(result)
    if args.output:
        print(f"\nexecuted notebook: {args.output}")
    audit_ok = print_audit(result.audit_files)
    print_summary(result)
    status = exit_status(result, allow_denials=args.allow_denials)
    if not audit_ok:
        status = max(status, 1)
    why = {1: "a cell failed, or differs from its expectation, or the audit does not verify",
           3: "a cell was denied that the notebook does not expect (tag it raises-exception, or --allow-denials)"}
    if status:
        print(f"\nrun: {why[status]}", file=sys.stderr)
    return status


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``demo`` and ``run``."""
    d = sub.add_parser("demo", help="build build/demo and run notebooks/demo.ipynb as an agent (make demo)")
    d.add_argument("--build-dir", default="build/demo", help="where to build the demo workspace (recreated)")
    d.set_defaults(func=_cmd_demo)

    r = sub.add_parser("run", help="execute a notebook headlessly in the guarded kernel and report each cell")
    r.add_argument("notebook")
    r.add_argument("--policy", default=None, help="policy YAML file (default: the built-in strict policy)")
    r.add_argument("--root", default=None, help="project root the policy's paths mean (default: --cwd)")
    r.add_argument("--actor", default=os.environ.get(ENV_ACTOR, "agent"), choices=("agent", "human"))
    r.add_argument("--environment", default=None, help="GUARD_KERNEL_ENVIRONMENT for the kernel")
    r.add_argument("--kernel", default=None, help="an installed guarded kernelspec to run in (its settings win)")
    r.add_argument("--cwd", default=".", help="working directory of the kernel")
    r.add_argument("--audit-dir", default=None, help="audit directory (default: CWD/.guard_audit)")
    r.add_argument("--output", default=None, help="write the executed notebook here")
    r.add_argument("--timeout", type=int, default=180, help="seconds per cell")
    r.add_argument("--allow-denials", action="store_true", help="exit 0 even when a cell was denied unexpectedly")
    r.set_defaults(func=_cmd_run)


__all__ = ["add_parsers"]
