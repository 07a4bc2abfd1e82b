"""What a shell command would change, read from its words (table-driven)."""

from __future__ import annotations

import pytest

from guard_kernel.analysis.shell import shell_writes
from guard_kernel.policy import Action

W, D = Action.FILE_WRITE, Action.FILE_DELETE
CASES = [  # command → expected (action, path below /p)
    ("rm data/raw/regions.csv", [(D, "data/raw/regions.csv")]),
    ("rm -rf data", [(D, "data")]),
    ("X=1 sudo rm -f a b", [(D, "a"), (D, "b")]),
    ("echo x > data/raw/a.csv", [(W, "data/raw/a.csv")]),
    ("echo x >> notes.txt 2>/dev/null", [(W, "notes.txt")]),
    ("mv data/raw/a.csv scratch/a.csv", [(D, "data/raw/a.csv"), (W, "scratch/a.csv")]),
    ("cp a.csv b.csv scratch/", [(W, "scratch")]),
    ("sed -i s/a/b/ data/raw/a.csv", [(W, "data/raw/a.csv")]),
    ("dd if=/dev/zero of=data/warehouse.duckdb bs=1 count=1", [(W, "data/warehouse.duckdb")]),
    ("ls -la; truncate -s 0 data/raw/a.csv", [(D, "data/raw/a.csv")]),
    ("cat data/raw/a.csv | tee scratch/copy.csv", [(W, "scratch/copy.csv")]),
    # reads change nothing
    ("cat data/raw/a.csv | head -5", []),
    ("wc -l data/raw/*.csv", []),
    ("grep -c north data/raw/regions.csv", []),
    ("sed s/a/b/ data/raw/a.csv", []),
    ("ls data", []),
]


@pytest.mark.parametrize("command,expected", CASES, ids=[c for c, _ in CASES])
def test_shell_writes(command: str, expected: list[tuple[Action, str]]) -> None:
    assert shell_writes(command, "/p") == [(a, f"/p/{p}") for a, p in expected]
