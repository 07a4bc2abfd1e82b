"""Spark in a real kernel with the guard loaded (``%load_ext guard_kernel``, jupyter_client) under an
agent policy that denies the shell: ``getOrCreate`` starts PySpark's own gateway (recorded as what
it is), a DROP of a source table and a write over source files are refused, and the kernel answers.

(Not the confined guarded kernel: there Landlock's TCP rules refuse py4j's loopback connection to
the JVM's random port — docs/spark.md says so and points to Spark Connect.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import GuardedKernel, blocked, source_digests

from guard_kernel.demo import Workspace
from tests.enforce.spark.conftest import need_spark

AGENT = """version: 1
name: spark-agent
lock: true
defaults: {read: allow, write: deny, export: deny, network: deny, shell: deny}
sources:
  lake: {spark: {tables: [orders]}, paths: ["data/**"]}
scratch: ["scratch/**"]
limits: {max_rows: {agent: 5, human: 5}}
rules:
  - {id: scratch-writes, effect: allow, actions: [file.write, file.delete, export.dataframe], where: {path: "scratch/**"}}
"""

START = """
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false")
         .config("spark.sql.warehouse.dir", "scratch/warehouse").config("spark.local.dir", "scratch/spark-tmp")
         .getOrCreate())
spark.range(12).count()
"""


@pytest.fixture
def agent_kernel(kernel_factory: Callable[..., GuardedKernel], tmp_path: Path) -> GuardedKernel:
    need_spark()
    policy = tmp_path / "spark-agent.yaml"
    policy.write_text(AGENT)
    k = kernel_factory(policy=policy, actor="agent")
    assert k.load_result is not None and k.load_result.ok, k.load_result
    return k


def test_spark_starts_in_the_guarded_kernel_and_a_source_drop_is_refused(agent_kernel: GuardedKernel,
                                                                          project: Workspace) -> None:
    k = agent_kernel
    assert blocked(k.run("import subprocess; subprocess.run(['true'])"))  # the shell is denied here
    assert not blocked(k.run("import os; os.environ['PYSPARK_PYTHON'] = __import__('sys').executable"))
    before = source_digests(project)
    res = k.run(START, timeout=600)
    assert res.ok and res.text == "12", res
    launches = [r for r in k.records() if any(h.get("id") == "spark-gateway" for h in r.get("rules") or [])]
    assert len(launches) == 1 and launches[0]["decision"] == "allow" and "spark-submit" in launches[0]["resource"]
    res = k.run("spark.sql('DROP TABLE orders')")
    assert blocked(res) and "source 'lake'" in res.traceback, res
    parquet = sorted(p.relative_to(project.root) for p in Path(project.root, "data").rglob("*.parquet"))[0]
    res = k.run(f"spark.range(3).write.mode('overwrite').parquet('{parquet}')")
    assert blocked(res), res
    assert source_digests(project) == before
    assert k.run("spark.range(100).toPandas().shape[0]", timeout=300).text == "5"  # capped, and alive
