"""The ``guard-kernel`` command line: ``main`` and one module per command family."""
