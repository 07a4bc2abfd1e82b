"""The guarded kernel's launcher: the parent that owns the audit file and confines the kernel.

The kernelspec's ``argv`` runs this module (``python -I -m guard_kernel.kernel``).  It stays as
the parent, unconfined, and:

- owns the session's audit file: the kernel sends its records over a ``SOCK_SEQPACKET`` socket
  (:mod:`guard_kernel.audit.pipe`) and the launcher writes them — the audit folder is not
  writable from the kernel, so what was recorded can be neither erased nor rewritten from there;
- starts the kernel in its own process group, with ``PR_SET_PDEATHSIG`` (the kernel dies with
  its launcher: a kernel without its audit owner does not go on), confined by Landlock as the
  policy says (:mod:`guard_kernel.enforce.confine`), applied in the kernel's process before any
  kernel code runs, so it holds for the kernel and all it starts.  The kernel is a fork of the
  launcher taken after the kernel's imports (one Python start, not two: the start-up cost of a
  second interpreter importing IPython and the guard again); ``--exec-kernel`` starts it as a
  new Python instead (``python -I -m guard_kernel.kernel.app``), as does a launcher that finds
  a second thread running (a fork is only safe with one);
- forwards SIGINT (interrupt) and SIGTERM (shutdown) to the kernel: jupyter_client signals the
  process it started (its group), and a restart or ``shutdown(now=True)`` ends both;
- when the kernel ends, writes the session's end record if the kernel could not (killed,
  crashed: with how it ended), and exits with the kernel's status.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from guard_kernel.audit.chain import ENCODE
from guard_kernel.audit.live import Background
from guard_kernel.audit.pipe import serve
from guard_kernel.audit.writer import AuditWriter, new_session_id
from guard_kernel.decision.guard import ENV_ACTOR, ENV_AUDIT_DIR, ENV_ENVIRONMENT, policy_from_env
from guard_kernel.enforce import confine
from guard_kernel.kernel.settings import (
    ENV_AUDIT_FD,
    ENV_AUDIT_PATH,
    ENV_CONFINEMENT,
    ENV_SESSION,
    ENV_UNAVAILABLE,
    FIXED,
    UNSAFE_ENV,
    launcher_parser,
)
from guard_kernel.policy.model import Policy

_PR_SET_PDEATHSIG = 1


def _child_setup(plan: confine.Plan) -> None:
    """In the kernel's process, before ``exec``: own group, die with the launcher, confinement."""
    os.setpgid(0, 0)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    confine.apply(plan)


def _how(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc}"


def main(argv: Sequence[str] | None = None) -> None:
    """Run the launcher; returns only by exiting with the kernel's status."""
    args, rest = launcher_parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    env = dict(os.environ)
    for name in UNSAFE_ENV:
        env.pop(name, None)
    for opt, var in FIXED.items():
        value = getattr(args, opt)
        if value is not None:
            env[var] = value
    env.setdefault(ENV_ACTOR, "agent")
    private = tempfile.mkdtemp(prefix="guard-kernel-")
    for sub, var in (("tmp", "TMPDIR"), ("cache", "XDG_CACHE_HOME"), ("matplotlib", "MPLCONFIGDIR")):
        os.makedirs(os.path.join(private, sub))
        env[var] = os.path.join(private, sub)
    session = new_session_id()
    audit_dir = os.path.abspath(env.get(ENV_AUDIT_DIR) or os.path.join(os.getcwd(), ".guard_audit"))
    path = os.path.join(audit_dir, f"{session}.jsonl")
    unavailable = None
    try:
        policy = policy_from_env(env)
    except Exception as exc:  # the kernel starts, and refuses every cell with this reason
        policy, unavailable = None, f"{type(exc).__name__}: {exc}"
    actor = env[ENV_ACTOR]
    if policy is not None:
        plan = confine.plan(policy, actor=actor, private_dirs=(private,), protected=(audit_dir,),
                            abi=0 if args.without_landlock else None)
    else:
        plan = confine.Plan(confine.State.REFUSED, unavailable or "no policy")
    if plan.state is confine.State.REFUSED and unavailable is None:
        unavailable = f"confinement refused the session: {plan.reason}"
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env.update({ENV_AUDIT_FD: str(child_sock.fileno()), ENV_AUDIT_PATH: path, ENV_SESSION: session,
                ENV_CONFINEMENT: json.dumps(plan.describe())})
    if unavailable:
        env[ENV_UNAVAILABLE] = unavailable
    else:
        env.pop(ENV_UNAVAILABLE, None)
    kernel_argv = ["--name", args.name, *rest]
    failed: confine.Plan | None = None
    if not args.exec_kernel:
        from guard_kernel.kernel import app  # noqa: F401  the kernel's imports, once, before the fork
    if args.exec_kernel or threading.active_count() != 1:  # a fork is only safe with one thread
        proc: subprocess.Popen[bytes] | _Forked
        proc, failed = _exec_kernel(kernel_argv, env, child_sock, plan, policy)
    else:
        proc = _fork_kernel(kernel_argv, env, child_sock, parent_sock, plan, policy)
    child_sock.close()
    # opened after the fork: the kernel never holds a descriptor of its audit file
    writer = AuditWriter(path, session=session, actor=actor, environment=env.get(ENV_ENVIRONMENT, "default"),
                         policy=policy.ref() if policy else {"name": "<not loaded>", "sha256": ""})
    writer.write("launcher", action=None, resource="guard_kernel", decision="deny" if unavailable else "allow",
                 rules=[], message=unavailable or f"guarded kernel launched; confinement {plan.state.value}",
                 pid=os.getpid(), confinement=plan.describe(), kernel=args.name,
                 start="exec" if isinstance(proc, subprocess.Popen) else "fork")
    if failed is not None:
        writer.write("launcher", action=None, resource="guard_kernel", decision="deny", rules=[],
                     message=failed.reason, confinement=failed.describe())
    _serve(proc, policy, writer, path, parent_sock)
    shutil.rmtree(private, ignore_errors=True)
    rc = proc.returncode if proc.returncode is not None else 1
    sys.exit(rc if rc >= 0 else 128 - rc)


