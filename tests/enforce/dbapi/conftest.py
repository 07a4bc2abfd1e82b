"""The private PostgreSQL server of the database tests (:mod:`.pg_server`), once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.enforce.dbapi.pg_server import PgServer, Unavailable, running


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        with running() as server:
            yield server
    except Unavailable as e:
        pytest.skip(str(e))
