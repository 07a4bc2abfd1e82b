"""A ``%load_ext`` session's commands run through the confining exec helper: real kernel (jupyter_client),
``policies/default.yaml`` as ``human`` (the shell is allowed, with a warning), this machine's Landlock.

The commands below get past the shell wrappers' word check on purpose (the source is not named in
their words, or a script does the work): only the helper stands between them and the source file."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import GuardedKernel, source_digests

from guard_kernel.audit import verify
from guard_kernel.decision import Guard
from guard_kernel.demo import Workspace
from guard_kernel.enforce import landlock
from guard_kernel.enforce.runtime import children, exec_helper
from guard_kernel.policy import load_policy

needs_landlock = pytest.mark.skipif(landlock.abi_version() < 1, reason="Landlock is not available on this machine")
SRC = "data/raw/regions.csv"


@pytest.fixture(scope="module")
def human(kernel_factory: Callable[..., GuardedKernel]) -> GuardedKernel:
    k = kernel_factory(policy="default", actor="human")
    assert k.load_result is not None and k.load_result.ok, k.load_result
    return k


@pytest.fixture
def intact(project: Workspace) -> Iterator[None]:
    before = source_digests(project)
    yield
    assert source_digests(project) == before, "a command changed a source file"


ATTEMPTS = [
    # (cell, what shows that the command ran and the OS refused it)
    ('!bash -c "$(echo rm) -f data/raw/regions.csv"', "Permission denied"),
    ("%%bash\nf=data/raw/regions.csv\n$(echo rm) -f $f\necho planted >> $f\necho done", "Permission denied"),
    ("import subprocess\nr = subprocess.run(['sh', '-c', 'rm -f data/raw/$(echo regions).csv'], capture_output=True,"
     " text=True)\nprint(r.returncode, r.stderr)", "Permission denied"),
    ("import subprocess, sys\nr = subprocess.run([sys.executable, '-c', \"import os; os.remove('data/raw/' + "
     "'regions.csv')\"], capture_output=True, text=True)\nprint(r.returncode, r.stderr[-200:])", "PermissionError"),
    # the status, not an echo: the command's own text (in the guard's shell notice) must not be what matches
    ("import os\nst = os.system('f=data/raw/regions.csv; (: > $f) 2>/dev/null || exit 7')\n"
     "print('exit-status', st >> 8)", "exit-status 7"),
    ("import os\nprint(os.popen('truncate -s 0 data/raw/$(echo regions).csv 2>&1').read())", "Permission denied"),
    ("x = !sh -c 'rm -f data/raw/$(echo regions).csv' 2>&1\nprint(x)", "Permission denied"),
    ("!sh scratch/wipe.sh", "Permission denied"),  # a script file: the words name only the script
]


@needs_landlock
@pytest.mark.parametrize(("code", "says"), ATTEMPTS)
def test_a_command_cannot_change_a_source_whatever_its_words(human: GuardedKernel, project: Workspace,
                                                             intact: None, code: str, says: str) -> None:
    (project.scratch / "wipe.sh").write_text(f"rm -f {SRC}\necho planted >> {SRC}\n")
    mark = human.mark()
    res = human.run(code)
    assert res.ok, res  # the guard let it run (shell allowed with a warning) …
    assert says in res.stdout + res.stderr, res  # … and the OS refused the write
    new = human.since(mark)
    assert not any(r.get("decision") == "deny" for r in new), "the word check, not the helper, stopped it"
    assert not any(exec_helper.HELPER in str(r.get("resource", "")) for r in new), "the audit names the command"
    assert human.alive()


@needs_landlock
def test_rm_of_a_source_is_refused_and_the_file_stays(human: GuardedKernel, project: Workspace, intact: None) -> None:
    res = human.run(f"!rm {SRC}")
    assert not res.ok and "read-only" in res.traceback  # the word check says why, before anything runs
    res = human.run(f"import subprocess\nprint(subprocess.run(['rm', '{SRC}'], capture_output=True, text=True).stderr)")
    assert "Permission denied" in res.stdout, res
    res = human.run(f"import os\nprint(os.system('rm {SRC} 2>/dev/null'))")
    assert res.stdout.strip() not in ("", "0"), res


@needs_landlock
@pytest.mark.parametrize(("code", "file", "text"), [
    ("!echo from-bang > scratch/bang.txt", "bang.txt", "from-bang"),
    ("%%bash\necho from-bash > scratch/bash.txt\n", "bash.txt", "from-bash"),
    ("import subprocess\nsubprocess.run('echo from-run > scratch/run.txt', shell=True, check=True)", "run.txt",
     "from-run"),
    ("import os\nassert os.system('echo from-system > scratch/system.txt') == 0", "system.txt", "from-system"),
    ("import os\nos.popen('echo from-popen > scratch/popen.txt').read()", "popen.txt", "from-popen"),
    ("!f=$(mktemp) && echo from-tmp > $f && cp $f scratch/tmp.txt", "tmp.txt", "from-tmp"),
])
def test_commands_on_scratch_still_work(human: GuardedKernel, project: Workspace,
                                        scratch_file: Callable[[str], Path], code: str, file: str,
                                        text: str) -> None:
    target = scratch_file(file)
    res = human.run(code)
    assert res.ok, res
    assert target.read_text().strip() == text


@needs_landlock
def test_reading_listing_and_pipes_keep_working(human: GuardedKernel) -> None:
    res = human.run("x = !ls data/raw | sort\nprint(x)")
    assert res.ok and "regions.csv" in res.stdout, res
    res = human.run("import subprocess\nprint(subprocess.check_output(['head', '-1', 'data/raw/regions.csv'], text=True))")
    assert res.ok and res.stdout.strip(), res
    # Popen restores SIGPIPE for what it starts (Python ignores it): through the helper too, so `yes` ends quietly
    res = human.run("import subprocess\nr = subprocess.run('yes | head -2', shell=True, capture_output=True, text=True)"
                    "\nprint(repr(r.stdout), repr(r.stderr))")
    assert res.ok and res.stdout.strip() == "'y\\ny\\n' ''", res
    res = human.run("import subprocess\nsubprocess.run(['no-such-program-xyz'])")
    assert res.ename == "FileNotFoundError", res  # as Popen says it without the helper


@needs_landlock
def test_status_and_audit_say_what_holds_for_commands(human: GuardedKernel) -> None:
    import json

    status = json.loads(human.run("%guard status --json").stdout)
    conf = status["confinement"]
    assert conf["state"] == "in force" and conf["scope"] == children.SCOPE
    assert any(w.endswith("/scratch") for w in conf["writable"])
    recs = [r for r in human.records() if r.get("kind") == "confinement"]
    assert recs and recs[0]["confinement"]["state"] == "in force"
    assert verify(str(human.audit_files()[0])).ok


def test_without_landlock_commands_run_as_before_and_it_is_said(project: Workspace, tmp_path: Path) -> None:
    """Forced off as the confinement fallback tests do (ABI 0): nothing wrapped, recorded, status says it."""
    import subprocess

    guard = Guard(load_policy(project.policy("default"), str(project.root)), actor="human",
                  audit_dir=str(tmp_path / "audit"))
    try:
        children.install(guard, abi=0)
        assert guard.confinement is not None and guard.confinement["state"] == "unavailable"
        assert "Landlock" in guard.confinement["reason"] and guard.status()["confinement"] == guard.confinement
        assert "_execute_child" not in [n for n in subprocess.Popen.__dict__ if
                                        getattr(subprocess.Popen.__dict__[n], "__module__", "") == children.__name__]
        assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, text=True).stdout == "1\n"
    finally:
        children.uninstall()
        guard.close()
    recs = [r for r in guard_records(guard) if r["kind"] == "confinement"]
    assert recs and recs[0]["confinement"]["state"] == "unavailable"


def guard_records(guard: Guard) -> list[dict[str, object]]:
    from guard_kernel.audit import read_records

    return list(read_records(guard.audit_path))


def test_the_private_tmpdir_goes_at_exit_as_the_guards_own_doing(project: Workspace, tmp_path: Path) -> None:
    """Removing it is no denial in the session's audit (outside scratch, the runtime hook would deny it)."""
    import tempfile

    from guard_kernel.decision import guard as session
    from guard_kernel.enforce.runtime import hook

    guard = Guard(load_policy(project.policy("default"), str(project.root)), actor="agent",
                  audit_dir=str(tmp_path / "audit"))
    private = tempfile.mkdtemp(prefix="guard-children-test-")
    (Path(private) / "left.txt").write_text("x")
    hook.install(guard)
    try:
        children._remove(private)
    finally:
        session.set_current(None)  # the audit hook cannot be removed: make it inert
        guard.close()
    assert not Path(private).exists()
    assert not [r for r in guard_records(guard) if r.get("decision") == "deny"]
