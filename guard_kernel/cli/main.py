"""Command line: ``python -m guard_kernel demo | run | install | kernels | doctor | audit (verify | show | list) | verify |
check | policy … | check-policy`` (one module per family).

Exit codes: 0 success; 1 the run, audit or demo is not as expected, or ``policy check`` found
errors; 2 bad input (a missing file, a policy that does not load where one is needed);
``check``: 3 something denied, 4 something decided only at run time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from guard_kernel.cli import audit, check, kernel, policy, run
from guard_kernel.policy.model import PolicyError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m guard_kernel``."""
    p = argparse.ArgumentParser(prog="python -m guard_kernel",
                                description="Access guardrails for Jupyter notebooks and AI agents.")
    sub = p.add_subparsers(dest="command", required=True)
    for family in (run, kernel, audit, policy, check):
        family.add_parsers(sub)

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


__all__ = ["build_parser", "main"]
