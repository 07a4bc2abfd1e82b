"""PySpark's own gateway launch is told apart from every other process start (no JVM started here)."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

import pytest

from guard_kernel.enforce.spark.gateway import gateway_launch, is_gateway_launch

pyspark = pytest.importorskip("pyspark")
if shutil.which("java") is None:  # the launch is judged with the machine's java
    pytest.skip("no Java runtime: run `make java` (as root) to install Debian's", allow_module_level=True)
SCRIPT = os.path.join(os.path.dirname(pyspark.__file__), "./bin/spark-submit")
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
JAVA = shutil.which("java") or "/usr/bin/java"


@pytest.mark.parametrize(("argv", "env", "why"), [
    ([SCRIPT, "pyspark-shell"], ENV, None),
    ([SCRIPT, "--conf", "spark.master=local[2]", "--conf", "spark.app.name=x", "pyspark-shell"], ENV, None),
    ([SCRIPT, "--conf", "spark.plugins=org.apache.spark.sql.connect.SparkConnectPlugin", "pyspark-shell"], ENV, None),
    (["/bin/sh", "-c", "spark-submit"], ENV, "not the installed pyspark's spark-submit"),
    (["/tmp/spark/bin/spark-submit", "pyspark-shell"], ENV, "not the installed pyspark's spark-submit"),
    ([SCRIPT, "--conf", "spark.driver.extraJavaOptions=-XX:OnOutOfMemoryError=sh", "pyspark-shell"], ENV,
     "adds code"),
    ([SCRIPT, "--conf", "spark.jars.packages=io.delta:delta-spark_2.13:4.0.0", "pyspark-shell"], ENV, "adds code"),
    ([SCRIPT, "--conf", "spark.pyspark.python=/tmp/evil", "pyspark-shell"], ENV, "adds code"),
    ([SCRIPT, "--conf", "spark.plugins=com.evil.Plugin", "pyspark-shell"], ENV, "adds code"),
    ([SCRIPT, "--class", "com.evil.Main", "pyspark-shell"], ENV, "submit arguments"),
    ([SCRIPT, "pyspark-shell", "--jars", "/tmp/x.jar"], ENV, "submit arguments"),
    ([SCRIPT, "pyspark-shell"], {**ENV, "JAVA_TOOL_OPTIONS": "-javaagent:/tmp/a.jar"}, "JAVA_TOOL_OPTIONS is set"),
    ([SCRIPT, "pyspark-shell"], {**ENV, "SPARK_HOME": "/tmp/spark"}, "SPARK_HOME"),
    ([SCRIPT, "pyspark-shell"], {**ENV, "PYSPARK_PYTHON": "/bin/sh"}, "PYSPARK_PYTHON"),
    ([SCRIPT, "pyspark-shell"], {**ENV, "PYSPARK_PYTHON": sys.executable}, None),
    ([SCRIPT, "pyspark-shell"], {**ENV, "JAVA_HOME": "/tmp/fakejava"}, "java is not a system installation"),
    ("spark-submit pyspark-shell", ENV, "not an argument list"),
])
def test_gateway_launch(argv: Any, env: dict[str, str], why: str | None) -> None:
    got = gateway_launch(argv, env)
    assert (got is None) if why is None else (got is not None and why in got), got


def test_only_pysparks_launcher_counts() -> None:
    """The exact command, started by user code rather than ``launch_gateway``, is a shell command."""
    assert not is_gateway_launch((SCRIPT, [SCRIPT, "pyspark-shell"], None, ENV))
