"""Delta's Python API decided by its table — without a live Delta table: Delta's jars come from Maven at
start-up, which cannot run offline, so the DeltaTable objects here carry a target and a JVM-less handle.
A denied write never reaches the (missing) JVM table; an allowed one does (and fails there)."""

from __future__ import annotations

from typing import Any

import pytest

from guard_kernel.decision import GuardDenied
from guard_kernel.decision.guard import Guard
from guard_kernel.enforce.spark.delta import TARGET
from tests.enforce.spark.conftest import SparkProject

delta_tables = pytest.importorskip("delta.tables")


class _NoJvm:
    """Stands for the JVM table Delta would call: reaching it means the guard let the call through."""

    def __getattr__(self, name: str) -> Any:
        raise LookupError(f"reached the JVM: {name}")


def _table(spark: Any, target: tuple[str, str] | None) -> Any:
    dt = delta_tables.DeltaTable(spark, _NoJvm())
    if target is not None:
        dt.__dict__[TARGET] = target
    return dt


@pytest.mark.parametrize(("target", "call", "allowed"), [
    (("name", "orders"), lambda dt: dt.delete("id > 1"), False),
    (("name", "prod.customers"), lambda dt: dt.update(set={"name": "'x'"}), False),
    (("name", "other"), lambda dt: dt.vacuum(), False),
    (("path", "data/events"), lambda dt: dt.merge(dt._spark.range(1), "true"), False),
    (("path", "data/events"), lambda dt: dt.restoreToVersion(0), False),
    (("path", "s3a://bucket/t"), lambda dt: dt.optimize(), False),
    (("path", "scratch/delta_t"), lambda dt: dt.delete(), True),
    (None, lambda dt: dt.delete(), False),
    (("path", "scratch/delta_t"), lambda dt: dt.clone("data/clone"), False),
    (("path", "scratch/delta_t"), lambda dt: dt.clone("scratch/clone"), True),
])
def test_delta_writes_decided_by_their_table(guard: Guard, spark_project: SparkProject, target: Any, call: Any,
                                             allowed: bool) -> None:
    dt = _table(spark_project.spark, target)
    if allowed:
        with pytest.raises(LookupError):
            call(dt)
    else:
        with pytest.raises(GuardDenied):
            call(dt)
    assert guard.counts["deny"] == (0 if allowed else 1)


def test_for_path_is_not_a_write(guard: Guard, spark_project: SparkProject) -> None:
    cls = delta_tables.DeltaTable
    with pytest.raises(Exception) as e:  # no Delta jars: the JVM class is missing
        cls.forPath(spark_project.spark, "data/events")
    assert not isinstance(e.value, GuardDenied) and guard.counts["deny"] == 0
