"""The sample project (``workspace``) and what ``make demo`` runs (``main``)."""

from guard_kernel.demo.main import demo, demo_notebook
from guard_kernel.demo.workspace import Workspace, build_workspace, repo_policies

__all__ = ["Workspace", "build_workspace", "demo", "demo_notebook", "repo_policies"]
