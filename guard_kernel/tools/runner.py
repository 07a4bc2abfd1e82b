"""Run a notebook headlessly under a policy and report, cell by cell, what the guard did.

:func:`run_notebook` executes a notebook with nbclient in the guarded kernel (a temporary
kernelspec fixing the policy, root, actor and environment, or an installed one by name);
between cells it reads the audit records the guard appended, so every cell gets a status
(allowed / denied / truncated / warned / error) with the deciding rule and the reason.  A
cell's outcome is checked against the expectation stored in its metadata
(``{"guard": {"expect": "denied", "rule": "source:warehouse"}}``) and its ``raises-exception``
tag (as nbval reads it); :func:`exit_status` turns that into the command's exit code.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from guard_kernel._package import PACKAGE_DIR
from guard_kernel.audit.chain import read_records
from guard_kernel.audit.integrity import verify
from guard_kernel.decision.guard import ENV_ACTOR, ENV_AUDIT_DIR, ENV_ENVIRONMENT, ENV_POLICY, ENV_ROOT

STATUSES = ("denied", "error", "truncated", "warned", "allowed")
"""Cell statuses, strongest first: a cell shows the strongest thing that happened in it."""

_DENY, _TRUNCATE, _WARN = {"deny"}, {"truncate"}, {"warn", "would_deny"}
_QUIET_KINDS = {"session", "session_end"}


# ----------------------------------------------------------------- outcomes


def rule_text(rule: Any) -> str:
    """One rule of a record (``{"id", "file", "line"}`` or a plain string) as ``id (file:line)``."""
    if isinstance(rule, Mapping):
        rid = str(rule.get("id", "?"))
        file, line = rule.get("file"), rule.get("line")
        return f"{rid} ({file}:{line})" if file and line else rid
    return str(rule)


def rule_ids(record: Mapping[str, Any]) -> list[str]:
    """The ids of the rules a record names, whatever shape they were written in."""
    rules = record.get("rules") or []
    if isinstance(rules, (str, Mapping)):
        rules = [rules]
    return [str(r.get("id", "")) if isinstance(r, Mapping) else str(r).split(" ")[0] for r in rules]


def _decision(record: Mapping[str, Any]) -> str:
    return str(record.get("decision") or record.get("effect") or "")


def classify(records: Iterable[Mapping[str, Any]], error: str | None) -> str:
    """The status of a cell from its audit records and its error (``ename: evalue``), if any."""
    seen = {_decision(r) for r in records if r.get("kind") not in _QUIET_KINDS}
    denied_error = bool(error) and any(w in (error or "") for w in ("Denied", "Rejected", "PermissionError"))
    if seen & _DENY or denied_error:
        return "denied"
    if error:
        return "error"
    if seen & _TRUNCATE:
        return "truncated"
    if seen & _WARN:
        return "warned"
    return "allowed"


@dataclass(frozen=True)
class CellOutcome:
    """What happened to one code cell."""

    index: int
    """Position of the cell in the notebook."""
    number: int
    """1-based number among code cells."""
    title: str
    status: str
    records: tuple[dict[str, Any], ...] = ()
    error: str | None = None
    stdout: str = ""
    stderr: str = ""
    silent: bool = False
    """The cell is expected to print nothing (a refused cell runs no line)."""
    expect: str | None = None
    expect_rule: str | None = None
    tagged_error: bool = False
    """The cell is tagged ``raises-exception`` (as nbval reads it): an error there is expected."""

    @property
    def expected_error(self) -> bool:
        """A denial or error here is what the notebook says will happen."""
        return self.tagged_error or self.expect in ("denied", "error")

    def deciding(self) -> list[dict[str, Any]]:
        """The records that gave the cell its status (for the rule and reason shown)."""
        want = {"denied": _DENY, "truncated": _TRUNCATE, "warned": _WARN}.get(self.status, set())
        hits = [r for r in self.records if _decision(r) in want and r.get("kind") not in _QUIET_KINDS]
        # prefer the action records over the cell summary that repeats them
        return [r for r in hits if r.get("kind") != "cell"] or hits

    @property
    def rules(self) -> list[str]:
        out: list[str] = []
        for r in self.deciding():
            rules = r.get("rules") or []
            for x in rules if isinstance(rules, list) else [rules]:
                t = rule_text(x)
                if t not in out:
                    out.append(t)
        return out

    @property
    def reason(self) -> str:
        for r in self.deciding():
            msg = r.get("message") or r.get("reason")
            if msg:
                return str(msg)
        if self.error:
            return self.error
        return ""

    @property
    def hint(self) -> str:
        """What the deciding record says would be allowed instead."""
        for r in self.deciding():
            if r.get("hint"):
                return str(r["hint"])
        return ""

    def check(self) -> str | None:
        """Why this outcome differs from the cell's stored expectation, or None if it matches."""
        if self.silent and self.stdout:
            return f"a refused cell must run no line, but it printed {self.stdout.strip()[:60]!r}"
        if self.expect is None:
            return None
        if self.status != self.expect:
            return f"expected {self.expect}, got {self.status}" + (f" ({self.error})" if self.error else "")
        if self.expect_rule:
            ids = [i for r in self.deciding() for i in rule_ids(r)]
            if not any(i.startswith(self.expect_rule) for i in ids):
                return f"expected rule {self.expect_rule}, got {', '.join(ids) or 'none'}"
        return None