class _Forked:
    """The kernel as a forked child of the launcher: what the launcher asks of it (``Popen``'s shape)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _fork_kernel(kernel_argv: list[str], env: dict[str, str], child_sock: socket.socket,
                 parent_sock: socket.socket, plan: confine.Plan, policy: Policy | None) -> _Forked:
    """Start the kernel as a fork of this process, after the kernel's imports: no second Python start.

    The launcher imports the kernel's modules (ipykernel, IPython, the guard), then forks; the
    child confines itself (this process has no other thread yet, so applying Landlock here is
    safe) and runs the kernel app; the parent keeps the audit.  Nothing of the launcher's state
    that matters reaches the kernel: the audit file is opened only after the fork (by the
    parent), the environment is replaced by the kernel's, ``tempfile``'s cached directory is
    dropped, and the launcher's end of the socket is closed.
    """
    from guard_kernel.kernel import app

    pid = os.fork()
    if pid:
        return _Forked(pid)
    # the child: from here on, this process is the kernel, and it never returns into the launcher
    parent_sock.close()
    launcher = os.getppid()
    os.setpgid(0, 0)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != launcher:  # the launcher died before PDEATHSIG was set
        os._exit(1)
    try:
        confine.apply(plan)
    except OSError as exc:  # say it, and never run unguarded when confinement is required
        failed = _failed(plan, policy, exc)
        env[ENV_CONFINEMENT] = json.dumps(failed.describe())
        if failed.state is confine.State.REFUSED:
            env[ENV_UNAVAILABLE] = failed.reason
        child_sock.send(ENCODE({"kind": "launcher", "fields": {
            "action": None, "resource": "guard_kernel", "decision": "deny", "rules": [], "message": failed.reason,
            "confinement": failed.describe()}, "pid": os.getpid()}).encode())
    child_sock.detach()  # the kernel's PipeSink owns the descriptor now (ENV_AUDIT_FD): never close it here
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # the launcher's cached choice; the kernel's TMPDIR is its private one
    sys.argv = [sys.argv[0], *kernel_argv]
    app.main(kernel_argv)
    sys.exit(0)  # the interpreter's exit: atexit handlers (the guard's end record) run as in any kernel


def _failed(plan: confine.Plan, policy: Policy | None, exc: BaseException) -> confine.Plan:
    reason = f"confinement could not be applied: {exc}"
    state = (confine.State.REFUSED if policy is None or policy.confine_mode == "required"
             else confine.State.UNAVAILABLE)
    return confine.Plan(state, reason, abi=plan.abi)


def _exec_kernel(kernel_argv: list[str], env: dict[str, str], child_sock: socket.socket, plan: confine.Plan,
                 policy: Policy | None) -> tuple[subprocess.Popen[bytes], confine.Plan | None]:
    """Start the kernel as a new Python (``--exec-kernel``), confined between ``fork`` and ``exec``;
    with the plan that failed to apply, if it did (the kernel then runs as that plan's state says)."""
    cmd = [sys.executable, "-I", "-B", "-m", "guard_kernel.kernel.app", *kernel_argv]
    try:
        proc = subprocess.Popen(cmd, env=env, pass_fds=(child_sock.fileno(),),
                                preexec_fn=lambda: _child_setup(plan))
    except subprocess.SubprocessError as exc:  # confinement failed in the child: say it, never run unguarded
        failed = _failed(plan, policy, exc)
        env[ENV_CONFINEMENT] = json.dumps(failed.describe())
        if failed.state is confine.State.REFUSED:
            env[ENV_UNAVAILABLE] = failed.reason
        proc = subprocess.Popen(cmd, env=env, pass_fds=(child_sock.fileno(),),
                                preexec_fn=lambda: _child_setup(confine.Plan(confine.State.OFF)))
        return proc, failed
    return proc, None


def _serve(proc: subprocess.Popen[bytes] | _Forked, policy: Policy | None, writer: AuditWriter, path: str,
           parent_sock: socket.socket) -> None:
    """Write the kernel's records until it ends; then the end record if the kernel could not write it."""
    ended = threading.Event()

    # the audit folder is the launcher's: so is the live notebook, rewritten off the record reader's thread
    # rewritten in the pause after a burst of cells (0.25 s), not during the next cell: see Background
    live = Background(path, settle=0.25) if policy is not None and policy.audit.live_notebook else None

    def on_record(kind: str, fields: dict[str, Any]) -> None:
        if kind == "cell" and live is not None:
            live.poke()
        if kind == "session_end":
            ended.set()

    def forward(signum: int, frame: FrameType | None) -> None:
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    reader = threading.Thread(target=serve, args=(parent_sock, writer, on_record), name="guard-audit", daemon=True)
    reader.start()
    rc = proc.wait()
    reader.join(timeout=5)  # forked children that outlive the kernel may hold the socket: do not wait for them
    if not ended.is_set():
        writer.write("session_end", action=None, resource=None, decision="allow", rules=[],
                     message=f"the kernel ended without a close record: {_how(rc)}", how=_how(rc), returncode=rc,
                     written_by="launcher")
    writer.close()
    if live is not None:
        live.stop()
    parent_sock.close()


__all__ = ["main"]
