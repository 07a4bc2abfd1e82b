"""The runtime audit hook: real files, real processes, real sockets; effects checked.

Every test builds a small project in ``tmp_path`` (a source ``data/raw/``, a ``scratch/``),
a real :class:`Guard` for an agent, and installs the process hook.  The hook cannot be
removed, so teardown makes it inert with ``set_current(None)``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from guard_kernel.audit import read_records, verify
from guard_kernel.decision import Decision, Guard, GuardDenied
from guard_kernel.decision import guard as session
from guard_kernel.enforce.runtime import hook as runtime
from guard_kernel.policy import load_policy

POLICY = """\
version: 1
name: runtime-test
defaults: {read: allow, write: deny, export: deny, network: deny, shell: deny}
sources:
  raw: {paths: ["data/raw/**"]}
scratch: ["scratch/**"]
limits: {max_rows: {agent: 5, human: 10}, on_exceed: truncate}
rules:
  - id: scratch-writes
    effect: allow
    actions: [file.write, file.delete, export.dataframe]
    where: {path: "scratch/**"}
  - id: agent-no-egress
    effect: deny
    actors: [agent]
    actions: [export.clipboard, net.*, shell.*]
    message: "Agent sessions cannot export, reach the network or run shell commands."
  - id: no-native-code
    effect: deny
    actions: [python.import]
    where: {module: [ctypes, cffi]}
