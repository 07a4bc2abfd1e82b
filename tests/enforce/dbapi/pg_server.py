"""A private PostgreSQL server for the database tests and benchmarks: started, loaded, stopped.

Debian's binaries (``make test`` installs the ``postgresql`` package when ``pg_ctl`` is
missing); ``initdb`` in a temporary directory as an unprivileged user (PostgreSQL refuses to
run as root: under root the ``postgres`` system user runs it through ``runuser``), loopback
only, on a free port, ``trust`` authentication.  The schema: customers (with ssn), orders, a
schema ``other`` the session does not own, a schema ``work``; in two databases, ``shop`` and
``lab`` (the tests declare ``lab`` with ``work`` as a scratch schema).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text, ssn text, dob date);
INSERT INTO customers SELECT i, 'name' || i, 'ssn' || i, DATE '2000-01-01' + i FROM generate_series(0, 19) i;
CREATE TABLE orders (oid int, cid int, amount numeric);
INSERT INTO orders SELECT i, i % 20, i * 1.5 FROM generate_series(0, 99) i;
CREATE SCHEMA other;
CREATE TABLE other.accounts (id int, balance numeric);
INSERT INTO other.accounts VALUES (1, 100), (2, 200);
CREATE SCHEMA work;
CREATE SEQUENCE s;
"""


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    dbname: str

    def dsn(self, dbname: str | None = None) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname or self.dbname}"

    def url(self, dbname: str | None = None, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{self.user}@{self.host}:{self.port}/{dbname or self.dbname}"


def _bindir() -> str | None:
    found = shutil.which("pg_ctl")
    if found:
        return os.path.dirname(os.path.realpath(found))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(candidates[-1]) if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Unavailable(Exception):
    """PostgreSQL cannot run here (the reason says why)."""


@contextmanager
def running() -> Iterator[PgServer]:
    """Start a server with :data:`SCHEMA` in databases ``shop`` and ``lab``; stop it afterwards."""
    bindir = _bindir()
    if bindir is None:
        raise Unavailable("PostgreSQL binaries (pg_ctl, initdb) are not installed and could not be: "
                          "`make test` installs Debian's postgresql package when it can (apt-get, as root)")
    try:
        import psycopg
    except ImportError as e:
        raise Unavailable("psycopg is not installed (pip install -e '.[test]')") from e
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable("running as root and there is no `postgres` user to run the server") from None
        prefix = ["runuser", "-u", "postgres", "--"]
    base = tempfile.mkdtemp(prefix="guard-pg-")
    os.chmod(base, 0o755)
    data, sock = os.path.join(base, "data"), os.path.join(base, "sock")
    os.mkdir(sock)
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
        os.chown(sock, owner.pw_uid, owner.pw_gid)
    port = _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, cwd=base)

    try:
        run(os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        run(os.path.join(bindir, "pg_ctl"), "-D", data, "-l", os.path.join(base, "log"), "-w", "-o",
            f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    except subprocess.CalledProcessError as e:
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {e.stderr.decode(errors='replace')}") from e
    server = PgServer("127.0.0.1", port, "postgres", "shop")
    try:
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as con:
            con.execute("CREATE DATABASE shop")
            con.execute("CREATE DATABASE lab")
        for db in ("shop", "lab"):
            with psycopg.connect(server.dsn(db)) as con:
                con.execute(SCHEMA)
        yield server
    finally:
        subprocess.run([*prefix, os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "stop"],
                       capture_output=True, cwd=base)
        shutil.rmtree(base, ignore_errors=True)
