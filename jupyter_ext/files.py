"""The server's own file actions, decided like a kernel's: sources, policy files and audits stay as they are.

:class:`FileGuard` turns a file action of the server (an API path and what is done to it) into a
:class:`~guard_kernel.decision.Request` on its real path, asks the one decision function, records the
answer in the server chain and raises :class:`GuardForbidden` (an ``HTTPError`` 403 whose body is JSON
naming the rule) when it is refused.  Two places ask it:

- the HTTP handlers, through the wrapped authorizer (:mod:`jupyter_ext.authz`), which reads the
  paths from the request (the authorizer itself only sees a resource type);
- the ContentsManager itself (:func:`guard_contents_manager`): ``save``, ``delete``, ``rename``,
  ``copy``, checkpoints (create, restore, delete) and reads of file content, so writes that never come over HTTP
  (collaboration rooms, server-side extensions such as jupyter-mcp-server running in the server)
  are refused too, before the file is touched.

What the HTTP layer already decided in this request is not decided (nor recorded) again below it.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tornado.web import HTTPError

from guard_kernel.decision.evaluate import WRITE_LIKE, Decision, Effect, RuleHit
from guard_kernel.decision.request import Request
from guard_kernel.policy.actions import Action
from jupyter_ext.identity import SERVER_SIDE, Identity
from jupyter_ext.server_audit import AuditUnavailable, ServerAudit


@dataclass
class RequestContext:
    """The HTTP request being served (set by the authorizer for the rest of the request's task)."""

    handler: Any
    identity: Identity
    actor: str
    decided: set[tuple[Action, str]] = field(default_factory=set)
    """(action, real path) already decided and allowed at the HTTP layer."""

    def client(self) -> dict[str, Any]:
        req = getattr(self.handler, "request", None)
        return {"ip": getattr(req, "remote_ip", None),
                "user_agent": req.headers.get("User-Agent") if req is not None else None}


CURRENT: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("guard_request", default=None)
_INSIDE: contextvars.ContextVar[bool] = contextvars.ContextVar("guard_cm_inside", default=False)
"""True while a guarded ContentsManager method runs: what it calls on itself was decided already."""


class GuardForbidden(HTTPError):
    """A server action the policy refuses: 403, with the decision as JSON."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(403, decision.message.replace("%", "%%"), reason="Forbidden by guard_kernel policy")
        self.decision = decision

    def body(self) -> dict[str, Any]:
        """The response body: a message for people, and the decision's facts for programs."""
        return {"message": self.decision.message, "reason": self.reason, "guard": self.decision.as_dict()}


def refuse(decision: Decision, handler: Any = None) -> GuardForbidden:
    """The error to raise for *decision*; the handler (if any) answers it with the JSON body."""
    exc = GuardForbidden(decision)
    if handler is not None:
        def write_error(status_code: int, **kwargs: Any) -> None:
            handler.set_header("Content-Type", "application/json")
            handler.finish(json.dumps(exc.body()))
        handler.write_error = write_error  # this request only: the handler instance is the request's
    return exc


class FileGuard:
    """Decisions on the server's file actions, recorded in the server chain."""

    def __init__(self, audit: ServerAudit, root_dir: str, *, server_side_actor: str = "agent",
                 policy_files: tuple[str, ...] = ()) -> None:
        """*policy_files*: policies besides the one in force that no server action may write
        (the guarded kernelspecs' policies)."""
        self.audit = audit
        self.root_dir = os.path.realpath(root_dir)
        self.server_side_actor = server_side_actor
        self.policy_files = frozenset(os.path.realpath(p) for p in policy_files)

    def real(self, api_path: str) -> str:
        """The real path of an API path (symlinks and ``..`` resolved, as the kernel's rules see it)."""
        return os.path.realpath(os.path.join(self.root_dir, *api_path.strip("/").split("/")))

    def check(self, action: Action, api_path: str, *, via: str, op: str, real: str | None = None,
              **extra: Any) -> Decision:
        """Decide *action* on *api_path*, record it, and raise :class:`GuardForbidden` when refused
        (also when the record cannot be written: nothing unrecorded happens)."""
        ctx = CURRENT.get()
        path = real or self.real(api_path)
        if ctx is not None and via != "http" and (action, path) in ctx.decided:
            return Decision(Effect.ALLOW, action, api_path)
        actor = ctx.actor if ctx is not None else self.server_side_actor
        req = Request(action, api_path or "/", path=path)
        d = self.audit.decide(req, actor)
        if not d.blocked:
            d = self._policy_file(req) or d
        identity = ctx.identity if ctx is not None else SERVER_SIDE
        fields: dict[str, Any] = {"via": via, "op": op, "path": path, "identity": identity.as_dict(), **extra}
        if ctx is not None:
            fields["client"] = ctx.client()
        try:
            self.audit.record_decision(d, "file", actor=actor, **fields)
        except AuditUnavailable as exc:
            d = Decision(Effect.DENY, action, api_path, (RuleHit("audit-unavailable", "<guard>", 0),),
                         f"{action} on {api_path} refused: the server's audit cannot be written ({exc.reason}).",
                         "Free the audit folder's disk, then retry.")
        if d.blocked:
            raise refuse(d, ctx.handler if ctx is not None else None)
        if ctx is not None and via == "http":
            ctx.decided.add((action, path))
        return d

    def _policy_file(self, req: Request) -> Decision | None:
        """Policies besides the one in force (decide() protects that one): never writable either."""
        if req.action in WRITE_LIKE and req.path in self.policy_files:
            return Decision(Effect.DENY, req.action, req.resource, (RuleHit("policy-file", "<guard>", 0),),
                            f"{req.action} on {req.resource}: a guarded kernel's policy file is never writable "
                            "from the server.", "Change policies outside Jupyter, then reinstall the kernel.")
        return None

    def copy_target(self, from_path: str, to_path: str | None) -> str:
        """The API path a copy writes (the folder, and the copied file's own name in it)."""
        from_path = from_path.strip("/")
        name = from_path.rsplit("/", 1)[-1]
        if to_path is None:
            return from_path.rsplit("/", 1)[0] + "/" + name if "/" in from_path else name
        to_path = to_path.strip("/")
        try:
            is_dir = os.path.isdir(self.real(to_path))
        except OSError:
            is_dir = False
        return f"{to_path}/{name}".strip("/") if is_dir or not to_path else to_path


def checkpoint_of(path: str) -> str:
    """Where a file's checkpoint is written: ``.ipynb_checkpoints/`` beside it (FileCheckpoints'
    layout; the file name inside is decided by the folder, which is what path globs match)."""
    folder, _, name = path.strip("/").rpartition("/")
    return "/".join(p for p in (folder, ".ipynb_checkpoints", name) if p)


def guard_contents_manager(cm: Any, guard: FileGuard) -> None:
    """Decide every write (and content read) of *cm* before it happens, on the instance itself."""
    if getattr(cm, "_guard_kernel_wrapped", False):
        return

    def save_checks(model: Any, path: str = "", *_: Any, **__: Any) -> None:
        guard.check(Action.FILE_WRITE, path, via="contents_manager", op="save")

    def delete_checks(path: str, *_: Any, **__: Any) -> None:
        guard.check(Action.FILE_DELETE, path, via="contents_manager", op="delete")

    def rename_checks(old_path: str, new_path: str, *_: Any, **__: Any) -> None:
        guard.check(Action.FILE_DELETE, old_path, via="contents_manager", op="rename", to=new_path)
        guard.check(Action.FILE_WRITE, new_path, via="contents_manager", op="rename", **{"from": old_path})

    def copy_checks(from_path: str, to_path: str | None = None, *_: Any, **__: Any) -> None:
        guard.check(Action.FILE_READ, from_path, via="contents_manager", op="copy")
        guard.check(Action.FILE_WRITE, guard.copy_target(from_path, to_path), via="contents_manager",
                    op="copy", **{"from": from_path})

    def restore_checks(checkpoint_id: str, path: str, *_: Any, **__: Any) -> None:
        guard.check(Action.FILE_WRITE, path, via="contents_manager", op="restore_checkpoint")

    def create_checkpoint_checks(path: str, *_: Any, **__: Any) -> None:
        guard.check(Action.FILE_WRITE, checkpoint_of(path), via="contents_manager", op="create_checkpoint",
                    of=path)

    def delete_checkpoint_checks(checkpoint_id: str, path: str, *_: Any, **__: Any) -> None:
        guard.check(Action.FILE_DELETE, checkpoint_of(path), via="contents_manager", op="delete_checkpoint",
                    of=path)

    def get_checks(path: str, content: bool = True, type: str | None = None, *_: Any, **__: Any) -> None:
        if content and type != "directory" and os.path.isfile(guard.real(path)):
            guard.check(Action.FILE_READ, path, via="contents_manager", op="get")

    for name, checks in (("save", save_checks), ("delete", delete_checks), ("rename", rename_checks),
                         ("copy", copy_checks), ("restore_checkpoint", restore_checks),
                         ("create_checkpoint", create_checkpoint_checks),
                         ("delete_checkpoint", delete_checkpoint_checks), ("get", get_checks)):
        setattr(cm, name, _guarded(getattr(cm, name), checks))
    cm._guard_kernel_wrapped = True


def _guarded(method: Callable[..., Any], checks: Callable[..., None]) -> Callable[..., Any]:
    """*method* with *checks* first; what it calls on the manager meanwhile is not checked again."""
    if inspect.iscoroutinefunction(method):
        @functools.wraps(method)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            if _INSIDE.get():
                return await method(*args, **kwargs)
            checks(*args, **kwargs)
            token = _INSIDE.set(True)
            try:
                return await method(*args, **kwargs)
            finally:
                _INSIDE.reset(token)
        return run_async

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        if _INSIDE.get():
            return method(*args, **kwargs)
        checks(*args, **kwargs)
        token = _INSIDE.set(True)
        try:
            return method(*args, **kwargs)
        finally:
            _INSIDE.reset(token)
    return run


__all__ = ["CURRENT", "FileGuard", "GuardForbidden", "RequestContext", "checkpoint_of", "guard_contents_manager",
           "refuse"]
