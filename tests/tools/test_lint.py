"""``guard-kernel policy check`` (and ``check-policy``): a linter for policy files.

Table-driven: policy text → the findings (``line``, ``field``, severity, a piece of the reason),
checked against the sample project's real DuckDB source where the case declares one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guard_kernel.cli.main import main
from guard_kernel.demo import Workspace
from guard_kernel.tools.lint import Finding, Severity, exit_code, lint_policy

REPO = Path(__file__).resolve().parents[2]
HEAD = "version: 1\nname: t\n"
SRC = "sources:\n  wh:\n    duckdb: data/warehouse.duckdb\n"

# (id, text after HEAD, expected findings: (line, field, severity, part of the reason))
CASES: list[tuple[str, str, list[tuple[int | None, str, str, str]]]] = [
    ("clean", "rules:\n  - {id: a, effect: deny, actions: [shell.exec]}\n", []),
    ("schema-error", "mode: sometimes\n", [(3, "mode", "error", "")]),
    ("unknown-action", "rules:\n  - {id: a, effect: deny, actions: [sql.drop]}\n",
     [(4, "rules[0].actions[0]", "error", "unknown action 'sql.drop'")]),
    ("bad-glob", "scratch: ['scratch/[z-a]']\n", [(None, "scratch", "error", "does not compile")]),
    ("bad-command-regex", "rules:\n  - {id: a, effect: deny, actions: [shell.exec], where: {command: '(('}}\n",
     [(4, "rules[0].where.command", "error", "does not compile")]),
    ("missing-source", "sources:\n  wh:\n    duckdb: nowhere/w.duckdb\n",
     [(4, "sources.wh.duckdb", "warning", "does not exist")]),
    ("unknown-table", SRC + "    tables: {clients: {deny_columns: [ssn]}}\n",
     [(4, "sources.wh.tables.clients", "warning", "no table 'clients'")]),
    ("unknown-column", SRC + "    tables: {customers: {deny_columns: [sssn]}}\n",
     [(4, "sources.wh.tables.customers.deny_columns", "warning", "no column 'sssn'")]),
    ("known-table-and-column", SRC + "    tables: {customers: {deny_columns: [ssn]}}\n", []),
    ("unknown-mask-column", SRC + "    tables: {customers: {mask_columns: {sssn: redact, email: hash}}}\n",
     [(4, "sources.wh.tables.customers.mask_columns", "warning", "no column 'sssn': the mask never applies")]),
    ("known-mask-column", SRC + "    tables: {customers: {mask_columns: {email: hash}}}\n", []),
    ("rule-column-of-no-table", SRC + "rules:\n  - {id: a, effect: deny, actions: [sql.read], "
                                      "where: {columns: [clients.ssn]}}\n",
     [(7, "rules[0].where.columns", "warning", "no source has a table 'clients'")]),
    ("only-sql-unknown", "rules:\n  - {id: a, effect: allow, actions: [sql.unknown]}\n",
     [(4, "rules[0].actions", "warning", "never decides")]),
    ("where-key-never-carried", "rules:\n  - {id: a, effect: deny, actions: [sql.read], where: {module: [os]}}\n",
     [(4, "rules[0].where.module", "warning", "never matches")]),
    ("actor-never-used", "applies_to: {actors: [human]}\nrules:\n  - {id: a, effect: deny, actors: [agent], "
                         "actions: [shell.exec]}\n",
     [(5, "rules[0].actors", "warning", "never use this policy")]),
    ("environment-never-used", "applies_to: {environments: [prod]}\nrules:\n  - {id: a, effect: deny, "
                               "environments: [dev], actions: [shell.exec]}\n",
     [(5, "rules[0].environments", "warning", "never use this policy")]),
    ("shadowed-allow", "rules:\n  - {id: no-net, effect: deny, actions: ['net.*']}\n"
                       "  - {id: api, effect: allow, actions: [net.connect], where: {host: api.example.com}}\n",
     [(5, "rules[1]", "warning", "deny rule no-net")]),
    ("deny-for-others-does-not-shadow", "rules:\n  - {id: d, effect: deny, actors: [agent], actions: ['net.*']}\n"
                                        "  - {id: a, effect: allow, actions: [net.connect]}\n", []),
    ("audit-deny-does-not-shadow", "rules:\n  - {id: d, effect: deny, mode: audit, actions: ['net.*']}\n"
                                   "  - {id: a, effect: allow, actions: [net.connect]}\n", []),
    ("narrow-deny-does-not-shadow", "rules:\n  - {id: d, effect: deny, actions: ['net.*'], where: {host: x.org}}\n"
                                    "  - {id: a, effect: allow, actions: [net.connect]}\n", []),
]


def check_findings(found: list[Finding], expected: list[tuple[int | None, str, str, str]]) -> None:
    """Each expected finding is there, in order, and nothing else."""
    got = [(f.line, f.field, f.severity.value, f.reason) for f in found]
    assert len(got) == len(expected), got
    for (line, field, sev, reason), (eline, efield, esev, ereason) in zip(got, expected, strict=True):
        assert (line, field, sev) == (eline, efield, esev), got
        assert ereason in reason, got


@pytest.mark.parametrize("text,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_lint(project: Workspace, text: str, expected: list[tuple[int | None, str, str, str]]) -> None:
    p = project.root / "policies" / "case.yaml"
    p.write_text(HEAD + text)
    check_findings(lint_policy(str(p), root=str(project.root)), expected)


def test_findings_read_file_line_field_reason(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(HEAD + "rules:\n  - {id: a, effect: allow, actions: [sql.unknown]}\n")
    (f,) = lint_policy(str(p))
    assert str(f).startswith(f"{p}:4: rules[0].actions: warning: ")


def test_shipped_policies_pass_from_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """They name the demo workspace's files: missing here, so warnings at most."""
    monkeypatch.chdir(REPO)
    for p in sorted((REPO / "policies").glob("*.yaml")):
        found = lint_policy(str(p))
        assert exit_code(found) == 0, [str(f) for f in found]
        assert all(f.severity is Severity.WARNING and "does not exist" in f.reason for f in found)


