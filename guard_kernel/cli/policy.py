"""``guard-kernel check-policy``: a policy file validated and summarised."""

from __future__ import annotations

import argparse
import json
import os

from guard_kernel.policy.load import load_policy


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


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``check-policy``."""
    c = sub.add_parser("check-policy", help="validate a policy file and summarise it")
    c.add_argument("file")
    c.add_argument("--root", default=".", help="project root that relative globs resolve against")
    c.add_argument("--json", action="store_true", help="print the parsed policy as JSON")
    c.set_defaults(func=_cmd_check_policy)


__all__ = ["add_parsers"]
