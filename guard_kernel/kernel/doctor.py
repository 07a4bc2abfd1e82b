"""``guard-kernel doctor``: is this a deployment where every kernel an assistant can reach is guarded?

It checks what the assistant's Jupyter server will start: which kernelspec ``python3`` (or another
name) resolves to on this ``JUPYTER_PATH``, whether it is guarded, and whether it *fixes* a policy
and an actor — a guarded kernelspec without a policy runs under whatever the launching environment
says, else the built-in one, and settings given to an MCP client never reach the kernel.  With a
server URL, every running kernel is checked too.  Any problem is a finding, and the exit code is 1.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from guard_kernel.decision.messages import Code, facts, json_line
from guard_kernel.kernel import spec

HINT = ("Install the guarded kernel under the name the assistant's server starts (guard-kernel install --name "
        "python3 --prefix DIR --policy FILE --actor agent), put DIR/share/jupyter first on that server's "
        "JUPYTER_PATH, and shut down unguarded kernels (docs/assistants.md).")
"""What to do when the doctor finds a kernel an assistant could reach that is not guarded as it should be."""


@dataclass
class Report:
    """What the doctor found: facts, and the problems among them (empty: the deployment holds)."""

    facts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "facts": self.facts, "problems": self.problems}

    def text(self) -> str:
        lines = [f"  {f}" for f in self.facts] + [f"  PROBLEM: {p}" for p in self.problems]
        lines.append("ok: every kernel checked is guarded" if self.ok else
                     "NOT ok: fix the problems above (README, 'AI assistants')")
        if not self.ok:  # the guard's machine-readable line, as every message of the guard ends
            lines.append(json_line(facts(Code.NOT_GUARDED, self.problems[0], HINT, problems=self.problems)))
        return "\n".join(lines)


def check_spec(entries: dict[str, spec.KernelEntry], name: str, report: Report) -> None:
    """Check the kernelspec *name* resolves to a guarded kernel that fixes its policy and actor."""
    entry = entries.get(name)
    if entry is None:
        report.problems.append(f"no kernelspec named {name!r} on this JUPYTER_PATH")
        return
    if not entry.guarded:
        report.problems.append(f"{name!r} resolves to {entry.resource_dir}, which is NOT guarded: install the guarded "
                               f"kernel as {name!r} in a prefix first on JUPYTER_PATH (guard-kernel install "
                               f"--name {name} --prefix DIR --policy FILE)")
        return
    actor = _spec_env(entry).get("GUARD_KERNEL_ACTOR", "agent")
    report.facts.append(f"{name!r} resolves to {entry.resource_dir} (guarded, actor {actor}, "
                        f"policy {entry.policy or 'not fixed'})")
    if entry.policy is None:
        # the silent failure issue 18 names: the session would run as intended by nobody
        report.problems.append(f"{name!r} fixes no policy: its kernels run under the launching environment's "
                               "GUARD_KERNEL_POLICY, else the built-in default; reinstall with --policy FILE")
    if actor != "agent":
        report.problems.append(f"{name!r} fixes actor {actor!r}: an assistant's cells would be decided as "
                               f"{actor}'s; reinstall with --actor agent")


def _spec_env(entry: spec.KernelEntry) -> dict[str, str]:
    try:
        with open(f"{entry.resource_dir}/kernel.json", encoding="utf-8") as f:
            env = json.load(f).get("env") or {}
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in env.items()}


def check_server(url: str, token: str | None, entries: dict[str, spec.KernelEntry], report: Report) -> None:
    """Check every kernel running on the Jupyter server at *url* was started from a guarded kernelspec."""
    req = urllib.request.Request(url.rstrip("/") + "/api/kernels",
                                 headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            running = json.loads(r.read())
    except (OSError, ValueError) as exc:
        report.problems.append(f"could not list the kernels of {url}: {exc}")
        return
    for k in running:
        entry = entries.get(k.get("name", ""))
        if entry is None or not entry.guarded:
            report.problems.append(f"kernel {k.get('id')} on {url} runs kernelspec {k.get('name')!r}, which is "
                                   "NOT guarded here: shut it down")
        else:
            report.facts.append(f"kernel {k.get('id')} runs {k.get('name')!r} (guarded)")


def doctor(names: list[str], url: str | None = None, token: str | None = None) -> Report:
    """Check the kernelspecs *names* (and, with *url*, the running kernels)."""
    entries = {e.name: e for e in spec.kernels()}
    report = Report()
    for name in names:
        check_spec(entries, name, report)
    if url:
        check_server(url, token, entries, report)
    return report


__all__ = ["Report", "check_server", "check_spec", "doctor"]
