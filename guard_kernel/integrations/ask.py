"""Ask a kernel of a Jupyter server, before code is sent to it: is it guarded, and would the code be denied?

Used by the jupyter-mcp-server plugin (:mod:`guard_kernel.integrations.mcp`) in stdio mode, where the
MCP server reaches kernels through the Jupyter server's REST and websocket API.  One short websocket
connection per question: ``kernel_info_request`` (a guarded kernel names itself in ``guard``), then
the kernel's ``guard_kernel.check`` comm (its own policy and analysis decide; nothing is run).  The
MCP process has no policy of its own: the kernel decides, and enforces again when the code runs.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from guard_kernel.decision.messages import Code, facts, json_line

log = logging.getLogger("guard_kernel.mcp")
DEPLOY_HINT = ("Send the code to a guarded kernel: install it as the kernel the server starts (guard-kernel install "
               "--name python3 --prefix DIR --policy FILE --actor agent, DIR/share/jupyter first on the Jupyter "
               "server's JUPYTER_PATH; docs/assistants.md), then use_notebook or restart_notebook.")
"""What to do when the target kernel is not guarded."""


@dataclass(frozen=True)
class Refusal:
    """Why code was not sent: the guard's message for people and its JSON facts."""

    text: str
    facts: dict[str, Any]


def _refusal(title: str, lines: list[str], data: dict[str, Any]) -> Refusal:
    return Refusal("\n".join([f"guard_kernel: {title}", *(x for x in lines if x), json_line(data)]), data)


def not_guarded(kernel_id: str, reason: str) -> Refusal:
    """The refusal of code aimed at a kernel that is not guarded (or whose guard is not running)."""
    msg = f"kernel {kernel_id} is not guarded ({reason}): the code was not sent"
    return _refusal(msg, [f"  instead: {DEPLOY_HINT}"], facts(Code.NOT_GUARDED, msg, DEPLOY_HINT, reason=reason,
                                                              kernel=kernel_id))


def denied(kernel_id: str, denial: dict[str, Any]) -> Refusal:
    """The refusal of code the kernel's pre-flight denies (a whole cell refused before it was sent)."""
    data = {**denial, "code": Code.CELL_REJECTED.value}
    rules = ", ".join(str(r.get("id")) for r in data.get("rules", []))
    line = f" (line {data['line']})" if data.get("line") else ""
    return _refusal("blocked by policy — the kernel's guard refused this code before it was sent",
                    [f"DENY: {data.get('message')}{line}", f"  rule: {rules}" if rules else "",
                     f"  instead: {data.get('hint')}" if data.get("hint") else ""], data)


def ask(url: str, token: str | None, kernel_id: str, code: str, *, timeout: float = 60.0) -> Refusal | None:
    """Ask kernel *kernel_id* on the server at *url*: None when *code* may be sent, else why not.

    Fail closed: a kernel that cannot be asked is not sent code either."""
    try:
        with _Connection(url, token, kernel_id, timeout) as conn:
            info = conn.request("kernel_info_request", {})
            guard = info["content"].get("guard")
            if not isinstance(guard, dict):
                return not_guarded(kernel_id, f"its kernel_info names no guard (implementation "
                                              f"{info['content'].get('implementation')!r})")
            if not guard.get("guarded"):
                return not_guarded(kernel_id, f"its guard is not running: {guard.get('unavailable')}")
            comm_id = uuid.uuid4().hex
            answer = conn.request("comm_open", {"comm_id": comm_id, "target_name": guard["check_target"],
                                                "data": {"code": code, "for": "execute"}},
                                  channel="iopub", comm_id=comm_id)["content"]["data"]
            conn.send("comm_close", {"comm_id": comm_id, "data": {}})
    except Exception as exc:  # cannot ask: fail closed
        return not_guarded(kernel_id, f"it could not be asked: {type(exc).__name__}: {exc}")
    if not answer.get("ok"):  # the kernel could not answer: it decides when the code runs
        log.warning("guard_kernel: kernel %s could not pre-check the code: %s", kernel_id, answer.get("error"))
        return None
    report = answer["report"]
    if report.get("outcome") != "deny":
        return None
    denial = next(u["denial"] for u in report["units"] if u.get("denial"))
    return denied(kernel_id, denial)


class _Connection:
    """One websocket to a kernel through the Jupyter server (its JSON message protocol), used for a
    request or two and closed at once (no threads: nothing outlives the question)."""

    def __init__(self, url: str, token: str | None, kernel_id: str, timeout: float) -> None:
        import websocket  # websocket-client, installed with jupyter-mcp-server
        from jupyter_client.session import Session

        self.session = Session(username="guard_kernel")
        endpoint = (re.sub(r"^http", "ws", url.rstrip("/")) + f"/api/kernels/{kernel_id}/channels"
                    + f"?session_id={self.session.session}")
        self.deadline = time.monotonic() + timeout
        self.ws = websocket.create_connection(endpoint, timeout=timeout,
                                              header=[f"Authorization: token {token}"] if token else [])

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:  # already closed
            pass

    def send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        from jupyter_client.jsonutil import json_default

        msg = self.session.msg(msg_type, content)
        self.ws.send(json.dumps({**msg, "channel": channel}, default=json_default))
        return str(msg["header"]["msg_id"])

    def request(self, msg_type: str, content: dict[str, Any], *, channel: str = "shell",
                comm_id: str | None = None) -> dict[str, Any]:
        """Send on the shell channel; the reply on *channel* to it (with *comm_id*: the comm's message)."""
        msg_id = self.send(msg_type, content)
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {msg_type}")
            self.ws.settimeout(left)
            raw = self.ws.recv()
            if not isinstance(raw, str):  # a binary frame (a message with buffers): not ours
                continue
            got: dict[str, Any] = json.loads(raw)
            if got.get("channel") != channel or got.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if comm_id is None or (got.get("msg_type") == "comm_msg" and got["content"].get("comm_id") == comm_id):
                return got


__all__ = ["DEPLOY_HINT", "Refusal", "ask", "denied", "not_guarded"]
