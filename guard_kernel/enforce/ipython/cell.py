"""Whole-cell checking: decide what a cell clearly does before any line of it runs, and reject it if denied.

IPython hands every cell's AST to :class:`CellTransformer` (``shell.ast_transformers``)
after its own transforms, so ``!cmd`` and ``%%bash`` arrive as ``get_ipython().system(…)``
and ``run_cell_magic('bash', …)`` calls.  The static analysis itself (what the code clearly
means to do, as :class:`Intent` objects) lives in :mod:`guard_kernel.analysis.python.analyze`; this module
decides those intents against the policy.  If any intent is denied the whole cell is
rejected (``CellRejected``), and every internal error of the transformer becomes a denial
too, because IPython silently drops a transformer that raises anything but
``InputRejected`` and then runs cells unguarded.

The analysis API is re-exported here (``analyze_source``, ``analyze_cell``,
``analyze_tree``, ``Intent``): this module is what the extension and the runtime layer import.
"""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from guard_kernel.analysis.python.analyze import Intent, analyze_cell, analyze_source, analyze_tree
from guard_kernel.analysis.python.scan import SQL_METHODS, WRITER_METHODS, hit_lines
from guard_kernel.decision import guard as _session
from guard_kernel.decision.errors import CellRejected, GuardDenied
from guard_kernel.decision.evaluate import Decision, Effect, RuleHit
from guard_kernel.policy.actions import Action

if TYPE_CHECKING:
    from guard_kernel.decision.guard import Guard

__all__ = [
    "SQL_METHODS", "WRITER_METHODS", "CellFrame", "CellTransformer", "Intent", "analyze_cell",
    "analyze_source", "analyze_tree", "check_cell", "enforce", "guard_error", "internal_error",
]


# ------------------------------------------------------------------ deciding


def internal_error(exc: BaseException, where: str = "cell analysis") -> Decision:
    """The denial used when the guard itself fails: fail closed, and say so."""
    msg = f"guard internal error in {where}: {type(exc).__name__}: {exc}"
    return Decision(Effect.DENY, Action.SQL_UNKNOWN, "cell", (RuleHit("guard-internal-error", "<guard>", 0),),
                    msg, "Re-run the cell; if it keeps failing, report it with the audit file.")


def guard_error(guard: Guard, exc: BaseException) -> Decision:
    """Record the guard's own failure on a cell as a decision: a denial, or ``would_deny``
    under ``mode: audit`` (which blocks nothing, its own errors included)."""
    d = internal_error(exc)
    if guard.policy.mode == "audit":
        d = replace(d, effect=Effect.WOULD_DENY)
    try:
        guard.record_decision(d, "guard_error", stage="cell")
    except Exception:  # the audit failing too must not turn a denial into a run
        pass
    return d


def enforce(guard: Guard, intents: list[Intent]) -> list[Decision]:
    """Decide every intent; if any is denied, record them all and raise ``CellRejected``."""
    return guard.check_all(((i.request, i.kind, {"via": i.via, "stage": "cell"}) for i in intents),
                           error=CellRejected)


def check_cell(guard: Guard, code: str, **kw: Any) -> list[Decision]:
    """Decide the cell *code* as a whole; raise ``CellRejected`` before any line runs if denied."""
    try:
        intents = analyze_source(code, guard=guard, **kw)
        return enforce(guard, intents)
    except CellRejected:
        raise
    except Exception as exc:  # fail closed
        d = guard_error(guard, exc)
        if d.blocked:
            raise CellRejected(d) from None
        return [d]


# ---------------------------------------------------------------- transformer


@dataclass
class CellFrame:
    """One running cell, between IPython's ``pre_run_cell`` and ``post_run_cell``."""

    raw: str
    source: str | None
    started: float = field(default_factory=time.perf_counter)
    consumed: bool = False
    intents: list[Intent] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    rejected: bool = False
    static_seconds: float = 0.0
    log: list[dict[str, Any]] = field(default_factory=list)
    """What was recorded while the cell ran (the guard's ``cell_log``)."""
    outer_log: list[dict[str, Any]] | None = None
    request: dict[str, Any] = field(default_factory=dict)
    """The Jupyter request that ran the cell (msg_id, client session, username, tool)."""


