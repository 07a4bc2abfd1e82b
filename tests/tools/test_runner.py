"""``guard-kernel run``: a notebook executed in the guarded kernel, each exit status on a real kernel."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from guard_kernel.cli.main import main
from guard_kernel.demo import Workspace

READ = "import duckdb\nduckdb.connect('data/warehouse.duckdb').sql('SELECT count(*) FROM orders').fetchall()"
EXPORT = "import pandas as pd\npd.DataFrame({'a': [1]}).to_csv('run_export.csv')"


def notebook(tmp_path: Path, *cells: tuple[str, list[str]]) -> Path:
    nb = new_notebook(cells=[new_code_cell(code, metadata={"tags": tags}) for code, tags in cells],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    return path


def run(project: Workspace, tmp_path: Path, path: Path, *extra: str) -> int:
    return main(["run", str(path), "--policy", str(project.policy("default")), "--cwd", str(project.root),
                 "--audit-dir", str(tmp_path / "audit"), "--output", str(tmp_path / "out.ipynb"), *extra])


def test_expected_denials_exit_0_and_the_notebook_is_exactly_the_users(
        project: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = notebook(tmp_path, (READ, []), (EXPORT, ["raises-exception"]))
    assert run(project, tmp_path, path) == 0
    out = capsys.readouterr().out
    assert "DENIED" in out and "defaults.export" in out and "cells run  2" in out
    assert not (project.root / "run_export.csv").exists()
    executed = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    assert [c.source for c in executed.cells] == [READ, EXPORT]  # no injected cell
    audits = list((tmp_path / "audit").glob("*.jsonl"))
    assert len(audits) == 1 and str(audits[0]) in out


def test_an_unexpected_denial_exits_3_unless_allowed(project: Workspace, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = notebook(tmp_path, (READ, []), (EXPORT, []))
    assert run(project, tmp_path, path) == 3
    assert run(project, tmp_path, path, "--allow-denials") == 0
    assert not (project.root / "run_export.csv").exists()
    out = capsys.readouterr().out
    # each run names its own audit file, not the other run's in the same folder
    assert len(list((tmp_path / "audit").glob("*.jsonl"))) == 2
    assert out.count("audit      ") == 2


def test_a_failing_cell_exits_1(project: Workspace, tmp_path: Path) -> None:
    path = notebook(tmp_path, ("1 / 0", []))
    assert run(project, tmp_path, path) == 1


def test_bad_arguments_and_bad_policies_exit_2(project: Workspace, tmp_path: Path) -> None:
    path = notebook(tmp_path, ("1", []))
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\nmode: sometimes\n")
    assert main(["run", str(path), "--policy", str(bad), "--cwd", str(project.root)]) == 2
    assert main(["run", str(tmp_path / "missing.ipynb"), "--cwd", str(project.root)]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["run", str(path), "--actor", "robot"])
    assert exc.value.code == 2


def test_the_shipped_notebooks_run_clean(project: Workspace, tmp_path: Path) -> None:
    demo = Path(__file__).resolve().parents[2] / "notebooks" / "demo.ipynb"
    assert run(project, tmp_path, demo) == 0