@dataclass
class RunResult:
    """A finished run: outcomes per code cell, the executed notebook and the audit files."""

    cells: list[CellOutcome] = field(default_factory=list)
    notebook: Any = None
    audit_files: list[Path] = field(default_factory=list)

    @property
    def problems(self) -> list[tuple[CellOutcome, str]]:
        return [(c, why) for c in self.cells if (why := c.check()) is not None]


# ------------------------------------------------------------------ running


def guard_env(policy: str | os.PathLike[str] | None, actor: str, audit_dir: str | os.PathLike[str],
              environment: str | None = None, base: Mapping[str, str] | None = None,
              root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The kernel environment: the guard's variables, this package importable, a headless plot backend."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("GUARD_KERNEL_")}
    if policy is not None:
        env[ENV_POLICY] = os.path.abspath(policy)
    env[ENV_ACTOR] = actor
    env[ENV_AUDIT_DIR] = os.path.abspath(audit_dir)
    if environment:
        env[ENV_ENVIRONMENT] = environment
    if root is not None:
        env[ENV_ROOT] = os.path.abspath(root)
    pkg_parent = str(Path(PACKAGE_DIR).resolve().parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent, *[p for p in paths if p != pkg_parent]])
    env["MPLBACKEND"] = "Agg"
    env.pop("JPY_PARENT_PID", None)
    return env


def _record_counts(audit_dir: Path) -> dict[Path, int]:
    return {f: sum(1 for _ in read_records(str(f))) for f in sorted(audit_dir.glob("*.jsonl"))}


def _new_records(audit_dir: Path, before: Mapping[Path, int]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in sorted(audit_dir.glob("*.jsonl")):
        recs = list(read_records(str(f)))
        out.extend(recs[before.get(f, 0):])
    return out


_CLOSING_KINDS = frozenset({"cell", "request"})
"""A cell's last record: its cell record, or the kernel's refusal of the request."""


def _cell_records(audit_dir: Path, before: Mapping[Path, int], wait: float = 5.0) -> list[dict[str, Any]]:
    """The records a cell added, once its closing record is there.

    In the guarded kernel the launcher writes what the kernel sends, on its own thread, so the
    last records of a cell can reach the file just after the cell's reply: wait for them (bounded)
    rather than give them to the next cell.
    """
    deadline = time.monotonic() + wait
    while True:
        records = _new_records(audit_dir, before)
        if any(r.get("kind") in _CLOSING_KINDS for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.01)


def _title(cell: Any) -> str:
    meta = cell.metadata.get("guard", {})
    if meta.get("title"):
        return str(meta["title"])
    for line in cell.source.splitlines():
        s = line.strip()
        if s.startswith("#"):
            return str(s).lstrip("# ").strip()
        if s:
            return str(s)[:60]
    return ""


def _error_of(cell: Any) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            value = str(out.get("evalue", "")).strip().splitlines()
            return f"{out.get('ename')}: {value[0] if value else ''}"
    return None


def _stream_of(cell: Any, name: str) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == name)


