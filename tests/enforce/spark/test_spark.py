"""PySpark under the guard, in process: a real local Spark, real managed tables and Parquet files.

Every destructive statement and writer is refused before Spark runs anything: the table's rows
and the files on disk are unchanged, and the next statement still works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from guard_kernel.audit import read_records
from guard_kernel.decision import GuardDenied
from guard_kernel.decision.guard import Guard
from tests.enforce.spark.conftest import MAX, SparkProject


def _count(spark: Any, table: str) -> int:
    return int(spark.sql(f"SELECT count(*) AS n FROM {table}").collect()[0]["n"])


def _counts(spark: Any) -> tuple[int, int, int]:
    """Rows of orders, prod.customers and other, in one query (the next statement after a denial)."""
    row = spark.sql("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM prod.customers), "
                    "(SELECT count(*) FROM other)").collect()[0]
    return int(row[0]), int(row[1]), int(row[2])


def _files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def _records(g: Guard) -> list[dict[str, Any]]:
    return read_records(g.audit_path)


# ------------------------------------------------------------------ spark.sql

DESTRUCTIVE = [
    ("DROP TABLE orders", "source 'sales'"),
    ("DROP TABLE default.orders", "source 'sales'"),
    ("TRUNCATE TABLE orders", "source 'sales'"),
    ("INSERT INTO orders SELECT id, region, amount FROM orders", "source 'sales'"),
    ("INSERT OVERWRITE TABLE orders SELECT id, region, amount FROM orders LIMIT 1", "source 'sales'"),
    ("DELETE FROM orders WHERE id < 50", "source 'sales'"),
    ("UPDATE orders SET amount = 0", "source 'sales'"),
    ("MERGE INTO orders t USING other s ON t.id = s.id WHEN MATCHED THEN DELETE", "source 'sales'"),
    ("ALTER TABLE orders ADD COLUMNS (extra INT)", "source 'sales'"),
    ("DROP TABLE prod.customers", "source 'sales'"),
    ("INSERT INTO prod.customers SELECT 1, 'a', 'b'", "source 'sales'"),
    ("DROP TABLE spark_catalog.default.orders", "source 'sales'"),
    ("DROP TABLE other", "not allowed by policy"),  # not a source, not the session's own: the write default
    ("CREATE OR REPLACE TABLE other AS SELECT 1 AS id", "not allowed by policy"),
    ("MSCK REPAIR TABLE orders", "could not classify"),
    ("ADD JAR /tmp/evil.jar", "could not classify"),
    ("SELECT reflect('java.lang.Runtime', 'getRuntime')", "could not classify"),
    ("SELECT TRANSFORM(id) USING 'cat' AS (x) FROM orders", "could not classify"),
    ("CREATE TEMPORARY FUNCTION f AS 'com.example.F'", "could not classify"),
    ("INSERT OVERWRITE DIRECTORY '/tmp/out' USING parquet SELECT * FROM orders", "could not classify"),
    ("CREATE TABLE t_loc USING parquet LOCATION 'data/evil' AS SELECT 1 AS a", "source 'sales'"),
]


@pytest.mark.parametrize(("statement", "why"), DESTRUCTIVE)
def test_destructive_sql_refused_and_nothing_changes(guard: Guard, spark_project: SparkProject,
                                                      statement: str, why: str) -> None:
    spark = spark_project.spark
    warehouse = _files(spark_project.root / "warehouse")
    with pytest.raises(GuardDenied) as e:
        spark.sql(statement)
    assert why in str(e.value)
    assert _files(spark_project.root / "warehouse") == warehouse  # no file of any table changed
    assert _counts(spark) == (100, 20, 10)
    assert not (spark_project.root / "data" / "evil").exists()
    assert "deny" in [r["decision"] for r in _records(guard)]


@pytest.mark.parametrize("statement", [
    "CACHE TABLE orders", "UNCACHE TABLE orders", "REFRESH TABLE orders", "CLEAR CACHE",
    "CACHE LAZY TABLE cached_view AS SELECT region, count(*) AS n FROM orders GROUP BY region",
    "SHOW TABLES", "DESCRIBE TABLE orders", "SELECT region, sum(amount) FROM orders GROUP BY region",
    "CREATE OR REPLACE TEMP VIEW v AS SELECT * FROM orders WHERE id < 3", "EXPLAIN SELECT * FROM orders",
    "SELECT * FROM parquet.`scratch/../data/events` LIMIT 1",
])
def test_reads_and_cache_maintenance_allowed(guard: Guard, spark_project: SparkProject, statement: str) -> None:
    spark_project.spark.sql(statement).collect()
    assert guard.counts["deny"] == 0


def test_the_sessions_own_tables_may_change(guard: Guard, spark_project: SparkProject) -> None:
    spark = spark_project.spark
    spark.sql("CREATE TABLE mine AS SELECT id FROM orders WHERE id < 10")
    spark.sql("INSERT INTO mine SELECT 100")
    assert _count(spark, "mine") == 11
    spark.sql("DROP TABLE mine")
    assert not spark.catalog.tableExists("mine")
    assert guard.counts["deny"] == 0


def test_a_table_that_existed_is_not_made_the_sessions_own(guard: Guard, spark_project: SparkProject) -> None:
    with pytest.raises(GuardDenied):
        spark_project.spark.sql("CREATE TABLE IF NOT EXISTS other AS SELECT 1 AS id")
    spark_project.spark.sql("SELECT 1").collect()  # the next statement works
    with pytest.raises(GuardDenied):
        spark_project.spark.sql("DROP TABLE other")


# ------------------------------------------------------------------ writers


def _writes(spark: Any) -> list[tuple[str, Any]]:
    df = spark.table("orders")
    return [
        ("parquet to a source path", lambda: df.write.mode("overwrite").parquet("data/events")),
        ("csv outside scratch", lambda: df.write.csv("out/orders_csv")),
        ("save with format and option(path)", lambda: df.write.format("json").option("path", "out/j").save()),
        ("save(path) to a URL", lambda: df.write.save("s3a://bucket/orders", format="parquet")),
        ("orc", lambda: df.write.orc("out/o")),
        ("text", lambda: df.selectExpr("cast(id AS string) AS v").write.text("out/t")),
        ("json", lambda: df.write.json("data/j")),
        ("saveAsTable overwrite of a source", lambda: df.limit(1).write.mode("overwrite").saveAsTable("orders")),
        ("saveAsTable append to a source database", lambda: spark.table("prod.customers").limit(1)
         .select("id", "name").write.mode("append").saveAsTable("prod.customers")),
        ("insertInto a source", lambda: df.limit(1).write.insertInto("orders", overwrite=True)),
        ("insertInto a table not the session's", lambda: df.selectExpr("id", "'y'").write.insertInto("other")),
        ("saveAsTable with a path in a source", lambda: df.write.option("path", "data/ext").saveAsTable("ext_t")),
        ("catalog.createTable at a source path", lambda: spark.catalog.createTable("ext_c", path="data/events")),
        ("jdbc", lambda: df.write.jdbc("jdbc:postgresql://db.example.com:5432/x", "orders")),
        ("format jdbc save", lambda: df.write.format("jdbc").option("url", "jdbc:postgresql://db.example.com/x")
         .option("dbtable", "t").save()),
        ("writeTo append", lambda: df.limit(1).writeTo("orders").append()),
        ("writeTo createOrReplace", lambda: df.limit(1).writeTo("orders").createOrReplace()),
        ("writeTo replace in source db", lambda: df.limit(1).writeTo("prod.customers").replace()),
        ("writeStream to a source path", lambda: spark.readStream.format("rate").load().writeStream
         .format("parquet").option("checkpointLocation", "scratch/ck1").start("data/stream")),
        ("writeStream toTable of a source", lambda: spark.readStream.format("rate").load().writeStream
         .option("checkpointLocation", "scratch/ck2").toTable("orders")),
    ]


WRITE_NAMES = [
    "parquet to a source path", "csv outside scratch", "save with format and option(path)", "save(path) to a URL",
    "orc", "text", "json", "saveAsTable overwrite of a source", "saveAsTable append to a source database",
    "insertInto a source", "insertInto a table not the session's", "saveAsTable with a path in a source",
    "catalog.createTable at a source path", "jdbc", "format jdbc save", "writeTo append",
    "writeTo createOrReplace", "writeTo replace in source db", "writeStream to a source path",
    "writeStream toTable of a source"]


@pytest.mark.parametrize("name", WRITE_NAMES)
def test_writers_refused_before_any_job(guard: Guard, spark_project: SparkProject, name: str) -> None:
    spark = spark_project.spark
    write = dict(_writes(spark))[name]
    before = {d: _files(spark_project.root / d) for d in ("data", "warehouse")}
    jobs = spark.sparkContext.statusTracker().getJobIdsForGroup()
    with pytest.raises(GuardDenied):
        write()
    assert {d: _files(spark_project.root / d) for d in ("data", "warehouse")} == before
    assert not (spark_project.root / "out").exists()
    assert spark.sparkContext.statusTracker().getJobIdsForGroup() == jobs  # no job was started
    assert spark.streams.active == []
    assert _counts(spark) == (100, 20, 10)


def test_writes_to_scratch_and_own_tables_run(guard: Guard, spark_project: SparkProject) -> None:
    spark = spark_project.spark
    df = spark.table("orders").where("id < 10")
    df.write.mode("overwrite").parquet("scratch/orders_p")
    df.write.mode("overwrite").csv("scratch/orders_csv")
    assert spark.read.parquet("scratch/orders_p").count() == 10
    df.write.saveAsTable("my_copy")
    df.limit(2).write.insertInto("my_copy")
    assert _count(spark, "my_copy") == 12
    df.writeTo("my_v2").create()
    spark.sql("DROP TABLE my_copy")
    spark.sql("DROP TABLE my_v2")
    assert guard.counts["deny"] == 0


# ------------------------------------------------------------------ row caps


def _paths(df: Any) -> list[tuple[str, Any]]:
    return [
        ("collect", lambda: len(df.collect())),
        ("take", lambda: len(df.take(1000))),
        ("head", lambda: len(df.head(1000))),
        ("tail", lambda: len(df.tail(1000))),
        ("toPandas", lambda: len(df.toPandas())),
        ("toArrow", lambda: df.toArrow().num_rows),
        ("toLocalIterator", lambda: sum(1 for _ in df.toLocalIterator())),
    ]


@pytest.mark.parametrize("via", ["collect", "take", "head", "tail", "toPandas", "toArrow", "toLocalIterator"])
def test_row_cap_on_every_collect_path(guard: Guard, spark_project: SparkProject, via: str) -> None:
    df = spark_project.spark.sql("SELECT * FROM orders ORDER BY id")
    assert dict(_paths(df))[via]() == MAX
    cut = [r for r in _records(guard) if r["kind"] == "truncate"]
    assert len(cut) == 1 and cut[0]["returned"] == MAX and cut[0]["via"] == via


def test_tail_keeps_the_last_rows(guard: Guard, spark_project: SparkProject) -> None:
    rows = spark_project.spark.sql("SELECT id FROM orders ORDER BY id").tail(50)
    assert [r.id for r in rows] == [95, 96, 97, 98, 99]


def test_show_is_capped(guard: Guard, spark_project: SparkProject, capsys: pytest.CaptureFixture[str]) -> None:
    spark_project.spark.table("orders").orderBy("id").show(1000)
    lines = [ln.replace(" ", "") for ln in capsys.readouterr().out.splitlines()]
    assert [ln.split("|")[1] for ln in lines if ln.startswith("|") and ln[1].isdigit()] == ["0", "1", "2", "3", "4"]
    assert [r["via"] for r in _records(guard) if r["kind"] == "truncate"] == ["show"]


def test_small_results_and_aggregations_are_not_cut(guard: Guard, spark_project: SparkProject) -> None:
    spark = spark_project.spark
    assert len(spark.sql("SELECT k, count(*) FROM parquet.`data/events` GROUP BY k").collect()) == 3
    assert spark.sql("SELECT count(*) AS n FROM orders").collect()[0]["n"] == 100
    assert len(spark.table("orders").take(3)) == 3
    assert spark.table("orders").first() is not None
    assert not [r for r in _records(guard) if r["kind"] == "truncate"]


def test_on_exceed_deny(make_guard: Any, spark_project: SparkProject) -> None:
    g = make_guard()
    g.policy = type(g.policy)(**{**g.policy.__dict__, "limits": type(g.policy.limits)(
        max_rows={"agent": MAX, "human": MAX}, on_exceed="deny")})
    with pytest.raises(GuardDenied):
        spark_project.spark.table("orders").collect()


# ------------------------------------------------------------------ deny_columns


@pytest.mark.parametrize(("read", "denied"), [
    ("sql:SELECT * FROM prod.customers", True),
    ("sql:SELECT id, card FROM prod.customers", True),
    ("sql:SELECT id FROM prod.customers WHERE card = 'card1'", True),
    ("sql:SELECT id, name FROM prod.customers", False),
    ("api:customers", True),
    ("api:customers.select('id', 'name')", False),
    ("api:customers.select('id').where(\"card = 'card1'\")", True),
    ("api:customers.selectExpr('to_json(struct(*)) AS row')", True),
    ("api:customers.drop('card')", False),
])
def test_deny_columns(guard: Guard, spark_project: SparkProject, read: str, denied: bool) -> None:
    spark = spark_project.spark
    kind, _, code = read.partition(":")

    def run() -> Any:
        if kind == "sql":
            return spark.sql(code).collect()
        customers = spark.table("prod.customers")
        return eval(code, {"customers": customers}).collect()

    if denied:
        with pytest.raises(GuardDenied) as e:
            run()
        assert "card" in str(e.value)
    else:
        assert len(run()) == MAX


def test_deny_columns_on_writes(guard: Guard, spark_project: SparkProject) -> None:
    with pytest.raises(GuardDenied):
        spark_project.spark.table("prod.customers").write.parquet("scratch/customers")
    assert not (spark_project.root / "scratch" / "customers").exists()


# ------------------------------------------------------------------ Python code on executors

UDF_CASES = [
    "udf", "register", "pandas_udf", "mapInPandas", "applyInPandas", "rdd.map", "foreach",
]


def _udf(spark: Any, case: str) -> Any:
    import pandas as pd  # noqa: F401 - pandas_udf needs it
    from pyspark.sql.functions import pandas_udf, udf

    df = spark.range(3)
    return {
        "udf": lambda: udf(lambda x: x + 1, "long"),
        "register": lambda: spark.udf.register("plus_one", lambda x: x + 1, "long"),
        "pandas_udf": lambda: pandas_udf(lambda s: s + 1, "long"),
        "mapInPandas": lambda: df.mapInPandas(lambda it: it, df.schema).collect(),
        "applyInPandas": lambda: df.groupBy("id").applyInPandas(lambda p: p, df.schema).collect(),
        "rdd.map": lambda: df.rdd.map(lambda r: r).collect(),
        "foreach": lambda: df.foreach(lambda r: None),
    }[case]()


@pytest.mark.parametrize("case", UDF_CASES)
def test_python_code_for_executors_denied(guard: Guard, spark_project: SparkProject, case: str) -> None:
    with pytest.raises(GuardDenied) as e:
        _udf(spark_project.spark, case)
    assert e.value.decisions[0].action.value == "spark.udf"


def test_python_code_allowed_by_a_rule(make_guard: Any, spark_project: SparkProject) -> None:
    make_guard("  - {id: udfs, effect: allow, actions: [spark.udf]}")
    assert _udf(spark_project.spark, "mapInPandas") is not None
    from pyspark.sql.functions import udf
    plus = udf(lambda x: x + 1, "long")
    assert [r[0] for r in spark_project.spark.range(3).select(plus("id")).collect()] == [1, 2, 3]


# ------------------------------------------------------------------ benign analysis


def test_benign_analysis_set_runs_without_denial(guard: Guard, spark_project: SparkProject) -> None:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spark = spark_project.spark
    orders = spark.table("orders")
    events = spark.read.parquet("data/events")
    orders.printSchema()
    assert orders.count() == 100
    by_region = orders.groupBy("region").agg(F.sum("amount").alias("total"), F.count("*").alias("n"))
    assert len(by_region.orderBy("region").toPandas()) == MAX  # 7 groups, capped at 5
    joined = orders.join(events, "id").groupBy("k").agg(F.avg("amount").alias("avg"))
    assert len(joined.collect()) == 3
    w = Window.partitionBy("region").orderBy(F.desc("amount"))
    top = orders.withColumn("rank", F.row_number().over(w)).where("rank = 1")
    assert len(top.collect()) == MAX
    orders.createOrReplaceTempView("o")
    spark.sql("SELECT region, percentile_approx(amount, 0.5) FROM o GROUP BY region").collect()
    orders.describe("amount").toPandas()
    orders.summary().collect()
    orders.cache().count()
    orders.unpersist()
    orders.explain()
    spark.sql("CREATE TEMP VIEW big AS SELECT * FROM o WHERE amount > 10")
    spark.table("big").where("region = 1").head(3)
    by_region.write.mode("overwrite").parquet("scratch/by_region")
    spark.catalog.listTables()
    spark.sql("SELECT id, name FROM prod.customers").toPandas()
    assert guard.counts["deny"] == 0, [d.message for d in guard.history if d.blocked]


# ------------------------------------------------------------------ Spark Connect


def test_connect_endpoint_not_named_is_net_connect(guard: Guard) -> None:
    from pyspark.sql import SparkSession

    with pytest.raises(GuardDenied) as e:
        SparkSession.builder.remote("sc://spark.example.com:15002").getOrCreate()
    d = e.value.decisions[0]
    assert d.action.value == "net.connect" and "spark.example.com" in d.resource


def test_connect_client_same_decisions(guard: Guard, spark_project: SparkProject) -> None:
    from pyspark.sql.connect.session import SparkSession as RemoteSession

    rs = RemoteSession.builder.remote(f"sc://localhost:{spark_project.connect_port}").getOrCreate()
    try:
        with pytest.raises(GuardDenied):
            rs.sql("DROP TABLE orders")
        with pytest.raises(GuardDenied):
            rs.table("orders").write.mode("overwrite").parquet("data/events")
        with pytest.raises(GuardDenied):
            rs.table("orders").writeTo("orders").append()
        assert len(rs.sql("SELECT * FROM orders").collect()) == MAX
        assert len(rs.table("orders").toPandas()) == MAX
        assert rs.sql("SELECT count(*) AS n FROM orders").collect()[0]["n"] == 100
        with pytest.raises(GuardDenied):
            rs.range(3).mapInPandas(lambda it: it, "id long").collect()
    finally:
        rs.stop()
    assert _count(spark_project.spark, "orders") == 100


# ------------------------------------------------------------------ starting Spark


def test_confine_exec_deny_refuses_a_local_jvm_and_points_to_connect(make_guard: Any) -> None:
    from pyspark.sql import SparkSession

    g = make_guard()
    g.policy = type(g.policy)(**{**g.policy.__dict__, "confine_exec": "deny"})
    with pytest.raises(GuardDenied) as e:
        SparkSession.builder.master("local[1]").getOrCreate()
    assert "Spark Connect" in (e.value.decisions[0].hint or "") and "exec: deny" in e.value.decisions[0].message


def test_layer_tamper_is_seen_and_repaired(guard: Guard) -> None:
    from pyspark.sql import SparkSession

    from guard_kernel.enforce.spark import layer

    wrapped = SparkSession.__dict__["sql"]
    SparkSession.sql = lambda self, q, *a, **k: None  # type: ignore[method-assign,assignment]
    assert layer.tampered()
    layer.repair()
    assert SparkSession.__dict__["sql"] is wrapped and not layer.tampered()
