"""Session header and end records, summaries, and ``guard-kernel audit verify | show | list``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guard_kernel.audit.session import header_fields, library_versions
from guard_kernel.audit.summary import chains, sessions, summarize
from guard_kernel.cli.main import main
from guard_kernel.decision import Guard, Request
from guard_kernel.policy import Action, load_policy

REPO = Path(__file__).resolve().parents[2]
POLICY_FILE = REPO / "policies" / "default.yaml"


def guard(tmp_path: Path, **kw: object) -> Guard:
    pol = load_policy(str(POLICY_FILE), root=str(tmp_path))
    return Guard(pol, actor="agent", audit_dir=str(tmp_path / "audit"), notify=lambda d: None, **kw)  # type: ignore[arg-type]


def test_the_header_says_who_where_what_policy_and_what_is_in_force(tmp_path: Path) -> None:
    g = guard(tmp_path, header={"kernel": {"name": "guarded", "id": "k1", "connection_file": "/c/k1.json"},
                                "in_force": [{"layer": "cell_gate", "what": "cells"}]})
    g.close("shutdown")
    s = summarize(g.audit_path)
    h = s.header
    assert h["seq"] == 1 and h["kind"] == "session" and h["format"] == 1
    assert h["kernel"] == {"name": "guarded", "id": "k1", "connection_file": "/c/k1.json"}
    assert h["policy_text"] == POLICY_FILE.read_text() and h["policy_file"] == str(POLICY_FILE)
    assert h["policy_mode"] == "enforce" and h["lock"] is True
    assert h["in_force"] == [{"layer": "cell_gate", "what": "cells"}] and h["confinement"] is None
    assert h["versions"]["python"] and h["versions"]["guard_kernel"]
    assert s.ended == "closed (shutdown)" and s.end_reason == "shutdown"


def test_a_policy_file_changed_after_loading_is_not_passed_off_as_its_text(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(POLICY_FILE.read_text())
    pol = load_policy(str(f), root=str(tmp_path))
    f.write_text(POLICY_FILE.read_text() + "\n# edited\n")
    fields = header_fields({**pol.ref(), "mode": pol.mode, "lock": pol.lock}, "agent", "default",
                           session="s", audit_dir=str(tmp_path))
    assert fields["policy_text"] is None and "changed after the policy was loaded" in fields["policy_text_note"]


def test_library_versions_are_found_without_importing_them() -> None:
    import sys

    had = set(sys.modules)
    v = library_versions(("duckdb", "pandas", "sqlglot", "no-such-library"))
    assert {"duckdb", "pandas", "sqlglot"} <= v.keys() and "no-such-library" not in v
    assert set(sys.modules) - had <= {m for m in sys.modules if not m.startswith(("duckdb", "pandas", "sqlglot"))}


def _session(tmp_path: Path, *, header: dict[str, object] | None = None) -> Guard:
    g = guard(tmp_path, header=header)
    g.check(Request(Action.SQL_READ, "warehouse.orders"), "sql")
    with pytest.raises(PermissionError):
        g.check(Request(Action.SHELL_EXEC, "ls", command="ls"), "shell")
    g.record("cell", action=None, resource="cell[1]", decision="deny", rules=[], message="", code="!ls")
    return g


def test_show_lists_the_summary_and_the_denials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = _session(tmp_path)
    g.close("shutdown")
    assert main(["audit", "show", g.audit_path]) == 0
    out = capsys.readouterr().out
    assert "chain:     ok" in out and "ended:     closed (shutdown)" in out and "cells 1" in out
    assert "allowed 1" in out and "denied 1" in out
    assert "shell.exec" in out and "agent-no-egress" in out
    assert main(["audit", "show", "--json", g.audit_path]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["denial_count"] == 1 and d["denials"][0]["rules"] == ["agent-no-egress"] and d["cells"] == 1


def test_verify_and_its_alias(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = _session(tmp_path)
    assert main(["audit", "verify", g.audit_path]) == 0
    assert "ended without a close record after seq 4" in capsys.readouterr().out  # still open
    g.close()
    assert main(["verify", g.audit_path]) == 0
    assert "closed (exit)" in capsys.readouterr().out
    lines = Path(g.audit_path).read_text().splitlines(keepends=True)
    Path(g.audit_path).write_text("".join(lines[:2] + lines[3:]))
    assert main(["audit", "verify", g.audit_path]) == 1
    assert "line 3: seq 4 where 3 was expected (a record was deleted)" in capsys.readouterr().out
    assert main(["audit", "verify", str(tmp_path / "none.jsonl")]) == 2


def test_list_chains_restarted_sessions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kernel = {"name": "extension", "id": None, "connection_file": "/run/k.json"}
    first = _session(tmp_path, header={"kernel": kernel})
    first.close("restart")
    second = _session(tmp_path, header={"kernel": kernel})
    other = _session(tmp_path, header={"kernel": {"connection_file": "/run/other.json"}})
    other.close("shutdown")
    assert summarize(second.audit_path).previous_session == first.session_id
    assert summarize(other.audit_path).previous_session is None
    found = sessions(str(tmp_path / "audit"))
    assert [[s.session for s in c] for c in chains(found)] == [[first.session_id, second.session_id],
                                                               [other.session_id]]
    assert main(["audit", "list", str(tmp_path / "audit")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["session", "started", "actor", "policy", "cells", "denials", "truncations", "chain",
                              "ended"]
    assert out[1].startswith(first.session_id) and "closed (restart)" in out[1]
    assert out[2].startswith(f"└ {second.session_id}") and "ended without a close record" in out[2]
    assert out[3].startswith(other.session_id)
    assert main(["audit", "list", str(tmp_path / "nothing")]) == 2


@pytest.mark.parametrize("damage", [b'{"seq": 99, "kind": "sql", "resou', b"not json at all\n", b"[1, 2]\n",
                                    b'{"seq": 5, "kind": "cell", "policy": 3, "rules": "x"}\n', b"\0" * 64])
def test_every_reader_reports_damage_and_none_crashes(tmp_path: Path, damage: bytes,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    g = _session(tmp_path)
    g.close("shutdown")
    with open(g.audit_path, "ab") as f:
        f.write(damage)
    s = summarize(g.audit_path)
    res = s.chain
    if damage.strip(b"\0"):
        assert not res.ok and res.records == 5 and res.line == 6, res
    else:  # a NUL tail (what writers before this version left while open) is no record, and no damage
        assert res.ok and res.records == 5
    want = 1 if damage.strip(b"\0") else 0
    assert main(["audit", "show", g.audit_path]) == want
    assert main(["audit", "verify", g.audit_path]) == want
    assert main(["audit", "list", str(tmp_path / "audit")]) == want
    out = capsys.readouterr().out
    if not damage.endswith((b"\n", b"\0")):
        assert "partial:   the last line is cut short (33 bytes)" in out


def test_the_owner_of_a_dead_sessions_audit_can_end_it(tmp_path: Path) -> None:
    """What a launcher does when the kernel it started died: reopen the file (the chain continues
    after the last complete record) and write the end record the kernel could not."""
    from guard_kernel.audit import AuditWriter
    from guard_kernel.audit.session import end_fields

    g = _session(tmp_path)  # never closed: as if killed
    last = summarize(g.audit_path).records
    w = AuditWriter(g.audit_path, session=g.session_id, actor="agent", environment="default",
                    policy=g.policy.ref())
    w.write("session_end", **end_fields("died", {"deny": 1}), exit_signal="SIGKILL")
    w.close()
    s = summarize(g.audit_path)
    assert s.chain.ok and s.records == last + 1
    assert s.ended == "closed (died)" and s.end_reason == "died"
