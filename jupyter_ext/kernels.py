"""Kernels the server starts, and terminals: only guarded kernels when configured, no shell unless allowed.

With ``only_guarded_kernels`` every kernel the server starts is a guarded one, whatever name the
client asked for — a session's ``python3``, a kernels POST, or jupyter-mcp-server running inside
the server calling ``kernel_manager.start_kernel(path=…)`` with no name at all: the mapping is on
the kernel manager instance, below every caller.  The requested and the started name are recorded
(``kernel.start`` in the server chain) and remembered per kernel id for the ``server.execute``
records.  ``GET /api/kernelspecs`` lists only guarded specs, and names one of them the default.

With a ``policy`` and no guarded kernelspec installed, the extension writes one built from that
policy (:func:`guard_kernel.kernel.spec.kernel_json`) into a folder of the server's runtime
directory and adds it to the kernelspec manager's search path.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Any

from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.kernel.spec import kernel_json
from guard_kernel.policy.actions import Action
from jupyter_ext.files import CURRENT, refuse
from jupyter_ext.identity import SERVER_SIDE
from jupyter_ext.server_audit import ServerAudit

PROVIDED_NAME = "guarded-server"
"""Name of the kernelspec the extension provides when none is installed."""


@dataclass(frozen=True)
class StartedKernel:
    """What the server started for a kernel id."""

    name: str
    """The kernelspec started."""
    requested: str | None
    """The name the client asked for (None: none)."""
    actor: str | None
    """The kernelspec's actor (``metadata.guard_kernel.actor``; None: not a guarded spec)."""


def is_guarded(spec: dict[str, Any]) -> bool:
    """A kernelspec (``kernel.json`` as a dict) that starts guard_kernel's guarded kernel."""
    meta = (spec.get("metadata") or {}).get("guard_kernel") or {}
    return bool(meta.get("guarded")) and "guard_kernel.kernel" in (spec.get("argv") or [])


def spec_actor(spec: dict[str, Any]) -> str | None:
    """The actor a guarded kernelspec fixes (None for any other spec)."""
    if not is_guarded(spec):
        return None
    meta = (spec.get("metadata") or {}).get("guard_kernel") or {}
    return str(meta.get("actor") or "agent")


