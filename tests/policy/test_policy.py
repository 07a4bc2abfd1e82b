"""Policy loader: the shipped files load; every bad file is refused with file, line, field and reason."""

from __future__ import annotations

import copy
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guard_kernel.decision import policy_from_env
from guard_kernel.policy import ActionClass, PolicyError, builtin_policy, load_policy, parse_policy

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "policies").glob("*.yaml"))
HEAD = "version: 1\nname: t\n"

# (case id, policy text, expected line, expected field, words the reason must contain)
INVALID: list[tuple[str, str, int, str, tuple[str, ...]]] = [
    ("unknown-top-key", HEAD + "colour: blue\n", 3, "colour", ("unknown key", "colour")),
    ("wrong-version", "version: 2\nname: t\n", 1, "version", ("1",)),
    ("missing-name", "version: 1\n", 1, "name", ("name", "required")),
    ("bad-mode", HEAD + "mode: maybe\n", 3, "mode", ("maybe", "enforce")),
    ("bad-lock", HEAD + "lock: yes please\n", 3, "lock", ("boolean",)),
    ("bad-default-effect", HEAD + "defaults:\n  read: allow\n  write: sometimes\n", 5, "defaults.write",
     ("sometimes",)),
    ("unknown-default-class", HEAD + "defaults:\n  read: allow\n  delete: deny\n", 5, "defaults.delete",
     ("unknown key", "delete")),
    ("bad-default-message", HEAD + "defaults:\n  message: 'no {'\n", 4, "defaults.message", ("template",)),
    ("rule-without-id", HEAD + "rules:\n  - effect: deny\n    actions: [sql.read]\n", 4, "rules[0].id",
     ("id", "required")),
    ("rule-bad-effect", HEAD + "rules:\n  - id: a\n    effect: block\n    actions: [sql.read]\n", 5,
     "rules[0].effect", ("block",)),
    ("rule-unknown-action", HEAD + "rules:\n  - id: a\n    effect: deny\n    actions: [sql.read, sql.drop]\n",
     6, "rules[0].actions[1]", ("unknown action", "sql.drop")),
    ("rule-no-actions", HEAD + "rules:\n  - id: a\n    effect: deny\n    actions: []\n", 6,
     "rules[0].actions", ("non-empty",)),
    ("rule-duplicate-id", HEAD + "rules:\n  - id: a\n    effect: deny\n    actions: [sql.read]\n"
     "  - id: a\n    effect: allow\n    actions: [sql.read]\n", 7, "rules[1].id", ("duplicate", "a")),
    ("rule-bad-id", HEAD + "rules:\n  - id: 'a b'\n    effect: deny\n    actions: [sql.read]\n", 4,
     "rules[0].id", ("a b",)),
    ("rule-where-unknown-key", HEAD + "rules:\n  - id: a\n    effect: deny\n    actions: [sql.read]\n"
     "    where: {table: [x]}\n", 7, "rules[0].where.table", ("unknown key", "table")),
    ("rule-bad-actor", HEAD + "rules:\n  - id: a\n    effect: deny\n    actors: [robot]\n    actions: [sql.read]\n",
     6, "rules[0].actors[0]", ("robot",)),
    ("rule-bad-mode", HEAD + "rules:\n  - id: a\n    effect: deny\n    mode: dry\n    actions: [sql.read]\n",
     6, "rules[0].mode", ("dry",)),
    ("rule-bad-placeholder", HEAD + "rules:\n  - id: a\n    effect: deny\n    actions: [sql.read]\n"
     "    message: 'no {user}'\n", 7, "rules[0].message", ("placeholder", "user")),
    ("source-unknown-key", HEAD + "sources:\n  w:\n    duckdb: a.duckdb\n    file: x\n", 6, "sources.w.file",
     ("unknown key", "file")),
    ("table-unknown-key", HEAD + "sources:\n  w:\n    duckdb: a.duckdb\n    tables:\n      c:\n        deny: [ssn]\n",
     8, "sources.w.tables.c.deny", ("unknown key", "deny")),
    ("mask-unknown-kind", HEAD + "sources:\n  w:\n    duckdb: a.duckdb\n    tables:\n      c:\n"
     "        mask_columns: {ssn: scramble}\n", 8, "sources.w.tables.c.mask_columns.ssn", ("scramble",)),
    ("scratch-not-a-list", HEAD + "scratch: scratch/**\n", 3, "scratch", ("array",)),
    ("max-rows-zero", HEAD + "limits:\n  max_rows: {agent: 0}\n", 4, "limits.max_rows.agent", ("minimum",)),
    ("max-rows-unknown-actor", HEAD + "limits:\n  max_rows: {robot: 5}\n", 4, "limits.max_rows.robot",
     ("unknown key", "robot")),
    ("bad-on-exceed", HEAD + "limits:\n  on_exceed: explode\n", 4, "limits.on_exceed", ("explode",)),
    ("applies-to-bad-actor", HEAD + "applies_to:\n  actors: [robot]\n", 4, "applies_to.actors[0]", ("robot",)),
    ("not-yaml", HEAD + "rules: [\n  - id: a\n", 4, "", ("YAML",)),
    ("not-a-mapping", "- 1\n- 2\n", 1, "", ("mapping",)),
    ("empty-file", "", 1, "", ("mapping",)),
]


