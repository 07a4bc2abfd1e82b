"""Timing harness: alternate guarded and plain runs, summarise them, compare with a goal.

Every benchmark is a pair of callables that each return the seconds one run took (so
set-up stays outside the measurement).  :func:`alternate` runs them in turn, flipping
the order every round (ABBA…) so that drift — caches warming, the CPU clocking up,
another process waking — falls on both sides alike.
"""

from __future__ import annotations

import importlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

Timer = Callable[[], float]
"""One run of a benchmark; returns the seconds it took."""


class Skip(Exception):
    """A benchmark cannot run here (a module has not landed yet, a feature is missing)."""


@dataclass(frozen=True)
class Config:
    """What the command line asked for."""

    quick: bool
    rounds: int
    workdir: str
    """A temporary directory for data, policies and audit files."""
    root: str
    """The repository root (where ``policies/`` lives)."""
    only: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stats:
    """Summary of one side's samples, in the benchmark's unit."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        xs = sorted(samples)
        if len(xs) >= 4:
            q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
        else:
            q1, q3 = xs[0], xs[-1]
        return cls(statistics.median(xs), q1, q3, xs[0], xs[-1], len(xs))

    def as_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "q1": self.q1, "q3": self.q3, "min": self.low, "max": self.high, "n": self.n}


@dataclass(frozen=True)
class Goal:
    """A target for one measured figure: ``figure <= value`` or ``figure >= value``."""

    op: str
    """``<=`` or ``>=``."""
    value: float
    text: str
    """As the issue states it, e.g. ``≤ 1.03`` or ``≤ 50 µs``."""

    def met(self, figure: float) -> bool:
        return figure <= self.value if self.op == "<=" else figure >= self.value

    def usage(self, figure: float) -> float:
        """Share of the goal used: ≤ 1 means met (for both directions), for the chart."""
        if self.op == "<=":
            return figure / self.value if self.value else float("inf")
        return self.value / figure if figure else float("inf")


def at_most(value: float, text: str) -> Goal:
    return Goal("<=", value, text)


def at_least(value: float, text: str) -> Goal:
    return Goal(">=", value, text)


@dataclass
class Result:
    """One line of the results table."""

    group: str
    name: str
    unit: str = "s"
    """Unit of the samples: ``s`` (seconds, shown scaled), ``rec/s``, ``ns``…"""
    guarded: Stats | None = None
    plain: Stats | None = None
    figure: float | None = None
    """The number the goal is about (a ratio, a latency, a rate…)."""
    figure_label: str = "ratio"
    figure_unit: str = "x"
    goal: Goal | None = None
    status: str = "ok"
    """``ok``, ``skipped``, ``not implemented`` or ``error``."""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.goal is None or self.figure is None or self.status != "ok":
            return None
        return self.goal.met(self.figure)

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group, "name": self.name, "status": self.status, "unit": self.unit,
            "guarded": self.guarded.as_dict() if self.guarded else None,
            "plain": self.plain.as_dict() if self.plain else None,
            "figure": self.figure, "figure_label": self.figure_label, "figure_unit": self.figure_unit,
            "goal": {"op": self.goal.op, "value": self.goal.value, "text": self.goal.text} if self.goal else None,
            "met": self.met, "note": self.note, "extra": self.extra,
        }


def skipped(group: str, name: str, why: str, goal: Goal | None = None, status: str = "skipped") -> Result:
    """A table line for a benchmark that did not run, saying why."""
    return Result(group, name, goal=goal, status=status, note=why)


def require(module: str) -> ModuleType:
    """Import *module* or raise :class:`Skip` saying it has not landed yet."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise Skip(f"skipped: module missing ({module})") from None
        raise


def require_attr(module: ModuleType, *names: str) -> Any:
    """The first of *names* that *module* defines, or :class:`Skip`."""
    for n in names:
        if hasattr(module, n):
            return getattr(module, n)
    raise Skip(f"skipped: {module.__name__} has no {' / '.join(names)} yet")


def timed(fn: Callable[[], object]) -> Timer:
    """A :data:`Timer` that measures one call of *fn*."""

    def run() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return run


def alternate(sides: dict[str, Timer], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each side once per round, alternating and flipping the order every round."""
    names = list(sides)
    for _ in range(warmup):
        for n in names:
            sides[n]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            samples[n].append(sides[n]())
    return samples


def ratio_result(group: str, name: str, samples: dict[str, list[float]], goal: Goal | None,
                 note: str = "", guarded: str = "guarded", plain: str = "plain") -> Result:
    """Guarded/plain ratio of medians, with both sides' spread."""
    g, p = Stats.of(samples[guarded]), Stats.of(samples[plain])
    return Result(group, name, "s", g, p, g.median / p.median if p.median else None, "ratio", "x", goal, note=note)


@contextmanager
def silenced_gc() -> Iterator[None]:
    """Collect first, then keep the cyclic GC out of a tight measurement."""
    import gc

    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def fmt_seconds(s: float) -> str:
    """A duration with a readable unit."""
    a = abs(s)
    if a < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if a < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if a < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_value(v: float, unit: str) -> str:
    if unit == "s":
        return fmt_seconds(v)
    if unit == "rec/s":
        return f"{v:,.0f}/s"
    if unit == "x":
        return f"{v:.3f}x" if v < 10 else f"{v:,.0f}x"
    if unit == "bool":
        return "yes" if v else "no"
    if unit == "ns":
        return f"{v:.0f} ns"
    if unit == "ms":
        return f"{v:+.1f} ms" if v < 0 or v > 0 else "0 ms"
    return f"{v:.3g} {unit}"
