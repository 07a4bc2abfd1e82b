"""Machine facts, the printed table, ``results.json`` and the goal chart."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from .harness import Result, Stats, fmt_value

PACKAGES = ("guard-kernel", "duckdb", "sqlglot", "sqlglotc", "pandas", "pyarrow", "numpy", "ipython",
            "ipykernel", "jupyter_client", "matplotlib")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and the versions of the packages that matter."""
    versions: dict[str, str | None] = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1) if mem else None,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "packages": versions,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "load_average_start": load_average(),
    }


def load_average() -> list[float] | None:
    """1/5/15-minute load: on a shared 2-core machine it explains most of the spread."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def print_machine(info: dict[str, Any]) -> None:
    pk = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
    missing = ", ".join(k for k, v in info["packages"].items() if not v)
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, {info['os']}")
    print(f"python:  {info['python']} ({info['implementation']}); load average {info['load_average_start']}")
    print(f"packages: {pk}" + (f"  (not installed: {missing})" if missing else ""))


def _side(s: Stats | None, unit: str) -> str:
    if s is None:
        return "-"
    return f"{fmt_value(s.median, unit)} [{fmt_value(s.q1, unit)}–{fmt_value(s.q3, unit)}]"


def _status(r: Result) -> str:
    if r.status != "ok":
        return r.status
    if r.met is None:
        return "info"
    return "met" if r.met else "MISSED"


def table(results: Sequence[Result]) -> str:
    """The results as a fixed-width text table (medians with IQR in brackets)."""
    head = ("group", "benchmark", "guarded median [IQR]", "plain median [IQR]", "figure", "goal", "status")
    rows = [head]
    for r in results:
        fig = "-" if r.figure is None else f"{r.figure_label} {fmt_value(r.figure, r.figure_unit)}"
        rows.append((r.group, r.name, _side(r.guarded, r.unit), _side(r.plain, r.unit), fig,
                     r.goal.text if r.goal else "-", _status(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  [{r.group}/{r.name}] {r.note}" for r in results if r.note]
    if notes:
        lines.append("")
        lines.append("notes:")
        lines.extend(notes)
    return "\n".join(lines)


def write_json(path: str, info: dict[str, Any], results: Sequence[Result], args: dict[str, Any]) -> None:
    doc = {"machine": info, "args": args, "results": [r.as_dict() for r in results]}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, default=str)
        f.write("\n")


def write_chart(path: str, results: Sequence[Result], info: dict[str, Any]) -> bool:
    """A horizontal bar per benchmark with a goal: share of the goal used (≤ 1 is met)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in results if r.status == "ok" and r.goal is not None and r.figure is not None]
    if not rows:
        return False
    labels = [f"{r.group}: {r.name}\n{r.figure_label} {fmt_value(r.figure or 0, r.figure_unit)} (goal {r.goal.text})"
              for r in rows if r.goal]
    usage = [r.goal.usage(r.figure) for r in rows if r.goal and r.figure is not None]
    colours = ["tab:green" if u <= 1 else "tab:red" for u in usage]
    fig, ax = plt.subplots(figsize=(12, 0.55 * len(rows) + 1.6))
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [min(u, 3.0) for u in usage], color=colours)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    for yi, u in zip(y, usage, strict=True):
        ax.text(min(u, 3.0) + 0.02, yi, f"{u:.2f}", va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlim(0, 3.3)
    ax.set_xlabel("measured / goal  (≤ 1: goal met; ≥-goals inverted; bars capped at 3)")
    ax.set_title(f"guard_kernel benchmarks — {info['cores']} cores, Python {info['python']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
