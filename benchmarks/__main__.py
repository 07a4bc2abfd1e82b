"""``python -m benchmarks``: run every benchmark group, print the table, write JSON and a chart."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

from . import (
    bench_audit,
    bench_databases,
    bench_duckdb,
    bench_guarded_kernel,
    bench_kernel,
    bench_runtime,
    bench_server,
    bench_spark,
    bench_sql,
    bench_static,
)
from .harness import Config, Result
from .report import load_average, machine_info, print_machine, table, write_chart, write_json

GROUPS: dict[str, Callable[[Config], list[Result]]] = {
    "sql": bench_sql.run,
    "duckdb": bench_duckdb.run,
    "databases": bench_databases.run,
    "kernel": bench_kernel.run,
    "guarded": bench_guarded_kernel.run,
    "runtime": bench_runtime.run,
    "static": bench_static.run,
    "audit": bench_audit.run,
    "server": bench_server.run,
    "spark": bench_spark.run,
}

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller data and fewer rounds (about a minute)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per benchmark (default 7, quick 5)")
    ap.add_argument("--only", nargs="+", choices=sorted(GROUPS), default=(), help="run only these groups")
    ap.add_argument("--out", default=HERE, help="directory for results.json and results.png")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    ap.add_argument("--profile", action="store_true",
                    help="run each group under pyinstrument and write <out>/profile-<group>.txt "
                         "(the timings of a profiled run are not comparable with the goals)")
    args = ap.parse_args(argv)
    logging.getLogger("sqlglot").setLevel(logging.ERROR)  # 'falling back to Command' notes

    root = os.path.dirname(HERE)
    workdir = tempfile.mkdtemp(prefix="guard-bench-")
    cfg = Config(quick=args.quick, rounds=args.rounds or (5 if args.quick else 7), workdir=workdir, root=root,
                 only=tuple(args.only))
    info = machine_info()
    print_machine(info)
    print(f"mode: {'quick' if cfg.quick else 'full'}, {cfg.rounds} rounds, work dir {workdir}\n", flush=True)
    results: list[Result] = []
    started = time.perf_counter()
    try:
        for name, run in GROUPS.items():
            if cfg.only and name not in cfg.only:
                continue
            t0 = time.perf_counter()
            print(f"… {name}", end="", flush=True)
            try:
                got = _profiled(run, cfg, os.path.join(args.out, f"profile-{name}.txt")) if args.profile else run(cfg)
            except Exception as exc:  # one broken group must not hide the others' results
                traceback.print_exc(file=sys.stderr)
                got = [Result(name, "(group)", status="error", note=f"{type(exc).__name__}: {exc}")]
            results.extend(got)
            print(f" {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(results))
    info["load_average_end"] = load_average()
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average at the end {info['load_average_end']}")
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "results.json")
    write_json(json_path, info, results, {"quick": cfg.quick, "rounds": cfg.rounds, "only": list(cfg.only)})
    png_path = os.path.join(args.out, "results.png")
    wrote = write_chart(png_path, results, info)
    print(f"wrote {json_path}" + (f" and {png_path}" if wrote else " (no chart: matplotlib missing or no goals)"))
    return 0


def _profiled(run: Callable[[Config], list[Result]], cfg: Config, path: str) -> list[Result]:
    """*run* under pyinstrument (this process only: kernels and runtime children are not in it)."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise SystemExit("--profile needs pyinstrument: pip install pyinstrument (make bench installs it)") from None
    profiler = Profiler(interval=0.0002)
    profiler.start()
    try:
        return run(cfg)
    finally:
        profiler.stop()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(profiler.output_text(unicode=True, show_all=False))
        print(f" (profile: {path})", end="", flush=True)


if __name__ == "__main__":
    sys.exit(main())
