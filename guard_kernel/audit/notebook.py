"""The audit notebook: a session's audit as a document a reviewer reads (ipynb, Markdown, HTML).

:class:`NotebookRenderer` takes an audit file's lines one at a time (the same
:class:`~guard_kernel.audit.integrity.ChainCheck` as ``verify``), so a crashed session's file and
a 100,000-record one render in one streamed pass; it is incremental, so the live notebook
(:mod:`guard_kernel.audit.live`) feeds it only the records written since the last cell.

Layout: a header cell (who, where, when, policy and its hash, layers in force, counts), a
"Denials" section linking to each denied cell, then the session in order — each executed cell
as a code cell with its execution count and a short note of the decisions inside it.  Denied
cells are tagged ``guard-denied`` (truncated ``guard-truncated``, would-deny ``guard-would-deny``).
Only what the audit holds is shown (it is redacted when written), all of it escaped: a
resource or message is never rendered as Markdown or HTML.  Records after a break in the hash
chain are not shown: the document says where the chain breaks and how many records follow.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from guard_kernel.audit.integrity import ChainCheck, lines

FORMATS = ("ipynb", "html", "md")
TAGS = {"deny": "guard-denied", "would_deny": "guard-would-deny", "truncate": "guard-truncated", "warn": "guard-warned"}
"""Cell tags by the cell's worst effect."""
_PREFIX = {"deny": "⛔ DENIED", "would_deny": "⚠️ WOULD BE DENIED", "truncate": "✂️ TRUNCATED", "warn": "⚠️ WARNED"}
_NOT_DECISIONS = frozenset({"session", "session_end", "cell", "extension", "fork", "launcher", "audit_gap"})
_MAX_CODE = 20_000
"""Characters of one cell's code shown (the audit keeps it all)."""
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~$])")
"""What could make one line of text into Markdown (emphasis, links, tables, code, maths)."""
_NEEDS_WORK = re.compile(r"[\\`*_\[\]|~$&<>\t\n\r\f\v\x0b\x0c\u0085\u2028\u2029]|\s\s|^\s|\s$")
"""Characters :func:`esc` changes (whitespace: runs and newlines become one space)."""


