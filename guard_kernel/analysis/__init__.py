"""Analysis: what code means, as :class:`~guard_kernel.decision.request.Request` objects.

``python/`` reads a cell's AST (``scan``: vocabulary and pre-filter; ``analyze``: intents);
``sql/`` classifies statements (``classify``), finds tables, columns and files (``refs``),
plans row caps (``cap``) and turns statements into requests (``requests``).  Nothing is
imported here: sqlglot stays off the start-up path until SQL is seen.
"""
