"""Shared fixtures: a sample project on disk and real guarded kernels (jupyter_client).

Kernels are module-scoped (one per test module) because starting one costs about a
second; tests that need a fresh state start their own with ``kernel_factory``.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

import duckdb
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the tests run from a checkout, installed or not
    sys.path.insert(0, str(REPO))

from guard_kernel.audit import read_records  # noqa: E402
from guard_kernel.decision.errors import ERROR_NAMES  # noqa: E402
from guard_kernel.demo import Workspace, build_workspace  # noqa: E402

# A real Jupyter Server for the server-extension tests (tests/jupyter_ext/). The plugin's two autouse
# fixtures (an event loop and a ServerApp clean-up around every test) are turned off for the rest of the
# suite below; the server tests import the plugin's own into their modules.
pytest_plugins = ["pytest_jupyter.jupyter_server"]

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
DENY_LIKE = ("deny", "warn", "would_deny")


# ----------------------------------------------------------------- pytest-jupyter, off by default


@pytest.fixture
def jp_asyncio_loop() -> None:
    """Not autouse outside tests/jupyter_ext (that module's tests import the plugin's own)."""


@pytest.fixture
def jp_server_cleanup() -> None:
    """Not autouse outside tests/jupyter_ext (a ServerApp per test costs every other test)."""


# ----------------------------------------------------------------- the project


@pytest.fixture(scope="session", autouse=True)
def _matplotlib_font_cache() -> None:
    """Build matplotlib's font cache outside any guard.

    On a machine where matplotlib never ran, its first import runs ``fc-list`` and writes
    ~/.cache/matplotlib; inside an agent kernel that subprocess is (rightly) denied and
    recorded, which would make the benign suite depend on the machine's history.
    """
    try:
        import matplotlib.font_manager  # noqa: F401
    except ImportError:
        pass


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A sample project: data/warehouse.duckdb, data/raw/*.csv|parquet, scratch/, policies/."""
    ws = build_workspace(tmp_path_factory.mktemp("project"))
    _WAREHOUSES.append(ws.warehouse)
    return ws


_WAREHOUSES: list[Path] = []
SECRETS = ("s3cr3t-Pa55-7f2c", "tok-9d8e7f6a5b4c3d2e")
"""A connection password and a token the tests put in code (tests/integration/test_audit_kernel.py):
no audit file may hold them."""


@pytest.fixture(scope="session", autouse=True)
def _no_secret_in_any_audit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole suite: no customer's ``ssn`` (a deny column of the sample warehouse) and no
    test password appears in any audit file the suite's sessions wrote."""
    started = time.time()
    yield
    if not _WAREHOUSES:
        return
    con = duckdb.connect(str(_WAREHOUSES[0]), read_only=True)
    try:
        ssns = {r[0] for r in con.execute("SELECT ssn FROM customers").fetchall()}
    finally:
        con.close()
    files = list(tmp_path_factory.getbasetemp().rglob("*.jsonl"))
    files += [f for d in Path(tempfile.gettempdir()).glob("guard-demo-*") if d.stat().st_mtime >= started - 1
              for f in d.rglob("*.jsonl")]
    leaks = []
    for f in files:
        text = f.read_text(errors="replace")
        found = {m for m in re.findall(r"\d{3}-\d{2}-\d{4}", text) if m in ssns}
        found |= {s for s in SECRETS if s in text}
        if found:
            leaks.append(f"{f}: {sorted(found)[:3]}")
    assert not leaks, "values that must never enter the audit were found:\n" + "\n".join(leaks)


def digest(path: Path) -> str:
    """SHA-256 of a file's bytes (sources must keep theirs)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_digests(ws: Workspace) -> dict[str, str]:
    """Digest of every source file of *ws* (warehouse and raw files), by name."""
    files = [ws.warehouse, *ws.raw_files]
    return {p.name: digest(p) for p in files}


def table_counts(ws: Workspace) -> dict[str, int]:
    """Row count of every warehouse table, read from outside the kernel (READ_ONLY)."""
    con = duckdb.connect(str(ws.warehouse), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        return {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}  # type: ignore[index]
    finally:
        con.close()


# ------------------------------------------------------------------ kernels


@dataclass(repr=False)
class CellResult:
    """What one executed cell sent back."""

    code: str
    status: str = "ok"
    stdout: str = ""
    stderr: str = ""
    error: dict[str, Any] | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)
    """The guard's notices (display outputs carrying its ``guard_kernel`` metadata): data bundles."""

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.error is None

    @property
    def text(self) -> str:
        """text/plain of the execute_result (the cell's value), or ''."""
        for r in self.results:
            if "text/plain" in r:
                return str(r["text/plain"])
        return ""

    @property
    def traceback(self) -> str:
        """The error's traceback as plain text ('' when the cell did not fail)."""
        if not self.error:
            return ""
        return ANSI.sub("", "\n".join(self.error.get("traceback", [])))

    @property
    def ename(self) -> str:
        return self.error["ename"] if self.error else ""

    def __str__(self) -> str:  # shown by pytest when an assertion on a result fails
        return (f"status={self.status} ename={self.ename}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
                f"\n--- traceback\n{self.traceback}\n--- value\n{self.text}"
                + "".join(f"\n--- notice\n{n.get('text/plain', '')}" for n in self.notices))

    __repr__ = __str__


