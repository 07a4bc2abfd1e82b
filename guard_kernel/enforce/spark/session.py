"""The session's entry points: ``spark.sql``, starting a session, Spark Connect, and Python code for executors.

* ``SparkSession.sql`` — every statement decided first (:mod:`.statements`); tables it creates
  become the session's own once it ran.
* ``Builder.getOrCreate`` — under ``confine: {exec: deny}`` a local JVM cannot start: refused at
  once, saying so and pointing to Spark Connect; ``remote("sc://host:port")`` is ``net.connect``
  to that endpoint (a policy rule naming the host allows it).  ``remote("local")`` starts a
  local JVM like a classic session.
* Python code shipped to executors (``udf``/``pandas_udf`` registration, ``mapInPandas``,
  ``mapInArrow``, ``applyInPandas``, ``foreach``, RDD functions) is ``spark.udf``: it runs
  where no guard runs, so the shipped agent policy denies it unless a rule allows it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from guard_kernel.decision.errors import GuardDenied
from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.decision.request import Request
from guard_kernel.enforce.spark import statements
from guard_kernel.policy.actions import Action

if TYPE_CHECKING:
    from guard_kernel.decision.guard import Guard

__all__ = ["builder_wrappers", "check_remote", "check_udf", "session_wrappers", "udf_wrapper"]

CONNECT_HINT = ("Use Spark Connect, which needs no local JVM: SparkSession.builder.remote('sc://host:15002')"
                ".getOrCreate(), with a policy rule that allows net.connect to that host.")


def _caller_is_pyspark() -> bool:
    """Whether PySpark itself (not the user) called: its internals use the same functions."""
    import sys

    name = str(sys._getframe(2).f_globals.get("__name__", ""))
    return name.startswith(("pyspark.", "py4j.", "delta."))


def check_udf(g: Guard, what: str, via: str) -> None:
    """Decide shipping Python code to the executors (``spark.udf``)."""
    g.check(Request(Action.SPARK_UDF, what, code=via,
                    reason="Python code runs on Spark's executors, where no guard runs"), "spark", via=via)


def udf_wrapper(fn: Callable[..., Any], what: str, active: Callable[[], Guard | None]) -> Callable[..., Any]:
    """*fn* (a UDF factory or a DataFrame method that ships Python code) decided before it runs."""
    def guarded(*args: Any, **kwargs: Any) -> Any:
        g = active()
        if g is not None and not _caller_is_pyspark():
            check_udf(g, what, what)
        return fn(*args, **kwargs)
    guarded.__name__ = getattr(fn, "__name__", what)
    guarded.__doc__ = getattr(fn, "__doc__", None)
    guarded.__wrapped__ = fn  # type: ignore[attr-defined]
    return guarded


def check_remote(g: Guard, url: str, via: str) -> None:
    """A Spark Connect endpoint is ``net.connect`` to its host (``sc://host:port``)."""
    if url.startswith("local"):
        return  # a local Spark Connect server in a local JVM: started like a classic session
    u = urlparse(url if "://" in url else f"sc://{url}")
    host = u.hostname or ""
    shown = f"sc://{host}:{u.port or 15002}"
    g.check(Request(Action.NET_CONNECT, shown, host=host or None, code=via), "spark", via=via)


def _confine_exec_denied(g: Guard) -> None:
    p = g.policy
    if p.confine_exec != "deny" or p.confine_mode in ("off", "False", "false"):
        return
    d = Decision(Effect.DENY, Action.SHELL_EXEC, "local Spark JVM", (RuleHit("confine.exec", p.file, 0),),
                 "A local Spark session cannot start under confine: {exec: deny}: PySpark starts its JVM with the "
                 "spark-submit script and java, and this policy lets the kernel start no program.", CONNECT_HINT,
                 None, "SparkSession.builder.getOrCreate()")
    g.record_decision(d, "spark", via="getOrCreate")
    raise GuardDenied(d)


def tmpdir_option() -> str | None:
    """``-Djava.io.tmpdir=$TMPDIR`` when the kernel has a private temporary folder (the guarded
    kernel's: the JVM inherits its Landlock rules, and Java ignores ``TMPDIR``), else None."""
    import os

    tmp = os.environ.get("TMPDIR")
    if not tmp or os.path.realpath(tmp) == os.path.realpath("/tmp"):
        return None
    return f"-Djava.io.tmpdir={tmp}"


def _private_tmp(builder: Any) -> None:
    """The local JVM's temporary files go where the kernel may write (its private TMPDIR)."""
    opt = tmpdir_option()
    opts = getattr(builder, "_options", None)
    if opt is not None and isinstance(opts, dict) and "spark.driver.extraJavaOptions" not in opts:
        opts["spark.driver.extraJavaOptions"] = opt


def _remote_of(builder: Any) -> str | None:
    opts = getattr(builder, "_options", {}) or {}
    url = opts.get("spark.remote")
    if url is None:
        import os

        url = os.environ.get("SPARK_REMOTE") if opts.get("spark.master") is None else None
    return str(url) if url else None


def builder_wrappers(original: Callable[[Any, str], Any],
                     active: Callable[[], Guard | None]) -> dict[str, Callable[..., Any]]:
    """``Builder.getOrCreate``: decided before a JVM starts or a connection opens."""
    def get_or_create(builder: Any, *args: Any, **kwargs: Any) -> Any:
        g = active()
        if g is not None:
            url = _remote_of(builder)
            if url is not None and not url.startswith("local"):
                check_remote(g, url, "SparkSession.builder.getOrCreate")
            else:
                _confine_exec_denied(g)
                _private_tmp(builder)
        return original(builder, "getOrCreate")(builder, *args, **kwargs)

    return {"getOrCreate": get_or_create}


def session_wrappers(original: Callable[[Any, str], Any],
                     active: Callable[[], Guard | None]) -> dict[str, Callable[..., Any]]:
    """``SparkSession.sql`` decided statement by statement before Spark parses it."""
    def sql(session: Any, sqlQuery: Any, *args: Any, **kwargs: Any) -> Any:
        g = active()
        if g is None:
            return original(session, "sql")(session, sqlQuery, *args, **kwargs)
        v = statements.check_sql(g, sqlQuery, session)
        with g.quiet():
            result = original(session, "sql")(session, sqlQuery, *args, **kwargs)
        statements.after(g, v)
        return result

    return {"sql": sql}


def catalog_wrappers(original: Callable[[Any, str], Any],
                     active: Callable[[], Guard | None]) -> dict[str, Callable[..., Any]]:
    """Catalog methods that change tables: decided like the SQL they stand for."""
    def as_sql(name: str, text: Callable[..., str]) -> Callable[..., Any]:
        def guarded(cat: Any, *args: Any, **kwargs: Any) -> Any:
            g = active()
            if g is not None:
                session = getattr(cat, "_sparkSession", None)
                v = statements.check_sql(g, text(*args, **kwargs), session, via=f"Catalog.{name}")
                result = original(cat, name)(cat, *args, **kwargs)
                statements.after(g, v)
                return result
            return original(cat, name)(cat, *args, **kwargs)
        guarded.__name__ = name
        return guarded

    def q(name: Any) -> str:
        return ".".join(f"`{p}`" for p in str(name).replace("`", "").split("."))

    def create(tableName: Any, path: Any = None, *a: Any, **k: Any) -> str:  # PySpark's argument names
        where = k.get("path", path)
        location = " LOCATION '" + str(where).replace("'", "") + "'" if where else ""
        return f"CREATE TABLE {q(tableName)} (x INT){location}"

    return {
        "createTable": as_sql("createTable", create),
        "createExternalTable": as_sql("createExternalTable", create),
        "recoverPartitions": as_sql("recoverPartitions", lambda tableName: f"ALTER TABLE {q(tableName)} RECOVER PARTITIONS"),
        "dropGlobalTempView": as_sql("dropGlobalTempView", lambda viewName: f"DROP VIEW global_temp.{q(viewName)}"),
    }
