"""The OS layer of the guarded kernel, on this machine's real Landlock: effects that in-process
layers cannot see (a shell command, a child process, a native write) must not happen, and what
ordinary work needs (scratch, the shell when allowed, worker processes, plots) must keep working."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import GuardedKernel, kernel_env, source_digests

from guard_kernel.audit import read_records, verify
from guard_kernel.demo import Workspace
from guard_kernel.enforce import confine, landlock
from guard_kernel.kernel import spec
from guard_kernel.policy import load_policy, parse_policy

pytestmark = pytest.mark.skipif(landlock.abi_version() < 1, reason="Landlock is not available on this machine")

Start = Callable[..., GuardedKernel]
HUMAN_SHELL = "version: 1\nname: {name}\nlock: false\ndefaults: {{read: allow, write: deny, export: deny, " \
              "network: {network}, shell: allow}}\nsources:\n  warehouse: {{duckdb: data/warehouse.duckdb}}\n" \
              "  raw: {{paths: ['data/raw/**']}}\nscratch: ['scratch/**']\n{extra}"


@pytest.fixture
def start(project: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Start]:
    """Install a guarded kernelspec for a policy written here (human, shell allowed) and start it."""
    prefix = tmp_path / "prefix"
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    started: list[GuardedKernel] = []

    def make(network: str = "deny", extra: str = "", actor: str = "human", launcher: tuple[str, ...] = ()
             ) -> GuardedKernel:
        from jupyter_client.manager import start_new_kernel

        policy = tmp_path / f"policy-{len(started)}.yaml"
        policy.write_text(HUMAN_SHELL.format(name=f"p{len(started)}", network=network, extra=extra))
        name = f"confined{len(started)}"
        where = spec.install(name=name, prefix=str(prefix), policy=str(policy), root=str(project.root), actor=actor)
        if launcher:  # options fixed in the kernelspec's argv, in front of ipykernel's `-f {connection_file}`
            kernel_json = Path(where) / "kernel.json"
            data = json.loads(kernel_json.read_text())
            data["argv"][-2:-2] = list(launcher)
            kernel_json.write_text(json.dumps(data))
        audit = tmp_path / f"audit-{len(started)}"
        env = kernel_env(None, actor, audit)
        km, kc = start_new_kernel(kernel_name=name, startup_timeout=60, cwd=str(project.root), env=env)
        k = GuardedKernel(km, kc, project, audit, policy, actor)
        started.append(k)
        return k

    yield make
    for k in started:
        k.shutdown()


def status(k: GuardedKernel) -> dict[str, Any]:
    res = k.run("%guard status --json")
    assert res.ok, res
    return dict(json.loads(res.stdout))


def test_a_shell_command_cannot_write_a_source(start: Start, project: Workspace) -> None:
    """The shell is allowed here, so only the OS stands between `!cmd` and the source file."""
    k = start()
    assert status(k)["confinement"]["state"] == "in force"
    before = source_digests(project)
    # a path the words do not show (the in-process word check is best effort): the OS refuses
    res = k.run("out = !f=data/raw/regions.csv; echo planted >> $f 2>&1; echo rc=$?\nprint(out)")
    assert "Permission denied" in res.stdout
    res = k.run("import subprocess\nsubprocess.run(['sh', '-c', 'rm -f data/raw/regions.csv'], check=False).returncode")
    assert res.ok and res.text != "0"
    assert source_digests(project) == before
    assert k.alive()


def test_scratch_the_shell_worker_processes_and_plots_keep_working(start: Start, project: Workspace) -> None:
    k = start()
    assert k.run("!echo hello > scratch/from_shell.txt").ok
    assert (project.root / "scratch" / "from_shell.txt").read_text().strip() == "hello"
    assert k.run("%%bash\nls data > scratch/listing.txt\n").ok
    assert "warehouse.duckdb" in (project.root / "scratch" / "listing.txt").read_text()
    res = k.run("from multiprocessing import Pool\nwith Pool(2) as p:\n    print(sum(p.map(abs, range(-50, 50))))")
    assert res.ok and res.stdout.strip() == "2500", res
    res = k.run("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
                "plt.plot([1, 2, 3]); plt.savefig('scratch/plot.png')")
    assert res.ok, res
    assert (project.root / "scratch" / "plot.png").stat().st_size > 0
    res = k.run("import tempfile\nwith tempfile.NamedTemporaryFile('w') as f:\n    f.write('x')\nprint('tmp ok')")
    assert res.ok and "tmp ok" in res.stdout


def test_tcp_connect_only_to_the_ports_allow_rules_name(start: Start) -> None:
    listeners = [socket.socket(), socket.socket()]
    try:
        for s in listeners:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
        allowed, other = (s.getsockname()[1] for s in listeners)
        rule = ("rules:\n  - {id: local-api, effect: allow, actions: [net.connect], "
                f"where: {{host: 127.0.0.1, port: {allowed}}}}}\n")
        k = start(extra=rule)
        assert status(k)["confinement"]["tcp_connect_ports"] == [allowed]
        code = "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=5)\ns.close()\nprint('connected')"
        assert "connected" in k.run(code.format(port=allowed)).stdout
        res = k.run(code.format(port=other))
        assert res.status == "error" and "Permission denied" in res.traceback, res
    finally:
        for s in listeners:
            s.close()


def test_exec_deny_starts_no_program(start: Start, project: Workspace) -> None:
    k = start(extra="confine: {exec: deny}\n")
    assert status(k)["confinement"]["exec"] == "python only"
    res = k.run("import subprocess\nsubprocess.run(['ls'])")
    assert res.status == "error" and "Permission denied" in res.traceback
    res = k.run("import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', 'print(40 + 2)'], "
                "capture_output=True, text=True).stdout)")
    assert res.ok and "42" in res.stdout  # the kernel's own Python may still run (worker processes)


def test_a_killed_kernel_leaves_an_end_record_from_the_launcher(start: Start) -> None:
    k = start()
    assert k.run("x = 1").ok
    k.kc.execute("import time\ntime.sleep(60)")
    time.sleep(1)
    files = k.audit_files()
    assert files
    records = list(read_records(str(files[0])))
    header = next(r for r in records if r["kind"] == "session")
    os.kill(header["pid"], signal.SIGKILL)  # the kernel, not its launcher
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        records = list(read_records(str(files[0])))
        if records[-1]["kind"] == "session_end":
            break
        time.sleep(0.2)
    end = records[-1]
    assert end["kind"] == "session_end" and end.get("written_by") == "launcher"
    assert "SIGKILL" in end["message"]
    assert verify(str(files[0])).ok


def test_interrupt_reaches_the_confined_kernel(start: Start) -> None:
    k = start()
    msg_id = k.kc.execute("import time\ntime.sleep(30)")
    time.sleep(1.5)
    k.km.interrupt_kernel()
    reply = k.kc.get_shell_msg(timeout=20)
    while reply["parent_header"].get("msg_id") != msg_id:  # earlier replies (kernel_info) come first
        reply = k.kc.get_shell_msg(timeout=20)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    assert k.alive()


def test_a_source_inside_scratch_cannot_be_confined(project: Workspace) -> None:
    bad = confine.plan(parse_policy(HUMAN_SHELL.format(name="bad", network="deny", extra="")
                                    .replace("scratch: ['scratch/**']", "scratch: ['data/**']"),
                                    root=str(project.root)),
                       actor="human", private_dirs=(), protected=())
    assert bad.state is confine.State.REFUSED and "read-only" in bad.reason


def test_without_landlock_best_effort_runs_and_required_refuses(project: Workspace) -> None:
    text = HUMAN_SHELL.format(name="x", network="deny", extra="")
    best = confine.plan(parse_policy(text, root=str(project.root)), actor="human", private_dirs=(), protected=(),
                        abi=0)
    assert best.state is confine.State.UNAVAILABLE and "Landlock" in best.reason
    required = confine.plan(parse_policy(text + "confine: {mode: required}\n", root=str(project.root)),
                            actor="human", private_dirs=(), protected=(), abi=0)
    assert required.state is confine.State.REFUSED
    off = confine.plan(parse_policy(text + "confine: {mode: off}\n", root=str(project.root)),
                       actor="human", private_dirs=(), protected=())
    assert off.state is confine.State.OFF


def test_a_required_confinement_that_cannot_hold_runs_no_cell(start: Start, project: Workspace) -> None:
    """scratch over the sources cannot be confined (Landlock carves no read-only hole): refused, with why."""
    k = start(extra="confine: {mode: required}\n")
    assert k.run("1 + 1").ok  # a consistent policy runs
    bad_policy = project.root / "policies" / "over-sources.yaml"
    bad_policy.write_text(HUMAN_SHELL.format(name="bad", network="deny", extra="confine: {mode: required}\n")
                          .replace("scratch: ['scratch/**']", "scratch: ['data/**']"))
    load_policy(bad_policy, root=str(project.root))  # a valid policy…
    spec.install(name="overlap", prefix=os.environ["JUPYTER_PATH"].rsplit("/share/", 1)[0], policy=str(bad_policy),
                 root=str(project.root), actor="human")
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="overlap", startup_timeout=60, cwd=str(project.root),
                              env=kernel_env(None, "human", project.root / ".guard_audit" / "overlap"))
    bad = GuardedKernel(km, kc, project, project.root / ".guard_audit" / "overlap", bad_policy, "human")
    try:
        res = bad.run("open('data/raw/regions.csv', 'a').write('x')")
        assert res.status == "error" and "read-only" in res.traceback  # …that cannot be confined: no cell runs
    finally:
        bad.shutdown()


def test_a_kernel_dies_with_its_launcher(start: Start) -> None:
    """The launcher owns the audit: a kernel without it must not go on (PR_SET_PDEATHSIG)."""
    k = start()
    header = next(r for r in read_records(str(k.audit_files()[0])) if r["kind"] == "session")
    kernel_pid = header["pid"]
    os.kill(k.km.provisioner.pid, signal.SIGKILL)  # the launcher jupyter_client started
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(kernel_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    with pytest.raises(ProcessLookupError):
        os.kill(kernel_pid, 0)


FORKED_CHILD = """\
import multiprocessing as mp, os

