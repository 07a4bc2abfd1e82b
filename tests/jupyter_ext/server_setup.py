"""Shared set-up of the server-guard tests: a sample project as the server's root, its policy, helpers.

Each test module imports pytest-jupyter's autouse fixtures itself (see test_app.py); this module
only builds configuration and reads results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tornado.httpclient import HTTPClientError

from guard_kernel.audit import read_records
from guard_kernel.demo import Workspace

SECRETS_RULE = """
  - id: no-secrets
    effect: deny
    actions: [file.read]
    where: {path: "secrets/**"}
    message: "secrets/ may not be read through the server."
"""
AGENT_TOKEN, HUMAN_TOKEN = "agent-token-7f3a", "human-token-2b9c"


def server_policy(project: Workspace) -> Path:
    """policies/server.yaml: the shipped default, plus a file.read denial on secrets/."""
    path = project.root / "policies" / "server.yaml"
    if not path.exists():
        path.write_text(project.policy("default").read_text() + SECRETS_RULE)
    secrets = project.root / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "key.txt").write_text("not for agents\n")
    return path


def guard_config(project: Workspace, audit: Path, **extension: Any) -> dict[str, Any]:
    """Server configuration: the extension named on the command line, the project as root, named tokens."""
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_ext": True},
                      "identity_provider_class": "jupyter_ext.identity.GuardIdentityProvider"},
        "GuardIdentityProvider": {"named_tokens": {AGENT_TOKEN: "claude", HUMAN_TOKEN: "ana"}},
        "GuardExtension": {"policy": str(server_policy(project)), "root": str(project.root),
                           "audit_dir": str(audit), "agent_identities": ["claude"], **extension},
    }


def server_records(serverapp: Any) -> list[dict[str, Any]]:
    """Every record of *serverapp*'s server chain."""
    return list(read_records(chain_path(serverapp)))


def chain_path(serverapp: Any) -> str:
    """The file of *serverapp*'s server chain."""
    return str(serverapp.web_app.settings["guard_extension"].guard.audit.path)


async def refused(call: Any) -> tuple[int, dict[str, Any]]:
    """Await an HTTP call expected to fail: its status and JSON body."""
    try:
        resp = await call
    except HTTPClientError as exc:
        assert exc.response is not None
        return exc.code, json.loads(exc.response.body or b"{}")
    raise AssertionError(f"not refused: {resp.code} {resp.body[:300]!r}")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}
