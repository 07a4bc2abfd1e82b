"""One real local Spark (``local[2]``) for every Spark test, a project with Parquet files and managed
tables in a local warehouse, and a fresh Guard per test with the Spark layer on.

The JVM starts once per test session (it costs seconds).  Tables are built before any guard is on.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from guard_kernel.decision.guard import Guard, set_current
from guard_kernel.enforce.spark import layer
from guard_kernel.policy import load_policy


def need_spark() -> None:
    """Skip the test when PySpark or Java is missing (`make test` installs both: the test extra, `make java`)."""
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime: run `make java` (as root) to install Debian's")

MAX = 5

POLICY = """
version: 1
name: spark-test
mode: enforce
lock: true
defaults: {read: allow, write: deny, export: deny, network: deny, shell: deny}
sources:
  sales:
    spark: {tables: [default.orders], databases: [prod]}
    paths: ["data/**"]
    tables:
      customers: {deny_columns: [card]}
scratch: ["scratch/**"]
limits: {max_rows: {agent: %(max)d, human: %(max)d}, on_exceed: truncate}
rules:
  - id: scratch-writes
    effect: allow
    actions: [file.write, file.delete, export.dataframe]
    where: {path: "scratch/**"}
  - id: local-spark-connect
    effect: allow
    actions: [net.connect]
    where: {host: [localhost, 127.0.0.1]}
%(extra)s
"""


@dataclass
class SparkProject:
    root: Path
    spark: Any
    connect_port: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def spark_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkProject]:
    """A local Spark with a Spark Connect server in the same JVM, and the project's tables."""
    need_spark()
    from pyspark.sql import SparkSession

    root = tmp_path_factory.mktemp("spark-project")
    port = _free_port()
    # Python workers run this interpreter (pandas and pyarrow for pandas UDFs); the JVM's working
    # directory (where Spark resolves relative paths) is the project
    os.environ["PYSPARK_PYTHON"] = sys.executable
    here = os.getcwd()
    os.chdir(root)
    spark = (SparkSession.builder.master("local[2]").appName("guard-kernel-tests")
             .config("spark.sql.warehouse.dir", str(root / "warehouse"))
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.driver.memory", "512m")
             .config("spark.plugins", "org.apache.spark.sql.connect.SparkConnectPlugin")
             .config("spark.connect.grpc.binding.port", str(port))
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .getOrCreate())
    os.chdir(here)
    (root / "scratch").mkdir()
    spark.range(100).selectExpr("id", "id % 7 AS region", "id * 1.5 AS amount") \
        .write.mode("overwrite").saveAsTable("default.orders")
    spark.range(10).selectExpr("id", "'x' AS note").write.mode("overwrite").saveAsTable("default.other")
    spark.sql("CREATE DATABASE IF NOT EXISTS prod")
    spark.range(20).selectExpr("id", "concat('n', id) AS name", "concat('card', id) AS card") \
        .write.mode("overwrite").saveAsTable("prod.customers")
    spark.range(50).selectExpr("id", "id % 3 AS k").write.mode("overwrite").parquet(str(root / "data" / "events"))
    try:
        yield SparkProject(root, spark, port)
    finally:
        spark.stop()


@pytest.fixture()
def make_guard(spark_project: SparkProject, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """Make the test's Guard (actor agent), with *extra* policy rules, and put the Spark layer on it."""
    made: list[Guard] = []
    monkeypatch.chdir(spark_project.root)

    def make(extra: str = "", max_rows: int = MAX) -> Guard:
        policy = tmp_path / f"policy{len(made)}.yaml"
        policy.write_text(POLICY % {"max": max_rows, "extra": extra})
        g = Guard(load_policy(policy, root=str(spark_project.root)), actor="agent",
                  audit_dir=str(tmp_path / f"audit{len(made)}"), notify=lambda d: None)
        set_current(g)
        layer.install(g)
        made.append(g)
        return g

    try:
        yield make
    finally:
        layer.uninstall()
        set_current(None)
        for g in made:
            g.close()


@pytest.fixture()
def guard(make_guard: Any) -> Guard:
    """The test's Guard under the Spark test policy."""
    return make_guard()  # type: ignore[no-any-return]
