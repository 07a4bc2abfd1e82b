"""``extends:``: a policy built over a parent (a file or the built-in one), and where class defaults are written."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard_kernel.decision import Request, decide
from guard_kernel.policy import Action, ActionClass, PolicyError, load_policy
from guard_kernel.tools.explain import explain, render

BASE = """version: 1
name: base
defaults:
  read: allow
  shell: deny
sources:
  wh: {duckdb: data/w.duckdb, tables: {customers: {deny_columns: [ssn]}}}
scratch: ["scratch/**"]
limits: {max_rows: {agent: 100}}
rules:
  - {id: no-ctypes, effect: deny, actions: [python.import], where: {module: ctypes}}
"""
MID = """version: 1
name: mid
extends: base.yaml
defaults:
  shell: warn
rules:
  - {id: no-net, effect: deny, actions: ['net.*']}
"""
TOP = """version: 1
name: top
extends: sub/mid.yaml
mode: audit
scratch: ["out/**"]
limits: {on_exceed: deny}
rules:
  - {id: top-only, effect: allow, actions: [export.dataframe], where: {path: "reports/**"}}
"""


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.yaml").write_text(BASE)
    (tmp_path / "sub" / "mid.yaml").write_text(MID)
    (tmp_path / "top.yaml").write_text(TOP)
    return tmp_path


def test_three_files_merge(chain: Path) -> None:
    p = load_policy(chain / "top.yaml", root=str(chain))
    assert p.name == "top" and p.mode == "audit"
    assert [(r.id, Path(r.file).name) for r in p.rules] == [("no-ctypes", "base.yaml"), ("no-net", "mid.yaml"),
                                                             ("top-only", "top.yaml")]
    assert [Path(f).name for f in p.extends] == ["mid.yaml", "base.yaml"]
    assert p.defaults[ActionClass.SHELL] == "warn" and p.defaults[ActionClass.READ] == "allow"
    assert p.defaults[ActionClass.WRITE] == "deny"  # the built-in fallback of the file that set nothing
    assert p.sources["wh"].duckdb == str(chain / "data" / "w.duckdb") and Path(p.sources["wh"].file).name == "base.yaml"
    assert [g.text for g in p.scratch] == ["out/**"]
    assert p.limits.max_rows["agent"] == 100 and p.limits.on_exceed == "deny"


def test_decisions_name_the_file_each_rule_or_default_came_from(chain: Path) -> None:
    p = load_policy(chain / "top.yaml", root=str(chain))
    d = decide(p, Request(Action.PYTHON_IMPORT, "ctypes", module="ctypes"), "agent", "default")
    assert (d.rules[0].id, d.rules[0].file, d.rules[0].line) == ("no-ctypes", "base.yaml", 11)
    d = decide(p, Request(Action.SHELL_EXEC, "ls", command="ls"), "agent", "default")
    assert (d.rules[0].id, d.rules[0].file, d.rules[0].line) == ("defaults.shell", "mid.yaml", 5)
    d = decide(p, Request(Action.SQL_READ, "customers", columns=("customers.ssn",),
                          tables=(__import__("guard_kernel").TableRef("customers", source="wh"),)), "agent", "default")
    assert d.rules[0].file == "base.yaml" and d.rules[0].line == 7
    text = render(explain(p, "agent"))
    assert "rule no-ctypes (base.yaml:11)" in text and "rule no-net (mid.yaml:7)" in text
    assert "rule top-only (top.yaml:8)" in text and "extends " in text


def test_the_hash_covers_the_whole_chain(chain: Path) -> None:
    before = load_policy(chain / "top.yaml", root=str(chain)).sha256
    base = chain / "sub" / "base.yaml"
    base.write_text(BASE.replace("agent: 100", "agent: 101"))
    after = load_policy(chain / "top.yaml", root=str(chain)).sha256
    assert before != after
    import hashlib

    alone = chain / "alone.yaml"
    alone.write_text("version: 1\nname: alone\n")
    assert load_policy(alone).sha256 == hashlib.sha256(alone.read_bytes()).hexdigest()  # unchanged without extends


# (id, files {name: text}, the file loaded, expected "file:line: field" start and a piece of the reason)
ERRORS: list[tuple[str, dict[str, str], str, str, str]] = [
    ("missing-parent", {"c.yaml": "version: 1\nname: c\nextends: nowhere.yaml\n"}, "c.yaml",
     "c.yaml:3: extends", "nowhere.yaml"),
    ("cycle", {"a.yaml": "version: 1\nname: a\nextends: b.yaml\n", "b.yaml": "version: 1\nname: b\nextends: a.yaml\n"},
     "a.yaml", "b.yaml:3: extends", "a cycle (a.yaml → b.yaml → a.yaml)"),
    ("self", {"s.yaml": "version: 1\nname: s\nextends: s.yaml\n"}, "s.yaml", "s.yaml:3: extends", "a cycle"),
    ("duplicate-rule-id", {"p.yaml": BASE, "c.yaml": "version: 1\nname: c\nextends: p.yaml\nrules:\n"
                           "  - {id: no-ctypes, effect: allow, actions: [python.import]}\n"},
     "c.yaml", "c.yaml:5: rules[0].id", "already defined in"),
    ("invalid-parent", {"p.yaml": "version: 1\nname: p\nmode: sometimes\n", "c.yaml": "version: 1\nname: c\nextends: p.yaml\n"},
     "c.yaml", "p.yaml:3: mode", ""),
    ("extends-not-a-string", {"c.yaml": "version: 1\nname: c\nextends: [a, b]\n"}, "c.yaml", "c.yaml:3: extends", ""),
]


@pytest.mark.parametrize("files,load,where,reason", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_load_errors_name_the_files(tmp_path: Path, files: dict[str, str], load: str, where: str, reason: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(PolicyError) as exc:
        load_policy(tmp_path / load)
    msg = str(exc.value).replace(str(tmp_path) + "/", "")
    assert msg.startswith(where), msg
    assert reason in msg, msg


def test_extending_the_builtin(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("version: 1\nname: mine\nextends: builtin\ndefaults: {network: allow}\n")
    pol = load_policy(p)
    assert pol.rules[0].id == "no-native-code" and pol.rules[0].file.startswith("<builtin:")
    assert pol.defaults[ActionClass.NETWORK] == "allow" and pol.defaults[ActionClass.SHELL] == "deny"


def test_class_defaults_name_their_line(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("version: 1\nname: p\ndefaults:\n  read: allow\n  write: deny\n")
    pol = load_policy(p)
    w = decide(pol, Request(Action.FILE_WRITE, "x", path=str(tmp_path / "x")), "agent", "default")
    assert (w.rules[0].id, w.rules[0].line) == ("defaults.write", 5)
    e = decide(pol, Request(Action.EXPORT_DATAFRAME, "x", path=str(tmp_path / "x")), "agent", "default")
    assert (e.rules[0].id, e.rules[0].line) == ("defaults.export", 3)  # not written: the defaults: key
    bare = tmp_path / "bare.yaml"
    bare.write_text("version: 1\nname: bare\n")
    d = decide(load_policy(bare), Request(Action.SHELL_EXEC, "ls"), "agent", "default")
    assert d.rules[0].line == 0  # no defaults: key at all: the built-in fallback
