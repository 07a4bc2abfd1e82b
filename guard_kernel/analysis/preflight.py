"""The pre-flight: "would this be allowed?" — decided without executing anything.

Python code goes through the same cell analysis (:func:`~guard_kernel.analysis.python.analyze.analyze_tree`,
after IPython's own transforms) and SQL through the same classifier
(:mod:`guard_kernel.analysis.sql.requests`) as the live session, and every request is answered by
the same :func:`~guard_kernel.decision.evaluate.decide` (through :meth:`Guard.decide` when a live
guard is given).  What the static analysis cannot settle — SQL built at run time, a computed path,
``exec`` of a built string — is reported as *decided at run time*, never as allowed.

:func:`check` answers for a piece of code or SQL, :func:`check_cells` for a notebook's cells in
order (names bound in one cell are known in the next).  With ``guard=`` it answers for a live
session (its policy, actor, tables it created, the user namespace): what ``%guard check`` and the
kernel comm target call.  Nothing is recorded in the audit.

It sits in ``analysis/`` (analysis and decision, nothing above) so that the session's ``%guard``
magic in ``enforce/`` can use it; the command line reaches it through :mod:`guard_kernel.tools.preflight`.
"""

from __future__ import annotations

import ast
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from guard_kernel.analysis.python.analyze import CellState, analyze_tree
from guard_kernel.analysis.python.scan import (
    BUILTIN_NAMES,
    DEFAULT_ALIASES_OF_MODULES,
    EXPORT_FUNCS,
    FILE_FUNCS,
    NET_FUNCS,
    SHELL_FUNCS,
    SQL_METHODS,
    WRITE_MODE,
    WRITER_METHODS,
    WRITER_PATH_KW,
    call_arg,
    dotted,
    is_duckdb_type,
    literal_str,
)
from guard_kernel.decision.evaluate import Decision, Effect, RuleHit, decide
from guard_kernel.decision.guard import ENV_ACTOR, ENV_ENVIRONMENT, Guard, check_applies, policy_from_env
from guard_kernel.decision.request import Request
from guard_kernel.policy.actions import Action
from guard_kernel.policy.load import load_policy
from guard_kernel.policy.model import ACTORS, Policy, PolicyError
from guard_kernel.policy.paths import resolve


class Outcome(str, Enum):
    """The answer for one cell or statement (and for a whole report)."""

    ALLOW = "allow"
    """Everything found is allowed (warnings and ``would_deny`` included: they run)."""
    DENY = "deny"
    """At least one action is denied: in a session nothing of it would run."""
    RUNTIME = "runtime"
    """Nothing found is denied, but some of it can only be decided when it runs."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RuntimeNote:
    """Something the static analysis cannot settle: the session decides it when it runs."""

    line: int | None
    code: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON for agents."""
        return {"effect": "runtime", "line": self.line, "code": self.code,
                "message": f"decided at run time: {self.reason}"}


@dataclass(frozen=True)
class Unit:
    """One cell (Python) or one statement (SQL) and what the guard decides for it."""

    index: int
    """1-based number of the cell or statement."""
    kind: str
    """``cell`` or ``statement``."""
    source: str
    decisions: tuple[Decision, ...] = ()
    runtime: tuple[RuntimeNote, ...] = ()
    masked: tuple[str, ...] = ()
    """``table.column (mask)`` the statement reads and gets back masked (``mask_columns``): allowed, not denied."""

    @property
    def outcome(self) -> Outcome:
        if any(d.blocked for d in self.decisions):
            return Outcome.DENY
        return Outcome.RUNTIME if self.runtime else Outcome.ALLOW

    def as_dict(self) -> dict[str, Any]:
        """One object per cell/statement; each decision has the kernel's denial JSON shape."""
        denials = [d for d in self.decisions if d.blocked]
        out: dict[str, Any] = {"kind": self.kind, "index": self.index, "outcome": self.outcome.value,
                               "source": self.source, "decisions": [d.as_dict() for d in self.decisions],
                               "runtime": [n.as_dict() for n in self.runtime]}
        if self.masked:
            out["masked"] = list(self.masked)
        if denials:  # what the kernel would have raised, as GuardDenied.as_dict() shows it
            out["denial"] = {**denials[0].as_dict(), **({"also": [d.as_dict() for d in denials[1:]]}
                                                        if len(denials) > 1 else {})}
        return out


