"""The one action vocabulary every hook speaks.

An *action* is what a piece of code is about to do (``sql.read``, ``file.write``…).
Each action belongs to an :class:`ActionClass`, which picks the policy default that
applies when no rule matches.  Keep this the only list: hooks, the decision function,
the policy schema and the docs all read it from here.
"""

from __future__ import annotations

import fnmatch
from enum import Enum


class Action(str, Enum):
    """Everything the guard can be asked about."""

    SQL_READ = "sql.read"
    """A query that only reads (SELECT, FROM-first, DESCRIBE, SHOW, SUMMARIZE, PIVOT…)."""
    SQL_WRITE = "sql.write"
    """INSERT, UPDATE, DELETE, MERGE."""
    SQL_DDL = "sql.ddl"
    """CREATE, ALTER, DROP, TRUNCATE, COMMENT."""
    SQL_EXPORT = "sql.export"
    """COPY … TO, EXPORT DATABASE: data leaves the database as files."""
    SQL_ATTACH = "sql.attach"
    """ATTACH, DETACH, USE."""
    SQL_CONFIG = "sql.config"
    """SET, RESET, PRAGMA and other engine configuration."""
    SQL_EXTENSION = "sql.extension"
    """INSTALL or LOAD of an engine extension."""
    SQL_UNKNOWN = "sql.unknown"
    """Anything the classifier could not understand: always denied."""
    FILE_READ = "file.read"
    """Reading a file."""
    FILE_WRITE = "file.write"
    """Creating or writing a file (also links and renames *into* a path)."""
    FILE_DELETE = "file.delete"
    """Removing, renaming away, truncating or rmtree-ing a path."""
    EXPORT_DATAFRAME = "export.dataframe"
    """A dataframe or relation written out (pandas/pyarrow/numpy writers, DuckDB relation writes)."""
    EXPORT_CLIPBOARD = "export.clipboard"
    """Data copied to the clipboard."""
    NET_CONNECT = "net.connect"
    """A network connection or datagram."""
    SHELL_EXEC = "shell.exec"
    """A shell command or a new process."""
    SPARK_UDF = "spark.udf"
    """Python code shipped to Spark's executors (UDFs, ``mapInPandas``, ``applyInPandas``…), where no
    guard runs: a shell-class action."""
    PYTHON_IMPORT = "python.import"
    """Importing a module (rules usually name ctypes, cffi…)."""
    KERNEL_REQUEST = "kernel.request"
    """A kernel request that runs code outside the cell gate (debugger, subshell, unknown comm
    target, user expressions): refused by the guarded kernel whatever the policy says."""

    def __str__(self) -> str:  # so f-strings and messages show "sql.read"
        return self.value


class ActionClass(str, Enum):
    """The policy ``defaults`` key an action falls back to."""

    READ = "read"
    """Reads: allowed by default in every shipped policy."""
    WRITE = "write"
    """Changes to data or engine state."""
    EXPORT = "export"
    """Data leaving the session as files or clipboard."""
    NETWORK = "network"
    """Connections to other hosts."""
    SHELL = "shell"
    """Processes and shell commands."""
    NONE = "none"
    """No default: allowed unless a rule denies it (python.import)."""


_CLASS_OF: dict[Action, ActionClass] = {
    Action.SQL_READ: ActionClass.READ,
    Action.FILE_READ: ActionClass.READ,
    Action.SQL_WRITE: ActionClass.WRITE,
    Action.SQL_DDL: ActionClass.WRITE,
    Action.SQL_ATTACH: ActionClass.WRITE,  # READ_ONLY attaches are READ: see action_class()
    Action.SQL_CONFIG: ActionClass.WRITE,
    Action.SQL_EXTENSION: ActionClass.WRITE,
    Action.SQL_UNKNOWN: ActionClass.WRITE,  # never reached: denied before defaults
    Action.FILE_WRITE: ActionClass.WRITE,
    Action.FILE_DELETE: ActionClass.WRITE,
    Action.EXPORT_DATAFRAME: ActionClass.EXPORT,
    Action.EXPORT_CLIPBOARD: ActionClass.EXPORT,
    Action.SQL_EXPORT: ActionClass.EXPORT,
    Action.NET_CONNECT: ActionClass.NETWORK,
    Action.SHELL_EXEC: ActionClass.SHELL,
    Action.SPARK_UDF: ActionClass.SHELL,
    Action.PYTHON_IMPORT: ActionClass.NONE,
    Action.KERNEL_REQUEST: ActionClass.NONE,
}

ALL_ACTIONS: tuple[str, ...] = tuple(a.value for a in Action)


def action_class(action: Action, *, read_only: bool = False) -> ActionClass:
    """The defaults class of *action*; a READ_ONLY ``sql.attach`` counts as a read."""
    if action is Action.SQL_ATTACH and read_only:
        return ActionClass.READ
    return _CLASS_OF[action]


def _glob(pattern: str, name: str) -> bool:
    """``fnmatch.fnmatchcase(name, pattern)``, without compiling a regex for the shapes policies
    use: a name, ``*`` and ``prefix.*`` (the compiles cost ~1 ms of kernel start-up)."""
    if pattern == name:
        return True
    head, star, tail = pattern.partition("*")
    if "?" in pattern or "[" in pattern or (star and "*" in tail):
        return fnmatch.fnmatchcase(name, pattern)
    return bool(star) and name.startswith(head) and name.endswith(tail) and len(name) >= len(head) + len(tail)


def action_matches(pattern: str, action: Action) -> bool:
    """Whether a rule's action pattern (``export.*``, ``sql.read``, ``*``) covers *action*."""
    return _glob(pattern, action.value)


def valid_action_pattern(pattern: str) -> bool:
    """Whether *pattern* names at least one known action (used by the policy validator)."""
    return any(_glob(pattern, a) for a in ALL_ACTIONS)
