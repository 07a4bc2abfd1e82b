"""Display caps: DataFrames and long text in cell outputs are cut, with a note, and audited."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest
from conftest import GuardedKernel, kernel_env
from IPython.core.interactiveshell import InteractiveShell

from guard_kernel.audit import read_records
from guard_kernel.decision.guard import Guard
from guard_kernel.decision.messages import find_facts, schema
from guard_kernel.demo import Workspace
from guard_kernel.enforce.ipython import outputs
from guard_kernel.policy import parse_policy

POLICY = "version: 1\nname: out\nlimits: {display_rows: %d, display_bytes: %d}\n"


@pytest.fixture()
def shell(tmp_path: Path) -> Iterator[tuple[Any, Guard]]:
    ip = InteractiveShell.instance()
    g = Guard(parse_policy(POLICY % (10, 2000), "p.yaml", str(tmp_path)), actor="agent",
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
    assert len(_cuts(g)) == (1 if cut else 0)  # one per object shown, whatever its representations
    if cut:
        assert _cuts(g)[0]["total"] == n and _cuts(g)[0]["shown"] == 10


def test_long_text_is_cut(shell: tuple[Any, Guard]) -> None:
    ip, g = shell
    data, _ = ip.display_formatter.format("x" * 3000)
    shown, line = data["text/plain"].rsplit("\n", 1)
    assert shown.count("x") == 1999 and "output cut to 2000 of 3002 characters" in shown
    facts = find_facts(line)  # the note ends with the machine-readable line, like every guard message
    assert facts is not None and facts["code"] == "truncated" and facts["returned"] == 2000 and facts["total"] == 3002
    jsonschema.validate(facts, schema())
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


# ------------------------------------------------------- through a real kernel (jupyter_client)

KERNEL_POLICY = """version: 1
name: outputs-kernel
extends: {parent}
limits: {{display_rows: 5, display_bytes: 400}}
"""


@pytest.fixture(scope="module", params=["load_ext", "guarded-kernel"])
def k(request: pytest.FixtureRequest, kernel_factory: Callable[..., GuardedKernel], project: Workspace,
      tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardedKernel]:
    """A kernel with ``%load_ext guard_kernel``, and the guarded kernel started by its kernelspec
    (it installs the guard before IPython's first cell, outside any cell)."""
    tmp = tmp_path_factory.mktemp("outputs-policy")
    pol = tmp / "outputs.yaml"
    pol.write_text(KERNEL_POLICY.format(parent=project.policy("default")))
    if request.param == "load_ext":
        kernel = kernel_factory(policy=pol)
        assert kernel.load_result is not None and kernel.load_result.ok, kernel.load_result
        yield kernel
        return
    from jupyter_client.manager import start_new_kernel

    from guard_kernel.kernel import spec

    prefix = tmp / "prefix"
    spec.install(name="outputs-guarded", prefix=str(prefix), policy=str(pol), root=str(project.root), actor="agent")
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
    try:
        audit = tmp / "audit"
        km, kc = start_new_kernel(kernel_name="outputs-guarded", startup_timeout=60, cwd=str(project.root),
                                  env=kernel_env(None, "agent", audit))
    finally:
        if old is None:
            del os.environ["JUPYTER_PATH"]
        else:
            os.environ["JUPYTER_PATH"] = old
    kernel = GuardedKernel(km, kc, project, audit, pol, "agent")
    yield kernel
    kernel.shutdown()


def _kernel_cuts(k: GuardedKernel, mark: int) -> list[dict[str, Any]]:
    return [r for r in k.since(mark) if r["kind"] == "display"]


@pytest.mark.parametrize("code,stream,first,gone,total", [
    ("print('a' * 2999 + 'Z')", "stdout", "aaaa", "Z", 3001),
    ("for i in range(500): print(f'line{i:04d}')", "stdout", "line0000", "line0499", 4500),
    ("import sys; sys.stderr.write('e' * 999 + 'Z')", "stderr", "eeee", "Z", 1000),
])
def test_long_stream_output_is_cut_noted_and_audited(k: GuardedKernel, code: str, stream: str, first: str,
                                                     gone: str, total: int) -> None:
    mark = k.mark()
    res = k.run(code)
    assert res.ok, res
    text = res.stdout if stream == "stdout" else res.stderr
    note = "output cut to 400 of more than 400 characters (limits.display_bytes of the guard's policy)"
    assert note in text, res
    assert len(text) < 400 + 800, len(text)  # the cap, plus the note and its json line
    facts = find_facts(text)
    assert facts is not None and facts["reader"] == "display" and facts["unit"] == "characters", text
    jsonschema.validate(facts, schema())
    assert first in text and gone not in text, text
    cuts = _kernel_cuts(k, mark)
    assert [(c["resource"], c["shown"], c["total"], c["decision"]) for c in cuts] == [
        (stream, 400, total, "truncate")]


def test_each_cell_gets_its_own_budget_and_short_output_is_untouched(k: GuardedKernel) -> None:
    k.run("print('x' * 5000)")
    mark = k.mark()
    res = k.run("print('short'); print('y' * 393)")  # 400 characters: exactly the cap
    assert res.ok and res.stdout == "short\n" + "y" * 393 + "\n", res
    assert _kernel_cuts(k, mark) == []


@pytest.mark.parametrize("code,kind,needle,gone", [
    ("import pandas as pd; pd.DataFrame({'v': [f'row{i:03d}' for i in range(100)]})", "DataFrame", "row004", "row005"),
    ("import pandas as pd; pd.Series([f'row{i:03d}' for i in range(100)])", "Series", "row004", "row005"),
    ("import pyarrow as pa; pa.table({'v': [f'row{i:03d}' for i in range(100)]})", "Table", "row004", "row005"),
    ("import duckdb; duckdb.sql(\"SELECT 'row' || lpad(i::VARCHAR, 3, '0') AS v FROM range(100) t(i)\")",
     "DuckDBPyRelation", "row004", "row005"),
    ("'q' * 5000 + 'END'", "text", "qqqq", "END"),
])
def test_tables_and_long_results_are_capped_in_the_cell_value(k: GuardedKernel, code: str, kind: str, needle: str,
                                                              gone: str) -> None:
    mark = k.mark()
    res = k.run(code)
    assert res.ok, res
    for r in res.results:
        for mime, shown in r.items():
            if isinstance(shown, str):
                assert gone not in shown, (mime, shown[:2000])
    assert needle in res.text and "output cut to" in res.text, res
    assert [c["resource"] for c in _kernel_cuts(k, mark)] == [kind]


def test_small_tables_are_untouched(k: GuardedKernel) -> None:
    mark = k.mark()
    res = k.run("import pandas as pd; pd.DataFrame({'v': range(5)})")
    assert res.ok and "cut" not in res.text and "4" in res.text, res
    assert _kernel_cuts(k, mark) == []