"""

SOURCE_BYTES = b"id,name\n1,a\n2,b\n"


@dataclass
class Project:
    root: Path
    guard: Guard
    source: Path
    notes: list[Decision] = field(default_factory=list)

    def records(self, **match: Any) -> list[dict[str, Any]]:
        """Audit records whose fields equal *match*."""
        return [r for r in read_records(self.guard.audit_path)
                if all(r.get(k) == v for k, v in match.items())]

    def source_intact(self) -> bool:
        return self.source.read_bytes() == SOURCE_BYTES


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "scratch").mkdir()
    source = tmp_path / "data" / "raw" / "people.csv"
    source.write_bytes(SOURCE_BYTES)
    (tmp_path / "policy.yaml").write_text(POLICY)
    monkeypatch.chdir(tmp_path)
    notes: list[Decision] = []
    guard = Guard(load_policy(tmp_path / "policy.yaml", str(tmp_path)), actor="agent",
                  audit_dir=str(tmp_path / "audit"), notify=notes.append)
    runtime.install(guard)
    try:
        yield Project(tmp_path, guard, source, notes)
    finally:
        session.set_current(None)


# ------------------------------------------------------------------ files


def test_scratch_writes_just_work_and_become_owned(project: Project) -> None:
    with open("scratch/a.txt", "w") as f:
        f.write("one")
    Path("scratch/b.json").write_text(json.dumps({"x": 1}))
    with open("scratch/c.json", "w") as f:
        json.dump([1, 2], f)
    os.makedirs("scratch/sub/deeper", exist_ok=True)
    Path("scratch/sub/deeper/d.txt").write_bytes(b"d")
    assert Path("scratch/a.txt").read_text() == "one"
    assert Path("scratch/sub/deeper/d.txt").exists()
    assert str(project.root / "scratch" / "a.txt") in project.guard.owned_files
    # deleting the session's own scratch files and directories is allowed
    os.remove("scratch/a.txt")
    Path("scratch/b.json").unlink()
    shutil.rmtree("scratch/sub")
    assert not Path("scratch/a.txt").exists() and not Path("scratch/sub").exists()
    assert project.notes == []  # no warning on ordinary work
    writes = project.records(kind="runtime", action="file.write", decision="allow")
    assert {os.path.basename(r["resource"]) for r in writes} >= {"a.txt", "b.json", "c.json", "d.txt"}
    assert project.records(decision="deny") == []


def test_write_outside_scratch_is_denied_and_leaves_no_file(project: Project) -> None:
    with pytest.raises(GuardDenied) as err:
        open("report.txt", "w")
    assert not Path("report.txt").exists()
    assert "scratch" in (err.value.decision.hint or "")
    with pytest.raises(GuardDenied):
        os.open("report2.txt", os.O_WRONLY | os.O_CREAT)
    with pytest.raises(GuardDenied):
        os.mkdir("newdir")
    assert not Path("report2.txt").exists() and not Path("newdir").exists()
    denied = project.records(kind="runtime", decision="deny")
    assert [os.path.basename(r["resource"]) for r in denied] == ["report.txt", "report2.txt", "newdir"]


def test_reads_are_not_checked(project: Project) -> None:
    fd = os.open(project.source, os.O_RDONLY)
    os.close(fd)
    assert open(project.source, "rb").read() == SOURCE_BYTES
    assert project.records(kind="runtime") == []


def test_exec_of_a_built_string_is_caught_by_the_open_event(project: Project) -> None:
    code = "open('x' + '.txt', 'w').write('1')"
    with pytest.raises(GuardDenied):
        exec(code)
    with pytest.raises(GuardDenied):
        exec(compile("open('y.txt','w').write('1')", "anything.py", "exec"))
    assert not Path("x.txt").exists() and not Path("y.txt").exists()


def test_exec_of_a_string_is_decided_whole_before_any_line_runs(project: Project) -> None:
    cell = importlib.import_module("guard_kernel.enforce.ipython.cell")
    if not hasattr(cell, "analyze_source"):
        pytest.skip("guard_kernel.enforce.ipython.cell.analyze_source is not available")
    code = "open('scratch/first.txt', 'w').write('1')\nopen('report.txt', 'w').write('2')\n"
    with pytest.raises(GuardDenied):
        exec(code)
    assert not Path("scratch/first.txt").exists()  # line 1 did not run: the string was denied at compile
    assert not Path("report.txt").exists()
    assert project.records(kind="runtime", event="compile", decision="deny")


@pytest.mark.parametrize("how", [
    "open-w", "open-a", "open-r+", "os.open", "truncate", "remove", "rename-away", "new-file-in-source",
    "chmod", "rmtree",
])
def test_sources_are_never_written(project: Project, how: str) -> None:
    src = str(project.source)
    actions: dict[str, Any] = {
        "open-w": lambda: open(src, "w"),
        "open-a": lambda: open(src, "a"),
        "open-r+": lambda: open(src, "r+"),
        "os.open": lambda: os.open(src, os.O_RDWR),
        "truncate": lambda: os.truncate(src, 0),
        "remove": lambda: os.remove(src),
        "rename-away": lambda: os.rename(src, "scratch/stolen.csv"),
        "new-file-in-source": lambda: open("data/raw/new.csv", "w"),
        "chmod": lambda: os.chmod(src, 0o777),
        "rmtree": lambda: shutil.rmtree("data/raw"),
    }
    with pytest.raises(GuardDenied) as err:
        actions[how]()
    assert project.source_intact()
    assert not Path("data/raw/new.csv").exists() and not Path("scratch/stolen.csv").exists()
    assert err.value.decision.rules[0].id == "source:raw"


def test_symlink_in_scratch_does_not_make_a_source_writable(project: Project) -> None:
    os.symlink(project.source, "scratch/link.csv")  # making the link is a write in scratch: fine
    with pytest.raises(GuardDenied):
        open("scratch/link.csv", "w")
    with pytest.raises(GuardDenied):
        Path("scratch/link.csv").write_text("overwritten")
    assert project.source_intact()
    assert pd_free_read("scratch/link.csv") == SOURCE_BYTES  # reading through it is fine
    os.remove("scratch/link.csv")  # removing the link removes the link, not the source
    assert not os.path.lexists("scratch/link.csv") and project.source_intact()


def pd_free_read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_replace_link_copy_and_move_into_a_source_are_denied(project: Project) -> None:
    Path("scratch/new.csv").write_bytes(b"evil\n")
    for attempt in (
        lambda: os.replace("scratch/new.csv", project.source),
        lambda: os.rename("scratch/new.csv", project.source),
        lambda: shutil.copyfile("scratch/new.csv", project.source),
        lambda: shutil.move("scratch/new.csv", "data/raw/moved.csv"),
        lambda: os.link("scratch/new.csv", "data/raw/linked.csv"),
        lambda: os.link(project.source, "scratch/hardlink.csv"),  # a second name for a source inode
        lambda: os.symlink("/etc/hostname", "data/raw/sym.csv"),
    ):
        with pytest.raises(GuardDenied):
            attempt()
    assert project.source_intact()
    assert sorted(os.listdir("data/raw")) == ["people.csv"]
    assert not Path("scratch/hardlink.csv").exists()
    assert Path("scratch/new.csv").read_bytes() == b"evil\n"


def test_temporary_files_of_libraries_keep_working(project: Project) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write("temp")
        f.flush()
    with tempfile.TemporaryDirectory() as d:
        Path(d, "inner.txt").write_text("x")
        assert Path(d, "inner.txt").read_text() == "x"
    assert project.records(kind="runtime") == []  # the session's own temporary files: no noise
    assert project.notes == []
    with pytest.raises(GuardDenied):  # but a file in the temp dir the session did not make is not its own
        open(os.path.join(tempfile.gettempdir(), f"guard-kernel-test-{os.getpid()}.txt"), "w")


# ------------------------------------------------------------------ processes and network


def test_shell_commands_are_denied_and_do_not_run(project: Project) -> None:
    marker = project.root / "scratch" / "marker"
    with pytest.raises(GuardDenied) as err:
        os.system(f"touch {marker}")
    assert "shell" in str(err.value)
    with pytest.raises(GuardDenied):
        subprocess.run(["touch", str(marker)], check=False)
    with pytest.raises(GuardDenied):
        subprocess.run(f"touch {marker}", shell=True, check=False)
    assert not marker.exists()
    denied = project.records(kind="runtime", action="shell.exec", decision="deny")
    assert len(denied) == 3 and str(marker) in denied[0]["resource"]
    assert denied[0]["rules"][0]["id"] == "agent-no-egress"


def test_posix_spawn_is_denied(project: Project) -> None:
    marker = project.root / "scratch" / "spawned"
    with pytest.raises(GuardDenied):
        os.posix_spawn("/usr/bin/touch", ["touch", str(marker)], dict(os.environ))
    assert not marker.exists()


def test_a_human_gets_a_warning_and_the_command_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = POLICY + """\
  - id: human-shell
    effect: warn
    actors: [human]
    actions: [shell.exec]
