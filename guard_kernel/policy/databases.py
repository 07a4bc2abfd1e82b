"""Database URLs: which database a URL or a connection names, judged by what it reaches.

A policy source ``{url: "postgresql://host/db"}`` and a connection match when they reach the
same server and database — host, port and database name, loopback names counted as one host —
never by comparing URL strings; a SQLite source matches by the real path of its file.  Credentials
are never kept: a policy URL that carries a password is refused, and every URL shown or recorded
is :func:`redact`-ed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from guard_kernel.policy.paths import resolve

__all__ = ["DatabaseURL", "loopback", "parse_url", "redact", "redact_text", "server_key", "server_of"]

_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", "ip6-localhost"})
PG_PORT = 5432


@dataclass(frozen=True)
class DatabaseURL:
    """What a database URL names."""

    dialect: str
    """``postgres`` or ``sqlite``."""
    server: tuple[str, int, str] | None = None
    """(host, port, database) for a server (host normalised by :func:`loopback`)."""
    path: str | None = None
    """Real path of a SQLite file (None: in memory)."""
    shown: str = ""
    """The URL without user and password."""
    password: bool = False
    """Whether the URL carried a password."""


def loopback(host: str | None) -> str:
    """*host* lower-case, with every name of this machine's loopback (and a Unix socket) as ``localhost``."""
    h = (host or "").strip().lower()
    if not h or h in _LOOPBACK or h.startswith("/"):
        return "localhost"
    return h


def server_key(host: str | None, port: int | str | None, database: str | None) -> tuple[str, int, str]:
    """The (host, port, database) a server connection is matched by."""
    return loopback(host), int(port or PG_PORT), (database or "").lower()


def parse_url(url: str, root: str | None = None) -> DatabaseURL:
    """Parse a PostgreSQL or SQLite URL (SQLAlchemy's forms: ``postgresql+psycopg://``,
    ``sqlite:///relative.db``, ``sqlite:////absolute.db``); ValueError for anything else."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0].lower()
    if scheme in ("postgres", "postgresql"):
        database = unquote(parts.path.lstrip("/"))
        key = server_key(parts.hostname, parts.port, database)
        shown = f"postgresql://{key[0]}:{key[1]}/{key[2]}"
        return DatabaseURL("postgres", server=key, shown=shown, password=parts.password is not None)
    if scheme == "sqlite":
        # sqlite:///x is the relative path x, sqlite:////x the absolute /x (SQLAlchemy)
        text = url.split("://", 1)[1]
        file = text[1:] if text.startswith("/") else text
        file = file.split("?", 1)[0]
        if not file or file == ":memory:":
            return DatabaseURL("sqlite", shown="sqlite://")
        real = resolve(unquote(file), root or os.getcwd())
        return DatabaseURL("sqlite", path=real, shown=f"sqlite:///{real}")
    raise ValueError(f"not a PostgreSQL or SQLite URL: {redact(url)!r}")


def redact(url: str) -> str:
    """*url* with any user name and password removed."""
    if "://" not in url or "@" not in url.split("://", 1)[1].split("/", 1)[0]:
        return url
    scheme, rest = url.split("://", 1)
    netloc, sep, tail = rest.partition("/")
    return f"{scheme}://{netloc.rsplit('@', 1)[1]}{sep}{tail}"


_SECRET_KV = re.compile(r"""\b(password|passwd|pwd|sslpassword)(\s*=\s*)(''[^']*''|'(?:[^']|'')*'|"[^"]*"|[^\s;'")]+)""", re.I)
_SECRET_URL = re.compile(r"(://[^/\s:@'\"]+):[^@/\s'\"]+@")


def redact_text(text: str) -> str:
    """*text* (a statement, a connection string) with passwords replaced by ``***``:
    ``password=…`` pairs of a libpq conninfo and ``user:password@`` of a URL."""
    low = text.lower()
    if "pass" not in low and "pwd" not in low and "@" not in text:
        return text
    return _SECRET_URL.sub(r"\1:***@", _SECRET_KV.sub(r"\1\2***", text))


_KV = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def server_of(conninfo: str) -> tuple[str, int, str]:
    """(host, port, database) of a libpq connection string or ``postgresql://`` URL (libpq's
    defaults from the environment for what it leaves out)."""
    host: str | None
    port: int | str | None
    db: str | None
    user: str | None
    if "://" in conninfo:
        parts = urlsplit(conninfo)
        host, port, db, user = parts.hostname, parts.port, unquote(parts.path.lstrip("/")), parts.username
    else:
        kv = {k.lower(): v.strip("'") for k, v in _KV.findall(conninfo)}
        if kv.get("service") or os.environ.get("PGSERVICE"):  # its host is in a file: never a source
            return f"service:{kv.get('service') or os.environ.get('PGSERVICE')}", 0, kv.get("dbname", "")
        host, port, db, user = kv.get("host") or kv.get("hostaddr"), kv.get("port"), kv.get("dbname"), kv.get("user")
    host = host or os.environ.get("PGHOST")
    port = port or os.environ.get("PGPORT")
    user = user or os.environ.get("PGUSER")
    return server_key(host, port, db or os.environ.get("PGDATABASE") or user)
