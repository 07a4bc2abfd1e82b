"""Enforcement: where actions are stopped before they run.

``ipython/`` (the cell gate, magics, shell, ``%load_ext`` wiring), ``duckdb/`` (every
connection, statement and fetch), ``dataframe/`` (writers and source readers of pandas,
polars, pyarrow, numpy), ``runtime/`` (the ``sys.addaudithook`` layer and who started an
event; the confining exec helper of a ``%load_ext`` session's commands), ``confine`` and
``landlock`` (the OS layer: what Landlock holds for a guarded kernel or a confined command, and
the binding of its system calls), ``lazy`` (layers put on a library right after it is imported).  Every layer asks
:meth:`guard_kernel.decision.guard.Guard.check`; nothing is imported here.
"""
