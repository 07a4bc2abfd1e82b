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


EXEC = NAME + "-exec"
"""The same kernelspec with ``--exec-kernel``: the launcher starts the kernel as a second Python."""
QUIET = NAME + "-no-live"
"""The same policy with ``audit: {live_notebook: false}``: no live-notebook thread in the launcher."""


def _spec_dir(cfg: Config) -> str:
    from guard_kernel.kernel import spec

    tmp = tempfile.mkdtemp(prefix="bench-kernelspec-", dir=cfg.workdir)
    policy = policy_path(cfg)
    with open(policy, encoding="utf-8") as f:
        text = f.read()
    quiet = os.path.join(tmp, "default-no-live.yaml")  # default.yaml has no audit: section
    with open(quiet, "w", encoding="utf-8") as f:
        f.write(text + "\naudit: {live_notebook: false}\n")
    for name, pol, extra in ((NAME, policy, []), (EXEC, policy, ["--exec-kernel"]), (QUIET, quiet, [])):
        os.makedirs(os.path.join(tmp, name))
        data = spec.kernel_json(name=name, policy=pol, root=cfg.workdir, actor="agent",
                                audit_dir=os.path.join(cfg.workdir, "audit"))
        data["argv"][-2:-2] = extra
        with open(os.path.join(tmp, name, "kernel.json"), "w", encoding="utf-8") as f:
            json.dump(data, f)
    return tmp


