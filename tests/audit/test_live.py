"""The live audit notebook: rewritten atomically after every cell of a real kernel; off by policy."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nbformat
from conftest import GuardedKernel, blocked

from guard_kernel.audit.chain import read_records
from guard_kernel.audit.live import LiveNotebook, notebook_path
from guard_kernel.demo import Workspace

SMALL = Path(__file__).parent / "data" / "small-session.jsonl"


def _notebook(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.reads(path.read_text(), as_version=4)
    nbformat.validate(nb)
    return nb


def test_it_reads_only_what_the_audit_gained_and_waits_for_an_unfinished_line(tmp_path: Path) -> None:
    audit = tmp_path / "s.jsonl"
    lines = SMALL.read_bytes().splitlines(keepends=True)
    audit.write_bytes(b"".join(lines[:3]) + lines[3][:30])  # a record being written
    live = LiveNotebook(str(audit))
    assert live.update() and live.path == notebook_path(str(audit)) == str(tmp_path / "s.ipynb")
    nb = _notebook(tmp_path / "s.ipynb")
    assert nb.metadata.guard_kernel.last_seq == 3 and nb.metadata.guard_kernel.chain_ok
    audit.write_bytes(b"".join(lines))
    assert live.update()
    nb = _notebook(tmp_path / "s.ipynb")
    assert nb.metadata.guard_kernel.last_seq == len(lines) and nb.metadata.guard_kernel.chain_ok
    assert [c.execution_count for c in nb.cells if c.cell_type == "code"] == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ipynb", "s.jsonl"]  # no temporary file left


def test_a_notebook_that_cannot_be_written_does_not_stop_the_session(tmp_path: Path, capsys: object) -> None:
    live = LiveNotebook(str(tmp_path / "gone" / "s.jsonl"))
    assert live.update() is False and live.failure
    assert live.update() is False


def _policy(ws: Workspace, tmp_path: Path, extra: str) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(ws.policy("default").read_text() + extra)
    return p


def test_a_real_kernel_rewrites_its_audit_notebook_after_every_cell(
        kernel_factory: Callable[..., GuardedKernel], tmp_path: Path) -> None:
    k = kernel_factory(policy="default", actor="agent", audit_dir=tmp_path / "audit")
    assert k.load_result is not None and k.load_result.ok, k.load_result
    (jsonl,) = k.audit_files()
    live = Path(notebook_path(str(jsonl)))
    assert k.run("import duckdb\ncon = duckdb.connect('data/warehouse.duckdb')\n"
                 "url = 'postgresql://u:s3cr3t-Pa55-7f2c@db/x'").ok
    nb = _notebook(live)
    cell = [r for r in read_records(str(jsonl)) if r["kind"] == "cell"][-1]
    assert nb.metadata.guard_kernel.last_hash == cell["hash"]  # made right after the cell's record
    assert "s3cr3t-Pa55-7f2c" not in live.read_text() and "u:***@db" in live.read_text()
    assert blocked(k.run("con.sql('SELECT ssn FROM customers').fetchall()"))
    nb = _notebook(live)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[-1].source.startswith("con.sql('SELECT ssn") and "guard-denied" in code[-1].metadata.tags
    assert "ssn" in nb.cells[1].source and "Denials (1)" in nb.cells[1].source
    assert sorted(p.name for p in jsonl.parent.iterdir()) == sorted([jsonl.name, live.name])
    shown = k.run("%guard audit")
    assert f"live notebook: {live}" in shown.stdout, shown
    assert json.loads(k.run("%guard audit --json").stdout)["live_notebook"] == str(live)


def test_the_policy_turns_it_off(kernel_factory: Callable[..., GuardedKernel], project: Workspace,
                                 tmp_path: Path) -> None:
    pol = _policy(project, tmp_path, "\naudit: {live_notebook: false}\n")
    k = kernel_factory(policy=pol, actor="agent", audit_dir=tmp_path / "audit")
    assert k.load_result is not None and k.load_result.ok, k.load_result
    assert k.run("x = 1").ok
    assert [p.suffix for p in (tmp_path / "audit").iterdir()] == [".jsonl"]
    assert "live notebook: off" in k.run("%guard audit").stdout


def test_in_the_guarded_kernel_the_launcher_that_owns_the_audit_writes_it(project: Workspace, tmp_path: Path) -> None:
    from guard_kernel.cli.main import main

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                          "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("import duckdb\ncon = duckdb.connect('data/warehouse.duckdb')\n"
                                          "con.sql('SELECT count(*) FROM orders').fetchall()"),
                nbformat.v4.new_code_cell("con.sql('SELECT ssn FROM customers').fetchall()",
                                          metadata={"tags": ["raises-exception"]})]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    assert main(["run", str(path), "--policy", str(project.policy("default")), "--cwd", str(project.root),
                 "--audit-dir", str(tmp_path / "audit"), "--output", str(tmp_path / "out.ipynb")]) == 0
    (jsonl,) = (tmp_path / "audit").glob("*.jsonl")
    live = _notebook(Path(notebook_path(str(jsonl))))
    code = [c for c in live.cells if c.cell_type == "code"]
    assert [c.metadata.tags for c in code] == [[], ["guard-denied"]]
    assert live.metadata.guard_kernel.last_seq >= 3 and live.metadata.guard_kernel.chain_ok


class _Counting(LiveNotebook):
    """A live notebook that counts its rewrites (the launcher's Background thread is what is tested)."""

    rewrites = 0

    def update(self) -> bool:
        type(self).rewrites += 1
        return super().update()


def test_a_burst_of_cells_makes_one_rewrite_after_it_and_stop_writes_the_last(tmp_path: Path) -> None:
    from guard_kernel.audit.live import Background

    audit = tmp_path / "s.jsonl"
    lines = SMALL.read_bytes().splitlines(keepends=True)
    audit.write_bytes(lines[0])
    bg = Background(str(audit), settle=60, at_most=60)  # nothing is quiet for a minute here: only stop() writes
    bg.live = _Counting(str(audit))
    for line in lines[1:]:  # a burst: each cell's record, then a poke
        with audit.open("ab") as f:
            f.write(line)
        bg.poke()
    bg.stop()
    assert _Counting.rewrites == 1  # one rewrite for the whole burst, at stop
    nb = _notebook(Path(notebook_path(str(audit))))
    assert nb.metadata.guard_kernel.last_seq == len(lines) and nb.metadata.guard_kernel.chain_ok
