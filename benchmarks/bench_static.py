"""The static cell check against what Python itself does with the cell: ``ast.parse`` + ``compile``.

The cells are ordinary analysis code (pandas, DuckDB with literal SQL, a plot, a write to
scratch): a 50-line cell and a 500-line one made of ten such blocks with distinct names.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Callable
from typing import Any

from .harness import Config, Result, Skip, Stats, Timer, alternate, at_most, require, require_attr, skipped

GROUP = "static"
ANALYZERS = ("analyze_source", "analyze_cell")

BLOCK = '''\
import duckdb
import pandas as pd
import matplotlib.pyplot as plt

con_{i} = duckdb.connect()
orders_{i} = con_{i}.sql("""
    SELECT order_id, customer_id, order_date, amount, channel
    FROM read_parquet('data/raw/orders/*.parquet')
    WHERE order_date >= DATE '2024-01-01' AND amount > {i}
""").df()
orders_{i}["month"] = orders_{i}["order_date"].dt.to_period("M")
monthly_{i} = (
    orders_{i}.groupby(["month", "channel"], as_index=False)
    .agg(revenue=("amount", "sum"), orders=("order_id", "count"))
    .sort_values(["month", "channel"])
)
top_{i} = con_{i}.execute(
    "SELECT customer_id, sum(amount) AS spend FROM orders GROUP BY 1 ORDER BY 2 DESC LIMIT {i} + 20"
).fetchall()


def summarise_{i}(frame: pd.DataFrame, by: str = "channel") -> pd.DataFrame:
    """Share of revenue per group, with a running total."""
    out = frame.groupby(by, as_index=False)["revenue"].sum()
    out["share"] = out["revenue"] / out["revenue"].sum()
    out = out.sort_values("share", ascending=False)
    out["cumulative"] = out["share"].cumsum()
    return out


summary_{i} = summarise_{i}(monthly_{i})
for row in summary_{i}.itertuples():
    if row.share > 0.5:
        print(f"{{row.channel}} dominates with {{row.share:.0%}}")
    elif row.share < 0.05:
        print(f"{{row.channel}} is small: {{row.revenue:,.0f}}")
fig_{i}, ax_{i} = plt.subplots(figsize=(8, 4))
for channel, part in monthly_{i}.groupby("channel"):
    ax_{i}.plot(part["month"].astype(str), part["revenue"], label=channel)
ax_{i}.set_title("Revenue by channel")
ax_{i}.legend()
pivot_{i} = monthly_{i}.pivot_table(index="month", columns="channel", values="revenue", aggfunc="sum")
pivot_{i} = pivot_{i}.fillna(0).round(2)
growth_{i} = pivot_{i}.pct_change().iloc[1:]
with open("scratch/notes_{i}.txt", "w") as fh:
    fh.write(f"months: {{len(pivot_{i})}}\\n")
monthly_{i}.to_csv("scratch/monthly_{i}.csv", index=False)
stats_{i} = {{c: float(growth_{i}[c].mean()) for c in growth_{i}.columns}}
best_{i} = max(stats_{i}, key=stats_{i}.get) if stats_{i} else None
print(best_{i}, len(top_{i}))
'''


def make_cell(blocks: int) -> str:
    """A cell of *blocks* × 50 lines of ordinary analysis code."""
    cell = "".join(BLOCK.format(i=i) for i in range(blocks))
    ast.parse(cell)  # a broken generator would make every figure meaningless
    return cell


def _caches() -> list[Any]:
    """The SQL analysis caches, cleared before each check so literal SQL is analysed afresh."""
    try:
        sql = require("guard_kernel.analysis.sql.requests")
    except Skip:
        return []
    return [f for f in (getattr(sql, "analyze", None), getattr(sql, "cap", None)) if hasattr(f, "cache_clear")]


def run(cfg: Config) -> list[Result]:
    goal = at_most(0.5, "≤ 0.5")
    sizes = ((1, "50-line cell"), (10, "500-line cell"))
    try:
        cell_mod = require("guard_kernel.enforce.ipython.cell")
        analyze_tree: Callable[..., object] | None = getattr(cell_mod, "analyze_tree", None)
        analyze_source: Callable[..., object] = require_attr(cell_mod, *ANALYZERS)
    except Skip as exc:
        return [skipped(GROUP, f"static check, {name}", str(exc), goal) for _, name in sizes]
    caches = _caches()
    results = []
    for blocks, name in sizes:
        code = make_cell(blocks)
        lines = len(code.splitlines())
        tree = ast.parse(code)
        calls = 20 if blocks == 1 else 3

        def check(fresh: bool, code: str = code, tree: ast.AST = tree, calls: int = calls) -> Timer:
            def run() -> float:
                total = 0.0
                for _ in range(calls):
                    if fresh:
                        for c in caches:
                            c.cache_clear()
                    t0 = time.perf_counter()
                    if analyze_tree is not None:  # IPython hands the transformer the tree it parsed
                        analyze_tree(tree, code)
                    else:
                        analyze_source(code)
                    total += time.perf_counter() - t0
                return total / calls
            return run

        def python(code: str = code, calls: int = calls) -> float:
            t0 = time.perf_counter()
            for _ in range(calls):
                compile(ast.parse(code), "<cell>", "exec")
            return (time.perf_counter() - t0) / calls

        s = alternate({"guarded": check(False), "plain": python, "fresh": check(True)}, cfg.rounds)
        g, p, fresh = Stats.of(s["guarded"]), Stats.of(s["plain"]), Stats.of(s["fresh"])
        how = ("cell.analyze_tree(tree, code) on the tree IPython already parsed" if analyze_tree is not None
               else "cell.analyze_source(code)")
        results.append(Result(GROUP, f"static check, {name} ({lines} lines)", "s", g, p, g.median / p.median,
                              "check / parse+compile", "x", goal,
                              note=f"guarded = {how}; its literal SQL already analysed (cached)"))
        results.append(Result(GROUP, f"static check + first analysis of its SQL, {name}", "s", fresh, p,
                              fresh.median / p.median, "check / parse+compile", "x", None,
                              note=f"SQL caches cleared before each check ({2 * blocks} SQL literals)"))
    return results
