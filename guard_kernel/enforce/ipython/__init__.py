"""IPython: ``extension`` (load/unload, shell and magic wrappers, cell records), ``cell`` (the
whole-cell AST gate), ``magics`` (``%guard``)."""
