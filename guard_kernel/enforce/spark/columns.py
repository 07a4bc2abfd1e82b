"""``deny_columns`` of Spark source tables on DataFrames, resolved by Spark's own analyzer.

``spark.sql`` text is judged by the classifier (explicit columns, ``*``); a DataFrame built with
the API (``spark.table("customers").select(...)``) is judged here, before its rows are fetched or
written: the analyzed plan names every column of every table it reads with an id
(``Relation spark_catalog.default.customers[id#0L,name#1,ssn#2]``), resolved against the
catalog's schema.  A denied column is read when its id appears in the plan's output or anywhere
else in the plan (a filter, a join key, an expression) — explicit references, ``*`` and
whole-row reads alike.  The check costs one JVM call and runs only when the policy has
``deny_columns`` on a Spark source.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from guard_kernel.decision.errors import GuardDenied
from guard_kernel.decision.request import Request, TableRef
from guard_kernel.policy.actions import Action

if TYPE_CHECKING:
    from guard_kernel.decision.guard import Guard

__all__ = ["check", "plan_text"]

_RELATION = re.compile(r"Relation\s+([\w`.]+)\[([^\]]*)\]")


def _denied(g: Guard) -> bool:
    return any((s.spark_tables or s.spark_databases) and any(t.deny_columns for t in s.tables.values())
               for s in g.policy.sources.values())


def plan_text(df: Any) -> tuple[str, str] | None:
    """(analyzed plan, its output attributes) of *df*, or None when Spark cannot say."""
    jdf = getattr(df, "_jdf", None)
    if jdf is not None:
        qe = jdf.queryExecution().analyzed()
        return str(qe.toString()), str(qe.output().toString())
    explain = getattr(df, "_explain_string", None)
    if explain is None:
        return None
    # Spark Connect: the server's analyzed plan; its first line is the output schema (names only)
    text = str(explain(mode="extended"))
    part = text.partition("== Analyzed Logical Plan ==")[2].partition("== Optimized Logical Plan ==")[0].strip()
    if not part:
        return None
    schema, _, plan = part.partition("\n")
    names = [c.split(":", 1)[0].strip() for c in schema.split(", ")]
    return plan, " ".join(f"{n}#" for n in names)


def check(g: Guard, df: Any, via: str) -> None:
    """Deny reading *df* when its plan reads a denied column of a Spark source table."""
    if not _denied(g):
        return
    from guard_kernel.enforce.spark.statements import source_of

    try:
        with g.quiet():
            found = plan_text(df)
    except Exception as e:  # the plan cannot be read: the columns cannot be judged
        found = None
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    else:
        reason = "Spark gave no analyzed plan"
    if found is None:
        d = g.decide(Request(Action.SQL_UNKNOWN, "spark DataFrame", code=via,
                             reason=f"the DataFrame's columns cannot be checked against deny_columns: {reason}"))
        g.record_decision(d, "sql", via=via)
        raise GuardDenied(d)
    plan, output = found
    lines = [m for m in _RELATION.finditer(plan)]
    rest = _RELATION.sub("", plan) + "\n" + output
    for m in lines:
        parts = m.group(1).replace("`", "").lower().split(".")
        name = parts[-1]
        db = parts[-2] if len(parts) > 1 else None
        src = source_of(g.policy, name, db)
        if src is None:
            continue
        table = g.policy.sources[src].tables.get(name)
        if table is None or not table.deny_columns:
            continue
        for attr in m.group(2).split(","):
            col, _, ident = attr.strip().partition("#")
            if col.lower() in table.deny_columns and (
                    re.search(rf"\b{re.escape(col)}#{re.escape(ident)}\b", rest)
                    or re.search(rf"(?:^|\s){re.escape(col)}#(?:\s|$)", output)):
                req = Request(Action.SQL_READ, f"{db}.{name}" if db else name, tables=(TableRef(name, db, src),),
                              columns=(f"{name}.{col.lower()}",), code=via)
                g.check(req, "sql", via=via)
