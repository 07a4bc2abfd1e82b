"""The guard of one session: policy + actor + audit, and the ``check`` every hook calls.

Hooks build a :class:`~guard_kernel.decision.Request`, call :meth:`Guard.check`, and
either go on (allow/warn/would_deny) or get :class:`GuardDenied`.  ``check`` decides
(cached), records, counts and notifies in one place, so every layer behaves alike.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from guard_kernel.audit.redact import Redactor, redactor
from guard_kernel.audit.session import MAX_INNER, end_fields, header_fields, inner_entry
from guard_kernel.audit.writer import AuditSink, AuditUnavailable, AuditWriter, new_session_id
from guard_kernel.decision.errors import (
    KERNEL_LOCKED_HINT,
    LOCKED_HINT,
    GuardDenied,
    GuardLocked,
    audit_unavailable,
)
from guard_kernel.decision.evaluate import Decision, Effect, decide
from guard_kernel.decision.messages import json_line
from guard_kernel.decision.request import Request
from guard_kernel.policy.actions import Action
from guard_kernel.policy.load import builtin_policy, load_policy
from guard_kernel.policy.model import Policy, PolicyError

ENV_POLICY = "GUARD_KERNEL_POLICY"
ENV_ACTOR = "GUARD_KERNEL_ACTOR"
ENV_ENVIRONMENT = "GUARD_KERNEL_ENVIRONMENT"
ENV_AUDIT_DIR = "GUARD_KERNEL_AUDIT_DIR"
ENV_ROOT = "GUARD_KERNEL_ROOT"
ENV_POLICY_SHA256 = "GUARD_KERNEL_POLICY_SHA256"
"""The session is configured by these variables, read when the guard starts (see the README).
``GUARD_KERNEL_POLICY_SHA256`` pins the policy: a policy file whose SHA-256 differs is refused."""
HISTORY = 100
"""How many recent decisions a guard keeps for ``%guard explain N``."""


TRUNCATION_HINTS = {
    "sql": "Ask the database for less: aggregate (GROUP BY), filter (WHERE) or LIMIT the query.",
    "dataframe": ("Read less: pass nrows= or usecols=, or copy the file into the scratch area ({scratch}) and "
                  "filter it there (or aggregate it in DuckDB: SELECT … FROM read_csv('file') GROUP BY …)."),
}
"""What to do instead of a truncated read, by the kind of reader that was cut (``{scratch}``: the
policy's scratch globs)."""


def _default_notify(decision: Decision) -> None:
    """Outside IPython (scripts, ``guard-kernel run``'s own process): the message on stderr."""
    print(f"guard_kernel: {decision.render()}\n{json_line(decision.as_dict())}", file=sys.stderr)


def check_applies(policy: Policy, actor: str, environment: str) -> None:
    """Refuse a policy whose ``applies_to`` excludes this actor or environment."""
    if policy.applies_to_actors and actor not in policy.applies_to_actors and "*" not in policy.applies_to_actors:
        raise PolicyError(policy.file, None, "applies_to.actors", f"policy {policy.name!r} does not apply to actor {actor!r}")
    if policy.applies_to_environments and environment not in policy.applies_to_environments:
        raise PolicyError(policy.file, None, "applies_to.environments",
                          f"policy {policy.name!r} does not apply to environment {environment!r}")


class Guard:
    """Policy, actor, audit and counters of one session."""

    def __init__(self, policy: Policy, *, actor: str = "human", environment: str = "default",
                 audit_dir: str | None = None, session_id: str | None = None,
                 notify: Callable[[Decision], None] | None = None, lock: bool = False,
                 audit: AuditSink | None = None, kernel: str = "extension",
                 header: Mapping[str, Any] | None = None) -> None:
        """*lock*: locked whatever the policy says (the guarded kernel); *audit*: where records go
        (default: an :class:`AuditWriter` of ``<audit_dir>/<session>.jsonl``); *kernel*: which
        surface runs the session (``extension`` or the kernel's name); *header*: what the caller
        knows for the session header (``kernel``, ``in_force``, ``confinement``:
        :func:`guard_kernel.audit.session.header_fields`)."""
        check_applies(policy, actor, environment)
        self.policy = policy
        self.actor = actor
        self.environment = environment
        self.kernel = kernel
        self.forced_lock = lock
        self.session_id = session_id or new_session_id()
        audit_dir = audit_dir or os.path.join(os.getcwd(), ".guard_audit")
        self._local = threading.local()
        self.redactor = _redactor(policy)
        """What never enters the audit (credentials, values of denied columns): every record passes it."""
        self.audit: AuditSink = audit if audit is not None else AuditWriter(
            os.path.join(audit_dir, f"{self.session_id}.jsonl"), session=self.session_id, actor=actor,
            environment=environment, policy=policy.ref(), quiet=self.quiet)
        self.protected = (os.path.realpath(os.path.dirname(self.audit.path)),)
        """Folders no action of the session may write: the audit's."""
        header = dict(header or {})
        header["kernel"] = {"name": kernel, **(header.get("kernel") or {})}
        self.confinement: dict[str, Any] | None = header.get("confinement")
        """What the OS layer does for this session (the guarded kernel's launcher says; None: no launcher)."""
        self.request: dict[str, Any] = {}
        """The kernel request being served (msg id, session, username): added to cell records."""
        self.counts: Counter[str] = Counter()
        self.last: Decision | None = None
        self.history: deque[Decision] = deque(maxlen=HISTORY)
        """The latest recorded decisions, newest last (``%guard explain N``)."""
        self.notify = notify or _default_notify
        self.owned_tables: set[str] = set()
        """Lower-case ``catalog.name`` and ``name`` of tables/views this session created."""
        self.owned_files: set[str] = set()
        """Real paths of files this session created."""
        self._cache: dict[Request, Decision] = {}
        self.cell_log: list[dict[str, Any]] | None = None
        """While a cell runs: what was recorded inside it (the extension sets it per cell)."""
        self.end_reason = "exit"
        """Why the session ends if nothing says otherwise (the extension sets shutdown / restart)."""
        self.audit.write("session", **header_fields({**policy.ref(), "mode": policy.mode, "lock": self.locked}, actor,
                                                    environment, session=self.session_id,
                                                    audit_dir=os.path.dirname(self.audit.path), **header))
        # a kernel that is shut down never unloads the extension: end the audit file at exit
        # (its last record says the session ended; a killed process leaves no such record)
        atexit.register(_close_at_exit, weakref.ref(self))

    # --------------------------------------------------------------- queries
    @property
    def locked(self) -> bool:
        """The guard cannot be unloaded or re-configured (``lock: true``, or a guarded kernel)."""
        return self.policy.lock or self.forced_lock

    @property
    def max_rows(self) -> int:
        """The row cap for this session's actor."""
        return self.policy.limits.for_actor(self.actor)

    @property
    def audit_path(self) -> str:
        return self.audit.path

    def decide(self, req: Request) -> Decision:
        """The decision for *req*, without recording it (cached by request)."""
        d = self._cache.get(req)
        if d is None:
            d = decide(self.policy, req, self.actor, self.environment, self.protected)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[req] = d
        return d

    # ------------------------------------------------------------ enforcement
    @property
    def busy(self) -> bool:
        """True while the guard itself is working on this thread (hooks must not recurse)."""
        return getattr(self._local, "busy", False)

    def quiet(self) -> _Quiet:
        """Context manager: actions of the guard itself are not checked again."""
        return _Quiet(self._local)

    def check(self, req: Request, kind: str, *, enforce: bool = True, **extra: Any) -> Decision:
        """Decide *req*, record it, and raise :class:`GuardDenied` if it is blocked."""
        d = self.decide(req)
        self.record_decision(d, kind, **extra)
        if d.blocked and enforce:
            raise GuardDenied(d)
        return d

    def check_all(self, items: Iterable[tuple[Request | Decision, str, Mapping[str, Any]]], *,
                  record: bool = False, error: type[GuardDenied] = GuardDenied) -> list[Decision]:
        """Decide every ``(request, kind, audit fields)`` before any of them runs.

        When one is blocked, all of them are recorded and *error* is raised listing every denial
        (a cell, a script, a multi-statement SQL string: nothing runs, and the audit shows why).
        Otherwise they are recorded only with *record* (callers that run the actions one by one
        record each as it runs).  An item may carry a decision already made (a cached verdict).
        """
        items = list(items)
        decisions = [x if isinstance(x, Decision) else self.decide(x) for x, _, _ in items]
        blocked = [d for d in decisions if d.blocked]
        if blocked or record:
            try:
                for d, (_, kind, extra) in zip(decisions, items, strict=True):
                    self.record_decision(d, kind, **extra)
            except GuardDenied as exc:  # the audit failed: the same error class, saying why
                raise error(exc.decisions) from None
        if blocked:
            raise error(blocked)
        return decisions

    def record_decision(self, d: Decision, kind: str, **extra: Any) -> None:
        """Write *d* to the audit, count it, remember it, and show warnings.

        Fail closed: a decision that cannot be recorded raises :class:`GuardDenied` (the
        action must not proceed unrecorded), whatever the decision was."""
        self._write(kind, d, {**d.audit_fields, **extra})
        self.counts[d.effect.value] += 1
        self.history.append(d)
        if d.effect is not Effect.ALLOW or not self.last or self.last.effect is Effect.ALLOW:
            self.last = d
        if d.effect in (Effect.WARN, Effect.WOULD_DENY):
            self.notify(d)

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write a record that is not a decision (cells, truncations, errors); raises
        :class:`GuardDenied` when the audit cannot be written."""
        return self._write(kind, None, fields)

    def _write(self, kind: str, d: Decision | None, fields: dict[str, Any]) -> dict[str, Any]:
        try:
            with self.quiet():
                rec = self.audit.write(kind, **self.redactor.fields(fields))
            log = self.cell_log
            if log is not None and len(log) <= MAX_INNER:
                log.append(inner_entry(rec))
            return rec
        except AuditUnavailable as exc:
            self.counts["deny"] += 1
            self.last = audit_unavailable(exc, d, self.audit_path)
            raise GuardDenied(self.last) from None

    def audit_ready(self) -> None:
        """Raise :class:`GuardDenied` while the audit cannot be written (a cell gate asks
        before anything runs: a cell whose record cannot be written must not run either)."""
        resume = getattr(self.audit, "resume", None)
        if resume is None:
            return
        try:
            with self.quiet():
                resume()
        except AuditUnavailable as exc:
            self.counts["deny"] += 1
            self.last = audit_unavailable(exc, None, self.audit_path)
            raise GuardDenied(self.last) from None

    def truncated(self, resource: str, *, returned: int, statement: str | None = None, via: str = "",
                  total: int | None = None, reader: str = "sql") -> None:
        """Record and show that a result was cut at the row cap: *returned* rows came back, more exist
        (*total* when the engine knew it without another scan); *reader* (``sql`` or ``dataframe``)
        chooses the hint."""
        more = f"{total} exist" if total is not None else "more exist"
        msg = f"{resource}: {returned} rows returned, {more} (row cap {self.max_rows} for {self.actor})"
        d = Decision(Effect.TRUNCATE, Action.SQL_READ if reader == "sql" else Action.FILE_READ, resource, (), msg,
                     TRUNCATION_HINTS.get(reader, TRUNCATION_HINTS["sql"]).format(
                         scratch=", ".join(g.text for g in self.policy.scratch) or "none declared"), None, statement,
                     {"returned": returned, "more": True, "total": total, "max_rows": self.max_rows, "reader": reader,
                      **({"via": via} if via else {})})
        self.counts["truncate"] += 1
        self.last = d
        self.history.append(d)
        self.record("truncate", action=d.action.value, resource=resource, decision="truncate", rules=[],
                    message=msg, returned=returned, max_rows=self.max_rows, via=via,
                    **({"total": total} if total is not None else {}),
                    **({"statement": statement} if statement else {}))
        self.notify(d)

    def set_policy(self, policy: Policy) -> None:
        """Switch to *policy* (callers check ``lock`` first); cached decisions are dropped."""
        check_applies(policy, self.actor, self.environment)
        self.policy = policy
        self.redactor = _redactor(policy)
        self._cache.clear()
        self.audit.policy = {"name": policy.name, "sha256": policy.sha256}

    def lock_rule(self) -> dict[str, Any]:
        """The audit's rule entry for what ``lock: true`` refuses or repairs."""
        return {"id": "lock", "file": os.path.basename(self.policy.file), "line": 0}

    def refuse_locked(self, what: str) -> NoReturn:
        """Record that *what* was refused because the policy is locked, and raise :class:`GuardLocked`."""
        if self.policy.lock:
            msg, hint = f"{what} refused: policy {self.policy.name!r} is locked (lock: true)", LOCKED_HINT
        else:
            msg, hint = f"{what} refused: this guarded kernel is locked", KERNEL_LOCKED_HINT
        msg += ": the guard cannot be unloaded, reloaded or re-configured from inside the session"
        self.record("guard", action=None, resource="guard_kernel", decision="deny", rules=[self.lock_rule()],
                    message=f"{msg}. {hint}")
        raise GuardLocked(msg, hint)

    def close(self, reason: str | None = None) -> None:
        """Record the end of the session (*reason*, else :attr:`end_reason`) and close the audit
        file (again: nothing)."""
        if self.audit.closed:
            return
        try:
            self.record("session_end", **end_fields(reason or self.end_reason, self.counts))
        except GuardDenied:  # the audit is unavailable: readers report the missing end record
            pass
        self.audit.close()

    def status(self) -> dict[str, Any]:
        """What ``%guard status`` shows."""
        return {
            "policy": self.policy.name, "policy_file": self.policy.file, "sha256": self.policy.sha256,
            "mode": self.policy.mode, "lock": self.locked, "kernel": self.kernel, "actor": self.actor,
            "environment": self.environment, "session": self.session_id, "audit": self.audit.path,
            "max_rows": self.max_rows,
            "allowed": self.counts["allow"] + self.counts["warn"], "warned": self.counts["warn"],
            "denied": self.counts["deny"], "would_deny": self.counts["would_deny"], "truncated": self.counts["truncate"],
            "confinement": self.confinement or {"state": "none (in-process layers only)"},
        }


def _redactor(policy: Policy) -> Redactor:
    names = [n for name, src in policy.sources.items() for n in (name, *src.tables)]
    masked = {c for cols in policy.mask_columns().values() for c in cols}  # their values stay out too
    return redactor(policy.audit, policy.deny_columns() | masked, names)


def _close_at_exit(ref: weakref.ref[Guard]) -> None:
    guard = ref()
    if guard is not None:
        try:
            guard.close()
        except Exception as exc:  # at exit: say it, do not mask the exit status
            print(f"guard_kernel: could not close the audit file: {exc}", file=sys.stderr)


class _Quiet:
    __slots__ = ("_local", "_was")

    def __init__(self, local: threading.local) -> None:
        self._local = local

    def __enter__(self) -> None:
        self._was = getattr(self._local, "busy", False)
        self._local.busy = True

    def __exit__(self, *exc: object) -> None:
        self._local.busy = self._was


# ------------------------------------------------------------ the process guard
_current: Guard | None = None


def current() -> Guard | None:
    """The guard of this process, if one is installed."""
    return _current


def set_current(guard: Guard | None) -> None:
    global _current
    _current = guard


def policy_from_env(environ: Mapping[str, str] | None = None, root: str | None = None) -> Policy:
    """``$GUARD_KERNEL_POLICY`` if set, else the built-in strict default; relative paths resolve
    against *root*, else ``$GUARD_KERNEL_ROOT``, else the working directory.  A policy whose
    SHA-256 differs from ``$GUARD_KERNEL_POLICY_SHA256`` (when set) is refused."""
    env = os.environ if environ is None else environ
    path = env.get(ENV_POLICY)
    root = root or env.get(ENV_ROOT) or None
    policy = load_policy(path, root) if path else builtin_policy(root)
    pinned = env.get(ENV_POLICY_SHA256)
    if pinned and policy.sha256 != pinned:
        raise PolicyError(policy.file, None, "sha256",
                          f"the policy file changed since this kernel was installed (pinned sha256 {pinned[:12]}…, "
                          f"now {policy.sha256[:12]}…); reinstall the kernel (guard-kernel install) to accept it")
    return policy



def guard_from_env(default_actor: str = "human", environ: Mapping[str, str] | None = None, *,
                   lock: bool = False, kernel: str = "extension", audit: AuditSink | None = None,
                   session_id: str | None = None, header: Mapping[str, Any] | None = None) -> Guard:
    """Build a guard from ``GUARD_KERNEL_*`` variables (policy, actor, environment, audit dir, root);
    the keywords: see :class:`Guard`."""
    env = os.environ if environ is None else environ
    policy = policy_from_env(env)
    actor = env.get(ENV_ACTOR, default_actor)
    if actor not in ("agent", "human"):
        raise PolicyError("$" + ENV_ACTOR, None, ENV_ACTOR, f"actor must be 'agent' or 'human', not {actor!r}")
    return Guard(policy, actor=actor, environment=env.get(ENV_ENVIRONMENT, "default"),
                 audit_dir=env.get(ENV_AUDIT_DIR), lock=lock, kernel=kernel, audit=audit, session_id=session_id,
                 header=header)
