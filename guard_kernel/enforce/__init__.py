"""Enforcement: where actions are stopped before they run.

``ipython/`` (the cell gate, magics, shell, ``%load_ext`` wiring), ``duckdb/`` (every
connection, statement and fetch), ``dataframe/`` (writers and source readers of pandas,
polars, pyarrow, numpy), ``runtime/`` (the ``sys.addaudithook`` layer and who started an
event), ``lazy`` (layers put on a library right after it is imported).  Every layer asks
:meth:`guard_kernel.decision.guard.Guard.check`; nothing is imported here.
"""
