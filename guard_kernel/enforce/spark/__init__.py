"""The Spark layer: ``spark.sql``, DataFrame writers, row caps, ``deny_columns``, Spark Connect, UDFs (issue 17)."""

from guard_kernel.enforce.spark.gateway import is_gateway_launch

__all__ = ["is_gateway_launch"]
