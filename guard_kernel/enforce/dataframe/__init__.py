"""Dataframes: ``writers`` (pandas/polars/pyarrow/numpy exports), ``readers`` (row caps on
source reads), ``patching`` (the wrapper plumbing both share)."""