class KernelGuard:
    """The kernel manager's starts mapped and recorded; the kernelspec list filtered."""

    def __init__(self, audit: ServerAudit, kernel_manager: Any, spec_manager: Any, *, only_guarded: bool,
                 guarded_name: str = "", policy: str = "", root: str = "", audit_dir: str = "",
                 runtime_dir: str = "") -> None:
        self.audit = audit
        self.km, self.ksm = kernel_manager, spec_manager
        self.only_guarded = only_guarded
        self.started: dict[str, StartedKernel] = {}
        """Kernel id → what was started for it."""
        self.guarded_name = self._choose(guarded_name, policy, root, audit_dir, runtime_dir)
        """The guarded kernelspec to start (empty: none found; with only_guarded every start is refused)."""
        self._wrap()

    # ---------------------------------------------------------------- kernelspecs
    def specs(self) -> dict[str, dict[str, Any]]:
        """Every kernelspec the manager sees: name → {resource_dir, spec}."""
        out: dict[str, dict[str, Any]] = self._all_specs()
        return out

    def guarded_specs(self) -> list[str]:
        return sorted(n for n, info in self.specs().items() if is_guarded(info.get("spec") or {}))

    def policy_files(self) -> list[str]:
        """Policies the guarded kernelspecs fix (never writable from the server)."""
        out = []
        for info in self.specs().values():
            meta = ((info.get("spec") or {}).get("metadata") or {}).get("guard_kernel") or {}
            if is_guarded(info.get("spec") or {}) and meta.get("policy"):
                out.append(str(meta["policy"]))
        return out

    def _choose(self, wanted: str, policy: str, root: str, audit_dir: str, runtime_dir: str) -> str:
        self._all_specs = self.ksm.get_all_specs
        guarded = self.guarded_specs()
        if wanted:
            return wanted if wanted in guarded else ""
        if guarded:
            return guarded[0]
        if not policy:
            return ""
        folder = os.path.join(runtime_dir or ".", "guard_kernel", "kernels")
        os.makedirs(os.path.join(folder, PROVIDED_NAME), exist_ok=True)
        spec = kernel_json(name=PROVIDED_NAME, display_name="Python 3 (guarded by the server)", policy=policy,
                           root=root or None, audit_dir=audit_dir or None)
        with open(os.path.join(folder, PROVIDED_NAME, "kernel.json"), "w", encoding="utf-8") as f:
            json.dump(spec, f, indent=1)
        if folder not in self.ksm.kernel_dirs:
            self.ksm.kernel_dirs = [folder, *self.ksm.kernel_dirs]
        return PROVIDED_NAME

    def spec_actor(self, name: str) -> str | None:
        info = self.specs().get(name) or {}
        return spec_actor(info.get("spec") or {})

    # ---------------------------------------------------------------- wrapping
    def _wrap(self) -> None:
        all_specs, start = self.ksm.get_all_specs, self.km.start_kernel

        @functools.wraps(all_specs)
        def get_all_specs() -> dict[str, Any]:
            specs: dict[str, Any] = all_specs()
            if self.only_guarded:
                specs = {n: s for n, s in specs.items() if is_guarded(s.get("spec") or {})}
            return specs

        @functools.wraps(start)
        async def start_kernel(*args: Any, **kwargs: Any) -> str:
            kernel_id = kwargs.get("kernel_id")
            if kernel_id is not None and kernel_id in self.km:  # an existing kernel: nothing starts
                return str(await start(*args, **kwargs))
            requested = kwargs.get("kernel_name")
            name = self.map_name(requested)
            kwargs["kernel_name"] = name
            kid = str(await start(*args, **kwargs))
            started = StartedKernel(getattr(self.km.get_kernel(kid), "kernel_name", name), requested,
                                    self.spec_actor(name))
            self.started[kid] = started
            self.record_start(kid, started, kwargs.get("path"))
            return kid

        self.ksm.get_all_specs = get_all_specs
        self.km.start_kernel = start_kernel
        if self.only_guarded and self.guarded_name:
            self.km.default_kernel_name = self.guarded_name

    def map_name(self, requested: str | None) -> str:
        """The kernelspec to start for *requested*; refuses (403) when only guarded kernels may start
        and there is none."""
        if not self.only_guarded:
            return requested or self.km.default_kernel_name
        if self.guarded_name:
            return self.guarded_name
        d = Decision(Effect.DENY, Action.KERNEL_REQUEST, f"kernelspec {requested or '(default)'}",
                     (RuleHit("only-guarded-kernels", "<server>", 0),),
                     "only guarded kernels may start on this server, and no guarded kernelspec is installed",
                     "Install one (guard-kernel install --policy FILE) or set GuardExtension.policy.")
        self._record(d, None, requested, None)
        ctx = CURRENT.get()
        raise refuse(d, ctx.handler if ctx is not None else None)

    def kernel(self, kernel_id: str) -> StartedKernel:
        """What was started for *kernel_id* (a kernel started before the extension: its own name)."""
        known = self.started.get(kernel_id)
        if known is not None:
            return known
        name = str(getattr(self.km.get_kernel(kernel_id), "kernel_name", "") or "")
        return StartedKernel(name, None, self.spec_actor(name))

    def record_start(self, kid: str, started: StartedKernel, path: Any) -> None:
        d = Decision(Effect.ALLOW, Action.KERNEL_REQUEST, f"kernel/{kid}",
                     (RuleHit("only-guarded-kernels" if self.only_guarded else "kernels", "<server>", 0),))
        self._record(d, kid, started.requested, started.name, path=path, actor_of_kernel=started.actor)

    def _record(self, d: Decision, kid: str | None, requested: str | None, name: str | None, **extra: Any) -> None:
        ctx = CURRENT.get()
        identity = ctx.identity if ctx is not None else SERVER_SIDE
        self.audit.record_decision(d, "kernel.start", actor=ctx.actor if ctx is not None else "server",
                                   via="kernel_manager", identity=identity.as_dict(),
                                   kernel={"id": kid, "name": name, "requested": requested}, **extra)


def guard_terminals(manager: Any, audit: ServerAudit, allow: bool) -> None:
    """Refuse every new terminal in the server process unless *allow* (also ones no HTTP request asked for)."""
    if manager is None or allow or getattr(manager, "_guard_kernel_wrapped", False):
        return

    def new_terminal(*args: Any, **kwargs: Any) -> Any:
        d = Decision(Effect.DENY, Action.SHELL_EXEC, "terminal", (RuleHit("no-terminals", "<server>", 0),),
                     "terminals are refused by the guard_kernel server extension", None)
        ctx = CURRENT.get()
        audit.record_decision(d, "terminal", actor=ctx.actor if ctx is not None else "server", via="terminal_manager",
                              identity=(ctx.identity if ctx is not None else SERVER_SIDE).as_dict())
        raise refuse(d, ctx.handler if ctx is not None else None)

    manager.new_terminal = new_terminal
    manager._guard_kernel_wrapped = True


__all__ = ["PROVIDED_NAME", "KernelGuard", "StartedKernel", "guard_terminals", "is_guarded", "spec_actor"]
