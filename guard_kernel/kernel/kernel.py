"""``GuardedKernel``: an IPython kernel guarded before its first request, that cannot be switched off.

The kernel is ipykernel's ``IPythonKernel`` with a gate in front of every request:

- the guard is installed while the kernel is built (:meth:`GuardedKernel.start_guard`), locked
  whatever the policy says, before start-up code, extensions or the first request;
- a kernel whose guard could not be installed (a bad or changed policy, a broken install)
  still starts and answers ``kernel_info``, and refuses every ``execute_request`` with the
  reason: never an unguarded kernel;
- before each ``execute_request`` every layer is asked whether it is still in place; a cell
  that removed or replaced one (``ast_transformers.clear()``, ``duckdb.connect`` put back…)
  is caught here: the tamper is recorded, the hooks are put back and the request is refused;
- ``user_expressions`` run outside the AST transformers: each is checked like a cell first;
- ``debug_request``, subshells, ``%debug``/``%pdb`` are refused and not advertised; comm
  targets the guard does not know are refused for agents; ``guard_kernel.check`` answers "would
  this be allowed?" (the pre-flight: analysed and decided, never run);
- ``kernel_info_reply`` carries ``guard`` (version, policy, its SHA-256, actor, confinement), so a
  client can tell a guarded kernel without running code;
- every request's ``msg_id``, session and username go into its cell record, and silent
  executions are recorded too (IPython fires no cell events for them).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from ipykernel.ipkernel import IPythonKernel

from guard_kernel import __version__
from guard_kernel.decision import guard as session
from guard_kernel.decision.errors import ERROR_NAMES, CellRejected, GuardDenied, GuardUnavailable
from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.policy.actions import Action

CHECK_TARGET = "guard_kernel.check"
"""The comm target that answers "would this be allowed?" (the pre-flight; nothing is run)."""
KNOWN_COMM_TARGETS = frozenset({"jupyter.widget", "jupyter.widget.control", "jupyter.widget.version", CHECK_TARGET})
"""Comm targets an agent may open: ipywidgets' own (they run no code the guard has not seen) and
the guard's pre-flight (it analyses code and decides; it never executes it)."""
REFUSED_MAGICS = {"debug": "line", "pdb": "line"}
"""Magics the guarded kernel refuses: a debugger runs code and changes frames outside the cell gate."""


