"""A ``%load_ext`` session as a human under policies/default.yaml (the shell allowed): shell commands
that would write or delete a source are refused by their words; the file is intact; scratch works."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import GuardedKernel, source_digests

from guard_kernel.demo import Workspace


def test_shell_commands_cannot_change_sources(kernel_factory: Callable[..., GuardedKernel],
                                              project: Workspace) -> None:
    k = kernel_factory(policy="default", actor="human")
    assert k.load_result is not None and k.load_result.ok
    before = source_digests(project)
    res = k.run("!rm data/raw/regions.csv")
    assert "source:raw" in res.traceback and "read-only" in res.traceback  # the source's own rule says why
    attempts = ["!rm data/raw/regions.csv", "%rm data/raw/regions.csv", "!echo planted >> data/raw/regions.csv",
                "%%bash\nrm -f data/raw/regions.csv\n", "!mv data/raw/regions.csv scratch/stolen.csv",
                "files = !truncate -s 0 data/warehouse.duckdb", "!rm -rf data"]
    for code in attempts:
        res: Any = k.run(code)
        assert res.status == "error" and res.ename in ("PolicyViolation", "CellRejected"), (code, res)
    assert source_digests(project) == before
    assert "north" in k.run("!grep -c north data/raw/regions.csv; cat data/raw/regions.csv | head -2").stdout
    assert k.run("!echo fine > scratch/shell.txt").ok
    assert (project.root / "scratch" / "shell.txt").read_text().strip() == "fine"
