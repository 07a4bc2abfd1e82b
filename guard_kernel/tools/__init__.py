"""Tools around the guard: ``runner`` (a notebook run headlessly under a policy, cell by cell)."""
