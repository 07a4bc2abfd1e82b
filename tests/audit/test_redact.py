"""Redaction: credentials are scrubbed from everything, denied columns' values never recorded,
literals and outputs as the policy's ``audit:`` section says."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard_kernel.audit import read_records
from guard_kernel.audit.redact import Redactor, mask_sql_literals, scrub
from guard_kernel.decision import Guard, Request
from guard_kernel.policy import Action, AuditSettings, PolicyError, parse_policy

REPO = Path(__file__).resolve().parents[2]
DEFAULT = (REPO / "policies" / "default.yaml").read_text()

SCRUBBED = [
    ('create_engine("postgresql://analyst:pw-123@db.example.com/w")',
     'create_engine("postgresql://analyst:***@db.example.com/w")'),
    ("connect(host='h', password='hunter2', user='bob')", "connect(host='h', password='***', user='bob')"),
    ('cfg = {"api_key": "abcd1234efgh", "x": 1}', 'cfg = {"api_key": "***", "x": 1}'),
    ("db_password = 'pw'; AWS_SECRET_ACCESS_KEY='abc'", "db_password = '***'; AWS_SECRET_ACCESS_KEY='***'"),
    ("Server=db;User Id=sa;Password=Pa55w0rd!;", "Server=db;User Id=sa;Password=***;"),
    ("host=db password=Pa55 dbname=w", "host=db password=*** dbname=w"),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'AKIAIOSFODNN7EXAMPLE', SECRET 'wJalrXUtnFEMI')",
     "CREATE SECRET s (TYPE s3, KEY_ID '***', SECRET '***')"),
    ("ALTER USER bob IDENTIFIED BY 'pw'", "ALTER USER bob IDENTIFIED BY '***'"),
    ("headers = {'Authorization': 'Bearer abcdefghijklmnopqrstuvwxyz123'}",
     "headers = {'Authorization': 'Bearer ***'}"),
    ("key = 'AKIAIOSFODNN7EXAMPLE'", "key = '***'"),
    ("gh = 'ghp_" + "a" * 36 + "'", "gh = '***'"),
    ("k = 'sk-" + "b" * 40 + "'", "k = '***'"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "***"),
]
KEPT = [  # ordinary analysis code: nothing to scrub
    "password = getpass.getpass()",
    "token = os.environ['API_TOKEN']",
    "df.groupby('region').agg(total=('amount', 'sum'))",
    "con.sql(\"SELECT region, count(*) FROM customers WHERE segment = 'smb' GROUP BY 1\")",
    "url = 'https://example.com/data.csv'",
    "tokenizer = AutoTokenizer.from_pretrained('bert-base-uncased')",
    "out = model.generate(ids, max_new_tokens=20, pad_token_id=0)",
    "secrets_found = {'count': 3}",
]


@pytest.mark.parametrize(("text", "want"), SCRUBBED)
def test_credentials_are_scrubbed(text: str, want: str) -> None:
    assert scrub(text) == want


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_code_is_kept_as_it_is(text: str) -> None:
    assert scrub(text) == text
    assert Redactor(denied_columns=frozenset({"ssn"})).code(text) == text


def test_sql_literals() -> None:
    assert mask_sql_literals("SELECT 'it''s', x FROM t WHERE a = 'b'") == "SELECT '***', x FROM t WHERE a = '***'"
    r = Redactor(denied_columns=frozenset({"ssn"}))
    assert r.sql("SELECT * FROM t WHERE region = 'EU'") == "SELECT * FROM t WHERE region = 'EU'"  # kept by default
    assert r.sql("SELECT * FROM t WHERE SSN = '123-45-6789'") == "SELECT * FROM t WHERE SSN = '***'"  # always
    assert Redactor(redact_literals=True).sql("SELECT * FROM t WHERE region = 'EU'") == \
        "SELECT * FROM t WHERE region = '***'"


def test_values_next_to_a_denied_column_in_code() -> None:
    r = Redactor(denied_columns=frozenset({"ssn"}), known_names=frozenset({"ssn", "warehouse"}))
    code = ("df[df.ssn == '123-45-6789']\n"
            "con.sql(\"SELECT * FROM customers WHERE ssn = '123-45-6789'\")\n"
            "hits = df[df['ssn'].isin([123456789])]\n"
            "print('region EU', 2024)")
    assert r.code(code).split("\n") == [
        "df[df.ssn == '***']",
        "con.sql(\"SELECT * FROM customers WHERE ssn = '***'\")",
        "hits = df[df['ssn'].isin([***])]",
        "print('region EU', 2024)",  # a line that names no denied column is kept
    ]
    msg = "Column(s) customers.ssn of source 'warehouse' may not be read\n  code: WHERE ssn = '1-2-3'"
    assert r.code(msg) == "Column(s) customers.ssn of source 'warehouse' may not be read\n  code: WHERE ssn = '***'"


def test_outputs_only_when_kept_and_cut() -> None:
    assert Redactor().output("42") is None
    r = Redactor(keep_outputs=True, max_output_bytes=10)
    assert r.output("short") == "short"
    assert r.output("x" * 100) == "x" * 10 + "… [cut at 10 bytes]"
    assert r.output("password='hunter2'") == "password='***'"[:10] + "… [cut at 10 bytes]"


def test_the_policy_audit_section() -> None:
    assert parse_policy(DEFAULT).audit == AuditSettings()
    p = parse_policy(DEFAULT + "\naudit:\n  redact_literals: true\n  keep_outputs: true\n  max_output_bytes: 100\n")
    assert p.audit == AuditSettings(redact_literals=True, keep_outputs=True, max_output_bytes=100)
    with pytest.raises(PolicyError, match="keep_output"):
        parse_policy(DEFAULT + "\naudit:\n  keep_output: true\n")
    with pytest.raises(PolicyError, match="max_output_bytes"):
        parse_policy(DEFAULT + "\naudit:\n  max_output_bytes: -1\n")


def test_every_record_passes_the_redaction(tmp_path: Path) -> None:
    pol = parse_policy(DEFAULT + "\naudit:\n  redact_literals: true\n", root=str(tmp_path))
    g = Guard(pol, actor="agent", audit_dir=str(tmp_path), notify=lambda d: None)
    g.check(Request(Action.SQL_READ, "warehouse.orders", code="SELECT * FROM orders WHERE status = 'paid'"), "sql")
    g.record("cell", action=None, resource="cell[1]", decision="allow", rules=[],
             message="", code="url = 'mysql://u:topsecret@h/db'", error="OperationalError: password='topsecret'")
    g.close()
    text = Path(g.audit_path).read_text()
    assert "topsecret" not in text and "'paid'" not in text
    recs = list(read_records(g.audit_path))
    assert recs[1]["statement"] == "SELECT * FROM orders WHERE status = '***'"
    assert recs[2]["code"] == "url = 'mysql://u:***@h/db'" and recs[2]["error"] == "OperationalError: password='***'"
