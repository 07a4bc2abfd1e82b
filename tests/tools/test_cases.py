"""``guard-kernel policy test``: the shipped cases (policies/tests/) as pytest cases, and the runner itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard_kernel.cli.main import main
from guard_kernel.policy import PolicyError, load_policy
from guard_kernel.tools.cases import Case, default_cases_file, load_cases, run_case

REPO = Path(__file__).resolve().parents[2]
POLICIES = sorted((REPO / "policies").glob("*.yaml"))
CLASSES = {"read": ("sql.read", "file.read"), "write": ("sql.write", "sql.ddl", "file.write", "file.delete"),
           "export": ("export.", "sql.export"), "network": ("net.",), "shell": ("shell.",), "imports": ("python.",)}


def _shipped() -> list[object]:
    out: list[object] = []
    for p in POLICIES:
        for c in load_cases(default_cases_file(str(p))):
            out.append(pytest.param(p, c, id=f"{p.stem}::{c.name}"))
    return out


@pytest.mark.parametrize("policy,case", _shipped())
def test_shipped_case(monkeypatch: pytest.MonkeyPatch, policy: Path, case: Case) -> None:
    monkeypatch.chdir(REPO)
    r = run_case(load_policy(policy, root=str(REPO)), case)
    assert r.passed, r.explain()


@pytest.mark.parametrize("policy", POLICIES, ids=[p.stem for p in POLICIES])
def test_every_policy_has_enough_cases_of_every_kind(monkeypatch: pytest.MonkeyPatch, policy: Path) -> None:
    """At least 25 cases, allowed and denied ones, touching every action class."""
    monkeypatch.chdir(REPO)
    cases = load_cases(default_cases_file(str(policy)))
    assert len(cases) >= 25
    assert {"allow"} <= {c.effect for c in cases}
    assert {"deny", "would_deny"} & {c.effect for c in cases}
    pol = load_policy(policy, root=str(REPO))
    actions = {d.action.value for c in cases for d in run_case(pol, c).report.decisions}
    for cls, prefixes in CLASSES.items():
        assert any(a.startswith(prefixes) for a in actions), f"no case of class {cls}"


# ------------------------------------------------------------------ the runner

BAD: list[tuple[str, str, str]] = [
    ("not-a-list", "name: x\n", ":1: <top>: a cases file is a YAML list"),
    ("unknown-key", "- {name: a, sql: SELECT 1, expect: {effect: allow}, actors: [agent]}\n",
     ":1: [0].actors: unknown key"),
    ("no-code", "- {name: a, expect: {effect: allow}}\n", ":1: [0].code: give exactly one of code or sql"),
    ("both", "- {name: a, code: '1', sql: SELECT 1, expect: {effect: allow}}\n", ":1: [0].code:"),
    ("bad-effect", "- name: a\n  sql: SELECT 1\n- name: b\n  sql: SELECT 1\n  expect: {effect: maybe}\n",
     ":1: [0].expect: required"),
    ("bad-actor", "- {name: a, actor: robot, sql: SELECT 1, expect: {effect: allow}}\n", ":1: [0].actor: must be"),
    ("second-case-line", "- {name: a, sql: SELECT 1, expect: {effect: allow}}\n- {name: b, sql: 1, expect: {}}\n",
     ":2: [1]"),
    ("bad-yaml", "- {name: a\n", ":2: <top>: not valid YAML"),
]


@pytest.mark.parametrize("text,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_cases_file(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "cases.yaml"
    f.write_text(text)
    with pytest.raises(PolicyError) as exc:
        load_cases(str(f))
    assert message in str(exc.value).replace(str(f), ""), str(exc.value)


def _policy_with_cases(tmp_path: Path, cases: str) -> Path:
    (tmp_path / "tests").mkdir()
    p = tmp_path / "p.yaml"
    p.write_text("version: 1\nname: p\nrules:\n  - {id: no-shell, effect: deny, actions: [shell.exec]}\n")
    (tmp_path / "tests" / "p.yaml").write_text(cases)
    return p


def test_cli_reports_like_pytest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _policy_with_cases(tmp_path, "- {name: ok, code: '!ls', expect: {effect: deny, rules: [no-shell]}}\n"
                                     "- {name: wrong, code: '!ls', expect: {effect: allow}}\n"
                                     "- {name: wrong-rule, code: '!ls', expect: {effect: deny, rules: [other]}}\n")
    assert main(["policy", "test", str(p), "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert ".FF" in out
    assert "FAILED" in out and "p.yaml:2::wrong: expected allow, got deny by no-shell" in out
    assert "p.yaml:3::wrong-rule: expected deny by other, got deny by no-shell" in out
    assert out.rstrip().splitlines()[-1] == "1 passed, 2 failed"


def test_cli_all_passed_verbose_and_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _policy_with_cases(tmp_path, "- {name: shell, code: '!ls', expect: {effect: deny}}\n"
                                     "- {name: read, sql: SELECT 1, expect: {effect: allow}}\n")
    assert main(["policy", "test", str(p), "-v", "-k", "read"]) == 0
    out = capsys.readouterr().out
    assert "::read PASSED" in out and "::shell" not in out and out.rstrip().endswith("1 passed, 0 failed")


def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _policy_with_cases(tmp_path, "- {name: a}\n")
    assert main(["policy", "test", str(p)]) == 2
    assert ":1: [0].code:" in capsys.readouterr().err
    assert main(["policy", "test", str(p), str(tmp_path / "missing.yaml")]) == 2


def test_cli_malformed_policy_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _policy_with_cases(tmp_path, "- {name: a, sql: SELECT 1, expect: {effect: allow}}\n")
    p.write_text("version: 1\nname: p\nlock: perhaps\n")
    assert main(["policy", "test", str(p)]) == 2
    assert f"{p}:3: lock" in capsys.readouterr().err
