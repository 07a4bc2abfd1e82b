"""The confining exec helper, run as the processes it is for: it confines itself with this machine's
Landlock, then becomes the command — which then cannot write outside the plan, whatever it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from guard_kernel.enforce import confine, landlock
from guard_kernel.enforce.runtime import exec_helper
from guard_kernel.policy import parse_policy

POLICY = "version: 1\nname: helper\ndefaults: {read: allow, write: deny, shell: allow}\n" \
         "sources:\n  raw: {paths: ['data/raw/**']}\nscratch: ['scratch/**']\n{extra}"
needs_landlock = pytest.mark.skipif(landlock.abi_version() < 1, reason="Landlock is not available on this machine")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "x.csv").write_text("id\n1\n")
    (tmp_path / "scratch").mkdir()
    return tmp_path


def plan_json(project: Path, extra: str = "") -> str:
    policy = parse_policy(POLICY.replace("{extra}", extra), root=str(project))
    private = project / "private"
    private.mkdir(exist_ok=True)
    p = confine.plan(policy, actor="human", private_dirs=(str(private),), protected=())
    assert p.state is confine.State.IN_FORCE, p
    return p.to_json()


def run(plan: str, script: str, cwd: Path, **kw: bool | str) -> subprocess.CompletedProcess[str]:
    cmd = exec_helper.command(plan, "/bin/sh", ["sh", "-c", script], **kw)  # type: ignore[arg-type]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_landlock
@pytest.mark.parametrize(("script", "written"), [
    ("echo planted >> data/raw/x.csv", False),
    ("rm -f data/raw/x.csv", False),
    ("$(echo rm) -f data/raw/$(echo x).csv", False),  # words that do not name the source
    ("mv data/raw/x.csv scratch/", False),
    (f"{sys.executable} -c \"open('data/raw/x.csv', 'w').write('gone')\"", False),  # what it starts, too
    ("echo kept > scratch/out.txt", True),
])
def test_the_command_writes_only_where_the_plan_says(project: Path, script: str, written: bool) -> None:
    res = run(plan_json(project), script, project)
    assert (project / "data" / "raw" / "x.csv").read_text() == "id\n1\n"
    assert (project / "scratch" / "out.txt").exists() is written
    if not written:
        assert res.returncode != 0 and ("Permission denied" in res.stderr or "PermissionError" in res.stderr), res


@needs_landlock
def test_a_private_tmpdir_and_the_devices_stay_writable(project: Path) -> None:
    res = run(plan_json(project), "f=$(mktemp) && echo ok > $f && cat $f && echo x > /dev/null", project,
              tmpdir=str(project / "private"))
    assert res.returncode == 0 and res.stdout.strip() == "ok", res
    assert list((project / "private").iterdir())


@needs_landlock
def test_exec_deny_holds_for_the_command_itself(project: Path) -> None:
    res = run(plan_json(project, "confine: {exec: deny}\n"), "echo never", project)
    assert res.returncode == 126 and "Permission denied" in res.stderr and "never" not in res.stdout


def test_a_plan_that_cannot_be_applied_runs_nothing(project: Path) -> None:
    cmd = exec_helper.command("{not json", "/bin/sh", ["sh", "-c", "echo ran > scratch/ran.txt"])
    res = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=60)
    assert res.returncode == 126 and "could not be confined" in res.stderr and "Traceback" not in res.stderr
    assert not (project / "scratch" / "ran.txt").exists()


@needs_landlock
def test_a_missing_program_exits_127_like_the_shell(project: Path) -> None:
    cmd = exec_helper.command(plan_json(project), str(project / "no-such-program"), ["x"])
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 127 and "No such file" in res.stderr


@needs_landlock
@pytest.mark.parametrize(("restore", "ignored"), [(True, False), (False, True)])
def test_sigpipe_is_restored_when_popen_asks(project: Path, restore: bool, ignored: bool) -> None:
    """Python ignores SIGPIPE at start-up; a command started with restore_signals must not inherit that."""
    res = run(plan_json(project), "grep SigIgn /proc/self/status", project, restore_signals=restore)
    mask = int(res.stdout.split()[1], 16)
    assert bool(mask & (1 << 12)) is ignored, res.stdout  # SIGPIPE is 13: bit 12


@pytest.mark.parametrize(("argv", "inner"), [
    (exec_helper.command("{}", "/bin/ls", ["ls", "-l"]), ["ls", "-l"]),
    (exec_helper.command("{}", "/bin/sh", ["/bin/sh", "-c", "rm x"], restore_signals=True, tmpdir="/t"),
     ["/bin/sh", "-c", "rm x"]),
    (["ls", "-l"], None),
    ([sys.executable, "-c", "pass"], None),
])
def test_unwrap_gives_the_command_the_session_wrote(argv: list[str], inner: list[str] | None) -> None:
    assert exec_helper.unwrap(argv) == inner


def test_unwrap_text_of_a_system_command_line() -> None:
    import shlex

    line = shlex.join(exec_helper.command("{}", "/bin/sh", ["sh", "-c", "rm -f 'a b'"]))
    assert exec_helper.unwrap_text(line) == "rm -f 'a b'"
    assert exec_helper.unwrap_text("ls -l") == "ls -l"


def test_the_helper_does_not_load_the_public_api(project: Path) -> None:
    """One small Python start per command: the package's API (IPython, policy loading) stays out."""
    code = "import sys; print(sorted(m for m in sys.modules if m.startswith(('IPython', 'yaml', 'guard_kernel'))))"
    cmd = exec_helper.command(confine.Plan(confine.State.OFF).to_json(), sys.executable, [sys.executable, "-c", code])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"  # the command is a new process image: nothing is carried over
    probe = [sys.executable, "-I", "-S", "-B", "-X", "importtime", exec_helper.HELPER,
             confine.Plan(confine.State.OFF).to_json(), "--", "/bin/true", "true"]
    loaded = subprocess.run(probe, capture_output=True, text=True, timeout=60).stderr
    assert "guard_kernel.enforce.confine" in loaded and "IPython" not in loaded and "yaml" not in loaded
