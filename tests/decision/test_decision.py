"""The decision function, table-driven: one request, one policy, one actor → effect and deciding rule."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from guard_kernel.decision import Decision, Effect, Request, StarRef, TableRef, decide
from guard_kernel.policy import Action, Policy, load_policy, parse_policy
from guard_kernel.policy.paths import resolve

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("proj")
    (r / "data" / "raw").mkdir(parents=True)
    (r / "scratch").mkdir()
    (r / "data" / "raw" / "events.csv").write_text("a\n1\n")
    (r / "data" / "warehouse.duckdb").write_bytes(b"")
    return Path(resolve(r))


@pytest.fixture(scope="module")
def policies(root: Path) -> dict[str, Policy]:
    return {name: load_policy(REPO / "policies" / f"{name}.yaml", root=str(root))
            for name in ("default", "analyst", "audit-only")}


CUST = TableRef("customers", source="warehouse")
ORDERS = TableRef("orders", source="warehouse")
MINE = TableRef("mine")


def sql_read(*cols: str, tables: tuple[TableRef, ...] = (CUST,), stars: tuple[StarRef, ...] = (),
             patterns: tuple[str, ...] = ()) -> Request:
    return Request(Action.SQL_READ, ", ".join(str(t) for t in tables), tables=tables, columns=cols, stars=stars,
                   column_patterns=patterns)


def path_req(action: Action, rel: str) -> Request:
    """A file-like request; the path is made absolute against the project root in the test."""
    return Request(action, rel, path=rel)


# (case id, policy, actor, request, expected effect, expected first rule id (prefix match))
CASES: list[tuple[str, str, str, Request, Effect, str]] = [
    # reads
    ("read-named-columns", "default", "agent", sql_read("customers.id", "customers.region"), Effect.ALLOW, "defaults.read"),
    ("read-ssn", "default", "agent", sql_read("customers.ssn"), Effect.DENY, "source:warehouse.customers.deny_columns"),
    ("read-ssn-unqualified", "default", "agent", sql_read("ssn"), Effect.DENY, "source:warehouse.customers.deny_columns"),
    ("read-ssn-in-where-only", "default", "human", sql_read("customers.id", "customers.ssn"), Effect.DENY,
     "source:warehouse.customers.deny_columns"),
    ("select-star", "default", "agent", sql_read(stars=(StarRef(),)), Effect.DENY,
     "source:warehouse.customers.deny_columns"),
    ("select-customers-star", "default", "agent", sql_read(stars=(StarRef("customers"),)), Effect.DENY,
     "source:warehouse.customers.deny_columns"),
    ("select-star-exclude-ssn", "default", "agent",
     sql_read(stars=(StarRef(None, frozenset({"ssn", "dob"})),)), Effect.ALLOW, "defaults.read"),
    ("star-of-other-table", "default", "agent", sql_read(tables=(CUST, ORDERS), stars=(StarRef("orders"),)),
     Effect.ALLOW, "defaults.read"),
    ("columns-regex-hits-ssn", "default", "agent", sql_read(patterns=("^s",)), Effect.DENY,
     "source:warehouse.customers.deny_columns"),
    ("columns-regex-misses", "default", "agent", sql_read(patterns=("^region$",)), Effect.ALLOW, "defaults.read"),
    ("ssn-of-a-table-not-in-source", "default", "agent", sql_read("people.ssn", tables=(TableRef("people"),)),
     Effect.ALLOW, "defaults.read"),
    ("dob-is-audited-not-denied", "default", "agent", sql_read("customers.dob"), Effect.WOULD_DENY, "dob-calibration"),
    ("dob-copied-by-ctas-is-audited", "default", "agent",
     Request(Action.SQL_DDL, "temp.x", tables=(CUST, TableRef("x", "temp")), written=(TableRef("x", "temp"),),
             columns=("customers.dob",), owned=True), Effect.WOULD_DENY, "dob-calibration"),
    ("ssn-denied-for-analyst-too", "analyst", "human", sql_read("customers.ssn"), Effect.DENY,
     "source:warehouse.customers.deny_columns"),
    # SQL writes
    ("delete-source-table", "default", "agent",
     Request(Action.SQL_WRITE, "customers", tables=(CUST,), written=(CUST,)), Effect.DENY, "source:warehouse"),
    ("drop-source-table-analyst", "analyst", "human",
     Request(Action.SQL_DDL, "orders", tables=(ORDERS,), written=(ORDERS,)), Effect.DENY, "source:warehouse"),
    ("insert-own-table", "default", "agent",
     Request(Action.SQL_WRITE, "mine", tables=(MINE,), written=(MINE,), owned=True), Effect.ALLOW, "defaults.write"),
    ("create-temp-table", "default", "agent",
     Request(Action.SQL_DDL, "mine", written=(MINE,), owned=True), Effect.ALLOW, "defaults.write"),
    ("write-unowned-table", "default", "agent",
     Request(Action.SQL_WRITE, "other", written=(TableRef("other"),)), Effect.DENY, "defaults.write"),
    ("unknown-sql", "default", "human", Request(Action.SQL_UNKNOWN, "?", reason="parse error"), Effect.DENY,
     "sql-unknown"),
    ("unknown-sql-even-in-audit-mode", "audit-only", "human", Request(Action.SQL_UNKNOWN, "?"), Effect.WOULD_DENY,
     "sql-unknown"),
    ("set-config", "default", "agent", Request(Action.SQL_CONFIG, "threads"), Effect.DENY, "defaults.write"),
    ("install-extension", "default", "agent", Request(Action.SQL_EXTENSION, "httpfs"), Effect.DENY, "defaults.write"),
    ("attach-read-only", "default", "agent", Request(Action.SQL_ATTACH, "other.duckdb", read_only=True), Effect.ALLOW,
     "defaults.read"),
    ("attach-read-write", "default", "agent", Request(Action.SQL_ATTACH, "other.duckdb"), Effect.DENY,
     "defaults.write"),
    # files and exports
    ("write-scratch", "default", "agent", path_req(Action.FILE_WRITE, "scratch/out.csv"), Effect.ALLOW, "scratch-writes"),
    ("export-scratch", "default", "agent", path_req(Action.EXPORT_DATAFRAME, "scratch/out.parquet"), Effect.ALLOW,
     "scratch-writes"),
    ("export-outside-scratch", "default", "agent", path_req(Action.EXPORT_DATAFRAME, "out.csv"), Effect.DENY,
     "defaults.export"),
    ("export-outside-scratch-analyst", "analyst", "human", path_req(Action.EXPORT_DATAFRAME, "out.csv"), Effect.DENY,
     "defaults.export"),
    ("copy-to-scratch", "default", "agent", path_req(Action.SQL_EXPORT, "scratch/c.csv"), Effect.ALLOW, "scratch-writes"),
    ("copy-to-home", "default", "agent", path_req(Action.SQL_EXPORT, "c.csv"), Effect.DENY, "defaults.export"),
    ("write-raw-source", "default", "agent", path_req(Action.FILE_WRITE, "data/raw/events.csv"), Effect.DENY,
     "source:raw"),
    ("new-file-under-raw", "default", "agent", path_req(Action.FILE_WRITE, "data/raw/new/x.csv"), Effect.DENY,
     "source:raw"),
    ("delete-raw-source", "analyst", "human", path_req(Action.FILE_DELETE, "data/raw/events.csv"), Effect.DENY,
     "source:raw"),
    ("overwrite-warehouse-file", "default", "agent", path_req(Action.FILE_WRITE, "data/warehouse.duckdb"), Effect.DENY,
     "source:warehouse"),
    ("warehouse-wal", "default", "agent", path_req(Action.FILE_WRITE, "data/warehouse.duckdb.wal"), Effect.DENY,
     "source:warehouse"),
    ("export-into-source-even-if-rules-allow", "analyst", "human", path_req(Action.SQL_EXPORT, "data/raw/x.csv"),
     Effect.DENY, "source:raw"),
    ("read-raw-file", "default", "agent", path_req(Action.FILE_READ, "data/raw/events.csv"), Effect.ALLOW,
     "defaults.read"),
    ("delete-scratch", "default", "agent", path_req(Action.FILE_DELETE, "scratch/out.csv"), Effect.ALLOW,
     "scratch-writes"),
    ("clipboard", "default", "agent", Request(Action.EXPORT_CLIPBOARD, "clipboard"), Effect.DENY, "agent-no-egress"),
    # shell, network, imports
    ("shell-agent", "default", "agent", Request(Action.SHELL_EXEC, "curl x", command="curl x"), Effect.DENY,
     "agent-no-egress"),
    ("shell-human", "default", "human", Request(Action.SHELL_EXEC, "ls", command="ls"), Effect.WARN, "human-shell"),
    ("shell-analyst", "analyst", "human", Request(Action.SHELL_EXEC, "ls", command="ls"), Effect.WARN, "shell-recorded"),
    ("network-agent", "default", "agent", Request(Action.NET_CONNECT, "example.com:443", host="example.com"),
     Effect.DENY, "agent-no-egress"),
    ("network-human", "default", "human", Request(Action.NET_CONNECT, "example.com:443", host="example.com"),
     Effect.DENY, "defaults.network"),
    ("import-ctypes", "default", "human", Request(Action.PYTHON_IMPORT, "ctypes", module="ctypes"), Effect.DENY,
     "no-native-code"),
    ("import-ctypes-submodule", "default", "agent", Request(Action.PYTHON_IMPORT, "ctypes.util", module="ctypes.util"),
     Effect.DENY, "no-native-code"),
    ("import-pandas", "default", "agent", Request(Action.PYTHON_IMPORT, "pandas", module="pandas"), Effect.ALLOW,
     "defaults.none"),
    ("import-ctypesx-is-not-ctypes", "default", "agent", Request(Action.PYTHON_IMPORT, "ctypesx", module="ctypesx"),
     Effect.ALLOW, "defaults.none"),
    # audit mode: recorded, not blocked
    ("audit-only-export", "audit-only", "agent", path_req(Action.EXPORT_DATAFRAME, "out.csv"), Effect.WOULD_DENY,
     "defaults.export"),
    ("audit-only-source-write", "audit-only", "agent",
     Request(Action.SQL_WRITE, "customers", tables=(CUST,), written=(CUST,)), Effect.WOULD_DENY, "source:warehouse"),
    ("audit-only-scratch", "audit-only", "agent", path_req(Action.FILE_WRITE, "scratch/x"), Effect.ALLOW,
     "scratch-writes"),
]


def _absolute(req: Request, root: Path) -> Request:
    if req.path and not os.path.isabs(req.path):
        return replace(req, path=resolve(req.path, str(root)))
    return req


@pytest.mark.parametrize("policy,actor,req,effect,rule", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(policies: dict[str, Policy], root: Path, policy: str, actor: str, req: Request, effect: Effect,
                rule: str) -> None:
    d = decide(policies[policy], _absolute(req, root), actor, "default")
    assert d.effect is effect, d.render()
    assert d.rules, "every decision names what decided it"
    assert d.rules[0].id.startswith(rule), d.render()
    assert d.action is req.action and d.resource == req.resource
    if effect in (Effect.DENY, Effect.WOULD_DENY):
        assert d.message, "a denial explains itself"
    if effect is Effect.DENY:
        assert d.hint, "a denial says what would be allowed instead"
    assert d.blocked is (effect is Effect.DENY)


def test_deny_beats_allow_whatever_the_order(root: Path) -> None:
    rules = ["  - id: ok\n    effect: allow\n    actions: [shell.exec]\n",
             "  - id: nope\n    effect: deny\n    actions: [shell.*]\n",
             "  - id: maybe\n    effect: warn\n    actions: [shell.exec]\n"]
    req = Request(Action.SHELL_EXEC, "ls", command="ls")
    for order in (rules, rules[::-1]):
        pol = parse_policy("version: 1\nname: t\nrules:\n" + "".join(order), "t.yaml", str(root))
        d = decide(pol, req, "human", "default")
        assert d.effect is Effect.DENY and d.rules[0].id == "nope"


def test_warn_beats_allow_and_both_are_named(root: Path) -> None:
    pol = parse_policy("version: 1\nname: t\nrules:\n  - id: a\n    effect: allow\n    actions: [shell.exec]\n"
                       "  - id: w\n    effect: warn\n    actions: [shell.exec]\n    message: careful {resource}\n",
                       "t.yaml", str(root))
    d = decide(pol, Request(Action.SHELL_EXEC, "ls"), "human", "default")
    assert d.effect is Effect.WARN and [r.id for r in d.rules] == ["w", "a"]
    assert d.message == "careful ls"


@pytest.mark.parametrize("env,effect", [("ci", Effect.DENY), ("default", Effect.ALLOW)])
def test_rule_environments(root: Path, env: str, effect: Effect) -> None:
    pol = parse_policy("version: 1\nname: t\nrules:\n  - id: ci-no-imports\n    effect: deny\n"
                       "    environments: [ci]\n    actions: [python.import]\n", "t.yaml", str(root))
    assert decide(pol, Request(Action.PYTHON_IMPORT, "x", module="x"), "agent", env).effect is effect


def test_rule_where_tables_and_commands(root: Path) -> None:
    pol = parse_policy("version: 1\nname: t\ndefaults:\n  shell: allow\nrules:\n"
                       "  - id: no-orders\n    effect: deny\n    actions: [sql.read]\n    where: {tables: [orders]}\n"
                       "  - id: no-rm\n    effect: deny\n    actions: [shell.exec]\n    where: {command: '^rm '}\n",
                       "t.yaml", str(root))
    assert decide(pol, sql_read(tables=(ORDERS,)), "agent", "default").effect is Effect.DENY
    assert decide(pol, sql_read(tables=(CUST,)), "agent", "default").effect is Effect.ALLOW
    assert decide(pol, Request(Action.SHELL_EXEC, "rm -rf x", command="rm -rf x"), "h", "d").effect is Effect.DENY
    assert decide(pol, Request(Action.SHELL_EXEC, "ls", command="ls"), "h", "d").effect is Effect.ALLOW


def test_symlink_in_scratch_to_a_source_is_judged_by_its_target(policies: dict[str, Policy], root: Path) -> None:
    link = root / "scratch" / "sneaky.csv"
    link.symlink_to(root / "data" / "raw" / "events.csv")
    try:
        req = Request(Action.FILE_WRITE, str(link), path=resolve(link))
        d = decide(policies["default"], req, "agent", "default")
        assert d.effect is Effect.DENY and d.rules[0].id == "source:raw"
    finally:
        link.unlink()


def test_decision_json_shape_for_agents(policies: dict[str, Policy], root: Path) -> None:
    req = Request(Action.SQL_READ, "customers", tables=(CUST,), columns=("customers.ssn",), line=3,
                  code="SELECT ssn FROM customers")
    d = decide(policies["default"], req, "agent", "default")
    data = json.loads(d.to_json())
    assert data["code"] == "policy_violation"
    assert {"action", "resource", "rules", "message", "hint"} <= data.keys()
    assert data["action"] == "sql.read" and data["resource"] == "customers"
    assert data["rules"][0]["id"].startswith("source:warehouse") and data["rules"][0]["file"] == "default.yaml"
    assert data["line"] == 3 and data["statement"] == "SELECT ssn FROM customers"
    text = d.render()
    assert text.startswith("DENY: ") and "(line 3)" in text and "rule: source:warehouse" in text
    assert "instead: " in text and "code: SELECT ssn FROM customers" in text


def test_rule_refs_carry_file_and_line(policies: dict[str, Policy], root: Path) -> None:
    d = decide(policies["default"], Request(Action.SHELL_EXEC, "ls", command="ls"), "agent", "default")
    rule = next(r for r in policies["default"].rules if r.id == "agent-no-egress")
    assert (d.rules[0].file, d.rules[0].line) == ("default.yaml", rule.line)
    assert str(d.rules[0]) == f"agent-no-egress (default.yaml:{rule.line})"


def test_default_message_template_is_rendered(policies: dict[str, Policy], root: Path) -> None:
    req = _absolute(path_req(Action.EXPORT_DATAFRAME, "report.csv"), root)
    d = decide(policies["default"], req, "agent", "default")
    assert d.message == "export.dataframe on report.csv is not allowed by policy agent-default."
    assert d.hint and "scratch/**" in d.hint


def test_decisions_are_values(policies: dict[str, Policy]) -> None:
    req = Request(Action.SHELL_EXEC, "ls", command="ls")
    a = decide(policies["default"], req, "agent", "default")
    b = decide(policies["default"], req, "agent", "default")
    assert a == b and isinstance(a, Decision)
    assert hash(req) == hash(Request(Action.SHELL_EXEC, "ls", command="ls"))


@pytest.mark.parametrize("pattern", ["*", "sql.*", "export.*", "sql.read", "*.read", "s*d", "sql.re*", "*ad",
                                     "sql.[rw]*", "sql.?ead", "*.*", "**", "x", "sql.", "sql.read*", "*sql.read",
                                     "s**d", "", "file.*e", ".*"])
def test_action_patterns_match_as_fnmatch_does(pattern: str) -> None:
    import fnmatch

    from guard_kernel.policy.actions import ALL_ACTIONS, _glob

    for name in (*ALL_ACTIONS, "", "sql", "sql.", "x"):
        assert _glob(pattern, name) == fnmatch.fnmatchcase(name, pattern), name


def test_the_policy_file_and_protected_folders_are_never_written(tmp_path: Path) -> None:
    """Fixed protections no rule can lift: the policy file in force, and the session's audit folder."""
    pol_file = tmp_path / "open.yaml"
    pol_file.write_text("version: 1\nname: open\ndefaults: {write: allow, export: allow}\n")
    pol = load_policy(pol_file)
    audit = tmp_path / ".guard_audit"
    cases = [  # (path, protected, expected effect, rule)
        (pol_file, (), Effect.DENY, "policy-file"),
        (audit / "s.jsonl", (str(audit),), Effect.DENY, "audit-dir"),
        (audit, (str(audit),), Effect.DENY, "audit-dir"),
        (tmp_path / ".guard_audit_other" / "x", (str(audit),), Effect.ALLOW, None),
        (tmp_path / "notes.txt", (str(audit),), Effect.ALLOW, None),
    ]
    for path, protected, effect, rule in cases:
        for action in (Action.FILE_WRITE, Action.FILE_DELETE):
            d = decide(pol, Request(action, str(path), path=str(path)), "human", "default", protected)
            assert d.effect is effect, (path, action)
            assert rule is None or [r.id for r in d.rules] == [rule], (path, action)
    read = decide(pol, Request(Action.FILE_READ, str(pol_file), path=str(pol_file)), "human", "default")
    assert read.effect is Effect.ALLOW


def test_relative_paths_mean_the_policy_root(tmp_path: Path) -> None:
    """``root:`` key > the root given > the policy file's folder; a policy string: the working directory."""
    (tmp_path / "policies").mkdir()
    text = "version: 1\nname: r\nscratch: ['scratch/**']\n"
    plain = tmp_path / "policies" / "plain.yaml"
    plain.write_text(text)
    keyed = tmp_path / "policies" / "keyed.yaml"
    keyed.write_text(text + "root: ..\n")
    other = tmp_path / "elsewhere"
    cases = [
        (load_policy(plain), tmp_path / "policies"),
        (load_policy(plain, root=str(other)), other),
        (load_policy(keyed), tmp_path),
        (load_policy(keyed, root=str(other)), tmp_path),
        (parse_policy(text), Path.cwd()),
    ]
    for pol, want in cases:
        assert pol.root == resolve(want)
        assert pol.scratch[0].matches(resolve(want / "scratch" / "a.csv"))
