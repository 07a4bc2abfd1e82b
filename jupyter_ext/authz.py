"""The configured Authorizer, wrapped: the same answers, then the policy's on what the request touches.

Jupyter's ``Authorizer`` is asked "may this user *write* *contents*?": a resource type, never a path.
:class:`GuardAuthorizer` keeps the authorizer the server was configured with (JupyterHub sets its own)
and asks it first; when it says yes, the guard reads the paths from the handler and its request —
the URL's path, a PATCH's new ``path``, a POST's ``copy_from`` — and decides them
(:class:`~jupyter_ext.files.FileGuard`).  A refusal is a 403 whose JSON body names the rule.
Terminals are refused here unless ``allow_terminals``.  Every request also leaves its identity and
actor (:data:`jupyter_ext.files.CURRENT`) for the ContentsManager calls it makes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.base.handlers import AuthenticatedFileHandler
from jupyter_server.files.handlers import FilesHandler
from jupyter_server.services.contents.handlers import (
    CheckpointsHandler,
    ContentsHandler,
    ModifyCheckpointsHandler,
)

from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.policy.actions import Action
from jupyter_ext.files import CURRENT, FileGuard, RequestContext, checkpoint_of, refuse
from jupyter_ext.identity import Identity, identity_of

TERMINALS_RULE = "no-terminals"


class GuardAuthorizer(Authorizer):
    """Asks the configured authorizer, then decides the request's paths with the policy."""

    def __init__(self, inner: Authorizer, files: FileGuard, *, agents: Collection[str], allow_terminals: bool,
                 on_terminal: Callable[[Decision, Identity, Any], None], **kwargs: Any) -> None:
        super().__init__(identity_provider=inner.identity_provider, **kwargs)
        self.inner = inner
        """The authorizer the server was configured with: asked first, its "no" stands."""
        self.files = files
        self.agents = frozenset(agents)
        self.allow_terminals = allow_terminals
        self.on_terminal = on_terminal

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> Awaitable[bool] | bool:
        answer = self.inner.is_authorized(handler, user, action, resource)
        if isinstance(answer, Awaitable):
            async def then() -> bool:
                ok = bool(await answer)
                if ok:
                    self._guard(handler, user, resource)
                return ok
            return then()
        if answer:
            self._guard(handler, user, resource)
        return bool(answer)

    # ------------------------------------------------------------------ the request's paths
    def _guard(self, handler: Any, user: Any, resource: str) -> None:
        identity = identity_of(user, self.agents)
        ctx = RequestContext(handler, identity, "agent" if identity.agent else "human")
        CURRENT.set(ctx)  # the rest of this request's task: its ContentsManager calls see who asked
        if resource == "terminals":
            self._terminal(handler, identity)
            return
        if resource not in ("contents", "nbconvert"):
            return
        method = handler.request.method
        path = _url_path(handler)
        args = {"via": "http", "op": f"{method} {handler.request.path}"}
        check = self.files.check
        if isinstance(handler, FilesHandler | AuthenticatedFileHandler) or resource == "nbconvert":
            if method in ("GET", "HEAD", "POST") and path:
                check(Action.FILE_READ, path, **args)
        elif isinstance(handler, ModifyCheckpointsHandler):
            if method == "POST":  # restore: the checkpoint's bytes replace the file
                check(Action.FILE_WRITE, path, **args)
            elif method == "DELETE":
                check(Action.FILE_DELETE, checkpoint_of(path), of=path, **args)
        elif isinstance(handler, CheckpointsHandler):
            if method == "POST":  # a copy of the file, written beside it
                check(Action.FILE_WRITE, checkpoint_of(path), of=path, **args)
        elif isinstance(handler, ContentsHandler):
            self._contents(handler, method, path, args)

    def _contents(self, handler: Any, method: str, path: str, args: dict[str, Any]) -> None:
        check = self.files.check
        body = _json_body(handler)
        if method == "GET":
            if handler.get_query_argument("content", "1") != "0" and _is_file(self.files, path):
                check(Action.FILE_READ, path, **args)
        elif method == "PUT":  # save or upload (chunks included)
            check(Action.FILE_WRITE, path, **args)
        elif method == "PATCH":  # rename: the old path goes away, the new one is written
            new = str(body.get("path") or "").strip("/")
            if new:
                check(Action.FILE_DELETE, path, to=new, **args)
                check(Action.FILE_WRITE, new, **{"from": path}, **args)
        elif method == "POST" and body.get("copy_from"):
            source = str(body["copy_from"]).strip("/")
            check(Action.FILE_READ, source, **args)
            check(Action.FILE_WRITE, self.files.copy_target(source, path), **{"from": source}, **args)
        elif method == "DELETE":
            check(Action.FILE_DELETE, path, **args)
        # POST without copy_from (a new untitled file): its name is chosen by the ContentsManager,
        # whose own guard decides it

    def _terminal(self, handler: Any, identity: Identity) -> None:
        d = Decision(Effect.ALLOW, Action.SHELL_EXEC, "terminals", (RuleHit("allow_terminals", "<server>", 0),))
        if not self.allow_terminals:
            d = Decision(Effect.DENY, Action.SHELL_EXEC, "terminals", (RuleHit(TERMINALS_RULE, "<server>", 0),),
                         "terminals are refused by the guard_kernel server extension: a terminal is a shell in the "
                         "server's account, outside every kernel's guard",
                         "Run the work in a guarded notebook; an administrator can set "
                         "GuardExtension.allow_terminals = True.")
        self.on_terminal(d, identity, handler)
        if d.blocked:
            raise refuse(d, handler)


class UnavailableAuthorizer(Authorizer):
    """Fail closed: the guard could not start (a bad policy, an unwritable audit folder), so the
    server refuses every authorized request, saying why, instead of running unguarded."""

    def __init__(self, inner: Authorizer, reason: str, **kwargs: Any) -> None:
        super().__init__(identity_provider=inner.identity_provider, **kwargs)
        self.inner = inner
        self.reason = reason

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        d = Decision(Effect.DENY, Action.KERNEL_REQUEST, resource, (RuleHit("guard-unavailable", "<server>", 0),),
                     f"the guard_kernel server extension could not start, so this server refuses every request: "
                     f"{self.reason}",
                     "Fix the extension's configuration (guard-kernel policy check for the policy), then restart "
                     "the server.")
        raise refuse(d, handler)


def _url_path(handler: Any) -> str:
    """The API path in the request's URL (a keyword of the route, or its last positional group:
    ``/files/(path)``, ``/nbconvert/(format)/(path)``)."""
    kwargs = getattr(handler, "path_kwargs", None) or {}
    args = getattr(handler, "path_args", None) or ()
    value = kwargs.get("path") or (args[-1] if args and isinstance(args[-1], str) else "")
    return str(value or "").strip("/")


def _json_body(handler: Any) -> dict[str, Any]:
    try:
        body = json.loads(handler.request.body or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _is_file(files: FileGuard, path: str) -> bool:
    import os

    return os.path.isfile(files.real(path))


__all__ = ["TERMINALS_RULE", "GuardAuthorizer", "UnavailableAuthorizer"]