def esc(text: Any, limit: int = 400) -> str:
    """*text* as inert Markdown on one line: HTML and Markdown characters escaped, at most *limit* long."""
    s = text if isinstance(text, str) else str(text if text is not None else "")
    if len(s) <= limit and not _NEEDS_WORK.search(s):
        return s  # most values (ids, actions, times) need nothing: one scan instead of four
    s = " ".join(s.split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def code(text: Any, limit: int = 300) -> str:
    """*text* as a one-line Markdown code span (HTML inside one is shown, not rendered)."""
    s = " ".join(str(text if text is not None else "").split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    s = s.replace("|", "¦")  # a pipe ends a table cell even inside a code span
    fence = "`" * (1 + max((len(m) for m in re.findall(r"`+", s)), default=0))
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}" if s else ""


def _rules(rules: Iterable[Any]) -> str:
    out = []
    for r in rules:
        if isinstance(r, Mapping):
            where = f" ({esc(r['file'], 200)}:{esc(r.get('line'))})" if r.get("file") else ""
            out.append(f"{esc(r.get('id'), 80)}{where}")
        elif r:
            out.append(esc(r, 80))
    return ", ".join(out) or "no rule (a default or a fixed protection)"


_HEADING = {"deny": "DENIED", "would_deny": "WOULD BE DENIED"}
"""Headings of denied cells' notes: JupyterLab and nbconvert both make their id the text with
spaces as dashes, which is what the Denials section links to."""


def _anchor(decision: str, seq: Any) -> str:
    return f"{_HEADING[decision]} at seq {seq}".replace(" ", "-")


def _md(source: str, **meta: Any) -> dict[str, Any]:
    return {"cell_type": "markdown", "metadata": meta, "source": source}


class NotebookRenderer:
    """Feed it an audit file's lines in order; :meth:`notebook` is the document so far."""

    def __init__(self, source: str = "") -> None:
        self.source = source
        self.check = ChainCheck()
        self.header: dict[str, Any] = {}
        self.cells: list[dict[str, Any]] = []
        self.denied: list[tuple[str, str, str]] = []
        """(anchor, what, first message) of each denied or would-deny cell."""
        self.counts: Counter[str] = Counter()
        self.cell_count = 0
        self.unshown = 0
        self.end: dict[str, Any] | None = None
        self.gaps: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self._n = 0

    # ---------------------------------------------------------------- reading

    def feed(self, raw: bytes) -> None:
        """One line of the audit file (with its newline)."""
        rec = self.check.feed(raw)
        if rec is None:
            return
        if self.check.problem is not None:  # not proven by the chain: counted, not shown
            self.unshown += 1
            return
        kind = rec.get("kind")
        if not self.header and kind in ("session", "fork"):
            self.header = rec
            return
        if kind == "cell":
            self._cell(rec)
        elif kind == "session_end":
            self._flush_pending("Decisions outside any cell")
            self.end = rec
        elif kind == "audit_gap":
            self.gaps.append(rec)
            self._add(_md(f"**⚠️ Audit gap** since {esc(rec.get('since'))}: {esc(rec.get('reason'))}; "
                          f"{esc(rec.get('refused'))} action(s) were refused meanwhile."))
        elif kind not in _NOT_DECISIONS:
            decision = str(rec.get("decision", ""))
            self.counts[decision] += 1
            self._pending.append(rec)

    def feed_file(self, path: str) -> NotebookRenderer:
        """Every line of *path*."""
        for raw in lines(path):
            self.feed(raw)
        return self

    def _add(self, cell: dict[str, Any]) -> None:
        self._n += 1
        cell["id"] = f"guard-{self._n}"
        self.cells.append(cell)

    def _cell(self, rec: dict[str, Any]) -> None:
        inside_seqs = {x.get("seq") for x in rec.get("inside") or () if isinstance(x, Mapping)}
        if rec.get("inside_more") or all(p.get("seq") in inside_seqs for p in self._pending):
            mine = self._pending  # the usual case: every decision since the last cell was made in this one
        else:
            mine = [p for p in self._pending if p.get("seq") in inside_seqs]
            self._pending = [p for p in self._pending if p.get("seq") not in inside_seqs]
            self._flush_pending("Decisions outside any cell")
        self.cell_count += 1
        decision = str(rec.get("decision") or "allow")
        if rec.get("status") == "rejected":
            decision = "deny"
        tags = [TAGS[decision]] if decision in TAGS else []
        count = rec.get("execution_count")
        code = str(rec.get("code") or "")
        if len(code) > _MAX_CODE:
            code = code[:_MAX_CODE] + f"\n# … {len(code) - _MAX_CODE} more characters in the audit record"
        outputs: list[dict[str, Any]] = []
        if rec.get("output") is not None:
            outputs.append({"output_type": "execute_result", "execution_count": count if isinstance(count, int) else None,
                            "data": {"text/plain": str(rec["output"])}, "metadata": {}})
        meta = {"tags": tags, "editable": False, "deletable": False,
                "guard_kernel": {"seq": rec.get("seq"), "status": rec.get("status"), "decision": decision}}
        self._add({"cell_type": "code", "execution_count": count if isinstance(count, int) else None,
                   "metadata": meta, "outputs": outputs, "source": code})
        self._add(_md(self._note(rec, decision, mine), tags=tags))
        if decision in ("deny", "would_deny"):
            first = next((str(p.get("message")) for p in mine if p.get("decision") == decision and p.get("message")),
                         str(rec.get("message") or rec.get("error") or ""))
            what = f"In [{count if count is not None else 'silent'}] {_HEADING[decision].lower()} at seq {rec.get('seq')}"
            self.denied.append((_anchor(decision, rec.get("seq")), what, first))
        self._pending = []

    def _note(self, rec: Mapping[str, Any], decision: str, mine: list[dict[str, Any]]) -> str:
        seq, count = rec.get("seq"), rec.get("execution_count")
        req = rec.get("request") or {}
        who = [f"{k} {esc(req[k], 60)}" for k in ("tool", "client", "agent", "username") if req.get(k)]
        when = f"{esc(rec.get('ts'), 40)}, {rec.get('duration_ms', '?')} ms"
        head = (f"#### {_HEADING[decision]} at seq {seq}\n\n**{_PREFIX[decision]}** · " if decision in _HEADING
                else f"**{_PREFIX[decision]}** · " if decision in _PREFIX else "")
        first = (f"{head}In \\[{count if count is not None else 'silent'}\\] · {esc(rec.get('status'))} · {when}"
                 + (f" · {', '.join(who)}" if who else "") + f" · seq {seq}")
        out = [first]
        if rec.get("status") == "rejected":
            out.append(f"- **refused before it ran**: {esc(rec.get('message'), 600)} — rules: {_rules(rec.get('rules') or ())}")
        shown = [p for p in mine if p.get("decision") != "allow"][:20]
        for p in shown:
            out.append(f"- **{esc(p.get('decision'))}** {code(p.get('action'), 40)} {esc(p.get('resource'), 120)}"
                       f" — {esc(p.get('message'), 300) or 'no message'}"
                       + (f" — rules: {_rules(p.get('rules') or ())}" if p.get("kind") != "truncate" else "")
                       + (f" — hint: {esc(p.get('hint'), 300)}" if p.get("hint") else "")
                       + (f" ({esc(p.get('returned'))} rows kept, cap {esc(p.get('max_rows'))})"
                          if p.get("kind") == "truncate" else ""))
        allowed = sum(1 for p in mine if p.get("decision") == "allow")
        if allowed:
            out.append(f"- {allowed} action(s) allowed")
        if not shown and decision != "allow" and rec.get("status") != "rejected":
            out.append(f"- {esc(rec.get('message'), 600)} — rules: {_rules(rec.get('rules') or ())}")
        if rec.get("error"):
            out.append(f"- raised: {esc(rec.get('error'), 500)}")
        return "\n".join(out)

    def _flush_pending(self, title: str) -> None:
        if not self._pending:
            return
        rows = [f"- seq {p.get('seq')} **{esc(p.get('decision'))}** {code(p.get('action'), 40)} "
                f"{esc(p.get('resource'), 120)} — {esc(p.get('message'), 300)}" for p in self._pending[:50]]
        more = f"\n- … and {len(self._pending) - 50} more" if len(self._pending) > 50 else ""
        self._add(_md(f"**{title}** ({len(self._pending)})\n\n" + "\n".join(rows) + more))
        self._pending = []

    # ---------------------------------------------------------------- writing

    @property
    def last_hash(self) -> str | None:
        return self.check.last.get("hash") if self.check.last else None

    def _ended(self) -> str:
        if self.end is not None:
            return f"closed ({esc(self.end.get('reason') or 'stop')}): {esc(self.end.get('message'))}"
        return f"**{esc(self.check.ended)}** — the session did not close its audit (it crashed, was killed, or is still running)"

    def _header_cell(self) -> dict[str, Any]:
        h, c = self.header, self.counts
        pol: Mapping[str, Any] = h["policy"] if isinstance(h.get("policy"), Mapping) else {}
        kern: Mapping[str, Any] = h["kernel"] if isinstance(h.get("kernel"), Mapping) else {}
        res = self.check.result()
        chain = (f"ok — {res.records} records, last hash `{self.last_hash}`" if res.ok
                 else f"**BROKEN**: {esc(res.problem, 600)} — {self.unshown} record(s) after the break are not shown")
        layers = ", ".join(esc(x.get("layer"), 40) for x in h.get("in_force") or () if isinstance(x, Mapping)) or "—"
        rows = [
            ("session", esc(h.get("session") or self.check.session)),
            ("who", f"{esc(h.get('actor'))} · {esc(h.get('user'))}@{esc(h.get('host'))} · environment "
                    f"{esc(h.get('environment'))}"),
            ("where", f"{esc(h.get('cwd'))} · kernel {esc(kern.get('name'))} {esc(kern.get('id') or '')}"
                      + (f" · notebook {esc(h.get('notebook'))}" if h.get("notebook") else "")),
            ("when", f"{esc(h.get('ts'))} → {esc(self.check.last.get('ts') if self.check.last else None)}"),
            ("ended", self._ended()),
            ("policy", f"{esc(pol.get('name'))} ({esc(h.get('policy_mode'))}, lock {esc(h.get('lock'))}) · "
                       f"{esc(h.get('policy_file'))} · sha256 {code(pol.get('sha256'), 80)}"),
            ("layers in force", layers),
            ("chain", chain),
        ]
        if h.get("previous_session"):
            rows.append(("restart of", esc(h.get("previous_session"))))
        table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
        counts = ("| cells | allowed | denied | truncated | warnings | would-deny |\n|---|---|---|---|---|---|\n"
                  f"| {self.cell_count} | {c.get('allow', 0)} | {c.get('deny', 0)} | {c.get('truncate', 0)} | "
                  f"{c.get('warn', 0)} | {c.get('would_deny', 0)} |")
        title = f"# Audit notebook — session {esc(h.get('session') or self.check.session or '?')}"
        note = ("*Rendered from the session's audit file"
                + (f" {code(self.source)}" if self.source else "")
                + " by guard\\_kernel. Nothing in it runs when it is opened; match "
                  "`metadata.guard_kernel.last_hash` with `guard-kernel audit verify` on the `.jsonl`.*")
        if not self.header:
            title += "\n\n**⚠️ The audit has no session header** (" + esc(res.problem or "no records") + ")"
        return _md(f"{title}\n\n{note}\n\n{table}\n\n{counts}", tags=["guard-header"])

    def _denials_cell(self) -> dict[str, Any]:
        if not self.denied:
            return _md("## Denials\n\nNo cell was denied.", tags=["guard-denials"])
        rows = [f"- [{esc(what)}](#{anchor}) — {esc(msg, 200)}" for anchor, what, msg in self.denied]
        return _md(f"## Denials ({len(self.denied)})\n\n" + "\n".join(rows), tags=["guard-denials"])

    def notebook(self) -> dict[str, Any]:
        """The nbformat 4 document (a plain dict) of what was fed so far."""
        tail: list[dict[str, Any]] = []
        if self._pending:
            rows = [f"- seq {p.get('seq')} **{esc(p.get('decision'))}** {code(p.get('action'), 40)} "
                    f"{esc(p.get('resource'), 120)} — {esc(p.get('message'), 300)}" for p in self._pending[:50]]
            tail.append(_md(f"**Decisions with no cell record after them** ({len(self._pending)}): the cell that "
                            "made them had not finished when the audit ends\n\n" + "\n".join(rows),
                            tags=["guard-unfinished"]))
        res = self.check.result()
        end = _md(f"## How it ended\n\n{self._ended()}"
                  + (f"\n\n**The hash chain breaks**: {esc(res.problem, 600)}; {self.unshown} later record(s) "
                     "are not shown." if not res.ok else ""), tags=["guard-end"])
        for i, cell in enumerate([*tail, end]):
            cell["id"] = f"guard-end-{i}"
        cells = [self._header_cell(), self._denials_cell(), _md("## The session"), *self.cells, *tail, end]
        cells[0]["id"], cells[1]["id"], cells[2]["id"] = "guard-header", "guard-denials", "guard-session"
        return {
            "nbformat": 4, "nbformat_minor": 5, "cells": cells,
            "metadata": {
                "language_info": {"name": "python"},
                "guard_kernel": {"session": self.header.get("session") or self.check.session,
                                 "last_hash": self.last_hash, "last_seq": self.check.records,
                                 "chain_ok": res.ok, "chain_problem": res.problem, "ended": res.ended,
                                 "source": self.source},
            },
        }


def render(path: str) -> dict[str, Any]:
    """The audit notebook of the audit file at *path* (streamed)."""
    return NotebookRenderer(path).feed_file(path).notebook()


def to_markdown(nb: Mapping[str, Any]) -> str:
    """The notebook as one Markdown document (code cells fenced, outputs as text)."""
    parts = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            parts.append(cell["source"])
            continue
        code = cell["source"]
        fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", code)), default=0))
        parts.append(f"{fence}python\n{code}\n{fence}")
        for out in cell.get("outputs") or ():
            text = str(out.get("data", {}).get("text/plain", ""))
            f2 = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
            parts.append(f"Out:\n\n{f2}text\n{text}\n{f2}")
    return "\n\n".join(parts) + "\n"


def to_html(nb: Mapping[str, Any]) -> str:
    """The notebook as a standalone HTML page (nbconvert's lab template; nothing is executed).  No
    sanitising pass: it would escape the rendered Markdown itself; every text from the audit is
    escaped when the notebook is made (:func:`esc`, :func:`code`), code is highlighted, outputs are text."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")  # type: ignore[no-untyped-call]
    body, _ = exporter.from_notebook_node(nbformat.from_dict(dict(nb)))  # type: ignore[no-untyped-call]
    return str(body)


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def to_ipynb(nb: Mapping[str, Any]) -> str:
    """The notebook as .ipynb text, one cell a line (json's indenting encoder is pure Python, 5x slower)."""
    head = _ENCODE({k: v for k, v in nb.items() if k != "cells"})
    cells = ",\n".join(_ENCODE(c) for c in nb["cells"])
    return '{"cells":[\n' + cells + "\n]," + head[1:] + "\n"


def format_for(fmt: str | None, out: str | None) -> str:
    """The output format: *fmt*, else the suffix of *out*, else ipynb."""
    if fmt:
        return fmt
    if out:
        suffix = out.rsplit(".", 1)[-1].lower() if "." in out else ""
        if suffix in ("html", "htm"):
            return "html"
        if suffix in ("md", "markdown"):
            return "md"
    return "ipynb"


def write_as(nb: Mapping[str, Any], fmt: str) -> str:
    """The notebook as text in *fmt* (``ipynb``, ``html`` or ``md``)."""
    if fmt == "html":
        return to_html(nb)
    if fmt == "md":
        return to_markdown(nb)
    return to_ipynb(nb)


__all__ = ["FORMATS", "TAGS", "NotebookRenderer", "esc", "format_for", "render", "to_html", "to_ipynb",
           "to_markdown", "write_as"]
