"""Display caps: DataFrames and long text in cell outputs are cut, with a note, and audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

from guard_kernel.audit import read_records
from guard_kernel.decision.guard import Guard
from guard_kernel.enforce.ipython import outputs
from guard_kernel.policy import parse_policy

POLICY = "version: 1\nname: out\nlimits: {display_rows: %d, display_bytes: %d}\n"


@pytest.fixture()
def shell(tmp_path: Path) -> Iterator[tuple[Any, Guard]]:
    ip = InteractiveShell.instance()
    g = Guard(parse_policy(POLICY % (10, 200), "p.yaml", str(tmp_path)), actor="agent",
              audit_dir=str(tmp_path / "audit"), notify=lambda d: None)
    undo = outputs.install(ip, g)
    try:
        yield ip, g
    finally:
        undo()
        g.close()


def _cuts(g: Guard) -> list[dict[str, Any]]:
    return [r for r in read_records(g.audit_path) if r["kind"] == "display"]


@pytest.mark.parametrize("n,cut", [(5, False), (10, False), (11, True), (5000, True)])
def test_dataframe_rows_are_capped(shell: tuple[Any, Guard], n: int, cut: bool) -> None:
    ip, g = shell
    df = pd.DataFrame({"secret": [f"value{i:05d}" for i in range(n)]})
    data, _ = ip.display_formatter.format(df)
    for mime in ("text/plain", "text/html"):
        assert f"value{min(n, 10) - 1:05d}" in data[mime]
        assert "value00010" not in data[mime]
        assert ("output cut to 10 of" in data[mime]) is cut
    assert len(_cuts(g)) == (2 if cut else 0)  # one per representation shown
    if cut:
        assert _cuts(g)[0]["total"] == n and _cuts(g)[0]["shown"] == 10


def test_long_text_is_cut(shell: tuple[Any, Guard]) -> None:
    ip, g = shell
    data, _ = ip.display_formatter.format("x" * 1000)
    assert data["text/plain"].count("x") == 199 and "output cut to 200 of 1002 characters" in data["text/plain"]
    data, _ = ip.display_formatter.format("short")
    assert data["text/plain"] == "'short'"
    assert [r["unit"] for r in _cuts(g)] == ["characters"]


def test_undo_restores_pandas_rendering(tmp_path: Path) -> None:
    ip = InteractiveShell.instance()
    g = Guard(parse_policy(POLICY % (1, 10), "p.yaml", str(tmp_path)), actor="agent",
              audit_dir=str(tmp_path / "audit"), notify=lambda d: None)
    outputs.install(ip, g)()
    g.close()
    data, _ = ip.display_formatter.format(pd.DataFrame({"a": range(5)}))
    assert "cut" not in data["text/plain"]