@dataclass(frozen=True)
class Report:
    """Every decision of a pre-flight, cell by cell or statement by statement."""

    policy: Mapping[str, str]
    """Name, file and SHA-256 of the policy in force."""
    actor: str
    environment: str
    units: tuple[Unit, ...] = ()
    max_rows: int = 0
    """The actor's row cap: a read that returns more is cut (or refused) when it runs."""
    on_exceed: str = "truncate"

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """Every decision, in order."""
        return tuple(d for u in self.units for d in u.decisions)

    @property
    def outcome(self) -> Outcome:
        """DENY if anything is denied, else RUNTIME if anything waits for run time, else ALLOW."""
        found = {u.outcome for u in self.units}
        return next((o for o in (Outcome.DENY, Outcome.RUNTIME) if o in found), Outcome.ALLOW)

    @property
    def allowed(self) -> bool:
        """True only when everything is decided and allowed (what is decided at run time is not)."""
        return self.outcome is Outcome.ALLOW

    @property
    def exit_code(self) -> int:
        """``guard-kernel check``: 0 allowed, 3 something denied, 4 something decided at run time."""
        return {Outcome.ALLOW: 0, Outcome.DENY: 3, Outcome.RUNTIME: 4}[self.outcome]

    def as_dict(self) -> dict[str, Any]:
        """JSON for agents."""
        return {"policy": dict(self.policy), "actor": self.actor, "environment": self.environment,
                "outcome": self.outcome.value, "allowed": self.allowed,
                "row_cap": {"max_rows": self.max_rows, "on_exceed": self.on_exceed},
                "units": [u.as_dict() for u in self.units]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def render(self) -> str:
        """Text for people: one block per cell or statement."""
        head = (f"policy {self.policy.get('name')} ({self.policy.get('file')}), actor {self.actor}, "
                f"environment {self.environment}")
        lines = [head]
        for u in self.units:
            first = (u.source.strip().splitlines() or [""])[0][:100]
            lines.append(f"{u.kind} {u.index}: {u.outcome.value.upper()}  {first}")
            for d in u.decisions:
                lines.extend("  " + x for x in _render_decision(d).splitlines())
            if u.masked:
                lines.append(f"  MASKED: {', '.join(u.masked)} will come back masked (computed in the database), "
                             "not denied")
            for n in u.runtime:
                where = f" (line {n.line})" if n.line else ""
                lines.append(f"  RUNTIME: decided at run time{where}: {n.reason}\n    code: {n.code[:200]}")
            if not u.decisions and not u.runtime and not u.masked:
                lines.append("  nothing the guard decides before it runs")
        count = {o: sum(u.outcome is o for u in self.units) for o in Outcome}
        if any(d.action is Action.SQL_READ and not d.blocked for d in self.decisions):
            lines.append(f"reads return at most {self.max_rows} rows into Python for {self.actor} "
                         f"({'cut there' if self.on_exceed == 'truncate' else 'more is refused'} when they run)")
        lines.append(f"{self.outcome.value}: {count[Outcome.ALLOW]} allowed, {count[Outcome.DENY]} denied, "
                     f"{count[Outcome.RUNTIME]} decided at run time")
        return "\n".join(lines)


def _render_decision(d: Decision) -> str:
    if d.blocked or d.message:
        return d.render()
    where = f" (line {d.line})" if d.line else ""
    rules = ", ".join(str(r) for r in d.rules) or "default"
    return f"{d.effect.value.upper()}: {d.action.value} on {d.resource}{where} — {rules}"


# ----------------------------------------------------------- the session facts


@dataclass
class _Facts:
    """The pre-flight's stand-in for a session (:class:`~guard_kernel.analysis.python.analyze.SessionFacts`):
    a policy and what the checked code created so far — no audit, nothing executed."""

    policy: Policy
    owned_tables: set[str] = field(default_factory=set)
    owned_files: set[str] = field(default_factory=set)


_CWD_LOCK = threading.Lock()


@contextmanager
def _in_dir(cwd: str | None) -> Iterator[None]:
    """Relative paths in code resolve against the process's working directory, as in a kernel
    started there: change to *cwd* while analysing (serialised; restored afterwards)."""
    if cwd is None or resolve(cwd) == resolve(os.getcwd()):
        yield
        return
    with _CWD_LOCK:
        old = os.getcwd()
        os.chdir(cwd)
        try:
            yield
        finally:
            os.chdir(old)


def _transform(code: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    return str(TransformerManager().transform_cell(code))  # type: ignore[no-untyped-call]


# --------------------------------------------------- what waits for run time


def _undecided(tree: ast.AST, lines: Sequence[str], decided: set[int], duck: Callable[[ast.AST], bool | None]
               ) -> tuple[RuntimeNote, ...]:
    """Calls that write, run, connect or execute with a target the code computes: the analysis
    cannot settle them, the session's runtime layers decide them (lines with a decision skipped).
    *duck* says whether a receiver is a DuckDB connection (None: cannot tell)."""
    notes: list[RuntimeNote] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or node.lineno in decided:
            continue
        reason = _runtime_reason(node, duck)
        if reason is not None:
            code = lines[node.lineno - 1].strip() if 0 < node.lineno <= len(lines) else ast.unparse(node)
            notes.append(RuntimeNote(node.lineno, code, reason))
    notes.sort(key=lambda n: n.line or 0)
    return tuple(notes)


def _duck_test(state: CellState | None, namespace: Mapping[str, Any] | None) -> Callable[[ast.AST], bool | None]:
    """Whether a receiver is DuckDB, from the names earlier cells bound or the live namespace."""
    def duck(node: ast.AST) -> bool | None:
        while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            node = node.func.value  # duckdb.connect(…).execute, con.cursor().execute
        if not isinstance(node, ast.Name):
            return None
        if state is not None and (node.id in state.bindings.duckdb or state.bindings.modules.get(node.id) == "duckdb"):
            return True
        if namespace is not None and node.id in namespace:
            v = namespace[node.id]
            if getattr(v, "__name__", None) in ("duckdb", "_duckdb"):
                return True
            return is_duckdb_type(type(v), "DuckDBPyConnection") or is_duckdb_type(type(v), "DuckDBPyRelation")
        return True if node.id == "duckdb" else None

    return duck


def _computed(node: ast.AST | None) -> bool:
    return node is not None and literal_str(node) is None


def _runtime_reason(call: ast.Call, duck: Callable[[ast.AST], bool | None]) -> str | None:
    parts = dotted(call.func) or []
    if parts and parts[0] in DEFAULT_ALIASES_OF_MODULES:
        parts = [*DEFAULT_ALIASES_OF_MODULES[parts[0]].split("."), *parts[1:]]
    name = ".".join(parts)
    method = call.func.attr if isinstance(call.func, ast.Attribute) else None
    if name in BUILTIN_NAMES - {"open"} and _computed(call_arg(call, 0, "source", "name")):
        return f"{name}() of a string built at run time"
    inner = call.func
    if isinstance(inner, ast.Call) and dotted(inner.func) == ["getattr"] and _computed(call_arg(inner, 1, "name")):
        return "a call of getattr() with a name computed at run time"  # getattr(df, 'to_' + fmt)(path)
    if name in ("open", "io.open", "builtins.open", "os.open"):
        mode = call_arg(call, 1, "mode", "flags")
        writes = name == "os.open" or _computed(mode) or WRITE_MODE.search(literal_str(mode) or "r")
        if writes and (name == "os.open" or _computed(call_arg(call, 0, "file"))):
            return f"{name}() of a path or mode computed at run time"
        return None
    if method in SQL_METHODS and call.args and literal_str(call.args[0]) is None:
        is_duck = duck(call.func.value) if isinstance(call.func, ast.Attribute) else None
        # pandas has DataFrame.query: an unknown receiver of .query() is not taken for DuckDB
        if is_duck or (is_duck is None and method != "query"):
            return f".{method}() of SQL built at run time (the DuckDB gate decides it)"
        return None
    if method in WRITER_METHODS and _computed(call_arg(call, 0, *WRITER_PATH_KW)):
        return f".{method}() to a path computed at run time"
    for table, what in ((FILE_FUNCS, "path"), (SHELL_FUNCS, "command"), (EXPORT_FUNCS, "path")):
        if name in table:
            return f"{name}() of a {what} computed at run time"
    if name in NET_FUNCS:
        return f"{name}() of a URL computed at run time"
    return None


# ------------------------------------------------------------------- deciding


def _internal_error(exc: BaseException) -> Decision:
    """The denial the cell gate gives when the analysis itself fails (fail closed), with the same rule id
    (``enforce.ipython.cell.internal_error``; this layer sits below it)."""
    return Decision(Effect.DENY, Action.SQL_UNKNOWN, "cell", (RuleHit("guard-internal-error", "<guard>", 0),),
                    f"guard internal error in cell analysis: {type(exc).__name__}: {exc}",
                    "Re-run the cell; if it keeps failing, report it with the audit file.")


Decider = Callable[[Request], Decision]


_LINKS = frozenset({"os.symlink", "os.link", "Path.symlink_to", "Path.hardlink_to"})


def _through_links(intents: Sequence[Any], links: set[str]) -> list[RuntimeNote]:
    """Writes to a path this code made a link at: where the link points is known only when it runs
    (*links* collects the link paths, across cells)."""
    notes = []
    for i in intents:
        req = i.request
        if req.path and req.path in links and i.via not in _LINKS:
            notes.append(RuntimeNote(req.line, req.code or req.resource,
                                     f"{req.resource} is a link made by this code: its target is decided at run time"))
        if i.via in _LINKS and req.path:
            links.add(req.path)
    return notes


def _check_python(code: str, index: int, facts: Any, decider: Decider, *, state: CellState | None,
                  namespace: Mapping[str, Any] | None, transform: Callable[[str], str],
                  aliases: Iterable[str] | None, links: set[str]) -> Unit:
    try:
        src = transform(code)
        tree = ast.parse(src)
    except (SyntaxError, ValueError) as exc:
        note = RuntimeNote(getattr(exc, "lineno", None), code.strip()[:200],
                           f"the cell does not parse ({type(exc).__name__}: {exc}); Python reports it when it runs")
        return Unit(index, "cell", code, (), (note,))
    try:
        intents = analyze_tree(tree, src, namespace=namespace, guard=facts, aliases=aliases, transform=transform,
                               display=code, state=state)
        decisions = tuple(decider(i.request) for i in intents)
    except Exception as exc:  # fail closed, as the cell gate does
        return Unit(index, "cell", code, (_internal_error(exc),))
    decided = {d.line for d in decisions if d.line is not None}
    notes = _through_links(intents, links) + list(_undecided(tree, src.splitlines(), decided,
                                                             _duck_test(state, namespace)))
    return Unit(index, "cell", code, decisions, tuple(sorted(notes, key=lambda n: n.line or 0)))


def _sql_context(policy: Policy, facts: Any, database: str | None) -> Any:
    from guard_kernel.analysis.sql import requests as sql

    ctx = sql.SqlContext(root=os.getcwd(), source_paths=sql.source_paths(policy),
                         owned_tables=frozenset(facts.owned_tables))
    if database is None:
        dbs = [s.duckdb for s in policy.sources.values() if s.duckdb]
        if len(dbs) != 1:
            return ctx  # an in-memory connection
        database = dbs[0]
    real = resolve(database)
    alias = os.path.basename(real).split(".", 1)[0].lower()
    return sql.SqlContext(root=ctx.root, source_paths=ctx.source_paths, owned_tables=ctx.owned_tables,
                          catalogs={alias: ctx.source_paths.get(real)}, default_catalog=alias,
                          catalog_paths={alias: real})


def _check_sql(text: str, facts: Any, decider: Decider, database: str | None) -> list[Unit]:
    from guard_kernel.analysis.sql import requests as sql

    stmts = sql.analyze(text)
    reqs = sql.to_requests(stmts, _sql_context(facts.policy, facts, database))
    units: list[Unit] = []
    pos = 0
    for i, st in enumerate(stmts, 1):  # each statement gives one request, then one per file it reads
        mine = reqs[pos:pos + 1 + len(st.files)]
        pos += len(mine)
        decisions = tuple(decider(r) for r in mine)
        masked: tuple[str, ...] = ()
        if decisions and not any(d.blocked for d in decisions):
            masked, denial = _masks(facts.policy, st, decisions[0])
            decisions += (denial,) if denial is not None else ()
        units.append(Unit(i, "statement", st.text.strip(), decisions, masked=masked))
        for t in st.created:
            facts.owned_tables.update({t.name, str(t)})
    return units


def _masks(policy: Policy, st: Any, first: Decision) -> tuple[tuple[str, ...], Decision | None]:
    """What ``mask_columns`` does to statement *st* in a session: the masked columns it reads
    (``table.column (mask)``), or the denial when masking cannot hold (a filter, join, group or
    order on a masked column…) — the rewrite the DuckDB gate runs, without running it."""
    masks = policy.mask_columns()
    named = [t.name for t in st.tables if t.name in masks]
    if not named:
        return (), None
    from guard_kernel.analysis.sql import mask

    try:
        mask.rewrite(st.text, "duckdb", masks)
    except mask.MaskDenied as e:
        from guard_kernel.decision.evaluate import mask_denial

        return (), mask_denial(policy, e, first)
    cols = {c.rpartition(".")[2]: c.rpartition(".")[0] for c in st.columns}
    out: list[str] = []
    for t in dict.fromkeys(named):
        for c, kind in sorted(masks[t].items()):
            starred = any(s.table in (None, t) and c not in s.exclude for s in st.stars)
            if starred or (c in cols and cols[c] in ("", t)):
                out.append(f"{t}.{c} ({kind})")
    return tuple(out), None


def looks_like_python(text: str) -> bool:
    """Whether *text* is Python (IPython syntax included) rather than SQL."""
    try:
        ast.parse(_transform(text))
    except (SyntaxError, ValueError):
        return False
    return True


@dataclass
class _Setup:
    policy: Policy
    actor: str
    environment: str
    facts: Any
    decider: Decider
    namespace: Mapping[str, Any] | None
    transform: Callable[[str], str]
    aliases: Iterable[str] | None


def _setup(policy: Policy | str | os.PathLike[str] | None, actor: str | None, environment: str | None,
           cwd: str | None, guard: Guard | None, namespace: Mapping[str, Any] | None,
           shell: Any) -> _Setup:
    if guard is not None:  # a live session: its policy, actor, tables and files, its decision cache
        am = getattr(shell, "alias_manager", None)
        return _Setup(guard.policy, guard.actor, guard.environment, guard, guard.decide,
                      namespace if namespace is not None else getattr(shell, "user_ns", None),
                      getattr(shell, "transform_cell", None) or _transform,
                      [n for n, _ in am.aliases] if am is not None else None)
    root = resolve(cwd or os.getcwd())
    if policy is None:
        pol = policy_from_env(root=root)
    elif isinstance(policy, Policy):
        pol = policy
    else:
        pol = load_policy(policy, root=root)
    actor = actor or os.environ.get(ENV_ACTOR, "agent")
    if actor not in ACTORS:
        raise PolicyError("<check>", None, "actor", f"actor must be one of {', '.join(ACTORS)}, not {actor!r}")
    environment = environment or os.environ.get(ENV_ENVIRONMENT, "default")
    check_applies(pol, actor, environment)
    facts = _Facts(pol)
    return _Setup(pol, actor, environment, facts, lambda r: decide(pol, r, actor, environment),
                  namespace, _transform, None)


def check_cells(cells: Sequence[str], *, policy: Policy | str | os.PathLike[str] | None = None,
                actor: str | None = None, environment: str | None = None, cwd: str | None = None,
                guard: Guard | None = None, namespace: Mapping[str, Any] | None = None,
                shell: Any = None) -> Report:
    """Decide Python *cells* in order (a notebook), without running any of them."""
    s = _setup(policy, actor, environment, cwd, guard, namespace, shell)
    state = CellState() if s.namespace is None else None  # a live namespace knows the names itself
    links: set[str] = set()
    with _in_dir(cwd):
        units = tuple(_check_python(c, i, s.facts, s.decider, state=state, namespace=s.namespace,
                                    transform=s.transform, aliases=s.aliases, links=links)
                      for i, c in enumerate(cells, 1))
    return Report(s.policy.ref(), s.actor, s.environment, units, s.policy.limits.for_actor(s.actor),
                  s.policy.limits.on_exceed)


def check(code_or_sql: str, *, policy: Policy | str | os.PathLike[str] | None = None, actor: str | None = None,
          environment: str | None = None, cwd: str | None = None, language: str = "auto",
          database: str | None = None, guard: Guard | None = None, namespace: Mapping[str, Any] | None = None,
          shell: Any = None) -> Report:
    """Would *code_or_sql* be allowed?  Decided without executing anything.

    *policy*: a :class:`Policy`, a file, or None for the session's (``GUARD_KERNEL_POLICY`` or the
    built-in default); *actor* defaults to ``GUARD_KERNEL_ACTOR`` or ``agent``; *cwd* is the project
    root relative paths resolve against.  *language* is ``python``, ``sql`` or ``auto`` (Python if it
    parses as Python).  SQL runs, as far as the answer goes, on a connection to *database* (default:
    the policy's DuckDB source when it declares exactly one, else an in-memory database).  With
    *guard* (and *shell*, an IPython shell) it answers for that live session.
    """
    if language not in ("auto", "python", "sql"):
        raise ValueError(f"language must be auto, python or sql, not {language!r}")
    with _in_dir(cwd):
        is_python = language == "python" or (language == "auto" and looks_like_python(code_or_sql))
    if is_python:
        return check_cells([code_or_sql], policy=policy, actor=actor, environment=environment, cwd=cwd,
                           guard=guard, namespace=namespace, shell=shell)
    s = _setup(policy, actor, environment, cwd, guard, namespace, shell)
    with _in_dir(cwd):
        units = _check_sql(code_or_sql, s.facts, s.decider, database)
    return Report(s.policy.ref(), s.actor, s.environment, tuple(units), s.policy.limits.for_actor(s.actor),
                  s.policy.limits.on_exceed)


def answer_request(request: Any, *, guard: Guard | None, shell: Any = None) -> dict[str, Any]:
    """What a kernel comm target (``guard_kernel.check``) sends back for *request* ``{code}`` (or
    ``{sql}``, with an optional ``language``): ``{"ok": true, "report": …}`` with the :class:`Report` of
    this live session, or ``{"ok": false, "error": …}``.  Never raises: a comm handler must not."""
    if guard is None:
        return {"ok": False, "error": "guard_kernel is not active in this session"}
    if not isinstance(request, Mapping):
        return {"ok": False, "error": "the request is a JSON object: {\"code\": \"…\"} or {\"sql\": \"…\"}"}
    text = request.get("code", request.get("sql"))
    language = request.get("language", "sql" if "sql" in request and "code" not in request else "auto")
    if not isinstance(text, str) or language not in ("auto", "python", "sql"):
        return {"ok": False, "error": "give code (or sql) as a string; language is auto, python or sql"}
    try:
        return {"ok": True, "report": check(text, guard=guard, shell=shell, language=language).as_dict()}
    except Exception as exc:  # the answer says what went wrong; the session goes on
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


__all__ = ["Outcome", "Report", "RuntimeNote", "Unit", "answer_request", "check", "check_cells", "looks_like_python"]
