"""``guard-kernel install | kernels | doctor``: the guarded kernelspec, installed, listed and checked."""

from __future__ import annotations

import argparse
import json
import os
import sys

from guard_kernel.kernel import spec


def _cmd_install(args: argparse.Namespace) -> int:
    prefix = sys.prefix if args.sys_prefix else args.prefix
    where = spec.install(name=args.name, user=args.user, prefix=prefix, display_name=args.display_name,
                         policy=args.policy, root=args.root, actor=args.actor, environment=args.environment,
                         audit_dir=args.audit_dir)
    print(f"Installed the guarded kernelspec {args.name!r} in {where}")
    if args.name == "python3":
        print("  Clients that ask for 'python3' get the guarded kernel only where this folder comes first on\n"
              "  Jupyter's data path: put its prefix first on JUPYTER_PATH (see README, 'The guarded kernel').")
    return 0


def _cmd_kernels(args: argparse.Namespace) -> int:
    entries = spec.kernels()
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], indent=2))
        return 0
    for e in entries:
        mark = "guarded" if e.guarded else "-"
        policy = e.policy or ("(environment or built-in)" if e.guarded else "")
        print(f"{e.name:<16} {mark:<8} {e.resource_dir}  {policy}")
    py3 = next((e for e in entries if e.name == "python3"), None)
    if py3 is not None:
        print(f"\n'python3' resolves to {py3.resource_dir} ({'guarded' if py3.guarded else 'NOT guarded'})")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from guard_kernel.kernel.doctor import doctor

    report = doctor(args.name or ["python3"], args.url, args.token or os.environ.get("JUPYTER_TOKEN"))
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.text())
    return 0 if report.ok else 1


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``install`` and ``kernels``."""
    i = sub.add_parser("install", help="install the guarded kernelspec (like python -m ipykernel install)")
    where = i.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user")
    where.add_argument("--sys-prefix", action="store_true", help="install into sys.prefix (the environment)")
    where.add_argument("--prefix", default=None, help="install into PREFIX/share/jupyter/kernels")
    i.add_argument("--name", default=spec.DEFAULT_NAME, help="kernelspec name (python3 for assistants that only ask for it)")
    i.add_argument("--display-name", default=spec.DEFAULT_DISPLAY_NAME, help="name shown in Jupyter")
    i.add_argument("--policy", default=None, help="policy file, fixed and pinned by its SHA-256")
    i.add_argument("--root", default=None, help="project root the policy's relative paths mean")
    i.add_argument("--actor", default="agent", choices=("agent", "human"))
    i.add_argument("--environment", default=None, help="GUARD_KERNEL_ENVIRONMENT of the kernel")
    i.add_argument("--audit-dir", default=None, help="where the kernel writes its audit")
    i.set_defaults(func=_cmd_install)

    k = sub.add_parser("kernels", help="list the kernelspecs Jupyter sees and which are guarded")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=_cmd_kernels)

    d = sub.add_parser("doctor", help="check every kernel an assistant can start or reach is guarded (exit 1 if not)")
    d.add_argument("--name", action="append", help="kernelspec name to check (repeatable; default python3)")
    d.add_argument("--url", default=None, help="a Jupyter server: check its running kernels too")
    d.add_argument("--token", default=None, help="the server's token (else $JUPYTER_TOKEN)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=_cmd_doctor)


__all__ = ["add_parsers"]
