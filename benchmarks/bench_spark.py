"""Spark: a Spark SQL aggregation over 10M rows guarded vs plain, and the guard step of a Spark statement.

One local Spark (``local[2]``) for the group.  The guarded side runs ``spark.sql(q).collect()``
with the Spark layer installed (one decision per query, ``limit(max + 1)`` on top of the plan);
the plain side calls PySpark's own ``sql`` and ``collect`` (as they were before the patch) on the
same session, alternating.  The guard step is ``statements.check_sql`` (classify in the Spark
dialect, place the tables in the catalog, decide, record), first time (analysis and decision
caches cleared) and cached.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from typing import Any

from .harness import Config, Result, Skip, Stats, Timer, alternate, at_most, ratio_result, require, skipped

GROUP = "spark"
QUERY = "SELECT g, sum(v) AS total, count(*) AS n FROM bench GROUP BY g"
STATEMENTS = {
    "aggregate": QUERY,
    "join": "SELECT o.region, sum(o.amount) FROM sales.orders o JOIN sales.regions r ON o.region = r.id "
            "WHERE o.amount > 10 GROUP BY o.region ORDER BY 2 DESC",
    "drop": "DROP TABLE sales.orders",
}
POLICY = ("version: 1\nname: bench\ndefaults: {read: allow, write: deny}\n"
          "sources:\n  lake: {spark: {databases: [sales]}}\nlimits: {max_rows: 10000}\n")


def _session(cfg: Config) -> Any:
    require("pyspark")
    if shutil.which("java") is None:
        raise Skip("no Java runtime (make java)")
    from pyspark.sql import SparkSession

    return (SparkSession.builder.master("local[2]").appName("guard-kernel-bench")
            .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "2").config("spark.sql.warehouse.dir",
                                                                  os.path.join(cfg.workdir, "warehouse"))
            .getOrCreate())


def _steps(cfg: Config, spark: Any, guard: Any) -> list[Result]:
    from guard_kernel.analysis.sql.classify import analyze
    from guard_kernel.decision.errors import GuardDenied
    from guard_kernel.enforce.spark import statements

    def step(text: str) -> None:
        try:
            statements.check_sql(guard, text, spark)
        except GuardDenied:
            pass

    rounds = 5 if cfg.quick else 15
    first: list[float] = []
    cached: list[float] = []
    for text in STATEMENTS.values():
        step(text)  # imports, tokenizer tables
        samples = []
        for _ in range(rounds):
            analyze.cache_clear()
            statements._cache.clear()
            guard._cache.clear()
            t0 = time.perf_counter()
            step(text)
            samples.append(time.perf_counter() - t0)
        first.append(statistics.median(samples))
        t0 = time.perf_counter()
        for _ in range(200):
            step(text)
        cached.append((time.perf_counter() - t0) / 200)
    fs, cs = Stats.of(first), Stats.of(cached)
    note = ", ".join(f"{n} {f * 1e6:.0f} µs" for n, f in zip(STATEMENTS, first, strict=True))
    return [
        Result(GROUP, "guard step, Spark statement, first time (median of 3)", "s", fs, None, fs.median, "p50", "s",
               None, note=note + " (one JVM call for the current database included)"),
        Result(GROUP, "guard step, Spark statement, cached (median of 3)", "s", cs, None, cs.median, "p50", "s", None,
               note=", ".join(f"{n} {c * 1e6:.0f} µs" for n, c in zip(STATEMENTS, cached, strict=True))),
    ]


def _pair(cfg: Config, spark: Any, layer: Any) -> list[Result]:
    from pyspark.sql import SparkSession
    from pyspark.sql.classic.dataframe import DataFrame

    n = 1_000_000 if cfg.quick else 10_000_000
    spark.range(n).selectExpr("id", "id % 1000 AS g", "(id * 7919) % 100003 AS v").createOrReplaceTempView("bench")
    sql, collect = layer._originals[(SparkSession, "sql")], layer._originals[(DataFrame, "collect")]

    def guarded() -> float:
        t0 = time.perf_counter()
        spark.sql(QUERY).collect()
        return time.perf_counter() - t0

    def plain() -> float:
        t0 = time.perf_counter()
        collect(sql(spark, QUERY))
        return time.perf_counter() - t0

    timers: dict[str, Timer] = {"guarded": guarded, "plain": plain}
    samples = alternate(timers, 5 if cfg.quick else 9, 2)
    plain_s = statistics.median(samples["plain"])
    return [ratio_result(GROUP, f"Spark SQL aggregation over {n // 1_000_000}M rows (1,000 groups), collect",
                         samples, at_most(1.02, "≤ 1.02"), note=f"plain {plain_s:.2f} s; local[2]")]


def run(cfg: Config) -> list[Result]:
    try:
        spark = _session(cfg)
    except Skip as exc:
        return [skipped(GROUP, "spark", f"skipped: {exc}")]
    from guard_kernel.decision.guard import Guard
    from guard_kernel.enforce.spark import layer
    from guard_kernel.policy.load import parse_policy

    guard = Guard(parse_policy(POLICY, root=cfg.workdir), actor="human", audit_dir=os.path.join(cfg.workdir, "audit"),
                  notify=lambda d: None)
    layer.install(guard)
    try:
        return [*_pair(cfg, spark, layer), *_steps(cfg, spark, guard)]
    finally:
        layer.uninstall()
        guard.close()
        spark.stop()
