"""The pre-flight (``guard_kernel.check``, ``guard-kernel check``): decided without executing anything.

Table-driven: each case is cells (or SQL) → the outcome and the rule ids of its denials, under the
shipped ``policies/default.yaml`` in a sample project.  That these answers are the live session's
is proved against a real kernel in ``tests/integration/test_preflight_agrees.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import guard_kernel
from guard_kernel.cli.main import main
from guard_kernel.demo import Workspace
from guard_kernel.policy import PolicyError
from guard_kernel.tools.preflight import Outcome, Report, check, check_cells

CONNECT = "import duckdb\ncon = duckdb.connect('data/warehouse.duckdb')"

# (id, cells, actor, outcome of the last cell, rule ids of its denials)
PYTHON: list[tuple[str, list[str], str, Outcome, list[str]]] = [
    ("plain-python", ["x = 1 + 1"], "agent", Outcome.ALLOW, []),
    ("read-source", [CONNECT, "con.sql('SELECT region, count(*) FROM customers GROUP BY 1').df()"], "agent",
     Outcome.ALLOW, []),
    ("write-source-next-cell", [CONNECT, "con.execute('DELETE FROM orders')"], "agent", Outcome.DENY,
     ["source:warehouse"]),
    ("own-table-next-cell", [CONNECT, "con.execute('CREATE TEMP TABLE mine AS SELECT id FROM orders')",
                             "con.execute('DELETE FROM mine WHERE id < 3')"], "agent", Outcome.ALLOW, []),
    ("ssn", [CONNECT, "con.sql('SELECT * FROM customers').df()"], "agent", Outcome.DENY,
     ["source:warehouse.customers.deny_columns"]),
    ("export-outside-scratch", ["import pandas as pd\npd.DataFrame().to_csv('out.csv')"], "agent", Outcome.DENY,
     ["defaults.export"]),
    ("export-to-scratch", ["import pandas as pd\npd.DataFrame().to_csv('scratch/out.csv')"], "agent",
     Outcome.ALLOW, []),
    ("shell-agent", ["!ls"], "agent", Outcome.DENY, ["agent-no-egress"]),
    ("shell-human-warns", ["!ls"], "human", Outcome.ALLOW, []),
    ("import-ctypes", ["import ctypes"], "human", Outcome.DENY, ["no-native-code"]),
    ("network", ["import urllib.request\nurllib.request.urlopen('https://example.com')"], "agent", Outcome.DENY,
     ["agent-no-egress"]),
    ("built-sql", [CONNECT, "q = 'DELETE ' + 'FROM orders'\ncon.execute(q)"], "agent", Outcome.RUNTIME, []),
    ("exec-built-string", ["exec('import o' + 's')"], "agent", Outcome.RUNTIME, []),
    ("computed-export-path", ["import pandas as pd\nname = 'x.csv'\npd.DataFrame().to_csv(name)"], "agent",
     Outcome.RUNTIME, []),
    ("link-then-write", ["import os\nos.symlink('/etc/hostname', 'scratch/l')\nopen('scratch/l', 'w')"], "agent",
     Outcome.RUNTIME, []),
    ("syntax-error", ["def f(:"], "agent", Outcome.RUNTIME, []),
    ("pandas-query-is-not-sql", ["import pandas as pd\ndf = pd.DataFrame({'a': [1]})\ncol = 'a'\n"
                                 "df.query(f'{col} > 0')"], "agent", Outcome.ALLOW, []),
    ("duckdb-query-built", [CONNECT, "q = 'SELECT 1'\ncon.query(q)"], "agent", Outcome.RUNTIME, []),
    ("getattr-value-is-fine", ["name = 'real'\nx = getattr(1, name)"], "agent", Outcome.ALLOW, []),
    ("getattr-called", ["import pandas as pd\nfmt = 'csv'\ngetattr(pd.DataFrame(), 'to_' + fmt)('x')"], "agent",
     Outcome.RUNTIME, []),
    ("denial-wins-over-runtime", ["exec(s)\n!ls"], "agent", Outcome.DENY, ["agent-no-egress"]),
]

# (id, sql, outcome of each statement, rule ids of the first denial)
SQL: list[tuple[str, str, list[Outcome], list[str]]] = [
    ("read", "SELECT id, amount FROM orders", [Outcome.ALLOW], []),
    ("write-source", "DELETE FROM orders", [Outcome.DENY], ["source:warehouse"]),
    ("statements", "SELECT 1; DROP TABLE orders", [Outcome.ALLOW, Outcome.DENY], ["source:warehouse"]),
    ("own-table", "CREATE TEMP TABLE t AS SELECT id FROM orders; DELETE FROM t", [Outcome.ALLOW, Outcome.ALLOW],
     []),
    ("ssn-star", "SELECT * FROM customers", [Outcome.DENY], ["source:warehouse.customers.deny_columns"]),
    ("unknown", "SELEKT 1", [Outcome.DENY], ["sql-unknown"]),
    ("copy-out", "COPY orders TO 'out.csv'", [Outcome.DENY], ["defaults.export"]),
    ("copy-scratch", "COPY orders TO 'scratch/o.csv'", [Outcome.ALLOW], []),
    ("raw-file", "SELECT count(*) FROM read_csv('data/raw/events.csv')", [Outcome.ALLOW], []),
]


@pytest.fixture(scope="module")
def ws(project: Workspace) -> Workspace:
    return project


def _denial_rules(decisions: Any) -> list[str]:
    return [r.id for d in decisions if d.blocked for r in d.rules]


@pytest.mark.parametrize("cells,actor,outcome,rules", [c[1:] for c in PYTHON], ids=[c[0] for c in PYTHON])
def test_python(ws: Workspace, cells: list[str], actor: str, outcome: Outcome, rules: list[str]) -> None:
    report = check_cells(cells, policy=ws.policy("default"), actor=actor, cwd=str(ws.root))
    last = report.units[-1]
    assert last.outcome is outcome, report.render()
    assert _denial_rules(last.decisions) == rules, report.render()
    assert all(u.outcome is Outcome.ALLOW for u in report.units[:-1]), report.render()
    assert report.allowed is (outcome is Outcome.ALLOW)


@pytest.mark.parametrize("text,outcomes,rules", [c[1:] for c in SQL], ids=[c[0] for c in SQL])
def test_sql(ws: Workspace, text: str, outcomes: list[Outcome], rules: list[str]) -> None:
    report = check(text, policy=ws.policy("default"), actor="agent", cwd=str(ws.root))
    assert [u.kind for u in report.units] == ["statement"] * len(outcomes)
    assert [u.outcome for u in report.units] == outcomes, report.render()
    denied = [u for u in report.units if u.outcome is Outcome.DENY]
    assert (_denial_rules(denied[0].decisions)[:1] if denied else []) == rules


def test_nothing_is_executed_or_recorded(ws: Workspace, tmp_path: Path) -> None:
    before = sorted(p.name for p in ws.root.rglob("*"))
    report = check("open('scratch/made.txt', 'w').write('x')\nimport os\nos.remove('data/raw/regions.csv')",
                   policy=ws.policy("default"), cwd=str(ws.root))
    assert report.units[0].outcome is Outcome.DENY
    assert sorted(p.name for p in ws.root.rglob("*")) == before  # no file made, none removed, no audit


def test_the_package_exports_check_and_report(ws: Workspace) -> None:
    r = guard_kernel.check("SELECT 1", policy=ws.policy("default"), actor="agent", cwd=str(ws.root))
    assert isinstance(r, guard_kernel.Report) and r.allowed and r.exit_code == 0
    assert "check" in guard_kernel.__all__ and "Report" in guard_kernel.__all__
    d = r.as_dict()
    assert d["allowed"] is True and d["units"][0]["decisions"][0]["action"] == "sql.read"
    assert d["row_cap"] == {"max_rows": 500, "on_exceed": "truncate"}
    assert "reads return at most 500 rows into Python for agent" in r.render()


def test_json_is_the_kernels_denial_shape(ws: Workspace) -> None:
    r = check("!ls", policy=ws.policy("default"), actor="agent", cwd=str(ws.root))
    unit = r.as_dict()["units"][0]
    assert unit["outcome"] == "deny"
    denial = unit["denial"]
    assert {"code", "effect", "action", "resource", "rules", "message", "hint", "line"} <= set(denial)
    assert denial["code"] == "policy_violation" and denial["rules"][0]["id"] == "agent-no-egress"
    assert denial["rules"][0]["file"] == "default.yaml" and denial["rules"][0]["line"] > 0


def test_a_policy_that_does_not_apply_is_an_error(ws: Workspace, tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("version: 1\nname: only-humans\napplies_to: {actors: [human]}\n")
    with pytest.raises(PolicyError):
        check("x = 1", policy=p, actor="agent")


def test_report_is_frozen(ws: Workspace) -> None:
    r = check("x = 1", policy=ws.policy("default"), cwd=str(ws.root))
    with pytest.raises(AttributeError):
        r.actor = "human"  # type: ignore[misc]
    assert isinstance(r, Report)


# ------------------------------------------------------------------ the command

CLI: list[tuple[str, list[str], int, str]] = [
    ("allowed-sql", ["--sql", "SELECT id FROM orders"], 0, "ALLOW"),
    ("denied-sql", ["--sql", "DELETE FROM orders"], 3, "source:warehouse"),
    ("denied-code", ["--code", "import ctypes"], 3, "no-native-code"),
    ("runtime-code", ["--code", "exec(s)"], 4, "decided at run time"),
    ("human-shell-warns", ["--code", "!ls", "--actor", "human"], 0, "human-shell"),
    ("no-input", [], 2, "exactly one"),
    ("two-inputs", ["--sql", "SELECT 1", "--code", "1"], 2, "exactly one"),
    ("no-such-file", ["nope.ipynb"], 2, "no such file"),
]


@pytest.mark.parametrize("argv,code,text", [c[1:] for c in CLI], ids=[c[0] for c in CLI])
def test_cli(ws: Workspace, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, text: str) -> None:
    rc = main(["check", "--policy", str(ws.policy("default")), "--cwd", str(ws.root), *argv])
    out = capsys.readouterr()
    assert rc == code, out
    assert text in out.out + out.err


def test_cli_bad_policy_is_bad_input(ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\nmode: sometimes\n")
    assert main(["check", "--policy", str(bad), "--code", "1"]) == 2
    assert f"{bad}:3: mode" in capsys.readouterr().err


def test_cli_notebook_json(ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nb = tmp_path / "n.ipynb"
    nb.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "# title"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": [CONNECT]},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": ["con.sql('SELECT ssn FROM customers').df()"]},
    ]}))
    rc = main(["check", "--policy", str(ws.policy("default")), "--cwd", str(ws.root), str(nb), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 3
    assert [u["outcome"] for u in data["units"]] == ["allow", "deny"]
    assert data["units"][1]["denial"]["rules"][0]["id"] == "source:warehouse.customers.deny_columns"


def test_cli_python_file(ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    py = tmp_path / "s.py"
    py.write_text("import os\nos.system('ls')\n")
    assert main(["check", "--policy", str(ws.policy("default")), "--actor", "agent", str(py)]) == 3
    assert "line 2" in capsys.readouterr().out


def test_cwd_is_restored(ws: Workspace) -> None:
    here = os.getcwd()
    check("open('x', 'w')", policy=ws.policy("default"), cwd=str(ws.root))
    assert os.getcwd() == here


def test_cli_reads_code_from_stdin(ws: Workspace, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("x = 1\nimport ctypes\n"))
    assert main(["check", "--policy", str(ws.policy("default")), "--code", "-"]) == 3
    assert "no-native-code" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("SELECT 1; DELETE FROM orders"))
    assert main(["check", "--policy", str(ws.policy("default")), "--cwd", str(ws.root), "--sql", "-", "--json"]) == 3
    assert [u["outcome"] for u in json.loads(capsys.readouterr().out)["units"]] == ["allow", "deny"]


MASK_POLICY = "version: 1\nname: masks\nextends: {parent}\nsources:\n  warehouse:\n    duckdb: data/warehouse.duckdb\n" \
              "    tables:\n      customers: {{deny_columns: [ssn], mask_columns: {{email: hash, name: redact}}}}\n"


@pytest.mark.parametrize("sql,outcome,masked,rule", [
    ("SELECT email FROM customers", Outcome.ALLOW, ["customers.email (hash)"], None),
    ("SELECT * EXCLUDE (ssn) FROM customers", Outcome.ALLOW, ["customers.email (hash)", "customers.name (redact)"],
     None),
    ("SELECT upper(x) FROM (SELECT name AS x FROM customers) t", Outcome.ALLOW, ["customers.name (redact)"], None),
    ("SELECT id FROM customers WHERE email LIKE 'a%'", Outcome.DENY, [], "source:warehouse.customers.mask_columns"),
    ("SELECT id FROM customers ORDER BY name", Outcome.DENY, [], "source:warehouse.customers.mask_columns"),
    ("SELECT ssn FROM customers", Outcome.DENY, [], "source:warehouse.customers.deny_columns"),
    ("SELECT id, region FROM customers", Outcome.ALLOW, [], None),
])
def test_masked_columns_are_said_to_be_masked_not_denied(ws: Workspace, tmp_path: Path, sql: str, outcome: Outcome,
                                                         masked: list[str], rule: str | None) -> None:
    p = tmp_path / "masks.yaml"
    p.write_text(MASK_POLICY.format(parent=ws.policy("default")))
    report = check(sql, policy=p, actor="agent", cwd=str(ws.root))
    (unit,) = report.units
    assert unit.outcome is outcome and list(unit.masked) == masked, report.render()
    assert _denial_rules(unit.decisions)[:1] == ([rule] if rule else [])
    if masked:
        assert f"MASKED: {', '.join(masked)} will come back masked" in report.render()
        assert json.loads(report.to_json())["units"][0]["masked"] == masked
