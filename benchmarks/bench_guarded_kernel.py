"""The guarded kernel against a plain ipykernel: cell round-trips and whole start-ups, in one run.

The guarded side is ``python -I -m guard_kernel.kernel`` from a temporary kernelspec fixing the
policy (``policies/default.yaml``, rooted in the work directory); the plain side is the
``python3`` ipykernel on the same interpreter.  Cells alternate one by one (ABBA) over fresh
kernel pairs; start-ups alternate which side starts first and are paired by round.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from typing import Any

from .bench_kernel import KernelError, _run, _stop
from .common import guard_env, policy_path
from .harness import Config, Result, Skip, Stats, at_most, require, skipped

GROUP = "guarded"
NAME = "guard-kernel-bench"
PAIRS = 3


def _spec_dir(cfg: Config) -> str:
    from guard_kernel.kernel import spec

    tmp = tempfile.mkdtemp(prefix="bench-kernelspec-", dir=cfg.workdir)
    os.makedirs(os.path.join(tmp, NAME))
    data = spec.kernel_json(name=NAME, policy=policy_path(cfg), root=cfg.workdir, actor="agent",
                            audit_dir=os.path.join(cfg.workdir, "audit"))
    with open(os.path.join(tmp, NAME, "kernel.json"), "w", encoding="utf-8") as f:
        json.dump(data, f)
    return tmp


def _start(cfg: Config, spec_dir: str, guarded: bool) -> tuple[Any, Any, float]:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    km = (KernelManager(kernel_name=NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[spec_dir]))
          if guarded else KernelManager(kernel_name="python3"))
    t0 = time.perf_counter()
    km.start_kernel(env=guard_env(cfg), cwd=cfg.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    _run(kc, "pass")
    return km, kc, time.perf_counter() - t0


def run(cfg: Config) -> list[Result]:
    goals = {"trivial": at_most(1.04, "≤ 1.04"), "startup": at_most(50.0, "≤ +50 ms")}
    n = 100 if cfg.quick else 200
    names = {"trivial": f"guarded kernel vs ipykernel, {n} trivial cells",
             "startup": "guarded kernel start-up vs ipykernel (start → first cell done)"}
    try:
        require("jupyter_client")
        require("guard_kernel.kernel.spec")
    except Skip as exc:
        return [skipped(GROUP, names[k], str(exc), goals[k]) for k in names]
    from .bench_kernel import _compile_package

    _compile_package()  # as pip does: otherwise every guarded start compiles the package from source
    spec_dir = _spec_dir(cfg)
    pairs = 2 if cfg.quick else PAIRS
    cells = [f"x_{i} = {i} + 1" for i in range(n)]
    samples: dict[str, list[float]] = {"guarded": [], "plain": []}
    ratios: list[float] = []
    starts: dict[str, list[float]] = {"guarded": [], "plain": []}
    try:
        for i in range(pairs):
            order = [True, False] if i % 2 == 0 else [False, True]
            kernels = {}
            for guarded in order:
                km, kc, dt = _start(cfg, spec_dir, guarded)
                kernels["guarded" if guarded else "plain"] = (km, kc)
                starts["guarded" if guarded else "plain"].append(dt)
            try:
                for _, kc in kernels.values():
                    for code in cells[:5]:  # warm-up on both sides
                        _run(kc, code)
                s: dict[str, list[float]] = {"guarded": [], "plain": []}
                sides = list(kernels)
                for j, code in enumerate(cells):
                    for side in sides if j % 2 == 0 else sides[::-1]:
                        s[side].append(_run(kernels[side][1], code))
                ratios.append(statistics.median(s["guarded"]) / statistics.median(s["plain"]))
                for side in s:
                    samples[side] += s[side]
            finally:
                for km, kc in kernels.values():
                    _stop(km, kc)
        rounds = 3 if cfg.quick else 7
        for r in range(rounds):  # more starts, alternating which side goes first
            for guarded in (True, False) if r % 2 else (False, True):
                km, kc, dt = _start(cfg, spec_dir, guarded)
                _stop(km, kc)
                starts["guarded" if guarded else "plain"].append(dt)
    except KernelError as exc:
        return [skipped(GROUP, names[k], f"error: {exc}", goals[k], status="error") for k in names]
    shown = ", ".join(f"{r:.3f}" for r in ratios)
    diffs = [(a - b) * 1000 for a, b in zip(starts["guarded"], starts["plain"], strict=True)]
    return [
        Result(GROUP, names["trivial"], "s", Stats.of(samples["guarded"]), Stats.of(samples["plain"]),
               statistics.median(ratios), "ratio", "x", goals["trivial"],
               note=f"median of {pairs} kernel pairs' ratios ({shown}); cells alternate one by one",
               extra={"pair_ratios": ratios}),
        Result(GROUP, names["startup"], "s", Stats.of(starts["guarded"]), Stats.of(starts["plain"]),
               statistics.median(diffs), "Δ", "ms", goals["startup"],
               note=f"whole starts, guarded − plain, paired by round: median of {len(diffs)} "
                    f"(range {min(diffs):+.0f} to {max(diffs):+.0f} ms)",
               extra={"paired_diffs_ms": diffs}),
    ]