def _only_guard_magics(raw: str) -> bool:
    """The cell is only ``%guard …`` lines: the guard's own status, shown even when its audit fails."""
    lines = [x.strip() for x in raw.splitlines() if x.strip()]
    return bool(lines) and all(x == "%guard" or x.startswith("%guard ") for x in lines)


class _AliasNames:
    """The shell's alias names, listed only if the analysis asks (most cells never do)."""

    __slots__ = ("_manager",)

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    def __iter__(self) -> Iterator[str]:
        return (name for name, _cmd in self._manager.aliases)


class CellTransformer(ast.NodeTransformer):
    """IPython AST transformer: analyse the tree IPython parsed, reject the cell if denied.

    Never raises anything but ``InputRejected`` (``CellRejected``): IPython would unregister it.
    """

    def __init__(self, shell: Any = None, *, analyze: Callable[..., list[Intent]] = analyze_tree) -> None:
        super().__init__()
        self.shell = shell
        self.analyze = analyze
        self._local = threading.local()  # ipykernel subshells run cells on several threads at once

    @property
    def frames(self) -> list[CellFrame]:
        """This thread's running cells (nested ``run_cell`` calls stack)."""
        frames: list[CellFrame] | None = self._local.__dict__.get("frames")
        if frames is None:
            frames = self._local.frames = []
        return frames

    def begin(self, raw: str, transformed: str | None) -> CellFrame:
        frame = CellFrame(raw, transformed)
        self.frames.append(frame)
        return frame

    def end(self) -> CellFrame | None:
        return self.frames.pop() if self.frames else None

    def _source_for(self, node: ast.AST) -> tuple[str | None, CellFrame | None]:
        """The text of *node* if it is the current cell's tree (once per cell), else None."""
        if not self.frames:
            return None, None
        frame = self.frames[-1]
        if frame.consumed or frame.source is None or not isinstance(node, ast.Module):
            return None, None
        frame.consumed = True
        last = node.body[-1].end_lineno if node.body else 0
        if (last or 0) > frame.source.count("\n") + 1:
            return None, frame  # not the text we were told about: walk the whole tree
        return frame.source, frame

    def visit(self, node: ast.AST) -> ast.AST:
        guard = _session.current()
        if guard is None:
            return node
        frame: CellFrame | None = None
        try:
            t0 = time.perf_counter()
            source, frame = self._source_for(node)
            if not (frame is not None and _only_guard_magics(frame.raw)):  # %guard still says why
                guard.audit_ready()  # fail closed: a cell whose record cannot be written does not run
            kw: dict[str, Any] = {}
            if source is not None and self.analyze is analyze_tree and source.isascii():
                hits = kw["hits"] = hit_lines(source)
                if not hits:
                    # most cells mention no interesting name: analyze_tree would return [] at its
                    # pre-filter, so skip gathering the shell's namespace, aliases and db path for it
                    if frame is not None:
                        frame.static_seconds = time.perf_counter() - t0
                    return node
            shell = self.shell
            ns = getattr(shell, "user_ns", None)
            am = getattr(shell, "alias_manager", None)
            aliases = _AliasNames(am) if am is not None else None
            transform = getattr(shell, "transform_cell", None)
            db = getattr(getattr(shell, "db", None), "root", None)
            intents = self.analyze(node, source, namespace=ns, guard=guard, aliases=aliases, transform=transform,
                                   display=frame.raw if frame is not None and source is not None else None,
                                   db_path=str(db) if db is not None else None, **kw)
            if frame is not None:
                frame.intents = intents
            decisions = enforce(guard, intents)
            if frame is not None:
                frame.decisions = decisions
                frame.static_seconds = time.perf_counter() - t0
        except CellRejected as exc:
            if frame is not None:
                frame.rejected = True
                frame.decisions = list(exc.decisions)
            raise
        except GuardDenied as exc:  # the audit cannot be written
            if frame is not None:
                frame.rejected = True
                frame.decisions = list(exc.decisions)
            raise CellRejected(exc.decisions) from None
        except Exception as exc:  # fail closed: never let IPython drop the guard and run the cell
            d = guard_error(guard, exc)
            if frame is not None:
                frame.decisions = [d]
            if d.blocked:
                if frame is not None:
                    frame.rejected = True
                raise CellRejected(d) from None
        return node
