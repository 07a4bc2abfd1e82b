"""Spark in a real kernel with the guard loaded (``%load_ext guard_kernel``, jupyter_client) under an
agent policy that denies the shell: ``getOrCreate`` starts PySpark's own gateway (recorded as what
it is), a DROP of a source table and a write over source files are refused, and the kernel answers.

And in the confined guarded kernel, started by kernelspec name: Landlock's TCP rules would refuse
py4j's loopback connections to the JVM's random ports, so a policy that runs a local Spark there
allows ``net.connect`` to 127.0.0.1 without a port (Landlock then leaves ``connect`` to the
in-process layer; docs/spark.md); the file system stays confined."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import GuardedKernel, blocked, kernel_env, source_digests

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


CONFINED = AGENT + """  - {id: local-spark, effect: allow, actions: [net.connect], where: {host: "127.0.0.1"}}
"""


def test_local_spark_in_the_confined_guarded_kernel(project: Workspace, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    need_spark()
    from jupyter_client.manager import start_new_kernel

    from guard_kernel.audit import read_records
    from guard_kernel.kernel import spec

    policy = project.root / "policies" / "spark-confined.yaml"
    policy.write_text(CONFINED)
    prefix = tmp_path / "prefix"
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    spec.install(name="spark-guarded", prefix=str(prefix), policy=str(policy), root=str(project.root), actor="agent")
    audit = tmp_path / "audit"
    km, kc = start_new_kernel(kernel_name="spark-guarded", startup_timeout=120, cwd=str(project.root),
                              env=kernel_env(None, "agent", audit))
    k = GuardedKernel(km, kc, project, audit, policy, "agent")
    before = source_digests(project)
    try:
        res = k.run(START, timeout=600)
        assert res.ok and res.text == "12", res
        assert k.run("spark.range(100).toPandas().shape[0]", timeout=300).text == "5"  # capped
        assert blocked(k.run("spark.sql('DROP TABLE orders')"))
        res = k.run("spark.range(3).write.mode('overwrite').parquet('scratch/ok.parquet')", timeout=300)
        assert res.ok and (project.root / "scratch" / "ok.parquet").is_dir(), res
        # past every Python wrapper, straight to the JVM: the OS layer holds for the JVM's own writes
        jvm = k.run("spark.range(3)._jdf.write().mode('overwrite').parquet('data/raw/jvm.parquet')", timeout=300)
        # refused by the OS (as root only Landlock refuses a mkdir there), not by a guard message
        assert not jvm.ok and not blocked(jvm) and ("Mkdirs failed" in jvm.traceback or "ermission" in jvm.traceback), jvm
        assert not (project.root / "data" / "raw" / "jvm.parquet").exists()
        assert k.run("1 + 1").text == "2"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert source_digests(project) == before
    [path] = sorted(audit.glob("*.jsonl"))
    header = next(r for r in read_records(str(path)) if r["kind"] == "session")
    assert header["confinement"]["state"] == "in force" and header["confinement"]["tcp_connect_ports"] is None
    assert os.path.realpath(project.root / "data") not in header["confinement"]["writable"]
