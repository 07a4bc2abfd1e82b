"""``guard-kernel run`` and ``guard-kernel demo``: notebooks executed headlessly under a policy."""

from __future__ import annotations

import argparse
import os
import sys

from guard_kernel.decision.guard import ENV_ACTOR
from guard_kernel.policy.load import load_policy


def _cmd_demo(args: argparse.Namespace) -> int:
    from guard_kernel.demo.main import demo

    return demo(args.build_dir)


def _cmd_run(args: argparse.Namespace) -> int:
    from guard_kernel.tools.runner import print_audit, print_report, run_notebook

    cwd = os.path.abspath(args.cwd)
    load_policy(args.policy, root=cwd)  # refuse a bad policy before starting a kernel
    result = run_notebook(args.notebook, cwd=cwd, policy=args.policy, actor=args.actor,
                          audit_dir=args.audit_dir, environment=args.environment,
                          load_guard=not args.no_load, timeout=args.timeout, output=args.output)
    print_report(result)
    if args.output:
        print(f"\nexecuted notebook: {args.output}")
    audit_ok = print_audit(result.audit_files)
    failed = [c for c in result.cells if c.status == "error" and c.expect is None] + [c for c, _ in result.problems]
    if failed or not audit_ok:
        print(f"\nrun: {len(failed)} cell(s) failed or differ from their expectation" if failed
              else "\nrun: the audit does not verify", file=sys.stderr)
        return 1
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``demo`` and ``run``."""
    d = sub.add_parser("demo", help="build build/demo and run notebooks/demo.ipynb as an agent (make demo)")
    d.add_argument("--build-dir", default="build/demo", help="where to build the demo workspace (recreated)")
    d.set_defaults(func=_cmd_demo)

    r = sub.add_parser("run", help="execute a notebook headlessly under a policy and report each cell")
    r.add_argument("notebook")
    r.add_argument("--policy", required=True, help="policy YAML file")
    r.add_argument("--actor", default=os.environ.get(ENV_ACTOR, "agent"), choices=("agent", "human"))
    r.add_argument("--environment", default=None, help="GUARD_KERNEL_ENVIRONMENT for the kernel")
    r.add_argument("--cwd", default=".", help="working directory (project root) of the kernel")
    r.add_argument("--audit-dir", default=None, help="audit directory (default: CWD/.guard_audit)")
    r.add_argument("--output", default=None, help="write the executed notebook here")
    r.add_argument("--timeout", type=int, default=180, help="seconds per cell")
    r.add_argument("--no-load", action="store_true",
                   help="do not run %%load_ext guard_kernel first (the notebook loads it itself)")
    r.set_defaults(func=_cmd_run)



__all__ = ["add_parsers"]