def child(q):
    try:
        name = [n for n in os.listdir('data/raw') if n.startswith('reg')][0]  # not a name the cell shows
        open(os.path.join('data', 'raw', name), 'a').write('planted')
    except Exception as exc:
        q.put(type(exc).__name__)
    else:
        q.put('written')

ctx = mp.get_context('fork')
q = ctx.Queue()
p = ctx.Process(target=child, args=(q,))
p.start()
print(q.get(timeout=60), p.pid)
p.join(60)
"""


def test_a_forked_childs_decisions_reach_the_launchers_audit(start: Start, project: Workspace) -> None:
    """multiprocessing (fork) children of the kernel send their records through the kernel's pipe."""
    k = start()
    before = source_digests(project)
    res = k.run(FORKED_CHILD)
    assert res.ok, res
    outcome, pid = res.stdout.split()
    assert outcome == "PolicyViolation", res  # the child is guarded, and not refused for want of an audit file
    assert source_digests(project) == before
    assert k.run("x = 2").ok  # a record after the child's: the chain goes on past it
    audit = str(k.audit_files()[0])
    from_child = [r for r in read_records(audit) if r.get("pid") == int(pid)]
    assert from_child and from_child[0]["decision"] == "deny" and "regions.csv" in from_child[0]["resource"]
    assert verify(audit).ok