def _kernel_manager_class(kernel: str | None, tmp: str, settings: dict[str, Any]) -> tuple[type[Any], str, dict[str, str]]:
    """A KernelManager class for the guarded kernel, the kernelspec name, and the settings it fixes:
    the installed kernelspec *kernel*, or a temporary one built from *settings* in *tmp*."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from traitlets import default

    from guard_kernel.kernel import spec

    if kernel is not None:
        return KernelManager, kernel, dict(KernelSpecManager().get_kernel_spec(kernel).env or {})
    name = "guard-kernel-run"
    os.makedirs(os.path.join(tmp, name))
    data = spec.kernel_json(name=name, display_name="guard-kernel run", **settings)
    with open(os.path.join(tmp, name, "kernel.json"), "w", encoding="utf-8") as f:
        json.dump(data, f)

    class RunKernelManager(KernelManager):
        """Finds the temporary kernelspec (nbclient creates, and so shuts down, the kernel)."""

        @default("kernel_spec_manager")
        def _default_ksm(self) -> KernelSpecManager:
            return KernelSpecManager(kernel_dirs=[tmp])

    return RunKernelManager, name, data["env"]


def run_notebook(path: str | os.PathLike[str], *, cwd: str | os.PathLike[str],
                 policy: str | os.PathLike[str] | None = None, actor: str = "agent",
                 audit_dir: str | os.PathLike[str] | None = None, environment: str | None = None,
                 timeout: int = 180, output: str | os.PathLike[str] | None = None,
                 kernel_log: str | os.PathLike[str] | None = None, root: str | os.PathLike[str] | None = None,
                 kernel: str | None = None, progress: Callable[[int, int, str], None] | None = None) -> RunResult:
    """Execute the notebook at *path* in the guarded kernel and report every code cell.

    The kernel is the installed kernelspec *kernel*, or (by default) a temporary guarded
    kernelspec fixing *policy*, *root* (default: *cwd*), *actor* and *environment*.  The
    notebook's own cells run, nothing is added; denied cells do not stop the run.  The kernel
    process's stderr goes to *kernel_log* (default ``<audit_dir>/kernel.log``); *progress* is
    called before each code cell with (number, count, title).
    """
    import tempfile

    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(os.fspath(path), as_version=4)
    workdir = Path(cwd).resolve()
    result = RunResult(notebook=nb)
    before: dict[Path, int] = {}
    numbers = {i: n for n, i in enumerate((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), 1)}
    with tempfile.TemporaryDirectory(prefix="guard-kernel-run-") as tmp:
        settings = {"policy": os.fspath(policy) if policy is not None else None,
                    "root": os.fspath(root) if root is not None else str(workdir), "actor": actor,
                    "environment": environment}
        km_class, kernel_name, fixed = _kernel_manager_class(kernel, tmp, settings)
        fixed_audit = fixed.get(ENV_AUDIT_DIR)
        audit = Path(fixed_audit or audit_dir or workdir / ".guard_audit").resolve()
        audit.mkdir(parents=True, exist_ok=True)
        existing = set(audit.glob("*.jsonl"))

        def on_execute(cell: Any, cell_index: int, **_: Any) -> None:
            before.clear()
            before.update(_record_counts(audit))
            if progress is not None:
                progress(numbers.get(cell_index, 0), len(numbers), _title(cell))

        def on_executed(cell: Any, cell_index: int, **_: Any) -> None:
            records = _cell_records(audit, before)
            error = _error_of(cell)
            meta = cell.metadata.get("guard", {})
            result.cells.append(CellOutcome(
                index=cell_index, number=numbers.get(cell_index, 0), title=_title(cell),
                status=classify(records, error), records=tuple(records), error=error,
                stdout=_stream_of(cell, "stdout"), stderr=_stream_of(cell, "stderr"), silent=bool(meta.get("silent")),
                expect=meta.get("expect"), expect_rule=meta.get("rule"),
                tagged_error="raises-exception" in cell.metadata.get("tags", ())))

        client = NotebookClient(nb, kernel_name=kernel_name, kernel_manager_class=km_class, timeout=timeout,
                                allow_errors=True,
                                resources={"metadata": {"path": str(workdir)}},
                                on_cell_execute=on_execute, on_cell_executed=on_executed)
        env = guard_env(None, actor, audit, environment)
        log_path = Path(kernel_log) if kernel_log else audit / "kernel.log"
        with open(log_path, "ab") as log:
            client.execute(env=env, stderr=log)
    result.audit_files = sorted(set(audit.glob("*.jsonl")) - existing)
    if output is not None:
        nbformat.write(nb, os.fspath(output))
    return result


def exit_status(result: RunResult, *, allow_denials: bool = False) -> int:
    """0 every cell ran and every denial was expected; 3 an unexpected denial (0 with *allow_denials*);
    1 a cell failed for another reason, or differs from the expectation stored in its metadata."""
    if any(c.status == "error" and not c.expected_error for c in result.cells) or result.problems:
        return 1
    if not allow_denials and any(c.status == "denied" and not c.expected_error for c in result.cells):
        return 3
    return 0


# ---------------------------------------------------------------- reporting

_LABEL = {"allowed": "allowed", "denied": "DENIED", "truncated": "truncated", "warned": "warned",
          "error": "ERROR"}


def _wrap(text: str, width: int = 100) -> list[str]:
    import textwrap

    return textwrap.wrap(" ".join(text.split()), width) or [""]


def print_report(result: RunResult, out: TextIO | None = None) -> None:
    """Cell by cell: status, title, deciding rule and reason."""
    out = out or sys.stdout
    for c in result.cells:
        mark = "" if c.check() is None else "   <-- " + str(c.check())
        whole = " (refused before any line ran)" if (c.error or "").startswith("CellRejected") else ""
        print(f"[{c.number:2d}] {_LABEL.get(c.status, c.status):9s} {c.title}{whole}{mark}", file=out)
        if c.status in ("denied", "truncated", "warned", "error"):
            if c.rules:
                print(f"     rule:   {'; '.join(c.rules)}", file=out)
            for i, line in enumerate(_wrap(c.reason)):
                print(f"     {'reason: ' if i == 0 else '        '}{line}", file=out)
            for i, line in enumerate(_wrap(c.hint) if c.hint else []):
                print(f"     {'instead:' if i == 0 else '        '} {line}", file=out)
    counts = {s: sum(1 for c in result.cells if c.status == s) for s in STATUSES}
    print("\n" + ", ".join(f"{n} {s}" for s, n in counts.items() if n), f"({len(result.cells)} code cells)",
          file=out)


def print_summary(result: RunResult, out: TextIO | None = None) -> None:
    """The closing table: cells run, allowed, denied (with their rules), truncated, and this run's audit."""
    out = out or sys.stdout
    by = {s: [c for c in result.cells if c.status == s] for s in STATUSES}
    denied_rules = sorted({r for c in by["denied"] for r in c.rules})
    rows = [("cells run", str(len(result.cells))),
            ("allowed", str(len(by["allowed"]) + len(by["warned"])) + (f" ({len(by['warned'])} warned)" if by["warned"] else "")),
            ("denied", str(len(by["denied"])) + (f" ({'; '.join(denied_rules)})" if denied_rules else "")),
            ("truncated", str(len(by["truncated"]))),
            ("errors", str(len(by["error"]))),
            ("audit", ", ".join(str(f) for f in result.audit_files) or "none written")]
    print("\nsummary", file=out)
    for k, v in rows:
        print(f"  {k:<10} {v}", file=out)


def print_audit(files: Iterable[Path], out: TextIO | None = None) -> bool:
    """Where the audit was written, and whether its hash chain verifies."""
    out = out or sys.stdout
    ok = True
    files = list(files)
    if not files:
        print("audit:  no audit file was written", file=out)
        return False
    for f in files:
        res = verify(str(f))
        ok = ok and res.ok
        state = f"hash chain intact, {res.records} records" if res.ok else f"BROKEN: {res.problem}"
        print(f"audit:  {f}\nverify: {state}", file=out)
    return ok


__all__ = ["CellOutcome", "RunResult", "classify", "exit_status", "guard_env", "print_audit", "print_report",
           "print_summary", "run_notebook"]
