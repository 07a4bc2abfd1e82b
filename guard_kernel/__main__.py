"""Command line: ``python -m guard_kernel demo | run | verify | check-policy``.

Exit codes: 0 success; 1 the run, audit or demo is not as expected; 2 bad input
(a policy that does not validate, a missing file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .policy import ENV_ACTOR, PolicyError, load_policy


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo

    return demo(args.build_dir)


def _cmd_run(args: argparse.Namespace) -> int:
    from .demo import print_audit, print_report, run_notebook

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


def _cmd_verify(args: argparse.Namespace) -> int:
    from .audit import verify

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


def _cmd_check_policy(args: argparse.Namespace) -> int:
    root = os.path.abspath(args.root)
    pol = load_policy(args.file, root=root)
    if args.json:
        print(json.dumps({
            "name": pol.name, "file": pol.file, "sha256": pol.sha256, "mode": pol.mode, "lock": pol.lock,
            "defaults": {k.value: v for k, v in pol.defaults.items()},
            "sources": {n: {"duckdb": s.duckdb, "paths": [g.text for g in s.paths],
                            "tables": {t: sorted(st.deny_columns) for t, st in s.tables.items()}}
                        for n, s in pol.sources.items()},
            "scratch": [g.text for g in pol.scratch], "max_rows": dict(pol.limits.max_rows),
            "on_exceed": pol.limits.on_exceed, "rules": [r.ref for r in pol.rules],
        }, indent=2))
        return 0
    print(f"{pol.file}: ok — policy {pol.name!r} ({pol.mode}, lock {'on' if pol.lock else 'off'})")
    if pol.description:
        print(f"  {pol.description}")
    print("  defaults: " + ", ".join(f"{k.value} {v}" for k, v in pol.defaults.items()))
    for name, src in pol.sources.items():
        what = [f"duckdb {src.duckdb}"] if src.duckdb else []
        what += [g.text for g in src.paths]
        hidden = [f"{t}.{c}" for t, st in src.tables.items() for c in sorted(st.deny_columns)]
        print(f"  source {name}: {', '.join(what)} (read-only)" + (f"; deny columns {', '.join(hidden)}" if hidden else ""))
    print(f"  scratch: {', '.join(g.text for g in pol.scratch) or 'none'}")
    print("  max rows: " + ", ".join(f"{a} {n}" for a, n in pol.limits.max_rows.items())
          + f" (on exceed: {pol.limits.on_exceed})")
    for r in pol.rules:
        who = f" for {', '.join(r.actors)}" if r.actors else ""
        mode = " [audit mode]" if r.mode == "audit" else ""
        print(f"  rule {r.ref}: {r.effect} {', '.join(r.actions)}{who}{mode}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m guard_kernel``."""
    p = argparse.ArgumentParser(prog="python -m guard_kernel",
                                description="Access guardrails for Jupyter notebooks and AI agents.")
    sub = p.add_subparsers(dest="command", required=True)

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

    v = sub.add_parser("verify", help="check the hash chain of audit files")
    v.add_argument("audit", nargs="+", metavar="AUDIT.jsonl")
    v.set_defaults(func=_cmd_verify)

    c = sub.add_parser("check-policy", help="validate a policy file and summarise it")
    c.add_argument("file")
    c.add_argument("--root", default=".", help="project root that relative globs resolve against")
    c.add_argument("--json", action="store_true", help="print the parsed policy as JSON")
    c.set_defaults(func=_cmd_check_policy)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m guard_kernel`` and the ``guard-kernel`` script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PolicyError as exc:
        print(f"policy error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
