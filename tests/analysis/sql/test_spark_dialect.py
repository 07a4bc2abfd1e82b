"""The one classifier in Spark's dialect: kinds, tables written, and what is always denied (no JVM needed)."""

from __future__ import annotations

import pytest

from guard_kernel.analysis.sql.dialects import get
from guard_kernel.analysis.sql.requests import analyze
from guard_kernel.policy.actions import Action

CASES = [
    ("DROP TABLE sales.orders", Action.SQL_DDL, ["sales.orders"]),
    ("TRUNCATE TABLE orders", Action.SQL_DDL, ["orders"]),
    ("INSERT INTO orders SELECT * FROM x", Action.SQL_WRITE, ["orders"]),
    ("INSERT OVERWRITE TABLE orders SELECT * FROM x", Action.SQL_WRITE, ["orders"]),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", Action.SQL_WRITE, ["t"]),
    ("DELETE FROM t WHERE id = 1", Action.SQL_WRITE, ["t"]),
    ("UPDATE t SET a = 1", Action.SQL_WRITE, ["t"]),
    ("ALTER TABLE t ADD COLUMNS (x INT)", Action.SQL_DDL, ["t"]),
    ("CREATE TABLE mine AS SELECT 1 AS a", Action.SQL_DDL, ["mine"]),
    ("CACHE TABLE orders", Action.SQL_READ, []),
    ("CACHE LAZY TABLE c AS SELECT * FROM orders", Action.SQL_DDL, ["temp.c"]),
    ("UNCACHE TABLE IF EXISTS orders", Action.SQL_READ, []),
    ("REFRESH TABLE db.orders", Action.SQL_READ, []),
    ("CLEAR CACHE", Action.SQL_READ, []),
    ("SHOW TABLES IN sales", Action.SQL_READ, []),
    ("USE sales", Action.SQL_READ, []),
    ("SELECT region, sum(amount) FROM sales.orders GROUP BY region", Action.SQL_READ, []),
    ("SELECT * FROM range(10)", Action.SQL_READ, []),
    ("SELECT TRANSFORM(a) USING 'cat' AS (b) FROM t", Action.SQL_UNKNOWN, []),
    ("SELECT reflect('java.lang.Runtime', 'getRuntime')", Action.SQL_UNKNOWN, []),
    ("SELECT java_method('a', 'b')", Action.SQL_UNKNOWN, []),
    ("CREATE TEMPORARY FUNCTION f AS 'x.Y'", Action.SQL_UNKNOWN, []),
    ("ADD JAR /tmp/x.jar", Action.SQL_UNKNOWN, []),
    ("INSERT OVERWRITE DIRECTORY '/tmp/x' USING parquet SELECT 1", Action.SQL_UNKNOWN, []),
    ("LOAD DATA LOCAL INPATH '/x' INTO TABLE t", Action.SQL_UNKNOWN, []),
    ("MSCK REPAIR TABLE t", Action.SQL_UNKNOWN, []),
]


@pytest.mark.parametrize(("text", "action", "written"), CASES)
def test_spark_statements(text: str, action: Action, written: list[str]) -> None:
    (s,) = analyze(text, "spark")
    assert s.action is action, s.reason
    assert [str(t) for t in s.written] == written


def test_databricks_is_spark_and_every_statement_of_a_string_is_judged() -> None:
    assert get("databricks").name == "spark"
    assert [s.action for s in analyze("SELECT a FROM t; DROP TABLE x", "spark")] == [Action.SQL_READ, Action.SQL_DDL]
