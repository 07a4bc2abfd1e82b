"""The Python AST analysis of cells: ``scan`` (vocabulary, line pre-filter, AST readers) and
``analyze`` (what a cell clearly does, as intents)."""
