"""The HTML of the audit pages: the session list, and the bar above a session's audit notebook.

Server-side HTML from Jinja2 templates with autoescape on: every value from an audit (actor,
notebook path, policy name, user) is text, never markup.  No script, no front-end build: the
filters are a plain GET form.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import quote

import jinja2

from jupyter_ext.pages.store import Session

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.4rem; margin: 0 0 .3rem; }
.muted { color: #666; font-size: .9rem; }
form#filters { margin: 1rem 0; display: flex; gap: 1rem; align-items: center; }
table#sessions { border-collapse: collapse; width: 100%; font-size: .9rem; }
#sessions th, #sessions td { border-bottom: 1px solid #ddd; padding: .35rem .5rem; text-align: left; }
#sessions td.num { text-align: right; font-variant-numeric: tabular-nums; }
#sessions tr.denied td.denials { color: #b00020; font-weight: 600; }
.chain-ok { color: #137333; } .chain-broken { color: #b00020; font-weight: 600; }
#guard-bar { font-family: system-ui, sans-serif; background: #f3f3f3; border-bottom: 1px solid #ccc;
             padding: .6rem 1rem; display: flex; gap: 1.2rem; align-items: center; flex-wrap: wrap; }
#guard-bar a { color: #0b57d0; }
"""

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, loader=jinja2.DictLoader({
    "list.html": """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Guard audits</title><style>{{ style }}</style></head>
<body>
<h1>Guard audits</h1>
<p class="muted">Audit folder {{ folder }} · {{ rows | length }} of {{ total }} session(s) shown, newest first ·
<a href="{{ base }}guard/api/sessions">JSON</a></p>
<form id="filters" method="get" action="{{ base }}guard/">
  <label>Actor
    <select name="actor" id="actor">
      <option value=""{% if not actor %} selected{% endif %}>any</option>
      {% for a in actors %}<option value="{{ a }}"{% if a == actor %} selected{% endif %}>{{ a }}</option>{% endfor %}
    </select></label>
  <label><input type="checkbox" name="denials" value="1" id="denials"{% if denials %} checked{% endif %}>
    has denials</label>
  <button type="submit" id="filter">Filter</button>
  {% if actor or denials %}<a href="{{ base }}guard/" id="clear">clear</a>{% endif %}
</form>
{% if rows %}
<table id="sessions">
<thead><tr><th>start</th><th>session</th><th>actor</th><th>user</th><th>kernel</th><th>notebook</th><th>policy</th>
<th>cells</th><th>denials</th><th>truncations</th><th>chain</th></tr></thead>
<tbody>
{% for r in rows %}<tr class="session{% if r.denials %} denied{% endif %}" data-session="{{ r.id }}">
<td>{{ r.start }}</td><td><a class="open" href="{{ base }}guard/sessions/{{ r.href }}">{{ r.id }}</a></td>
<td class="actor">{{ r.actor }}</td><td>{{ r.user }}</td><td>{{ r.kernel }}</td><td>{{ r.notebook }}</td>
<td>{{ r.policy }}</td><td class="num">{{ r.cells }}</td><td class="num denials">{{ r.denials }}</td>
<td class="num">{{ r.truncations }}</td>
<td class="chain {{ 'chain-ok' if r.chain_ok else 'chain-broken' }}" title="{{ r.chain_note }}">
{{ '✓' if r.chain_ok else '✗' }}</td></tr>
{% endfor %}</tbody></table>
{% else %}<p id="empty">No sessions{% if actor or denials %} match these filters{% endif %}.</p>{% endif %}
</body></html>
""",
    "bar.html": """<div id="guard-bar">
<a href="{{ base }}guard/" id="back">← all sessions</a>
<strong>{{ id }}</strong>
<span class="{{ 'chain-ok' if chain_ok else 'chain-broken' }}" id="chain">
chain {{ '✓ intact' if chain_ok else '✗ BROKEN: ' ~ chain_problem }}</span>
<span>{{ denials }} denial(s)</span>
<span>download:
<a href="{{ base }}guard/sessions/{{ href }}/download/ipynb" download>.ipynb</a> ·
<a href="{{ base }}guard/sessions/{{ href }}/download/jsonl" download>.jsonl</a> ·
<a href="{{ base }}guard/sessions/{{ href }}/download/bundle" download>review bundle (.zip)</a></span>
<a href="{{ base }}guard/api/sessions/{{ href }}">JSON</a>
</div>
<style>{{ style }}</style>
""",
}))

_BODY = re.compile(r"<body[^>]*>", re.IGNORECASE)


def _row(s: Session) -> dict[str, object]:
    m = s.summary
    return {"id": s.id, "href": quote(s.id, safe=""), "start": (m.started or "")[:19].replace("T", " "),
            "actor": m.actor or "—", "user": s.header.get("user") or "—", "kernel": s.kernel,
            "notebook": m.notebook or "—", "policy": m.policy or "—", "cells": m.cells, "denials": m.denial_count,
            "truncations": m.truncations, "chain_ok": m.chain.ok,
            "chain_note": "hash chain intact" if m.chain.ok else f"BROKEN: {m.chain.problem}"}


def list_page(rows: Sequence[Session], *, base: str, folder: str, total: int, actors: Sequence[str],
              actor: str, denials: bool) -> str:
    """The page at ``/guard/``: the sessions table under the filters."""
    return _ENV.get_template("list.html").render(
        style=_STYLE, base=base, folder=folder, rows=[_row(s) for s in rows], total=total, actors=actors,
        actor=actor, denials=denials)


def session_page(s: Session, notebook_html: str, *, base: str) -> str:
    """The page at ``/guard/sessions/<id>``: nbconvert's page of the audit notebook, with the bar
    (back, chain, downloads) as the first thing in its body."""
    bar = _ENV.get_template("bar.html").render(
        style=_STYLE, base=base, id=s.id, href=quote(s.id, safe=""), chain_ok=s.summary.chain.ok,
        chain_problem=s.summary.chain.problem or "", denials=s.summary.denial_count)
    m = _BODY.search(notebook_html)
    if m is None:  # not the page nbconvert makes: the bar alone still gives the downloads
        return bar + notebook_html
    return notebook_html[: m.end()] + bar + notebook_html[m.end():]


__all__ = ["list_page", "session_page"]