def test_shipped_policies_are_clean_in_the_demo_project(project: Workspace) -> None:
    for name in ("default", "analyst", "audit-only"):
        assert lint_policy(str(project.policy(name)), root=str(project.root)) == []


# ------------------------------------------------------------------ the command

CLI: list[tuple[str, list[str], str, int]] = [
    ("clean", [], "rules:\n  - {id: a, effect: deny, actions: [shell.exec]}\n", 0),
    ("warning", [], "rules:\n  - {id: a, effect: allow, actions: [sql.unknown]}\n", 0),
    ("warning-strict", ["--strict"], "rules:\n  - {id: a, effect: allow, actions: [sql.unknown]}\n", 1),
    ("error", [], "mode: sometimes\n", 1),
]


@pytest.mark.parametrize("verb", [["policy", "check"], ["check-policy"]], ids=["policy-check", "check-policy"])
@pytest.mark.parametrize("flags,text,code", [c[1:] for c in CLI], ids=[c[0] for c in CLI])
def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: list[str], flags: list[str],
                    text: str, code: int) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(HEAD + text)
    assert main([*verb, str(p), *flags]) == code
    out = capsys.readouterr()
    if code:
        assert f"{p}:" in out.out + out.err


def test_no_such_file_is_a_bad_invocation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(tmp_path / "nope.yaml")]) == 2
    assert "no such policy file" in capsys.readouterr().err


def test_worst_file_decides_and_json_lists_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(HEAD)
    bad.write_text(HEAD + "lock: maybe\n")
    assert main(["policy", "check", str(good), str(bad), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [d["ok"] for d in data] == [True, False]
    assert data[1]["findings"][0]["line"] == 3 and data[1]["findings"][0]["field"] == "lock"


def test_findings_in_a_parent_name_the_parents_file_and_index(tmp_path: Path) -> None:
    (tmp_path / "parent.yaml").write_text(HEAD + "rules:\n  - {id: p0, effect: deny, actions: [shell.exec]}\n"
                                          "  - {id: p1, effect: allow, actions: [sql.unknown]}\n")
    (tmp_path / "child.yaml").write_text("version: 1\nname: c\nextends: parent.yaml\nrules:\n"
                                         "  - {id: c0, effect: warn, actions: [shell.exec]}\n")
    found = [str(f) for f in lint_policy(str(tmp_path / "child.yaml"))]
    assert found == [f"{tmp_path / 'child.yaml'}:5: rules[0]: warning: warn rule 'c0' never takes effect: deny rule "
                     "p0 (parent.yaml:4) matches everything it does (any matching deny wins)",
                     f"{tmp_path / 'parent.yaml'}:5: rules[1].actions: warning: sql.unknown is always denied before "
                     "any rule: this rule never decides anything"]


@pytest.mark.parametrize("tables,expected", [
    ("{customers: {mask_columns: {ssn: last4}, deny_columns: [name]}}", []),
    ("{customers: {mask_columns: {sn: last4}}}",
     [(4, "sources.shop.tables.customers.mask_columns", "warning", "no column 'sn'")]),
    ("{clients: {mask_columns: {ssn: redact}}}", [(4, "sources.shop.tables.clients", "warning", "no table 'clients'")]),
])
def test_sqlite_source_columns_are_checked_read_only(tmp_path: Path, tables: str,
                                                     expected: list[tuple[int | None, str, str, str]]) -> None:
    import sqlite3

    db = tmp_path / "shop.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE customers (id INTEGER, name TEXT, ssn TEXT)")
    con.commit()
    con.close()
    before = db.read_bytes()
    p = tmp_path / "p.yaml"
    p.write_text(HEAD + f"sources:\n  shop:\n    url: sqlite:///shop.sqlite\n    tables: {tables}\n")
    check_findings(lint_policy(str(p), root=str(tmp_path)), expected)
    assert db.read_bytes() == before and not (tmp_path / "shop.sqlite-journal").exists()
