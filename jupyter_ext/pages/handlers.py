"""The audit pages' HTTP handlers, behind the server's authentication and authorization.

Every handler is a :class:`JupyterHandler` (pages) or :class:`APIHandler` (JSON) method wrapped
in ``tornado.web.authenticated`` (no identity: pages redirect to the login page, the API answers
403) and jupyter_server's ``authorized`` (the server's Authorizer decides ``read`` on the
``guard`` resource).  Reading and rendering audits runs off the event loop (a thread): a large
audit never stalls the server's kernels and websockets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from jupyter_ext.pages.store import AuditStore, NotFound
from jupyter_ext.pages.views import list_page, session_page

AUTH_RESOURCE = "guard"
"""The resource the server's Authorizer is asked about (action ``read``) for every audit page."""
PAGE_CSP = "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'"
"""A session page runs no script and loads nothing from elsewhere (nbconvert's page would fetch
MathJax from a CDN): audit text is escaped anyway; this is the second lock."""
ID = r"(?P<sid>[^/]+)"
"""A session id in a URL: anything up to the next slash, judged by :class:`AuditStore` (so that
``..``, ``%2e%2e`` and ``%2F`` reach the check and are refused there, not matched elsewhere)."""

T = TypeVar("T")


class _Base(ExtensionHandlerMixin):
    """What every audit handler shares: the store and off-loop calls into it."""

    auth_resource = AUTH_RESOURCE

    def initialize(self, name: str, store: AuditStore) -> None:
        self.store = store
        super().initialize(name)

    async def _call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kw)
        except NotFound:
            raise web.HTTPError(404, "no such session in the audit folder") from None


class ListPage(_Base, JupyterHandler):
    """``/guard/``: the sessions, newest first, filterable by actor and "has denials"."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        actor = self.get_argument("actor", "")
        denials = self.get_argument("denials", "") in ("1", "on", "true")
        every = await self._call(self.store.sessions)
        rows = [s for s in every if (not actor or s.summary.actor == actor)
                and (not denials or s.summary.denial_count)]
        actors = sorted({s.summary.actor for s in every if s.summary.actor} | {"agent", "human"})
        self.set_header("Content-Security-Policy", PAGE_CSP)
        self.finish(list_page(rows, base=self.base_url, folder=str(self.store.folder), total=len(every),
                              actors=actors, actor=actor, denials=denials))


class SessionPage(_Base, JupyterHandler):
    """``/guard/sessions/<id>``: the session as its audit notebook renders it (nbconvert, server-side)."""

    @web.authenticated
    @authorized
    async def get(self, sid: str) -> None:
        session = await self._call(self.store.session, sid)
        html = await self._call(self.store.html, sid)
        self.set_header("Content-Security-Policy", PAGE_CSP)
        self.finish(session_page(session, html, base=self.base_url))


DOWNLOADS = {
    "ipynb": ("application/x-ipynb+json", ".ipynb"),
    "jsonl": ("application/jsonl", ".jsonl"),
    "bundle": ("application/zip", "-bundle.zip"),
}
"""Download kind → (content type, file name suffix)."""


class Download(_Base, JupyterHandler):
    """``/guard/sessions/<id>/download/(ipynb|jsonl|bundle)``."""

    @web.authenticated
    @authorized
    async def get(self, sid: str, kind: str) -> None:
        make: Callable[[str], Any] = {"ipynb": self.store.ipynb, "jsonl": self.store.jsonl,
                                              "bundle": self.store.bundle_zip}[kind]
        body = await self._call(make, sid)
        ctype, suffix = DOWNLOADS[kind]
        self.set_header("Content-Type", ctype)
        self.set_header("Content-Disposition", f'attachment; filename="{sid}{suffix}"')
        self.finish(body)


class SessionsAPI(_Base, APIHandler):
    """``/guard/api/sessions``: every session's summary (``?actor=``, ``?denials=1`` filter)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        actor = self.get_argument("actor", "") or None
        denials = self.get_argument("denials", "") in ("1", "on", "true")
        rows = await self._call(self.store.sessions, actor=actor, denials=denials)
        self.finish(json.dumps({"audit_dir": str(self.store.folder),
                                "sessions": [s.as_dict(denials=False) for s in rows]}))


class SessionAPI(_Base, APIHandler):
    """``/guard/api/sessions/<id>``: one session's summary with its denials."""

    @web.authenticated
    @authorized
    async def get(self, sid: str) -> None:
        s = await self._call(self.store.session, sid)
        self.finish(json.dumps(s.as_dict()))


def page_handlers(app: Any) -> list[tuple[str, type[Any], dict[str, Any]]]:
    """The audit pages' routes (relative to the server's base_url) for ``GuardExtension``, sharing
    one :class:`AuditStore` of its audit folder (and so one cache)."""
    kw = {"store": AuditStore(app.audit_path())}
    return [
        (r"/guard/?", ListPage, kw),
        (rf"/guard/sessions/{ID}/download/(?P<kind>ipynb|jsonl|bundle)", Download, kw),
        (rf"/guard/sessions/{ID}/?", SessionPage, kw),
        (r"/guard/api/sessions/?", SessionsAPI, kw),
        (rf"/guard/api/sessions/{ID}/?", SessionAPI, kw),
    ]


__all__ = ["AUTH_RESOURCE", "ListPage", "SessionAPI", "SessionPage", "SessionsAPI", "page_handlers"]