"""
    (tmp_path / "policy.yaml").write_text(policy)
    monkeypatch.chdir(tmp_path)
    notes: list[Decision] = []
    guard = Guard(load_policy(tmp_path / "policy.yaml", str(tmp_path)), actor="human",
                  audit_dir=str(tmp_path / "audit"), notify=notes.append)
    runtime.install(guard)
    try:
        subprocess.run(["touch", str(tmp_path / "ran")], check=True)
    finally:
        session.set_current(None)
    assert (tmp_path / "ran").exists()
    assert [n.effect.value for n in notes] == ["warn"]


def test_loopback_connection_is_denied_and_never_arrives(project: Project) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(GuardDenied):
            client.connect(("127.0.0.1", port))
        with pytest.raises(GuardDenied):
            socket.create_connection(("127.0.0.1", port), timeout=1)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing connected
    finally:
        client.close()
        server.close()
    assert project.records(action="net.connect", decision="deny")[0]["resource"] == f"127.0.0.1:{port}"


def test_udp_sendto_is_denied(project: Project) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(GuardDenied):
            s.sendto(b"secret", ("127.0.0.1", 9))
    finally:
        s.close()


def test_name_lookups_of_other_hosts_are_denied(project: Project) -> None:
    with pytest.raises(GuardDenied):
        socket.getaddrinfo("exfil.example.invalid", 443)
    assert socket.getaddrinfo("localhost", 80)  # resolving the local host leaks nothing


def test_unix_sockets_are_local_ipc(project: Project) -> None:
    a, b = socket.socketpair()
    a.sendall(b"ok")
    assert b.recv(2) == b"ok"
    a.close()
    b.close()


def test_denied_module_import(project: Project) -> None:
    name = "ctypes.macholib"
    if name in sys.modules:
        pytest.skip("already imported in this process: no import event")
    with pytest.raises(GuardDenied):
        __import__(name)  # the import statement's way (raises the ``import`` audit event)
    with pytest.raises(GuardDenied):
        importlib.import_module(name)  # no ``import`` event: caught when the module body starts
    assert name not in sys.modules
    importlib.import_module("colorsys")  # anything else imports as usual


def test_native_libraries_via_ctypes_are_denied(project: Project) -> None:
    import ctypes

    with pytest.raises(GuardDenied):
        ctypes.CDLL("libc.so.6")


def test_sqlite_cannot_open_a_source_read_write(project: Project) -> None:
    import sqlite3

    db = project.root / "data" / "raw" / "app.db"
    with pytest.raises(GuardDenied):
        sqlite3.connect(db)
    assert not db.exists()
    sqlite3.connect("scratch/mine.db").close()  # the session's own databases: fine
    sqlite3.connect(":memory:").close()


# ------------------------------------------------------------------ all code in the process


def test_a_thread_is_guarded_too(project: Project) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            Path("from_thread.txt").write_text("x")
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], GuardDenied)
    assert not Path("from_thread.txt").exists()


def test_the_audit_directory_is_written_only_by_the_guard(project: Project) -> None:
    audit = project.guard.audit_path
    before = Path(audit).read_bytes().rstrip(b"\0")  # an open writer's file ends in its unused NUL tail
    with pytest.raises(GuardDenied) as err:
        open(audit, "a")
    assert err.value.decision.rules[0].id == "audit-protected"
    with pytest.raises(GuardDenied):
        os.remove(audit)
    with pytest.raises(GuardDenied):
        open(os.path.join(os.path.dirname(audit), "forged.jsonl"), "w")
    assert Path(audit).read_bytes().startswith(before)
    assert verify(audit).ok
    # the guard itself keeps writing: the denials above are recorded
    assert len(project.records(rules=[{"id": "audit-protected", "file": "<guard>", "line": 0}])) == 3


def test_a_hook_error_denies(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(guard: Guard, args: tuple[Any, ...]) -> None:
        raise RuntimeError("simulated failure")

    os.mkdir("scratch/d")
    monkeypatch.setitem(runtime._HANDLERS, "os.rmdir", boom)
    with pytest.raises(GuardDenied) as err:
        os.rmdir("scratch/d")
    assert "simulated failure" in str(err.value)
    assert Path("scratch/d").is_dir()


def test_a_timer_and_atexit_style_callbacks_are_guarded(project: Project) -> None:
    errors: list[BaseException] = []

    def later() -> None:
        try:
            open("from_timer.txt", "w")
        except BaseException as exc:
            errors.append(exc)

    t = threading.Timer(0.01, later)
    t.start()
    t.join()
    assert errors and isinstance(errors[0], GuardDenied)
    assert not Path("from_timer.txt").exists()


def test_adding_another_audit_hook_is_recorded(project: Project) -> None:
    sys.addaudithook(lambda event, args: None)  # cannot remove or bypass the guard's hook
    assert project.records(resource="sys.addaudithook")
    with pytest.raises(GuardDenied):
        open("after-hook.txt", "w")


def test_inert_without_a_current_guard(project: Project) -> None:
    session.set_current(None)
    Path("free.txt").write_text("no guard, no checks")
    assert Path("free.txt").exists()


def test_installing_twice_adds_no_second_hook(project: Project) -> None:
    runtime.install(project.guard)
    runtime.install(project.guard)
    assert runtime.installed()
    with pytest.raises(GuardDenied):
        open("once.txt", "w")
    # one hook → one decision record for one attempt
    assert len(project.records(kind="runtime", decision="deny")) == 1


def test_handled_events_table() -> None:
    events = runtime.handled_events()
    assert {"open", "os.remove", "os.rename", "subprocess.Popen", "socket.connect", "import",
            "compile", "ctypes.dlopen", "sys.addaudithook"} <= events


def test_sources_keep_their_digest(project: Project) -> None:
    digest = hashlib.sha256(project.source.read_bytes()).hexdigest()
    for mode in ("w", "a", "wb", "x"):
        with pytest.raises((GuardDenied, FileExistsError)):
            open(project.source, mode)
    assert hashlib.sha256(project.source.read_bytes()).hexdigest() == digest


LIBRARY_CTYPES = r"""
import importlib, json, os, sys
sys.path.insert(0, {repo!r})
from guard_kernel.enforce.runtime import hook as runtime
from guard_kernel.audit import read_records
from guard_kernel.policy import load_policy
from guard_kernel.decision.guard import Guard, GuardDenied

