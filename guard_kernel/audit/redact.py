"""Redaction: what never enters the audit — credentials, secrets, and values of denied columns.

Applied to every record's fields before it is written (:meth:`Redactor.fields`):

- **credentials, always**, in code, statements, commands, messages and errors: the password of
  a connection URL (``scheme://user:***@host``), ``password=`` / ``token=`` / ``secret=`` …
  arguments and connection-string keys, SQL ``SECRET '…'`` / ``IDENTIFIED BY '…'``, and
  well-known secret shapes (AWS access keys, GitHub / Slack / Stripe / OpenAI-style tokens,
  JWTs, bearer tokens, private key blocks);
- **values of denied columns, always**: a statement that names a denied column has all its
  string literals masked; a line of code that names one has every literal on it masked that
  does not itself name the column (``df[df.ssn == '…']``, ``WHERE ssn = '…'``);
- **SQL string literals** in statements when the policy says ``audit: {redact_literals: true}``;
- **outputs**: not kept unless ``keep_outputs: true``; then text only, at most
  ``max_output_bytes``, scrubbed like the rest.

Masks are ``***``: a reader sees that something was there, not what.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

MASK = "***"

_KEYS = (r"password|passwd|pwd|passphrase|token|secret|api_?key|access_?key|secret_?key|private_?key|"
         r"client_?secret|auth_?token|access_?token|refresh_?token|session_?token|credentials?")


@cache
def _secrets() -> tuple[tuple[re.Pattern[str], str], ...]:
    """The secret patterns and their replacements, compiled on first use (not at start-up)."""
    return (
        # scheme://user:password@host
        (re.compile(r"(?P<a>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s'\"]*:)[^@/\s'\"]+(?P<b>@)"), rf"\g<a>{MASK}\g<b>"),
        # password='x', "token": "x", db_api_key = "x" (a name that ends in a key word)
        (re.compile(rf"(?i)(?P<a>['\"]?\b\w*?(?:{_KEYS})['\"]?\s*[=:]\s*(?P<q>['\"]))(?:(?!(?P=q)).)+(?P=q)"),
         rf"\g<a>{MASK}\g<q>"),
        # connection strings: password=x;  ?token=x&
        (re.compile(rf"(?i)(?P<a>(?:(?<=[;?&'\"\s])|^)(?:{_KEYS})=)[^;&'\"\s()\[\]{{}}]+(?=[;&'\"\s)]|$)"),
         rf"\g<a>{MASK}"),
        # SQL: SECRET 'x', PASSWORD 'x', KEY_ID 'x', IDENTIFIED BY 'x'
        (re.compile(r"(?i)(?P<a>\b(?:secret|password|token|key_id|session_token|identified\s+by)\s+')[^']*(?P<b>')"),
         rf"\g<a>{MASK}\g<b>"),
        (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S), MASK),
        (re.compile(r"(?i)\b(?P<a>bearer\s+)[A-Za-z0-9._~+/\-]{16,}=*"), rf"\g<a>{MASK}"),
        (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), MASK),
        (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})\b"), MASK),
        (re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"), MASK),
        (re.compile(r"\b(?:sk|rk)_(?:live|test)_[0-9a-zA-Z]{16,}\b"), MASK),
        (re.compile(r"\bsk-[A-Za-z0-9_\-]{20,}"), MASK),
        (re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"), MASK),
        (re.compile(r"\beyJ[\w\-]{8,}\.eyJ[\w\-]{8,}\.[\w\-]{8,}"), MASK),
    )


_CHEAP = re.compile(rf"(?i)://|{_KEYS}|identified|bearer|AKIA|ASIA|gh[pousr]_|github_pat|xox|sk_|rk_|sk-|AIza|eyJ"
                    r"|PRIVATE KEY")
"""Text without any of these has nothing to scrub (one scan instead of a dozen)."""

_SQL_STRING = re.compile(r"'(?:[^']|'')*'")
_PY_STRING = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")
_NUMBER_LIKE = re.compile(r"(?<![\w.])\d[\d\-]{3,}\d(?![\w.])")


@lru_cache(maxsize=4096)
def scrub(text: str) -> str:
    """*text* with credentials and well-known secrets masked."""
    if not _CHEAP.search(text):
        return text
    for pattern, repl in _secrets():
        text = pattern.sub(repl, text)
    return text


def mask_sql_literals(sql: str) -> str:
    """Every SQL string literal of *sql* replaced by ``'***'``."""
    return _SQL_STRING.sub(f"'{MASK}'", sql)


@dataclass(frozen=True)
class Redactor:
    """The redaction of one session's policy."""

    redact_literals: bool = False
    keep_outputs: bool = False
    max_output_bytes: int = 2048
    denied_columns: frozenset[str] = frozenset()
    known_names: frozenset[str] = frozenset()
    """Names the policy itself uses (sources, tables, columns; lower case): kept when quoted."""
    _denied: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _memo: dict[tuple[str, str], str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.denied_columns:
            names = "|".join(sorted(map(re.escape, self.denied_columns), key=len, reverse=True))
            object.__setattr__(self, "_denied", re.compile(rf"(?i)(?<![\w]){'(?:' + names + ')'}(?![\w])"))

    def names_denied(self, text: str) -> bool:
        """Whether *text* names a denied column."""
        return self._denied is not None and self._denied.search(text) is not None

    def sql(self, text: str) -> str:
        """A statement as recorded: scrubbed; literals masked if asked, or if it names a denied column."""
        text = scrub(text)
        if self.redact_literals or self.names_denied(text):
            text = mask_sql_literals(text)
        return text

    def code(self, text: str) -> str:
        """Code as recorded: kept, scrubbed, and the values on lines that name a denied column masked."""
        text = scrub(text)
        if not self.names_denied(text):
            return text
        return "\n".join(self._mask_line(line) if self.names_denied(line) else line for line in text.split("\n"))

    def _mask_line(self, line: str) -> str:
        def literal(m: re.Match[str]) -> str:
            s = m.group(0)
            if s[1:-1].lower() in self.known_names:  # 'warehouse', 'customers' in a guard's message
                return s
            if self.names_denied(s):  # a query naming the column: keep it, mask the values inside it
                q = s[0]
                return q + _SQL_STRING.sub(f"'{MASK}'", s[1:-1]) + q if q == '"' else s
            return s[0] + MASK + s[-1]

        line = _PY_STRING.sub(literal, line)
        return _NUMBER_LIKE.sub(MASK, line)

    def output(self, text: str | None) -> str | None:
        """A cell's output as recorded: None unless outputs are kept; then at most
        ``max_output_bytes`` of scrubbed text."""
        if not self.keep_outputs or text is None:
            return None
        text = self.code(text)
        data = text.encode("utf-8", errors="replace")
        if len(data) > self.max_output_bytes:
            text = data[: self.max_output_bytes].decode("utf-8", errors="ignore") + f"… [cut at {self.max_output_bytes} bytes]"
        return text

    def fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A record's fields as written: statements, code, commands, messages and errors redacted
        (each distinct text once: records repeat their statements and messages)."""
        out = fields
        memo = self._memo
        for key, kind in _TEXT_FIELDS:
            value = fields.get(key)
            if not isinstance(value, str) or not value:
                continue
            new = memo.get((kind, value))
            if new is None:
                new = self.sql(value) if kind == "sql" else self.code(value) if kind == "code" else scrub(value)
                if len(memo) >= 4096:
                    memo.clear()
                memo[(kind, value)] = new
            if new != value:
                if out is fields:
                    out = dict(fields)
                out[key] = new
        for key in ("intents", "inside"):
            items = fields.get(key)
            if isinstance(items, list) and items:
                if out is fields:
                    out = dict(fields)
                out[key] = [self.fields(x) if isinstance(x, dict) else x for x in items]
        return out


_TEXT_FIELDS = (("statement", "sql"), ("code", "code"), ("command", "code"), ("line", "code"), ("output", "code"),
                ("message", "code"), ("error", "code"), ("hint", "code"), ("resource", "scrub"))
"""The fields of a record that hold text to redact, and how (messages and errors quote statements too)."""


def redactor(settings: Any, denied_columns: Iterable[str], known_names: Iterable[str] = ()) -> Redactor:
    """A :class:`Redactor` from a policy's ``audit`` settings (an object or a mapping), its
    denied columns, and the names it uses (sources, tables)."""
    get = settings.get if isinstance(settings, Mapping) else lambda k, d=None: getattr(settings, k, d)
    denied = frozenset(c.lower() for c in denied_columns)
    return Redactor(bool(get("redact_literals", False)), bool(get("keep_outputs", False)),
                    int(get("max_output_bytes", 2048)), denied, denied | {n.lower() for n in known_names})


__all__ = ["MASK", "Redactor", "mask_sql_literals", "redactor", "scrub"]
