"""The pre-flight says what the live session does: the benign set and every denial fixture, both ways.

Each cell is checked with :func:`guard_kernel.tools.preflight.check_cells` (nothing runs) and run in a
real guarded kernel (same policy, actor and project).  Where the pre-flight decides, the kernel must
decide the same (same effect, same rule); what the pre-flight leaves to run time, the kernel must
still refuse.  A live guard asked through ``check(code, guard=…)`` answers like the pre-flight.
"""

from __future__ import annotations

import ast
import json
from typing import Any

import pytest
from conftest import GuardedKernel, blocked
from test_benign import CELLS
from test_kernel_integration import (
    EXPORTS,
    FIRST_LINE_DENIED,
    MAGICS_DENIED,
    RUNTIME_DENIED,
    SETUP,
    SOURCE_WRITES,
    SSN_READS,
)

from guard_kernel.demo import Workspace
from guard_kernel.tools.preflight import Outcome, Report, check_cells

DENIALS: list[tuple[str, str]] = (
    [(f"export-{e[0]}", e[1].format(p=e[2])) for e in EXPORTS]
    + [(f"source-{s[0]}", s[1]) for s in SOURCE_WRITES]
    + [(f"cell-{f[0]}", f[1]) for f in FIRST_LINE_DENIED if f[1]]
    + [(f"runtime-{r[0]}", r[1]) for r in RUNTIME_DENIED]
    + [(f"magic-{m[0]}", m[1]) for m in MAGICS_DENIED]
    + [(f"ssn-{s[0]}", f"con.sql({s[1]!r}).fetchall()") for s in SSN_READS]
)


def _statement(text: str) -> str:
    """A statement as the DuckDB gate records it (it runs a plain ATTACH of a source READ_ONLY)."""
    return text.strip().rstrip(";").replace(" (READ_ONLY)", "")


def _sql_records(records: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(r["action"], _statement(r.get("statement", "")), r["decision"]) for r in records
            if str(r.get("action", "")).startswith("sql.") and r.get("decision")}


@pytest.fixture(scope="module")
def benign(kernel_factory: Any, project: Workspace) -> tuple[Report, list[list[dict[str, Any]]]]:
    """The benign notebook checked, then run cell by cell (the audit records of each cell)."""
    report = check_cells([c[1] for c in CELLS], policy=project.policy("default"), actor="agent",
                         cwd=str(project.root))
    k: GuardedKernel = kernel_factory(policy="default", actor="agent")
    per_cell = []
    for _name, code, _ in CELLS:
        mark = k.mark()
        res = k.run(code)
        assert res.ok, res
        per_cell.append(k.since(mark))
    return report, per_cell


def test_benign_notebook_is_allowed_by_both(benign: tuple[Report, list[list[dict[str, Any]]]]) -> None:
    report, per_cell = benign
    assert report.allowed, report.render()
    assert not [d for d in report.decisions if d.effect.value != "allow"]
    assert not [r for recs in per_cell for r in recs if r.get("decision") in ("deny", "warn", "would_deny")]


@pytest.mark.parametrize("i", range(len(CELLS)), ids=[c[0] for c in CELLS])
def test_benign_sql_decisions_are_the_kernels(benign: tuple[Report, list[list[dict[str, Any]]]], i: int) -> None:
    """Each statement the pre-flight decided was decided alike by the DuckDB gate (which records the
    statement as it ran it: a row cap or a dataframe scan added around it). A relation that is only
    written out is recorded by the writer, not as a statement: then there is nothing to compare."""
    report, per_cell = benign
    ran = _sql_records(per_cell[i])
    if not ran:
        return
    for d in report.units[i].decisions:
        if d.action.value.startswith("sql."):
            want = _statement(d.code or "")
            assert any(a == d.action.value and e == d.effect.value and want in st for a, st, e in ran), (d, ran)


@pytest.fixture(scope="module")
def k(kernel: GuardedKernel) -> GuardedKernel:
    res = kernel.run(SETUP)
    assert res.ok, res
    return kernel


@pytest.mark.parametrize("code", [d[1] for d in DENIALS], ids=[d[0] for d in DENIALS])
def test_denial_fixture_both_ways(k: GuardedKernel, project: Workspace, code: str) -> None:
    unit = check_cells([SETUP, code], policy=project.policy("default"), actor="agent",
                       cwd=str(project.root)).units[1]
    mark = k.mark()
    res = k.run(code)
    assert blocked(res), res
    assert unit.outcome in (Outcome.DENY, Outcome.RUNTIME), f"the pre-flight allows what the kernel refuses: {code}"
    if unit.outcome is Outcome.DENY:
        first = next(d for d in unit.decisions if d.blocked)
        denied = [r for r in k.since(mark) if r.get("decision") == "deny"]
        assert any(r["action"] == first.action.value and r["rules"][0]["id"] == first.rules[0].id
                   and r["rules"][0]["line"] == first.rules[0].line for r in denied), (first, denied)


def test_a_live_guard_answers_like_the_preflight(k: GuardedKernel, project: Workspace) -> None:
    """``check(code, guard=…)`` inside the kernel: the function the comm target will call."""
    code = "con.execute('DELETE FROM orders')\nsmall.to_csv('scratch/ok.csv')\nsmall.to_csv('no.csv')"
    res = k.run("from guard_kernel.decision import current\nfrom guard_kernel.tools.preflight import check\n"
                f"_r = check({code!r}, guard=current(), shell=get_ipython())\n"
                "[(u.outcome.value, [(d.effect.value, d.rules[0].id) for d in u.decisions]) for u in _r.units]")
    assert res.ok, res
    off = check_cells([SETUP, code], policy=project.policy("default"), actor="agent",
                      cwd=str(project.root)).units[1]
    assert ast.literal_eval(res.text) == [(off.outcome.value, [(d.effect.value, d.rules[0].id) for d in off.decisions])]


def test_the_comm_answer_from_a_real_kernel(k: GuardedKernel) -> None:
    """What the kernel's ``guard_kernel.check`` comm target will send (the kernel issue wires it)."""
    res = k.run("import json\nfrom guard_kernel.analysis.preflight import answer_request\n"
                "from guard_kernel.decision import current\n"
                "json.dumps([answer_request({'code': \"small.to_csv('out.csv')\"}, guard=current(), shell=get_ipython()),"
                " answer_request({'sql': 'SELECT ssn FROM customers'}, guard=current()),"
                " answer_request({'code': 3}, guard=current()), answer_request({'code': '1'}, guard=None)])")
    assert res.ok, res
    py, sql, bad, off = json.loads(ast.literal_eval(res.text))
    assert py["ok"] and py["report"]["outcome"] == "deny"
    assert py["report"]["units"][0]["denial"]["rules"][0]["id"] == "defaults.export"
    assert sql["ok"] and sql["report"]["units"][0]["kind"] == "statement"
    assert sql["report"]["units"][0]["denial"]["rules"][0]["id"] == "source:warehouse.customers.deny_columns"
    assert not bad["ok"] and "string" in bad["error"]
    assert not off["ok"] and "not active" in off["error"]
