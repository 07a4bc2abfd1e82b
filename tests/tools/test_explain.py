"""``guard-kernel policy explain``: what an actor may and may not do, with the rules (file:line) that say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guard_kernel.cli.main import main
from guard_kernel.policy import load_policy
from guard_kernel.tools.explain import explain, render

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "policies" / "default.yaml"

# (id, policy, actor, lines the text must hold, lines it must not)
CASES: list[tuple[str, str, str, list[str], list[str]]] = [
    ("agent-default", "default", "agent", [
        "read (sql.read, file.read, sql.attach READ_ONLY) — allowed by default",
        "never: customers.ssn of source warehouse",
        "row cap: at most 500 rows per query into Python for agent (past it: truncate)",
        "write (sql.write, sql.ddl, sql.attach, sql.config, sql.extension, file.write, file.delete) — denied by default",
        "sources are read-only, whatever the rules say (default.yaml:",
        "never: SQL the guard cannot classify (sql.unknown)",
        "allowed anyway: the session's own tables, views and files, and paths under scratch (scratch/**)",
        "sql.export, export.dataframe where path scratch/**: allowed — rule scratch-writes (default.yaml:",
        "export.clipboard: denied — rule agent-no-egress (default.yaml:",
        "net.connect: denied — rule agent-no-egress",
        "shell.exec: denied — rule agent-no-egress",
        "python.import where module ctypes, cffi: denied — rule no-native-code (default.yaml:",
        "recorded as would_deny (audit mode: it runs) — rule dob-calibration",
        "rules for other actors or environments: human-shell (default.yaml:",
    ], ["shell.exec: allowed with a warning"]),
    ("human-default", "default", "human", [
        "row cap: at most 10000 rows per query into Python for human",
        "shell.exec: allowed with a warning — rule human-shell (default.yaml:",
        "rules for other actors or environments: agent-no-egress (default.yaml:",
    ], ["net.connect: denied — rule agent-no-egress"]),
    ("analyst", "analyst", "human", ["shell (shell.exec, spark.udf) — allowed by default"], []),
    ("audit-only", "audit-only", "agent", ["mode audit (nothing is blocked, denials are recorded)"], []),
]


@pytest.mark.parametrize("name,actor,present,absent", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_explain_text(name: str, actor: str, present: list[str], absent: list[str]) -> None:
    text = render(explain(load_policy(REPO / "policies" / f"{name}.yaml", root=str(REPO)), actor))
    for line in present:
        assert line in text, f"missing {line!r} in:\n{text}"
    for line in absent:
        assert line not in text, f"unexpected {line!r} in:\n{text}"


def test_every_rule_line_is_its_rule_line() -> None:
    pol = load_policy(DEFAULT, root=str(REPO))
    text = render(explain(pol, "agent"))
    lines = DEFAULT.read_text().splitlines()
    for r in pol.rules:
        if f"rule {r.id} (" in text:
            assert f"rule {r.id} (default.yaml:{r.line})" in text
            assert f"id: {r.id}" in lines[r.line - 1]


def test_environment_narrows_rules(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("version: 1\nname: e\nrules:\n  - {id: prod-no-net, effect: deny, environments: [prod], "
                 "actions: [net.connect]}\n")
    pol = load_policy(p)
    assert "prod-no-net" in render(explain(pol, "agent", "prod")).split("rules for other")[0]
    assert "rules for other actors or environments: prod-no-net" in render(explain(pol, "agent", "dev"))


def test_cli_text_json_and_bad_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", str(DEFAULT), "--actor", "agent"]) == 0
    assert "no-native-code" in capsys.readouterr().out
    assert main(["policy", "explain", str(DEFAULT), "--actor", "human", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["actor"] == "human" and data["max_rows"] == 10000
    shell = data["classes"]["shell"]["rules"]
    assert shell[0]["id"] == "human-shell" and shell[0]["effect"] == "warn" and shell[0]["file"].endswith("default.yaml")
    assert data["sources"][0]["protected_columns"] == {"customers": ["ssn"]}
    assert main(["policy", "explain", "nope.yaml"]) == 2


def test_cli_malformed_policy_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: b\nrules:\n  - {id: a, effect: deny, actions: [sql.drop]}\n")
    assert main(["policy", "explain", str(bad)]) == 2
    assert f"{bad}:4: rules[0].actions[0]: unknown action 'sql.drop'" in capsys.readouterr().err


def test_masked_columns_are_explained(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("version: 1\nname: m\nsources:\n  shop:\n    duckdb: shop.duckdb\n    tables:\n"
                 "      customers: {mask_columns: {ssn: last4, email: hash, dob: 'null'}, deny_columns: [card]}\n")
    data = explain(load_policy(p, root=str(tmp_path)), "agent")
    assert data["sources"][0]["masked_columns"] == {"customers": {"dob": "null", "email": "hash", "ssn": "last4"}}
    text = render(data)
    assert ("masked: customers.dob (as NULL), customers.email (as a keyed HMAC), customers.ssn (as ***+last 4) "
            "of source shop come back masked") in text, text
    assert "a read that filters, joins, groups or orders on them is denied (p.yaml:4)" in text, text
    assert "never: customers.card of source shop" in text
