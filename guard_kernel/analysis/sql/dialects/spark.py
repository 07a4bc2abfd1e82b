"""Spark SQL (and Databricks SQL): sqlglot's ``spark`` tokenizer splits, the classifier reads the trees.

Spark runs a statement on executors outside the kernel's process, so the statement is judged
whole at the driver, before ``spark.sql`` submits anything.  The vocabulary lists what reaches
past the data: ``reflect``/``java_method`` call any Java method in the JVM.  Statements that
load code or scripts (``TRANSFORM … USING``, ``ADD JAR``, ``CREATE FUNCTION``) are told apart by
the classifier's Spark branch (:func:`guard_kernel.analysis.sql.classify.spark_statement`).
"""

from __future__ import annotations

from guard_kernel.analysis.sql.dialects.base import Vocabulary
from guard_kernel.analysis.sql.dialects.server import ServerDialect

__all__ = ["SPARK", "SPARK_FILE_FORMATS"]

_JVM = "calls any Java method in the Spark JVM (files, processes, the network)"

_SPARK = Vocabulary(
    read_functions=frozenset({
        "range", "explode", "explode_outer", "inline", "inline_outer", "posexplode", "posexplode_outer", "stack",
        "json_tuple", "variant_explode", "variant_explode_outer", "sql_keywords", "collations",
    }),
    denied_functions={"reflect": _JVM, "java_method": _JVM, "try_reflect": _JVM},
)

SPARK_FILE_FORMATS = frozenset({"parquet", "csv", "json", "orc", "text", "avro", "binaryfile", "delta", "xml"})
"""``format.`path``` table names: Spark reads the file or folder *path* directly."""

SPARK = ServerDialect("spark", _SPARK)
