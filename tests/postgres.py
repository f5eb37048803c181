"""A real PostgreSQL server for the tests: Debian's PostgreSQL 15, started
in a temporary directory on a free loopback port, one fresh database per
test.

``initdb`` and ``postgres`` refuse to run as root, and the tests run as
root: then both run as the ``postgres`` user that Debian's package creates.
``fsync=off`` here only: a test's database need not survive a power cut,
and the tests run much faster without it.  The server's own code paths
(commits, locks, WAL) are the same.

Without the binaries the PostgreSQL tests skip, except in CI
(``SPCHAT_CI=1``), where that is a failure.
"""

from __future__ import annotations

import pytest

from local_servers import missing
from spchat.bench.engines import TemporaryPostgres


def sql(url, query, params=()):
    """One statement in a transaction on a connection of the test's own;
    its rows, if it has any."""
    from spchat.server.pg_link import Link, parse_url

    link = Link(parse_url(url), url)
    try:
        with link.transaction() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall() if cursor.description else None
    finally:
        link.close()


def _require_postgres() -> None:
    """Skip (fail, in CI) where no PostgreSQL server can be started."""
    reason = TemporaryPostgres.missing()
    if reason is not None:
        missing(reason)
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        missing("psycopg2 is missing: pip install '.[test]'")


def _running():
    _require_postgres()
    server = TemporaryPostgres()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """One server for the session; each test takes a database of its own."""
    yield from _running()


@pytest.fixture
def own_postgres():
    """A server of this test's own, which it may stop and start again."""
    yield from _running()


@pytest.fixture
def pg_url(postgres_server):
    """The URL of a fresh database, this test's alone."""
    return postgres_server.new_database()
