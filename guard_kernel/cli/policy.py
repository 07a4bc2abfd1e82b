"""``guard-kernel policy check | explain | test`` and ``check-policy`` (an alias of ``policy check``
that also summarises the policy).

``policy check`` exits like a linter: 0 clean (warnings alone included), 1 when a policy has errors
(or warnings, with ``--strict``), 2 for a bad invocation (no such file).  ``policy test``: 0 every
case passed, 1 some failed, 2 no such file or a malformed cases file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from guard_kernel.decision.guard import ENV_ACTOR, ENV_ENVIRONMENT
from guard_kernel.policy.load import load_policy
from guard_kernel.policy.model import ACTORS, Policy


def _summary(pol: Policy) -> dict[str, Any]:
    return {
        "name": pol.name, "file": pol.file, "sha256": pol.sha256, "mode": pol.mode, "lock": pol.lock,
        "defaults": {k.value: v for k, v in pol.defaults.items()},
        "sources": {n: {"duckdb": s.duckdb, "paths": [g.text for g in s.paths],
                        "tables": {t: sorted(st.deny_columns) for t, st in s.tables.items()}}
                    for n, s in pol.sources.items()},
        "scratch": [g.text for g in pol.scratch], "max_rows": dict(pol.limits.max_rows),
        "on_exceed": pol.limits.on_exceed, "rules": [r.ref for r in pol.rules],
    }


def _print_summary(pol: Policy) -> None:
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


def _missing(files: list[str]) -> int | None:
    gone = [f for f in files if not os.path.isfile(f)]
    for f in gone:
        print(f"error: no such policy file: {f}", file=sys.stderr)
    return 2 if gone else None


def _cmd_policy_check(args: argparse.Namespace) -> int:
    from guard_kernel.tools.lint import Severity, exit_code, lint_policy

    bad = _missing(args.files)
    if bad is not None:
        return bad
    root = os.path.abspath(args.root or ".")  # the policy tools, like the kernel, take an explicit root
    results: list[dict[str, Any]] = []
    codes = []
    for f in args.files:
        findings = lint_policy(f, root=root)
        codes.append(exit_code(findings, strict=args.strict))
        errors = any(x.severity is Severity.ERROR for x in findings)
        pol = None if errors else load_policy(f, root=root)
        if args.json:
            results.append({"file": os.path.abspath(f),
                            **(_summary(pol) if pol is not None and args.summary else {}),
                            "ok": not errors, "findings": [x.as_dict() for x in findings]})
            continue
        for x in findings:
            print(x, file=sys.stdout if x.severity is Severity.WARNING else sys.stderr)
        if pol is not None:
            n = len(findings)
            print(f"{pol.file}: ok — policy {pol.name!r} ({pol.mode}, lock {'on' if pol.lock else 'off'})"
                  + (f", {n} warning{'s' if n != 1 else ''}" if n else ""))
            if args.summary:
                _print_summary(pol)
    if args.json:
        print(json.dumps(results[0] if args.summary and len(results) == 1 else results, indent=2))
    return max(codes)


def _cmd_policy_explain(args: argparse.Namespace) -> int:
    from guard_kernel.tools.explain import as_json, explain, render

    bad = _missing([args.file])
    if bad is not None:
        return bad
    pol = load_policy(args.file, root=os.path.abspath(args.root or "."))
    data = explain(pol, args.actor, args.environment)
    print(json.dumps(as_json(data), indent=2) if args.json else render(data), end="" if not args.json else "\n")
    return 0


def _cmd_policy_test(args: argparse.Namespace) -> int:
    from guard_kernel.tools.cases import default_cases_file, load_cases, run_cases, summary

    files = args.cases or [default_cases_file(args.file)]
    bad = _missing([args.file, *files])
    if bad is not None:
        return bad
    root = os.path.abspath(args.root or ".")  # the policy tools, like the kernel, take an explicit root
    pol = load_policy(args.file, root=root)
    cases = [c for f in files for c in load_cases(f)]  # a malformed file: PolicyError, exit 2
    if args.k:
        cases = [c for c in cases if args.k in c.name]
    results = run_cases(pol, cases, cwd=root)
    for f in files:
        mine = [r for r in results if r.case.file == f]
        if args.verbose:
            for r in mine:
                print(f"{os.path.relpath(f)}::{r.case.name} {'PASSED' if r.passed else 'FAILED'}")
        else:
            print(f"{os.path.relpath(f)} " + "".join("." if r.passed else "F" for r in mine))
    failed = [r for r in results if not r.passed]
    for r in failed:
        print(f"\nFAILED {os.path.relpath(r.case.file)}:{r.case.line}::{r.case.name}: {r.explain()}")
    print(summary(results))
    return 1 if failed else 0


def _add_check_arguments(c: argparse.ArgumentParser, *, summary: bool) -> None:
    c.add_argument("files", nargs="+", metavar="FILE", help="policy YAML file(s)")
    c.add_argument("--root", default=None, help="project root that relative paths resolve against (default: here)")
    c.add_argument("--strict", action="store_true", help="warnings are errors (exit 1)")
    c.add_argument("--json", action="store_true", help="findings (and the summary) as JSON")
    c.set_defaults(func=_cmd_policy_check, summary=summary)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``policy check | explain | test`` and ``check-policy``."""
    p = sub.add_parser("policy", help="check, explain and test policy files")
    verbs = p.add_subparsers(dest="verb", required=True)
    c = verbs.add_parser("check", help="validate policy files like a linter (exit 0 clean, 1 errors, 2 no file)")
    _add_check_arguments(c, summary=False)
    c.add_argument("--summary", action="store_true", help="also summarise each policy")

    e = verbs.add_parser("explain", help="what an actor may and may not do under a policy, in plain language")
    e.add_argument("file", metavar="FILE")
    e.add_argument("--actor", default=os.environ.get(ENV_ACTOR, "agent"), choices=ACTORS)
    e.add_argument("--environment", default=os.environ.get(ENV_ENVIRONMENT, "default"))
    e.add_argument("--root", default=None, help="project root that relative paths resolve against (default: here)")
    e.add_argument("--json", action="store_true", help="the same as JSON")
    e.set_defaults(func=_cmd_policy_explain)

    t = verbs.add_parser("test", help="run table-driven cases (policies/tests/<policy>.yaml) against a policy")
    t.add_argument("file", metavar="FILE", help="the policy")
    t.add_argument("cases", nargs="*", metavar="CASES", help="cases files (default: tests/<policy>.yaml beside it)")
    t.add_argument("--root", default=None, help="project root the cases run in (default: here)")
    t.add_argument("-k", default=None, help="only cases whose name contains this")
    t.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    t.set_defaults(func=_cmd_policy_test)

    a = sub.add_parser("check-policy", help="alias of `policy check --summary`: validate and summarise")
    _add_check_arguments(a, summary=True)


__all__ = ["add_parsers"]
