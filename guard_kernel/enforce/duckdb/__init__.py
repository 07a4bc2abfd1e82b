"""DuckDB: ``gate`` (every connection and statement) and ``rows`` (row caps on every fetch path)."""