def test_joblib_with_two_workers_keeps_working(start: Start) -> None:
    k = start()
    res = k.run("from joblib import Parallel, delayed\n"
                "print(sum(Parallel(n_jobs=2)(delayed(abs)(i) for i in range(-50, 50))))")
    assert res.ok and res.stdout.strip() == "2500", res
    res = k.run("from joblib import Parallel, delayed\nimport os\n"
                "print(len(set(Parallel(n_jobs=2, backend='multiprocessing')(delayed(os.getpid)() for _ in range(8)))))")
    assert res.ok and int(res.stdout.strip()) >= 1, res


NOTICE = "OS confinement is unavailable here"


def test_without_landlock_best_effort_says_so_in_the_first_cell(start: Start, project: Workspace) -> None:
    """Landlock forced off (as on an old kernel): the session runs, says it once, records and shows it."""
    k = start(launcher=("--without-landlock",))
    first = k.run("1 + 1")
    assert first.ok, first
    notices = [r["text/plain"] for r in first.notices if NOTICE in r.get("text/plain", "")]
    assert len(notices) == 1 and "\n" not in notices[0] and "Landlock" in notices[0], first
    assert NOTICE not in first.stderr and any(r.get("text/plain") == "2" for r in first.results)
    second = k.run("2 + 2")
    assert second.ok and not any(NOTICE in r.get("text/plain", "") for r in second.notices), second
    assert status(k)["confinement"]["state"] == "unavailable"
    header = next(r for r in read_records(str(k.audit_files()[0])) if r["kind"] == "session")
    assert header["confinement"]["state"] == "unavailable" and "Landlock" in header["confinement"]["reason"]
    assert k.run("open('scratch/unconfined.txt', 'w').write('x')").ok  # the in-process guards still decide
    assert not k.run("open('data/raw/regions.csv', 'a')").ok


def test_without_landlock_required_runs_no_cell(start: Start) -> None:
    k = start(extra="confine: {mode: required}\n", launcher=("--without-landlock",))
    res = k.run("1 + 1")
    assert res.status == "error" and "Landlock is not available" in res.traceback, res
    info = k.kc.kernel_info(reply=True, timeout=30)["content"]["guard"]
    assert info["guarded"] is False and "Landlock" in info["unavailable"]


def _open_files(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


@pytest.mark.parametrize(("launcher", "how"), [((), "fork"), (("--exec-kernel",), "exec")])
def test_either_start_confines_the_kernel_and_leaves_it_no_audit_descriptor(
        start: Start, project: Workspace, launcher: tuple[str, ...], how: str) -> None:
    """Forked after the launcher's imports (default) or a second Python (--exec-kernel): the same kernel."""
    k = start(launcher=launcher)
    records = list(read_records(str(k.audit_files()[0])))
    assert next(r for r in records if r["kind"] == "launcher")["start"] == how
    kernel_pid = next(r for r in records if r["kind"] == "session")["pid"]
    audit_dir = str(k.audit_files()[0].parent.resolve())
    assert not [f for f in _open_files(kernel_pid) if f.startswith(audit_dir)]  # only the launcher writes it
    before = source_digests(project)
    res = k.run("out = !f=data/raw/regions.csv; echo planted >> $f 2>&1\nprint(out)")
    assert "Permission denied" in res.stdout, res
    assert source_digests(project) == before
    res = k.run("import os, tempfile\nprint(os.environ['TMPDIR'] == tempfile.gettempdir())")
    assert res.stdout.strip() == "True", res  # the kernel's private TMPDIR, not the launcher's cached /tmp
