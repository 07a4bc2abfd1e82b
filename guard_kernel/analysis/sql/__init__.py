"""The one SQL classifier: ``classify`` (statement kinds, DuckDB lexer and parser, sqlglot),
``refs`` (tables, columns, stars, files), ``cap`` (row caps pushed into the query), ``requests``
(statements → requests, the entry points the gates call)."""
