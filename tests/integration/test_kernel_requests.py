"""The guard covers more than cells: completions, inspection, threads, timers and atexit."""

from __future__ import annotations

import time

from conftest import GuardedKernel, blocked

from guard_kernel.demo import Workspace


def test_completion_and_inspection_work_and_are_not_denied(kernel: GuardedKernel) -> None:
    assert kernel.run("import pandas as pd\nframe = pd.DataFrame({'alpha': [1, 2]})").ok
    mark = kernel.mark()
    reply = kernel.kc.complete("frame.al", 8, reply=True, timeout=30)
    assert reply["content"]["status"] == "ok"
    assert "frame.alpha" in reply["content"]["matches"] or "alpha" in reply["content"]["matches"]
    reply = kernel.kc.inspect("pd.read_csv", 11, reply=True, timeout=30)
    assert reply["content"]["status"] == "ok" and reply["content"]["found"]
    assert not [r for r in kernel.since(mark) if r.get("decision") in ("deny", "warn", "would_deny")]
    assert kernel.alive()


def test_a_timer_thread_cannot_write_outside_scratch(kernel: GuardedKernel, project: Workspace) -> None:
    target = project.root / "timer_leak.txt"
    res = kernel.run(  # the path is built at run time, so only the runtime layer can see it
        "import threading\n"
        "outcome = []\n"
        "leak_path = 'timer_' + 'leak.txt'\n"
        "def later():\n"
        "    try:\n"
        "        open(leak_path, 'w').write('leak')\n"
        "        outcome.append('written')\n"
        "    except PermissionError as e:\n"
        "        outcome.append('denied')\n"
        "t = threading.Timer(0.05, later); t.start(); t.join()\n"
        "outcome"
    )
    assert res.ok, res
    assert res.text == "['denied']"
    assert not target.exists()
    denials = [r for r in kernel.records() if r.get("decision") == "deny" and "timer_leak.txt" in str(r.get("resource"))]
    assert denials, "the timer's write was not recorded"


def test_atexit_callback_is_guarded_too(kernel_factory, project: Workspace) -> None:
    k = kernel_factory(policy="default", actor="agent")
    target = project.root / "atexit_leak.txt"
    ran = project.root / "scratch" / "atexit_ran.txt"
    res = k.run("import atexit\nexit_path = 'atexit_' + 'leak.txt'\n"
                "atexit.register(lambda: open(exit_path, 'w').write('leak'))\n"
                # registered second, so it runs first: proves the exit handlers ran at all
                "atexit.register(lambda: open('scratch/atexit_ran.txt', 'w').write('ran'))")
    assert res.ok, res
    k.km.shutdown_kernel(now=False)  # a clean exit runs atexit handlers
    k.kc.stop_channels()
    deadline = time.time() + 20
    while time.time() < deadline and not ran.exists():
        time.sleep(0.1)
    assert ran.exists(), "the kernel's atexit handlers did not run"
    time.sleep(0.5)
    assert not target.exists()


def test_denied_thread_write_leaves_kernel_usable(kernel: GuardedKernel) -> None:
    res = kernel.run("df_ok = 1\nopen('not_scratch.txt', 'w')")
    assert blocked(res)
    assert kernel.alive()