class GuardedKernel(IPythonKernel):
    """An IPython kernel whose every request goes through guard_kernel first."""

    implementation = "guard_kernel"
    implementation_version = __version__
    kernel_name = "guarded"
    """The kernelspec name this kernel was started as (set by the app; recorded in the audit)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unavailable: str | None = "the guard has not been installed yet"
        """Why this kernel refuses every cell (None: the guard is in place)."""
        self.shell_handlers["comm_open"] = self._comm_open
        self.notice: str | None = None
        """A one-line notice the next cell's output starts with (confinement unavailable), then None."""

    # ------------------------------------------------------------------ guard
    def start_guard(self) -> None:
        """Install the guard, locked, from ``GUARD_KERNEL_*`` (the kernelspec fixed what it names).

        Any failure leaves the kernel refusing every cell with the reason; nothing here raises.
        """
        from guard_kernel.audit.pipe import PipeSink
        from guard_kernel.audit.session import kernel_identity
        from guard_kernel.enforce.ipython import extension
        from guard_kernel.kernel import settings as launcher

        env = os.environ
        if env.get(launcher.ENV_UNAVAILABLE):  # the launcher could not load the policy or confine as required
            self.unavailable = env[launcher.ENV_UNAVAILABLE]
            self.log.error("guard_kernel: %s", self.unavailable)
            return
        try:
            sink = None
            if env.get(launcher.ENV_AUDIT_FD):  # the launcher owns the audit file: records go to it
                sink = PipeSink(int(env[launcher.ENV_AUDIT_FD]), env[launcher.ENV_AUDIT_PATH], {})
            confinement = json.loads(env[launcher.ENV_CONFINEMENT]) if env.get(launcher.ENV_CONFINEMENT) else None
            # the server's kernel id (from its kernel-<id>.json): what `audit crosscheck` matches by
            kernel = kernel_identity(getattr(self.parent, "connection_file", None) or None)
            guard = session.guard_from_env(default_actor="agent", lock=True, kernel=self.kernel_name, audit=sink,
                                           session_id=env.get(launcher.ENV_SESSION),
                                           header={"confinement": confinement, "kernel": kernel})
            session.set_current(guard)
            extension.load_ipython_extension(self.shell)
            extension.refuse_magics(REFUSED_MAGICS, "the guarded kernel runs no debugger")
            self.comm_manager.register_target(CHECK_TARGET, self._check_comm)
        except Exception as exc:  # fail closed: a kernel without its guard runs nothing
            self.unavailable = f"{type(exc).__name__}: {exc}"
            self.log.error("guard_kernel: the guard could not be installed: %s", self.unavailable)
            return
        self.unavailable = None
        if confinement and confinement.get("state") == "unavailable":  # best_effort: said once, in the first cell
            self.notice = (f"guard_kernel: OS confinement is unavailable here ({confinement.get('reason')}); "
                           "this session runs on the in-process guards only (confine: best_effort).")
        if self.shell is not None:
            self.shell.banner2 = (f"guard_kernel {__version__}: policy {guard.policy.name}, actor {guard.actor}, "
                                  f"audit {guard.audit_path}")

    # --------------------------------------------------------------- requests
    @property
    def kernel_info(self) -> dict[str, Any]:
        info = dict(super().kernel_info)
        # no debugger, no subshells: both would run code outside the cell gate
        info["supported_features"] = []
        info["guard"] = self.guard_info()
        return info

    def guard_info(self) -> dict[str, Any]:
        """What ``kernel_info_reply`` advertises, so a client can tell a guarded kernel without running code."""
        guard = session.current()
        if guard is None or self.unavailable is not None:
            return {"version": __version__, "guarded": False, "kernel": self.kernel_name,
                    "unavailable": self.unavailable or "no guard"}
        confinement = guard.confinement or {}
        return {"version": __version__, "guarded": True, "kernel": self.kernel_name, "policy": guard.policy.name,
                "policy_sha256": guard.policy.sha256, "actor": guard.actor, "lock": guard.locked,
                "confinement": confinement.get("state"),
                "check_target": CHECK_TARGET}

    def _check_comm(self, comm: Any, msg: dict[str, Any]) -> None:
        """``guard_kernel.check``: answer the request in the open message and every later one (never run it)."""
        from guard_kernel.analysis.preflight import answer_request

        def answer(m: dict[str, Any]) -> None:
            data = m.get("content", {}).get("data") or {}
            if data:  # an empty open is only a handshake
                reply = answer_request(data, guard=session.current(), shell=self.shell)
                if data.get("for") == "execute":  # a client will not send code this denies: record the attempt
                    self._record_refused_before_sending(data, reply)
                comm.send(reply)

        comm.on_msg(answer)
        answer(msg)

    def _record_refused_before_sending(self, data: dict[str, Any], reply: dict[str, Any]) -> None:
        """A pre-flight asked on behalf of an ``execute`` (the MCP plugin) that denies: the audit keeps the
        attempt, as it would the refused cell."""
        guard = session.current()
        report = reply.get("report") or {}
        if guard is None or not reply.get("ok") or report.get("outcome") != "deny":
            return
        for unit in report.get("units", []):
            denial = unit.get("denial")
            if denial:
                guard.record("request", action=denial.get("action"), resource=str(denial.get("resource")),
                             decision="deny", rules=denial.get("rules", []),
                             message=f"refused before it was sent (pre-flight): {denial.get('message')}",
                             code=str(data.get("code", data.get("sql", "")))[:2000], via=CHECK_TARGET,
                             **_request_fields(guard))

    async def execute_request(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        header = parent.get("header", {})
        guard = session.current()
        if guard is not None:
            guard.request = {"msg_id": header.get("msg_id"), "session": header.get("session"),
                             "username": header.get("username")}
        # the Jupyter Server's stamp (jupyter_ext) may lower a human kernel to agent, never raise one
        human_policy = _lower_actor(guard, (parent.get("metadata") or {}).get("guard_actor"))
        try:
            await super().execute_request(stream, ident, parent)
        finally:
            if guard is not None:
                guard.request = {}
                if human_policy is not None:
                    guard.actor, guard.policy, guard._cache = "human", human_policy, {}

    async def do_execute(self, code: str, silent: bool, store_history: bool = True,
                         user_expressions: dict[str, str] | None = None, allow_stdin: bool = False, *,
                         cell_meta: Any = None, cell_id: Any = None) -> dict[str, Any]:
        refusal = self._gate(code, silent, user_expressions or {})
        if refusal is not None:
            return self._refuse(refusal)
        if self.shell is not None:
            self.shell.call_pdb = False  # %pdb is refused; a cell that sets the flag directly gains nothing
        if self.notice is not None and not silent:  # an output of the cell, not an error on stderr
            self.send_response(self.iopub_socket, "display_data", {
                "data": {"text/plain": self.notice}, "metadata": {"guard_kernel": {"notice": "confinement"}}},
                ident=self._topic("display_data"))
            self.notice = None
        reply: dict[str, Any] = await super().do_execute(
            code, silent, store_history, user_expressions, allow_stdin, cell_meta=cell_meta, cell_id=cell_id)
        if silent:
            self._record_silent(code, reply)
        return reply

    def _gate(self, code: str, silent: bool, user_expressions: dict[str, str]) -> Decision | None:
        """The decision that refuses this request, or None to let it run."""
        from guard_kernel.enforce.ipython import cell, extension

        if self.unavailable is not None:
            return _refusal("guard-unavailable", Action.KERNEL_REQUEST, "kernel",
                            f"this guarded kernel has no guard, so it runs no code: {self.unavailable}",
                            "Fix the policy named by the kernelspec (guard-kernel policy check), then restart the kernel.",
                            code)
        guard = session.current()
        broken = extension.tampered()
        if broken or guard is None:
            guard = guard or extension.loaded_guard()
            extension.repair()
            d = _refusal("guard-tampered", Action.KERNEL_REQUEST, ", ".join(broken) or "guard",
                         "an earlier cell removed or replaced the guard's hooks (" + (", ".join(broken) or "guard")
                         + "); they were put back, and this request was not run",
                         "Run the cell again; do not change the guard's hooks.", code)
            if guard is not None:
                guard.record("tamper", action=None, resource="guard_kernel", decision="deny", rules=[guard.lock_rule()],
                             message=d.message, hooks=broken, code=code[:2000])
            return d
        for name, expr in user_expressions.items():
            try:
                cell.check_cell(guard, expr)
            except GuardDenied as exc:
                return _refusal("user-expressions", Action.KERNEL_REQUEST, f"user_expressions[{name!r}]",
                                f"user expression {name!r} was refused: {exc.decision.message}",
                                "Put the expression in a cell instead.", expr)
        return None

    def _refuse(self, d: Decision) -> dict[str, Any]:
        """Reply with an error the notebook shows (no traceback) and the agent reads as JSON: ``ename``
        ``GuardUnavailable`` (no guard) or ``CellRejected``, ``evalue`` the short line."""
        guard = session.current()
        if guard is not None and d.rules and d.rules[0].id != "guard-tampered":
            guard.record_decision(d, "request")
        exc = GuardUnavailable(d) if d.rules and d.rules[0].id == "guard-unavailable" else CellRejected(d)
        content = {"ename": type(exc).__name__, "evalue": str(exc), "traceback": exc._render_traceback_()}
        self.send_response(self.iopub_socket, "error", content, ident=self._topic("error"))
        return {"status": "error", "execution_count": self.execution_count, **content}

    def _record_silent(self, code: str, reply: dict[str, Any]) -> None:
        guard = session.current()
        if guard is None:
            return
        err = f"{reply.get('ename')}: {reply.get('evalue')}" if reply.get("status") == "error" else None
        denied = reply.get("ename") in ERROR_NAMES
        guard.record("cell", action=None, resource="cell[silent]", decision="deny" if denied else "allow",
                     rules=[], message="", code=code, silent=True, error=err, **_request_fields(guard))

    # --------------------------------------------------------- other requests
    async def debug_request(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        d = _refusal("no-debugger", Action.KERNEL_REQUEST, "debug_request",
                     "the guarded kernel runs no debugger (it would run code outside the cell gate)",
                     "Debug in an unguarded kernel on a copy of the data.", None)
        guard = session.current()
        if guard is not None:
            guard.record_decision(d, "request", **_request_fields(guard))
        content = parent.get("content", {})
        reply = {"type": "response", "request_seq": content.get("seq", 0), "success": False,
                 "command": content.get("command", ""), "message": d.message}
        if self.session is not None:
            self.session.send(stream, "debug_reply", reply, parent, ident)

    async def create_subshell_request(self, socket: Any, ident: Any, parent: dict[str, Any]) -> None:
        msg = "the guarded kernel has no subshells (they would run code beside the cell gate)"
        guard = session.current()
        if guard is not None:
            guard.record("request", action=Action.KERNEL_REQUEST.value, resource="create_subshell_request",
                         decision="deny", rules=[{"id": "no-subshells", "file": "<guard>", "line": 0}], message=msg)
        if self.session is not None:
            self.session.send(socket, "create_subshell_reply", {"status": "error", "ename": "CellRejected",
                                                                "evalue": msg, "traceback": []}, parent, ident)

    def _comm_open(self, stream: Any, ident: Any, msg: dict[str, Any]) -> None:
        target = msg.get("content", {}).get("target_name", "")
        guard = session.current()
        if guard is None or self.unavailable is not None or (
                guard.actor == "agent" and target not in KNOWN_COMM_TARGETS):
            if guard is not None:
                guard.record("comm", action=Action.KERNEL_REQUEST.value, resource=str(target), decision="deny",
                             rules=[{"id": "comm-target", "file": "<guard>", "line": 0}],
                             message=f"comm target {target!r} is not one the guard knows: refused for {guard.actor}",
                             **_request_fields(guard))
            return
        self.comm_manager.comm_open(stream, ident, msg)


def _refusal(rule: str, action: Action, resource: str, message: str, hint: str, code: str | None) -> Decision:
    return Decision(Effect.DENY, action, resource, (RuleHit(rule, "<guard>", 0),), message, hint, None,
                    code[:2000] if code else None)


def _lower_actor(guard: session.Guard | None, stamped: Any) -> Any:
    """Decide this request as an agent's when the server stamped ``guard_actor: agent`` on a human
    kernel (recorded); returns the policy object to put back after it (None: nothing changed).
    Any other value changes nothing: a stamp never raises an agent to human."""
    if guard is None or stamped != "agent" or guard.actor != "human":
        return None
    human_policy = guard.policy
    # kept verdicts (the guard's, the DuckDB gate's, the DB-API layer's) were a human's and are
    # keyed on the policy object: an equal copy makes every layer decide again, for the agent
    guard.actor, guard.policy, guard._cache = "agent", copy.copy(human_policy), {}
    guard.record("actor", action=None, resource="kernel", decision="allow", rules=[],
                 message="the server stamped guard_actor=agent: this request is decided as an agent's",
                 acting_as="agent", **_request_fields(guard))
    return human_policy


def _request_fields(guard: session.Guard) -> dict[str, Any]:
    return {"request": dict(guard.request)} if guard.request else {}


__all__ = ["KNOWN_COMM_TARGETS", "REFUSED_MAGICS", "GuardedKernel"]
