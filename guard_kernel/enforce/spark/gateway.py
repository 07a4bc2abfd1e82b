"""PySpark's own JVM gateway launch: allowed and recorded as what it is, not as a shell command.

``SparkSession.builder.getOrCreate()`` starts the JVM by running the installed package's
``bin/spark-submit`` from ``pyspark.java_gateway.launch_gateway``.  The runtime hook asks
:func:`gateway_launch` about every process start while ``pyspark.java_gateway`` is imported; the
launch counts as the gateway only when all of these hold, otherwise it stays ``shell.exec``:

* the ``subprocess.Popen`` is called by ``launch_gateway`` itself;
* the program is exactly ``<installed pyspark>/bin/spark-submit`` (a ``SPARK_HOME`` elsewhere is
  another program);
* its arguments are ``--conf key=value`` pairs and ``pyspark-shell``, with no key that loads code,
  downloads, or runs a program (:data:`_CODE_CONF`);
* the environment names no other Java, JVM options, configuration folder or Python for workers.

A guardrail, not a sandbox: the JVM it starts runs Spark with the kernel's rights (and, in the
guarded kernel, under its Landlock rules).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from typing import TYPE_CHECKING, Any

from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.policy.actions import Action

if TYPE_CHECKING:
    from guard_kernel.decision.guard import Guard

__all__ = ["gateway_launch", "is_gateway_launch", "is_gateway_socket", "record_gateway"]

_CODE_CONF = ("spark.driver.extrajavaoptions", "spark.driver.defaultjavaoptions", "spark.driver.extraclasspath",
              "spark.driver.extralibrarypath", "spark.executor.extrajavaoptions", "spark.executor.defaultjavaoptions",
              "spark.executor.extraclasspath", "spark.executor.extralibrarypath", "spark.jars", "spark.files",
              "spark.archives", "spark.submit.pyfiles", "spark.pyspark.", "spark.python.", "spark.driver.resource.",
              "spark.executor.resource.", "spark.worker.resource.", "spark.yarn.dist.", "spark.kubernetes.",
              "spark.sql.hive.metastore.jars")
"""``--conf`` key prefixes (lower-case) that add code, download packages or name programs to run."""
_PLUGINS = frozenset({"org.apache.spark.sql.connect.SparkConnectPlugin"})
"""``spark.plugins`` values the launch may carry (a local Spark Connect server)."""
_ENV = ("JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "SPARK_SUBMIT_OPTS", "SPARK_CONF_DIR",
        "SPARK_DIST_CLASSPATH", "SPARK_CLASSPATH", "SPARK_JAVA_OPTS", "SPARK_DAEMON_JAVA_OPTS",
        "PYSPARK_DRIVER_PYTHON")
"""Environment variables that change which code the JVM runs."""
_SYSTEM = ("/usr/", "/opt/", "/lib/", "/etc/alternatives/")
_OWN_CONNECTS = frozenset({("py4j.clientserver", "connect_to_java_server"), ("py4j.java_gateway", "start"),
                           ("pyspark.util", "local_connect_and_auth")})
"""(module, function) of PySpark's own loopback connections: py4j to the gateway, and results
served by the JVM to ``collect``/``toLocalIterator``."""
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_launched = False


def _tmpdir_option() -> str | None:
    from guard_kernel.enforce.spark.session import tmpdir_option

    return tmpdir_option()


def _script() -> str | None:
    mod = sys.modules.get("pyspark")
    path = getattr(mod, "__file__", None)
    return os.path.realpath(os.path.join(os.path.dirname(path), "bin", "spark-submit")) if path else None


def _launcher_called() -> bool:
    """Whether the ``subprocess.Popen`` being made was called by ``launch_gateway``."""
    f: Any = sys._getframe(1)
    while f is not None and not (f.f_code.co_name == "__init__" and f.f_globals.get("__name__") == "subprocess"):
        f = f.f_back
    caller = f.f_back if f is not None else None
    return caller is not None and caller.f_code.co_name == "launch_gateway" and \
        caller.f_globals.get("__name__") == "pyspark.java_gateway"


def gateway_launch(argv: Any, env: Any) -> str | None:
    """None when *argv*/*env* are PySpark's own gateway launch, else why not (the launcher frame
    is checked by :func:`is_gateway_launch`)."""
    if not isinstance(argv, (list, tuple)) or not argv or not all(isinstance(a, str) for a in argv):
        return "not an argument list"
    script = _script()
    if script is None or os.path.realpath(argv[0]) != script:
        return f"not the installed pyspark's spark-submit ({script})"
    rest = list(argv[1:])
    while rest[:1] == ["--conf"] and len(rest) >= 2:
        key, _, value = rest[1].partition("=")
        k = key.strip().lower()
        if k == "spark.driver.extrajavaoptions" and value == _tmpdir_option():
            rest = rest[2:]
            continue  # the guard's own option: the JVM's temporary files in the kernel's private TMPDIR
        if k.startswith(_CODE_CONF) or (k == "spark.plugins" and not set(value.split(",")) <= _PLUGINS):
            return f"--conf {key} adds code or runs a program"
        rest = rest[2:]
    if rest != ["pyspark-shell"]:
        return f"submit arguments other than pyspark-shell: {shlex.join(rest)[:200]}"
    e = env if isinstance(env, dict) else os.environ
    for name in _ENV:
        if e.get(name):
            return f"{name} is set"
    if e.get("SPARK_HOME") and os.path.realpath(os.path.join(e["SPARK_HOME"], "bin", "spark-submit")) != script:
        return "SPARK_HOME names another Spark"
    if e.get("PYSPARK_PYTHON") and os.path.realpath(shutil.which(e["PYSPARK_PYTHON"]) or e["PYSPARK_PYTHON"]) \
            != os.path.realpath(sys.executable):
        return "PYSPARK_PYTHON names another program than this Python"
    java_home = e.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java", path=e.get("PATH"))
    if java is None or not os.path.realpath(java).startswith(_SYSTEM):
        return f"java is not a system installation ({java})"
    return None


def _argv(args: tuple[Any, ...]) -> Any:
    """The command of a ``subprocess.Popen`` audit event, the exec helper's prefix taken off (in a
    ``%load_ext`` session every child starts through the confining helper)."""
    argv = args[1] if args[1] is not None else args[0]
    if isinstance(argv, (list, tuple)) and all(isinstance(a, (str, bytes)) for a in argv):
        from guard_kernel.enforce.runtime.exec_helper import unwrap

        return unwrap(argv) or argv
    return argv


def is_gateway_launch(args: tuple[Any, ...]) -> bool:
    """Whether the ``subprocess.Popen`` audit event *args* is PySpark's own gateway launch."""
    if "pyspark.java_gateway" not in sys.modules or not _launcher_called():
        return False
    return gateway_launch(_argv(args), args[3] if len(args) > 3 else None) is None


def record_gateway(guard: Guard, args: tuple[Any, ...]) -> bool:
    """Record PySpark's gateway launch as what it is and return True; False for anything else."""
    if not is_gateway_launch(args):
        return False
    argv = _argv(args)
    d = Decision(Effect.ALLOW, Action.SHELL_EXEC, shlex.join(argv)[:500], (RuleHit("spark-gateway", "<guard>", 0),),
                 "PySpark's own JVM gateway: the installed package's spark-submit, started by its launcher",
                 None, None, "pyspark.java_gateway.launch_gateway")
    guard.record_decision(d, "spark", via="subprocess.Popen")
    global _launched
    _launched = True
    return True


def is_gateway_socket(address: Any) -> bool:
    """Whether a ``socket.connect`` to *address* is PySpark talking to its own JVM: a loopback
    address, called from py4j's or PySpark's own connect function, once a gateway was launched
    here (or PySpark has one).  Not recorded: one per py4j connection and per result fetched."""
    if not (isinstance(address, tuple) and len(address) >= 2 and address[0] in _LOOPBACK):
        return False
    ctx = sys.modules.get("pyspark.core.context") or sys.modules.get("pyspark.context")
    if not (_launched or getattr(getattr(ctx, "SparkContext", None), "_gateway", None) is not None):
        return False
    f: Any = sys._getframe(1)
    for _ in range(8):
        if f is None:
            return False
        if (f.f_globals.get("__name__"), f.f_code.co_name) in _OWN_CONNECTS:
            return True
        f = f.f_back
    return False
