"""guard_kernel benchmarks: the guard's cost against the unguarded path, in the same run.

Run ``python -m benchmarks`` (or ``make bench``) from the repository root; ``--quick``
uses smaller sizes.  Results go to ``benchmarks/results.json`` and ``results.png``.
"""
