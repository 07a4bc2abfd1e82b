"""The server's Authorizer decides who reads audits: one that refuses the ``guard`` resource
gets 403 on every audit page and API call, while the rest of the server keeps working."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from jupyter_server.auth import Authorizer
from pytest_jupyter.jupyter_core import jp_asyncio_loop  # noqa: F401  (autouse again here)
from pytest_jupyter.jupyter_server import jp_server_cleanup  # noqa: F401
from test_pages import audit_sessions, get, urls  # noqa: F401  (the same real sessions)

from jupyter_ext.pages import AUTH_RESOURCE


class NoAudits(Authorizer):  # type: ignore[misc]
    """Everything but the audits (a deployment whose users may not read them)."""

    asked: ClassVar[list[tuple[str, str]]] = []

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        NoAudits.asked.append((action, resource))
        return resource != AUTH_RESOURCE


@pytest.fixture(name="jp_server_config")
def pages_authz_config(audits: dict[str, Any]) -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_ext": True}, "authorizer_class": NoAudits},
            "GuardExtension": {"audit_dir": str(audits["folder"])}}


async def test_an_authorizer_that_refuses_audits_gets_403_everywhere(
        http_server_client: Any, jp_base_url: str, jp_auth_header: dict[str, str], audits: dict[str, Any]) -> None:
    NoAudits.asked.clear()
    for url in urls(audits["ids"]):
        res = await get(http_server_client, jp_base_url, url, jp_auth_header)
        assert res.code == 403, (url, res.code)
        assert audits["ids"]["agent"].encode() not in (res.body or b""), url
    assert ("read", AUTH_RESOURCE) in NoAudits.asked
    assert (await get(http_server_client, jp_base_url, "api/kernels", jp_auth_header)).code == 200