out = {{"ctypes_at_start": "ctypes" in sys.modules}}
guard = Guard(load_policy("policy.yaml", os.getcwd()), actor="agent", audit_dir="audit", notify=lambda d: None)
runtime.install(guard)
sys.path.insert(0, os.getcwd())  # the project's own module: user code, even though it is a file

def attempt(name, fn):
    try:
        fn()
        out[name] = "ran"
    except GuardDenied:
        out[name] = "denied"

attempt("exec", lambda: exec("import ctypes"))
attempt("__import__", lambda: __import__("ctypes"))
attempt("import_module", lambda: importlib.import_module("ctypes"))
attempt("project_module", lambda: importlib.import_module("mymod"))
out["ctypes_after_denials"] = "ctypes" in sys.modules
denials = len([r for r in read_records(guard.audit_path) if r["decision"] == "deny"])

import numpy  # numpy imports ctypes itself: a library's own import, not the user's
out["numpy"] = int(numpy.arange(4).sum())
out["ctypes_after_numpy"] = "ctypes" in sys.modules
out["new_denials_from_numpy"] = len([r for r in read_records(guard.audit_path) if r["decision"] == "deny"]) - denials
import ctypes
attempt("CDLL", lambda: ctypes.CDLL("libc.so.6"))
import _ctypes  # a shared library that is sure to exist, loaded through a library function at run time
attempt("numpy.ctypeslib", lambda: numpy.ctypeslib.load_library(os.path.basename(_ctypes.__file__),
                                                                os.path.dirname(_ctypes.__file__)))
print(json.dumps(out))
"""


def test_a_library_importing_ctypes_itself_is_not_the_user(tmp_path: Path) -> None:
    """numpy's own ``import ctypes`` passes the no-native-code rule; the same import from user code does not.

    A fresh interpreter: an import event happens only for a module not imported yet.
    """
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "mymod.py").write_text("import ctypes\n")
    repo = str(Path(__file__).resolve().parents[3])
    proc = subprocess.run([sys.executable, "-c", LIBRARY_CTYPES.format(repo=repo)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"ctypes_at_start": False, "exec": "denied", "__import__": "denied", "import_module": "denied",
                   "project_module": "denied", "ctypes_after_denials": False, "numpy": 6, "ctypes_after_numpy": True,
                   "new_denials_from_numpy": 0, "CDLL": "denied", "numpy.ctypeslib": "denied"}
