"""The extension loads into a real server, named on its command line, with its configuration."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_jupyter.jupyter_core import jp_asyncio_loop  # noqa: F401  (autouse again here)
from pytest_jupyter.jupyter_server import jp_server_cleanup  # noqa: F401


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    """Load the extension the way a command line names it."""
    return {"ServerApp": {"jpserver_extensions": {"jupyter_ext": True}}}


async def test_extension_loads(jp_serverapp: Any) -> None:
    manager = jp_serverapp.extension_manager
    assert "jupyter_ext" in manager.extensions
    assert manager.extensions["jupyter_ext"].enabled
    point = manager.extensions["jupyter_ext"].extension_points["jupyter_ext"]
    assert point.app.name == "jupyter_ext"
    assert jp_serverapp.web_app.settings["guard_extension"] is point.app


async def test_audit_path_defaults_under_root(jp_serverapp: Any) -> None:
    app = jp_serverapp.web_app.settings["guard_extension"]
    assert app.audit_path().name == ".guard_audit"
