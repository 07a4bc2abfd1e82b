"""The runtime audit hook: cost per ignored event, and a pandas workload with / without it.

An audit hook cannot be removed, so every measurement runs in a child process
(``python -m benchmarks.bench_runtime <mode> <workload>``) and the harness keeps none.
Children alternate: plain, guarded, guarded, plain…  A third mode installs a no-op
Python hook, the floor any Python-level hook pays.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from .common import guard_env, run_child
from .harness import Config, Result, Skip, Stats, alternate, at_most, require, skipped

GROUP = "runtime"
EVENTS = 1_000_000
MODULE = "benchmarks.bench_runtime"


# ------------------------------------------------------------------ the child side

def _install(mode: str) -> None:
    if mode == "noop":
        sys.addaudithook(lambda event, args: None)
    elif mode == "guarded":
        from guard_kernel.decision import guard as session
        from guard_kernel.enforce.runtime import hook as runtime

        guard = session.guard_from_env()
        session.set_current(guard)
        runtime.install(guard)
        try:
            from guard_kernel.enforce.dataframe import writers as dataframe
        except ImportError:
            pass
        else:
            dataframe.install(guard)


def _events() -> float:
    """Seconds per ``sys._getframe()`` call (one ``sys._getframe`` audit event each), best of 5."""
    getframe = sys._getframe
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(EVENTS):
            getframe()
        best = min(best, time.perf_counter() - t0)
    return best / EVENTS


def _pandas(csv: str, reps: int) -> float:
    """Seconds for *reps* × (read the CSV, group twice, merge with a dimension table and a summary)."""
    import pandas as pd

    stores = pd.DataFrame({"store": range(200), "region": [("north", "south", "east", "west")[i % 4]
                                                          for i in range(200)]})
    t0 = time.perf_counter()
    for _ in range(reps):
        df = pd.read_csv(csv)
        by_store = df.groupby("store", as_index=False).agg(revenue=("amount", "sum"), orders=("order_id", "count"))
        by_day = df.groupby(["day", "store"], as_index=False)["amount"].mean()
        enriched = df.merge(stores, on="store", how="left")
        daily = by_day.merge(by_store, on="store").merge(stores, on="store")
        summary = enriched.groupby(["region", "channel"])["amount"].sum()
        if daily.empty or summary.empty:
            raise RuntimeError("empty result")
    return time.perf_counter() - t0


def child(argv: list[str]) -> dict[str, Any]:
    mode, workload = argv[0], argv[1]
    # imported before the hook in every mode: import cost is not the point here (and under the
    # hook numpy's own ``import ctypes`` meets the policy's python.import rule, see the README)
    import pandas  # noqa: F401

    _install(mode)
    if workload == "events":
        return {"seconds_per_event": _events()}
    return {"seconds": _pandas(argv[2], int(argv[3]))}


# ------------------------------------------------------------------ the harness side

def _make_csv(path: str, rows: int) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    pd.DataFrame({
        "order_id": np.arange(rows),
        "store": rng.integers(0, 200, rows),
        "day": rng.integers(0, 365, rows),
        "amount": rng.gamma(2.0, 30.0, rows).round(2),
        "channel": rng.choice(["web", "app", "store"], rows),
    }).to_csv(path, index=False)


def run(cfg: Config) -> list[Result]:
    goals = {"event": at_most(250e-9, "≤ 250 ns"), "pandas": at_most(1.02, "≤ 1.02")}
    reps = 5 if cfg.quick else 20
    names = {"event": "hook cost per ignored event",
             "pandas": f"pandas workload (200k-row CSV, groupby, merges ×{reps})"}
    try:
        require("guard_kernel.enforce.runtime.hook")
    except Skip as exc:
        return [skipped(GROUP, names[k], str(exc), goals[k]) for k in names]
    env = guard_env(cfg)
    results = []

    def side(mode: str, workload: str, *extra: str) -> Any:
        def once() -> float:
            out = run_child(cfg, MODULE, [mode, workload, *extra], env)
            return float(out["seconds_per_event" if workload == "events" else "seconds"])
        return once

    s = alternate({m: side(m, "events") for m in ("guarded", "plain", "noop")}, cfg.rounds, warmup=0)
    g, p, n = (Stats.of(s[k]) for k in ("guarded", "plain", "noop"))
    per_event = g.median - p.median
    results.append(Result(GROUP, names["event"], "s", g, p, per_event, "Δ/event", "s", goals["event"],
                          note=f"sys._getframe() loop of {EVENTS:,} per child; a no-op Python hook costs "
                               f"{(n.median - p.median) * 1e9:.0f} ns/event here"))

    csv = os.path.join(cfg.workdir, "inputs", "sales.csv")
    os.makedirs(os.path.dirname(csv), exist_ok=True)
    _make_csv(csv, 200_000)
    rounds = 3 if cfg.quick else cfg.rounds  # each child runs the whole ×reps workload (~0.1 s per rep)
    s = alternate({m: side(m, "pandas", csv, str(reps)) for m in ("guarded", "plain")}, rounds, warmup=0)
    g, p = Stats.of(s["guarded"]), Stats.of(s["plain"])
    results.append(Result(GROUP, names["pandas"], "s", g, p, g.median / p.median, "ratio", "x", goals["pandas"],
                          note=f"{rounds} child processes per side; guarded = runtime.install"
                               " (+ dataframe.install when present)"))
    return results


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1:])))