@pytest.mark.parametrize("text,line,field,words", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_policy_names_file_line_field(tmp_path: Path, text: str, line: int, field: str,
                                              words: tuple[str, ...]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path, root=str(tmp_path))
    err = info.value
    assert err.file == str(path)
    assert err.line == line
    assert err.field == field
    for w in words:
        assert w in err.reason
    # the one-line message a user sees carries all of it
    assert str(err).startswith(f"{path}:{line}: {field or '<top>'}: ")
    assert err._render_traceback_() == [f"PolicyError: {err}"]


def test_unreadable_policy_file_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(missing)
    assert info.value.file == str(missing)
    assert "cannot read" in info.value.reason


def test_env_naming_a_bad_file_is_an_error_not_the_builtin(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + "mode: maybe\n")
    with pytest.raises(PolicyError):
        policy_from_env({"GUARD_KERNEL_POLICY": str(bad)}, root=str(tmp_path))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_policies_load(path: Path, tmp_path: Path) -> None:
    pol = load_policy(path, root=str(tmp_path))
    assert pol.name and pol.description
    assert pol.file == str(path)
    assert len(pol.sha256) == 64
    assert pol.root == os.path.realpath(tmp_path)
    # every shipped policy keeps the warehouse read-only and hides ssn
    wh = pol.sources["warehouse"]
    assert wh.duckdb == os.path.realpath(tmp_path / "data" / "warehouse.duckdb")
    assert "ssn" in wh.tables["customers"].deny_columns
    assert pol.scratch and pol.scratch[0].matches(os.path.realpath(tmp_path / "scratch" / "x.csv"))
    assert path.read_text().startswith("#"), "each shipped policy starts with a comment saying who it is for"


def test_shipped_policies_are_the_expected_set() -> None:
    assert {p.stem for p in SHIPPED} >= {"default", "analyst", "audit-only"}


def test_default_policy_model(tmp_path: Path) -> None:
    pol = load_policy(REPO / "policies" / "default.yaml", root=str(tmp_path))
    assert (pol.name, pol.mode, pol.lock) == ("agent-default", "enforce", True)
    assert pol.defaults[ActionClass.READ] == "allow"
    assert all(pol.defaults[c] == "deny" for c in (ActionClass.WRITE, ActionClass.EXPORT, ActionClass.NETWORK,
                                                    ActionClass.SHELL))
    assert pol.default_for(ActionClass.NONE) == "allow"
    assert pol.limits.for_actor("agent") == 500 and pol.limits.for_actor("human") == 10000
    assert pol.limits.on_exceed == "truncate"
    rules = {r.id: r for r in pol.rules}
    assert rules["dob-calibration"].mode == "audit"
    assert rules["agent-no-egress"].actors == ("agent",)
    # rule lines point at the rule in the file, for the audit's file:line
    text = (REPO / "policies" / "default.yaml").read_text().splitlines()
    for r in pol.rules:
        assert f"id: {r.id}" in text[r.line - 1]
        assert r.ref == f"{r.id} (default.yaml:{r.line})"
    raw = pol.sources["raw"].paths[0]
    assert raw.matches(os.path.realpath(tmp_path / "data" / "raw" / "deep" / "x.csv"))
    assert not raw.matches(os.path.realpath(tmp_path / "data" / "rawish.csv"))


def test_builtin_policy_is_strict(tmp_path: Path) -> None:
    pol = builtin_policy(str(tmp_path))
    assert pol.file.startswith("<builtin")
    assert pol.mode == "enforce" and pol.lock
    assert all(pol.defaults[c] == "deny" for c in (ActionClass.WRITE, ActionClass.EXPORT, ActionClass.NETWORK,
                                                    ActionClass.SHELL))
    assert policy_from_env({}, root=str(tmp_path)).name == pol.name


# (case id, policy text, check on the parsed policy)
VALID: list[tuple[str, str, str]] = [
    ("minimal", HEAD, "p.mode == 'enforce' and p.lock and p.rules == ()"),
    ("integer-max-rows", HEAD + "limits:\n  max_rows: 7\n", "p.limits.for_actor('agent') == 7 == p.limits.for_actor('human')"),
    ("partial-max-rows", HEAD + "limits:\n  max_rows: {human: 9}\n",
     "p.limits.for_actor('human') == 9 and p.limits.for_actor('agent') == 500"),
    ("audit-mode", HEAD + "mode: audit\nlock: false\n", "p.mode == 'audit' and not p.lock"),
    ("where-scalars", HEAD + "rules:\n  - id: r\n    effect: deny\n    actions: [python.import]\n"
     "    where: {module: ctypes, path: 'x/**', host: example.com, command: '^rm'}\n",
     "p.rules[0].where.modules == ('ctypes',) and p.rules[0].where.hosts == ('example.com',)"),
    ("wildcard-actions", HEAD + "rules:\n  - id: r\n    effect: deny\n    actions: ['export.*', 'net.*', '*']\n",
     "p.rules[0].actions == ('export.*', 'net.*', '*')"),
    ("any-actor", HEAD + "rules:\n  - id: r\n    effect: warn\n    actors: ['*']\n    actions: [shell.exec]\n",
     "p.rules[0].actors == ()"),
    ("applies-to", HEAD + "applies_to:\n  environments: [ci]\n  actors: [agent]\n",
     "p.applies_to_environments == ('ci',) and p.applies_to_actors == ('agent',)"),
    ("case-folded-columns", HEAD + "sources:\n  w:\n    duckdb: w.duckdb\n    tables:\n      Customers:\n"
     "        deny_columns: [SSN]\n", "p.sources['w'].tables['customers'].deny_columns == frozenset({'ssn'})"),
    ("mask-columns", HEAD + "sources:\n  w:\n    duckdb: w.duckdb\n    tables:\n      Customers:\n"
     "        mask_columns: {SSN: last4, email: hash, dob: 'null'}\n",
     "dict(p.sources['w'].tables['customers'].mask_columns) == {'ssn': 'last4', 'email': 'hash', 'dob': 'null'}"
     " and p.mask_columns() == {'customers': {'ssn': 'last4', 'email': 'hash', 'dob': 'null'}}"),
    ("display-limits", HEAD + "limits: {display_rows: 20, display_bytes: 999}\n",
     "p.limits.display_rows == 20 and p.limits.display_bytes == 999"),
    ("display-defaults", HEAD, "p.limits.display_rows == 50 and p.limits.display_bytes == 100000"),
    ("message-placeholders", HEAD + "defaults:\n  message: '{actor} {action} {resource} {policy} {rule} {environment}'\n",
     "'{actor}' in p.message"),
]


@pytest.mark.parametrize("text,check", [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_policy(tmp_path: Path, text: str, check: str) -> None:
    p = parse_policy(text, "valid.yaml", str(tmp_path))
    assert eval(check, {}, {"p": p}), check


def test_same_text_same_hash_and_file_change_changes_it(tmp_path: Path) -> None:
    a = parse_policy(HEAD, "a.yaml", str(tmp_path))
    b = parse_policy(HEAD, "b.yaml", str(tmp_path))
    c = parse_policy(HEAD + "description: changed\n", "a.yaml", str(tmp_path))
    assert a.sha256 == b.sha256 != c.sha256
    assert a.ref() == {"name": "t", "file": "a.yaml", "sha256": a.sha256}


# ------------------------------------------------------------ the command line


def test_check_policy_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from guard_kernel.cli.main import main

    assert main(["check-policy", str(REPO / "policies" / "default.yaml"), "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "agent-default" in out and "agent-no-egress (default.yaml:" in out and "customers.ssn" in out

    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + "rules:\n  - id: a\n    effect: deny\n    actions: [sql.drop]\n")
    assert main(["check-policy", str(bad)]) == 1  # like a linter: 1 errors, 2 a bad invocation
    err = capsys.readouterr().err
    assert f"{bad}:6: rules[0].actions[0]: unknown action 'sql.drop'" in err


def test_check_policy_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from guard_kernel.cli.main import main

    assert main(["check-policy", str(REPO / "policies" / "analyst.yaml"), "--root", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "analyst" and data["sources"]["warehouse"]["tables"]["customers"] == ["ssn"]


MUTANT_VALUES: list[Any] = [None, True, False, 0, 1, -1, 1.0, 1.5, "", "x", "deny", "agent", "*", [], ["x"], [""],
                            [1], {}, {"x": 1}, "file.write"]


def _mutants(doc: Any, n: int, seed: int) -> Iterator[Any]:
    """*n* copies of *doc*, each with 1–3 values replaced, removed or added somewhere in the tree."""
    rng = random.Random(seed)
    for _ in range(n):
        d = copy.deepcopy(doc)
        for _ in range(rng.randint(1, 3)):
            parent: Any = None
            key: Any = None
            node = d
            while isinstance(node, (dict, list)) and node and (parent is None or rng.random() < 0.7):
                key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
                parent, node = node, node[key]
            if parent is None:
                continue
            r = rng.random()
            if r < 0.6:
                parent[key] = copy.deepcopy(rng.choice(MUTANT_VALUES))
            elif r < 0.8:
                del parent[key]
            elif isinstance(parent, dict):
                parent[rng.choice(["zzz", "mode", "lock", "id", "paths", "agent", 1])] = rng.choice(MUTANT_VALUES)
        yield d


@pytest.mark.parametrize("path", [*SHIPPED, REPO / "guard_kernel" / "policy" / "default_policy.yaml"], ids=lambda p: p.name)
def test_quick_schema_check_never_accepts_what_jsonschema_rejects(path: Path) -> None:
    import jsonschema
    import yaml

    from guard_kernel.policy import schema
    from guard_kernel.policy.schema import quick_valid

    validator = jsonschema.Draft202012Validator(schema())
    doc = yaml.safe_load(path.read_text())
    assert quick_valid(doc, schema()) and validator.is_valid(doc)
    verdicts = [(quick_valid(m, schema()), validator.is_valid(m)) for m in _mutants(doc, 300, seed=len(path.name))]
    assert [v for v in verdicts if v[0] and not v[1]] == []  # never valid when jsonschema says invalid
    assert sum(1 for q, j in verdicts if q == j) == len(verdicts)  # and in practice the same answer


YAML_CHECK = r"""
import guard_kernel.policy, yaml, yaml.reader
assert type(yaml.reader.Reader.NON_PRINTABLE).__name__ == "_LazyPattern"
assert yaml.load('a: "\\x01"', Loader=yaml.SafeLoader) == {"a": "\x01"}
try:
    yaml.load("a: \x01", Loader=yaml.SafeLoader)
except yaml.YAMLError as e:
    assert "special characters" in str(e), e
else:
    raise AssertionError("a control character was accepted")
"""


def test_yaml_is_imported_with_its_unicode_pattern_deferred_and_working() -> None:
    """guard_kernel._yaml defers one costly pattern; PyYAML's pure reader still refuses control characters."""
    proc = subprocess.run([sys.executable, "-c", YAML_CHECK], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