def _start(cfg: Config, spec_dir: str, guarded: bool | str) -> tuple[Any, Any, float]:
    """Start the plain ipykernel (False), the guarded kernel (True) or a named guarded variant."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    name = guarded if isinstance(guarded, str) else NAME
    km = (KernelManager(kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[spec_dir]))
          if guarded else KernelManager(kernel_name="python3"))
    t0 = time.perf_counter()
    km.start_kernel(env=guard_env(cfg), cwd=cfg.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    _run(kc, "pass")
    return km, kc, time.perf_counter() - t0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process *pid* so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _alone(cfg: Config, spec_dir: str, cells: list[str], rounds: int) -> dict[str, Any]:
    """One kernel at a time (nothing else of ours running): per side, the median round-trip of each
    start, and for the guarded sides the launcher's CPU time per cell (its reader and live-notebook
    threads: do they compete with the kernel for the 2 cores?)."""
    sides: list[bool | str] = [True, QUIET, False]
    medians: dict[str, list[float]] = {"guarded": [], "no-live": [], "plain": []}
    launcher_ms: dict[str, list[float]] = {"guarded": [], "no-live": []}
    cpu_ms: dict[str, list[float]] = {"guarded": [], "no-live": [], "plain": []}
    """CPU per cell of the kernel and (guarded) its launcher: what a loaded machine's wall time hides."""
    for r in range(rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            label = "plain" if side is False else "no-live" if side == QUIET else "guarded"
            km, kc, _ = _start(cfg, spec_dir, side)
            try:
                for code in cells[:10]:
                    _run(kc, code)
                pid = km.provisioner.pid
                kernel = _kernel_pid(pid) if side else pid
                cpu0, k0 = _cpu_seconds(pid), _cpu_seconds(kernel)
                times = [_run(kc, code) for code in cells]
                launcher = _cpu_seconds(pid) - cpu0 if side else 0.0
                if side:
                    launcher_ms[label].append(launcher / len(cells) * 1000)
                cpu_ms[label].append((_cpu_seconds(kernel) - k0 + launcher) / len(cells) * 1000)
                medians[label].append(statistics.median(times))
            finally:
                _stop(km, kc)
    return {"medians": medians, "launcher_ms": launcher_ms, "cpu_ms": cpu_ms}


def _kernel_pid(launcher: int) -> int:
    """The guarded kernel: the launcher's child."""
    with open(f"/proc/{launcher}/task/{launcher}/children", encoding="ascii") as f:
        return int(f.read().split()[0])


def run(cfg: Config) -> list[Result]:
    goals = {"trivial": at_most(1.05, "≤ 1.05"), "startup": at_most(60.0, "≤ +60 ms")}
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
        exec_starts: list[float] = []
        start_cpu: dict[str, list[float]] = {"guarded": [], "plain": [], "exec": []}
        """CPU seconds of a whole start (kernel + launcher): steadier than wall time on a loaded machine."""
        kinds: list[bool | str] = [True, False, EXEC]  # EXEC: the launcher's older way, for comparison
        for r in range(rounds):  # more starts, rotating which side goes first
            for kind in kinds[r % 3:] + kinds[:r % 3]:
                km, kc, dt = _start(cfg, spec_dir, kind)
                pid = km.provisioner.pid
                cpu = _cpu_seconds(pid) + (_cpu_seconds(_kernel_pid(pid)) if kind else 0.0)
                _stop(km, kc)
                label = "exec" if kind == EXEC else "guarded" if kind else "plain"
                start_cpu[label].append(cpu)
                (exec_starts if kind == EXEC else starts[label]).append(dt)
        alone = _alone(cfg, spec_dir, [f"y_{i} = {i} * 2" for i in range(100)], 2 if cfg.quick else 3)
    except KernelError as exc:
        return [skipped(GROUP, names[k], f"error: {exc}", goals[k], status="error") for k in names]
    shown = ", ".join(f"{r:.3f}" for r in ratios)
    diffs = [(a - b) * 1000 for a, b in zip(starts["guarded"], starts["plain"], strict=True)]
    med = {k: statistics.median(v) for k, v in alone["medians"].items()}
    cpu = {k: statistics.median(v) for k, v in alone["launcher_ms"].items()}
    work = {k: statistics.median(v) for k, v in alone["cpu_ms"].items()}
    scpu = {k: statistics.median(v) * 1000 for k, v in start_cpu.items()}
    return [
        Result(GROUP, names["trivial"], "s", Stats.of(samples["guarded"]), Stats.of(samples["plain"]),
               statistics.median(ratios), "ratio", "x", None,
               note=f"both kernels alive, cells alternating: median of {pairs} kernel pairs' ratios ({shown}); "
                    "two kernels and a launcher share the cores here — see the one-at-a-time line",
               extra={"pair_ratios": ratios}),
        Result(GROUP, "guarded kernel vs ipykernel, 100 trivial cells, one kernel at a time", "s",
               Stats.of(alone["medians"]["guarded"]), Stats.of(alone["medians"]["plain"]),
               med["guarded"] / med["plain"], "ratio", "x", goals["trivial"],
               note=f"medians of each start's 100 cells after 10 warm-up; live notebook off: "
                    f"{med['no-live'] / med['plain']:.3f}x; the launcher's CPU per cell "
                    f"{cpu['guarded']:.3f} ms (live notebook off {cpu['no-live']:.3f} ms); CPU per cell, kernel + "
                    f"launcher: {work['guarded']:.2f} ms vs {work['plain']:.2f} ms plain "
                    f"({work['guarded'] / work['plain']:.3f}x; live notebook off {work['no-live']:.2f} ms)",
               extra=alone),
        Result(GROUP, names["startup"], "s", Stats.of(starts["guarded"]), Stats.of(starts["plain"]),
               statistics.median(diffs), "Δ", "ms", goals["startup"],
               note=f"whole starts, guarded − plain, paired by round: median of {len(diffs)} "
                    f"(range {min(diffs):+.0f} to {max(diffs):+.0f} ms); the kernel started as a second "
                    f"Python (--exec-kernel) instead of a fork: median start "
                    f"{statistics.median(exec_starts) * 1000:.0f} ms vs {statistics.median(starts['guarded']) * 1000:.0f} ms"
                    f"; CPU of a start (kernel + launcher): guarded {scpu['guarded']:.0f} ms, --exec-kernel "
                    f"{scpu['exec']:.0f} ms, plain {scpu['plain']:.0f} ms",
               extra={"paired_diffs_ms": diffs, "exec_kernel_starts_s": exec_starts, "start_cpu_s": start_cpu}),
    ]
