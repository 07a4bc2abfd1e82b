"""What the guard shows, through real kernels (jupyter_client): stable error names, one JSON line per
message validated against the shipped schema, and notices that are display outputs, not stderr.

Two kernels per module: the guarded kernel (kernelspec, actor agent) and ``%load_ext guard_kernel`` in
a plain kernel (actor human, for warnings); a third, ``%load_ext`` under a bad policy, shows the guard
unavailable.  Each row of the table runs one cell and says which message it must produce.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import GuardedKernel, kernel_env, source_digests, start_kernel, table_counts

from guard_kernel.decision.messages import SCHEMA_FILE, find_facts, iter_facts, schema
from guard_kernel.demo import Workspace
from guard_kernel.enforce.ipython.notices import META_KEY
from guard_kernel.kernel import spec

VALIDATOR = jsonschema.Draft202012Validator(schema())
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Reply:
    """One executed cell: the shell reply's content and every iopub message it caused."""

    content: dict[str, Any]
    iopub: list[dict[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m["content"] for m in self.iopub if m["msg_type"] == kind]

    @property
    def stderr(self) -> str:
        return "".join(c["text"] for c in self.of("stream") if c["name"] == "stderr")

    @property
    def error(self) -> dict[str, Any] | None:
        errors = self.of("error")
        return errors[-1] if errors else None

    @property
    def notices(self) -> list[dict[str, Any]]:
        """display_data outputs of the guard (they carry its metadata key)."""
        return [c for c in self.of("display_data") if META_KEY in c.get("metadata", {})]

    def json_lines(self) -> list[dict[str, Any]]:
        """Every guard JSON line in what the cell sent back (error traceback, outputs, reply)."""
        texts = [ANSI.sub("", "\n".join(self.content.get("traceback", [])))]
        texts += [ANSI.sub("", "\n".join(c.get("traceback", []))) for c in self.of("error")]
        texts += [c["data"].get("text/plain", "") for c in self.of("display_data") + self.of("execute_result")]
        texts += [c["text"] for c in self.of("stream")]
        return [f for t in texts for f in iter_facts(t)]


def execute(k: GuardedKernel, code: str, timeout: float = 120) -> Reply:
    msgs: list[dict[str, Any]] = []
    reply = k.kc.execute_interactive(code, timeout=timeout, output_hook=msgs.append, stop_on_error=False,
                                     allow_stdin=False)
    return Reply(reply["content"], msgs)


@pytest.fixture(scope="module")
def kernels(project: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GuardedKernel]]:
    """``guarded``: the guarded kernel by kernelspec; ``human``: %load_ext as human; ``bad``: %load_ext
    under a policy that does not load."""
    from jupyter_client.manager import start_new_kernel

    tmp = tmp_path_factory.mktemp("messages")
    prefix = tmp / "prefix"
    spec.install(name="guarded-messages", prefix=str(prefix), policy=str(project.policy("default")),
                 root=str(project.root))
    env = kernel_env(None, "agent", tmp / "audit-guarded")
    env.pop("GUARD_KERNEL_ACTOR")
    env["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = env["JUPYTER_PATH"]  # where the kernel manager looks the spec up
    try:
        km, kc = start_new_kernel(kernel_name="guarded-messages", startup_timeout=60, cwd=str(project.root), env=env)
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old
    bad = tmp / "bad.yaml"
    bad.write_text("version: 1\nname: bad\nmode: sometimes\n")
    ks = {"guarded": GuardedKernel(km, kc, project, tmp / "audit-guarded", project.policy("default"), "agent"),
          "human": start_kernel(project, actor="human", audit_dir=tmp / "audit-human"),
          "bad": start_kernel(project, policy=bad, audit_dir=tmp / "audit-bad")}
    assert ks["human"].load_result is not None and ks["human"].load_result.ok, ks["human"].load_result
    for k in ks.values():
        assert execute(k, "import duckdb, pandas as pd").content["status"] == ("error" if k is ks["bad"] else "ok")
    yield ks
    for k in ks.values():
        k.shutdown()


WH = "con = duckdb.connect('data/warehouse.duckdb', read_only=True)\n"
RUNTIME_WRITE = "def w(p):\n    open(p, 'a').write('x')\nw('data/raw/' + 'regions.csv')"
"""A write the cell gate cannot see (the path is built at run time): the runtime hook denies it."""

# kernel, cell, kind: error (ename, code) or notice (code), and a check on the facts
CASES: list[tuple[str, str, str, str, str, Callable[[dict[str, Any]], bool]]] = [
    ("cell-rejected", "guarded", "import duckdb\nduckdb.connect('data/warehouse.duckdb').execute('DROP TABLE customers')",
     "CellRejected", "cell_rejected", lambda f: f["action"] == "sql.ddl" and f["resource"] == "customers"),
    ("runtime-violation", "guarded", RUNTIME_WRITE, "PolicyViolation", "policy_violation",
     lambda f: f["action"] == "file.write" and f["resource"].endswith("regions.csv") and bool(f["hint"])),
    ("locked", "guarded", "%unload_ext guard_kernel", "GuardLocked", "guard_locked", lambda f: bool(f["hint"])),
    ("copy-outside-scratch", "guarded", WH + "con.execute(\"COPY customers TO '/tmp/leak.csv'\")", "CellRejected",
     "cell_rejected", lambda f: f["action"] in ("sql.export", "file.write")),
    ("to-csv-tmp", "guarded", "pd.DataFrame({'a': [1]}).to_csv('/tmp/guard-msg.csv')", "CellRejected",
     "cell_rejected", lambda f: f["action"] == "export.dataframe"),
    ("ext-cell-rejected", "human", "import duckdb\nduckdb.connect('data/warehouse.duckdb').execute('DELETE FROM orders')",
     "CellRejected", "cell_rejected", lambda f: f["action"] == "sql.write"),
    ("ext-runtime-violation", "human", RUNTIME_WRITE, "PolicyViolation", "policy_violation",
     lambda f: f["action"] == "file.write"),
    ("ext-locked", "human", "%unload_ext guard_kernel", "GuardLocked", "guard_locked", lambda f: bool(f["hint"])),
    ("unavailable", "bad", "x = 1", "GuardUnavailable", "guard_unavailable", lambda f: "could not start" in f["message"]),
    ("sql-truncated", "guarded", WH + "len(con.execute('SELECT id FROM orders').fetchall())", "", "truncated",
     lambda f: f["returned"] == 500 and f["more"] is True and f["reader"] == "sql" and "WHERE" in f["hint"]),
    ("csv-truncated", "guarded", "len(pd.read_csv('data/raw/events.csv'))", "", "truncated",
     lambda f: f["returned"] == 500 and f["more"] and f["total"] is None and f["reader"] == "dataframe"
     and "nrows" in f["hint"] and "scratch" in f["hint"]),
    ("parquet-truncated-total", "guarded", "len(pd.read_parquet('data/raw/returns.parquet'))", "", "truncated",
     lambda f: f["returned"] == 500 and f["total"] > 500 and f["reader"] == "dataframe"),
    ("warning", "human", "!echo hi", "", "warning", lambda f: f["effect"] == "warn" and f["action"] == "shell.exec"),
    ("unavailable-status", "bad", "%guard status", "", "guard_unavailable", lambda f: bool(f["hint"])),
    ("unavailable-bad-switch", "bad", "%guard policy /nonexistent/policy.yaml", "GuardUnavailable", "guard_unavailable",
     lambda f: "nonexistent" in f["message"] and "%guard policy" in f["hint"]),
]


@pytest.mark.parametrize("kernel,code,ename,kind,check", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_message_ends_with_one_valid_json_line(kernels: dict[str, GuardedKernel], project: Workspace,
                                                     kernel: str, code: str, ename: str, kind: str,
                                                     check: Callable[[dict[str, Any]], bool]) -> None:
    before = (source_digests(project), table_counts(project))
    res = execute(kernels[kernel], code)
    found = res.json_lines()
    assert found, f"no json line in {res}"
    for f in found:
        VALIDATOR.validate(f)  # raises with the path of the first field that does not fit
    assert res.stderr == "", f"the guard wrote to stderr:\n{res.stderr}"
    if ename:  # a refusal: an error reply with a stable name, the short line, no frames
        c = res.content
        assert c["status"] == "error" and c["ename"] == ename, c
        assert res.error is not None and res.error["ename"] == ename and res.error["evalue"] == c["evalue"]
        assert "\n" not in c["evalue"] and c["evalue"]
        tb = ANSI.sub("", "\n".join(c["traceback"]))
        assert "File " not in tb and "ast.py" not in tb and "guard_kernel/" not in tb and "Traceback" not in tb, tb
        assert len(c["traceback"]) <= 4 and c["traceback"][-1].startswith("json: ")
        facts = json.loads(c["traceback"][-1][len("json: "):])
        assert facts["code"] == kind and facts["message"].startswith(c["evalue"].split(" (and ")[0]), facts
        assert not res.notices
    else:  # a notice: a display output (html + plain), not an error, not stderr
        assert res.content["status"] == "ok", res.content
        assert res.notices, f"no notice display output: {res.iopub}"
        n = res.notices[-1]
        assert {"text/html", "text/plain"} <= set(n["data"]) and n["metadata"][META_KEY]["code"] == kind
        facts = n["metadata"][META_KEY]
    assert facts["code"] == kind and check(facts), facts
    assert (source_digests(project), table_counts(project)) == before  # nothing refused happened


def test_the_load_banner_is_a_notice(kernels: dict[str, GuardedKernel]) -> None:
    load = kernels["human"].load_result
    assert load is not None and load.ok and load.stderr == ""
    assert any("guard_kernel" in n.get("text/plain", "") and '"code": "notice"' in n.get("text/plain", "")
               for n in load.notices)


def test_the_schema_ships_in_the_package_and_is_a_valid_schema() -> None:
    assert SCHEMA_FILE.is_file() and "guard_kernel" in str(SCHEMA_FILE.parent)
    jsonschema.Draft202012Validator.check_schema(schema())
    bad = {"v": 1, "code": "truncated", "message": "x", "hint": None}  # a truncation without its counts
    assert not VALIDATOR.is_valid(bad)
    assert not VALIDATOR.is_valid({"v": 2, "code": "warning", "message": "x", "hint": None})


def test_old_names_still_work() -> None:
    from guard_kernel import CellRejected, GuardDenied, GuardUnavailable, PolicyViolation

    assert GuardDenied is PolicyViolation
    assert issubclass(CellRejected, PolicyViolation) and issubclass(GuardUnavailable, CellRejected)
    assert issubclass(PolicyViolation, PermissionError)



def test_the_doctor_says_not_guarded_with_a_valid_json_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain ipykernel kernelspec named ``python3`` first on JUPYTER_PATH: the doctor's message ends
    with a ``not_guarded`` line."""
    import sys

    from guard_kernel.cli.main import main

    plain = tmp_path / "share" / "jupyter" / "kernels" / "python3"
    plain.mkdir(parents=True)
    (plain / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (plain)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    f = find_facts(out)
    assert f is not None and out.rstrip().splitlines()[-1].startswith("json: ")
    VALIDATOR.validate(f)
    assert f["code"] == "not_guarded" and "NOT guarded" in f["message"] and "guard-kernel install" in f["hint"]
