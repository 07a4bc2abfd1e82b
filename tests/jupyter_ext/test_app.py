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


def test_enable_and_list(tmp_path: Any) -> None:
    """The package lists jupyter_ext DISABLED (so a plain install turns nothing on);
    ``jupyter server extension enable jupyter_ext`` turns it on, and ``list`` shows it enabled and valid."""
    import os
    import re
    import shutil
    import subprocess
    import sys
    import tomllib
    from pathlib import Path

    from jupyter_server.extension.config import ExtensionConfigManager

    repo = Path(__file__).resolve().parents[2]
    shipped = "jupyter-config/jupyter_server_config.d/jupyter_ext.json"
    data_files = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    assert data_files == {"etc/jupyter/jupyter_server_config.d": [shipped]}
    config_path = str(repo / "jupyter-config")
    assert ExtensionConfigManager(read_config_path=[config_path]).get_jpserver_extensions() == {"jupyter_ext": False}
    # `enable` (jupyter_server 2.21) only toggles a module the config dir it writes already names, as a wheel
    # install names jupyter_ext in <prefix>/etc/jupyter (enable --sys-prefix). The tests' editable install
    # installs no data files: the shipped file goes into a private config dir, enabled there with --user.
    config = tmp_path / "config"
    (config / "jupyter_server_config.d").mkdir(parents=True)
    shutil.copy(repo / shipped, config / "jupyter_server_config.d" / "jupyter_ext.json")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config))

    def jupyter(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "jupyter", "server", "extension", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)

    out = jupyter("enable", "--user", "jupyter_ext")
    assert "Validation failed" not in out, out
    listed = jupyter("list")
    assert "jupyter_ext enabled" in listed and re.search(r"jupyter_ext \S+ OK", listed), listed
    assert ExtensionConfigManager(read_config_path=[str(config)]).get_jpserver_extensions()["jupyter_ext"] is True


class TestFailClosed:
    """A policy that cannot be loaded: the server serves nothing rather than serving unguarded."""

    @pytest.fixture
    def jp_server_config(self, tmp_path: Any) -> dict[str, Any]:
        bad = tmp_path / "bad.yaml"
        bad.write_text("version: 1\nname: bad\ndefaults: {write: sometimes}\n")
        return {"ServerApp": {"jpserver_extensions": {"jupyter_ext": True}},
                "GuardExtension": {"policy": str(bad)}}

    async def test_every_request_refused(self, jp_fetch: Any, jp_serverapp: Any) -> None:
        import json

        from tornado.httpclient import HTTPClientError

        assert jp_serverapp.web_app.settings["guard_extension"].guard is None
        for parts, kwargs in ((("api", "contents"), {}), (("api", "kernels"), {"method": "POST", "body": "{}"}),
                              (("api", "kernelspecs"), {})):
            with pytest.raises(HTTPClientError) as info:
                await jp_fetch(*parts, **kwargs)
            assert info.value.code == 403, parts
            body = json.loads(info.value.response.body)
            assert body["guard"]["rules"][0]["id"] == "guard-unavailable" and "bad.yaml" in body["message"], body
        assert jp_serverapp.kernel_manager.list_kernel_ids() == []