class GuardedKernel:
    """A real IPython kernel with ``%load_ext guard_kernel``, driven over ZMQ."""

    def __init__(self, km: Any, kc: Any, ws: Workspace, audit_dir: Path, policy: Path, actor: str) -> None:
        self.km, self.kc, self.ws = km, kc, ws
        self.audit_dir, self.policy, self.actor = audit_dir, policy, actor
        self.load_result: CellResult | None = None

    def run(self, code: str, timeout: float = 120) -> CellResult:
        """Execute *code* as one cell and collect its outputs."""
        res = CellResult(code)

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    res.stdout += content["text"]
                else:
                    res.stderr += content["text"]
            elif kind == "display_data" and "guard_kernel" in content.get("metadata", {}):
                res.notices.append(content["data"])
            elif kind in ("execute_result", "display_data"):
                res.results.append(content["data"])
            elif kind == "error":
                res.error = {k: content.get(k) for k in ("ename", "evalue", "traceback")}

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook, stop_on_error=False,
                                            allow_stdin=False)
        res.status = reply["content"]["status"]
        if res.status == "error" and res.error is None:
            c = reply["content"]
            res.error = {"ename": c.get("ename"), "evalue": c.get("evalue"), "traceback": c.get("traceback", [])}
        return res

    def value(self, expr: str) -> Any:
        """The Python literal value of *expr* evaluated in the kernel."""
        res = self.run(expr)
        assert res.ok, f"evaluating {expr!r} failed:\n{res}"
        return ast.literal_eval(res.text)

    def alive(self) -> bool:
        """The kernel answers a trivial cell."""
        try:
            return self.run("1 + 1", timeout=30).text == "2"
        except (Empty, TimeoutError, RuntimeError):
            return False

    # ------------------------------------------------------------- the audit
    def records(self) -> list[dict[str, Any]]:
        """Every audit record of this kernel's session(s), in write order."""
        out: list[dict[str, Any]] = []
        for f in sorted(self.audit_dir.glob("*.jsonl")):
            out.extend(read_records(str(f)))
        return out

    def mark(self) -> int:
        """A position in the audit; pass it to :meth:`since`."""
        return len(self.records())

    def since(self, mark: int) -> list[dict[str, Any]]:
        """Records written after *mark*."""
        return self.records()[mark:]

    def audit_files(self) -> list[Path]:
        return sorted(self.audit_dir.glob("*.jsonl"))

    def shutdown(self) -> None:
        """Stop the kernel (also one a test already killed)."""
        self.kc.stop_channels()
        try:
            self.km.shutdown_kernel(now=True)
        except RuntimeError:  # already dead
            pass


def kernel_env(policy: Path | None, actor: str, audit_dir: Path, root: Path | None = None) -> dict[str, str]:
    """Environment of a guarded kernel: policy, actor, audit dir, project root, and this checkout importable."""
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("GUARD_KERNEL_"):
            del env[k]
    if policy is not None:
        env["GUARD_KERNEL_POLICY"] = str(policy)
    env["GUARD_KERNEL_ACTOR"] = actor
    env["GUARD_KERNEL_AUDIT_DIR"] = str(audit_dir)
    if root is not None:  # the workspace's policies live in policies/: their paths mean the project
        env["GUARD_KERNEL_ROOT"] = str(root)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["MPLBACKEND"] = "Agg"
    env.pop("JPY_PARENT_PID", None)
    return env


def start_kernel(ws: Workspace, *, policy: str | Path | None = "default", actor: str = "agent",
                 audit_dir: Path | None = None, load: bool = True) -> GuardedKernel:
    """Start a real kernel in *ws*; with *load*, run ``%load_ext guard_kernel`` first."""
    from jupyter_client.manager import start_new_kernel

    pol = ws.policy(policy) if isinstance(policy, str) else policy
    audit = audit_dir or Path(ws.root) / ".guard_audit" / f"{actor}-{os.urandom(4).hex()}"
    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=60, cwd=str(ws.root),
                              env=kernel_env(pol, actor, audit, Path(ws.root)))
    k = GuardedKernel(km, kc, ws, audit, pol or Path("<builtin>"), actor)
    if load:
        k.load_result = k.run("%load_ext guard_kernel")
    return k


@pytest.fixture(scope="module")
def kernel_factory(project: Workspace) -> Iterator[Callable[..., GuardedKernel]]:
    """Start extra guarded kernels (other policies/actors); all are shut down after the module."""
    started: list[GuardedKernel] = []

    def make(**kw: Any) -> GuardedKernel:
        k = start_kernel(kw.pop("ws", project), **kw)
        started.append(k)
        return k

    yield make
    for k in started:
        k.shutdown()


@pytest.fixture(scope="module")
def kernel(kernel_factory: Callable[..., GuardedKernel]) -> GuardedKernel:
    """The module's guarded kernel: policies/default.yaml, actor agent, cwd = the project."""
    k = kernel_factory(policy="default", actor="agent")
    assert k.load_result is not None and k.load_result.ok, f"%load_ext guard_kernel failed:\n{k.load_result}"
    return k


def blocked(res: CellResult) -> bool:
    """The cell failed with a guard refusal (PolicyViolation, CellRejected… or a PermissionError)."""
    return not res.ok and (res.ename in ERROR_NAMES or res.ename == "PermissionError"
                           or "blocked by policy" in res.traceback)


def decisions(records: list[dict[str, Any]], *, exclude_kinds: tuple[str, ...] = ("cell", "session")) -> list[str]:
    """The ``decision`` of each action record (cell and session records left out)."""
    return [r.get("decision", "") for r in records if r.get("kind") not in exclude_kinds]


@pytest.fixture
def scratch_file(project: Workspace) -> Iterator[Callable[[str], Path]]:
    """Name a file under scratch/ that is removed after the test."""
    made: list[Path] = []

    def name(n: str) -> Path:
        p = project.scratch / n
        made.append(p)
        return p

    yield name
    for p in made:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
