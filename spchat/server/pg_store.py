"""The PostgreSQL store: ``IStore`` on a database several servers may share.

``--database postgresql://user@host:port/db`` (``CHAT_DATABASE_URL``).  As
in the SQLite store, every write runs on one writer thread with its own
connection and every read on one reader thread with another, so the
reactor never waits for the database; the statements are in
``pg_tables``, the schema in ``pg_schema``, the connections (and how they
come back after the database went away) in ``pg_link``.

Group commit is the core's ``GroupCommitter``: one ``append`` in flight at
a time, whatever arrives meanwhile in the next; each ``append`` is one
transaction, and its Deferred fires only after its COMMIT.  A failed one
(the database gone) leaves the committer's messages pending, unacknowledged,
and it tries again until the database is back.

The driver is psycopg2 (``pip install 'spchat[postgresql]'``), imported
only when a store is opened: the SQLite default needs nothing of it.
``scripts/measure_pg.py`` measured it against psycopg 3: under the
reactor, psycopg2's commits took 35 % less time in batches of 20 and a
quarter of the time at a steady load (psycopg2 waits for the server
inside libpq without the GIL; psycopg 3 comes back to Python at each step
of a round trip, which likely costs it the GIL the reactor holds).
"""

from __future__ import annotations

import urllib.parse

from twisted.internet import defer
from zope.interface import implementer

from spchat.server.interfaces import IStore
from spchat.server.pg_link import Link, StoreUnavailable, one_line, parse_url
from spchat.server.pg_schema import SchemaError, migrate
from spchat.server.pg_tables import PgTables
from spchat.server.threaded_store import StatementThread, StoreError, ThreadedStore


def _driver():
    try:
        import psycopg2
    except ImportError:
        raise StoreError("PostgreSQL needs the psycopg2 package: "
                         "pip install 'spchat[postgresql]'") from None
    return psycopg2


def _shown(url: str) -> str:
    """The database as messages name it, from the start: without its password."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    # The query may hold a password too, and says nothing a reader needs.
    return parts._replace(netloc=netloc, query="").geturl()


@implementer(IStore)
class PostgresStore(ThreadedStore):
    """``IStore`` on one PostgreSQL database.  ``open()`` connects, creates
    or migrates the schema and checks it before it returns, and never
    raises: a problem is the failure of its Deferred, a one-line
    ``StoreError`` naming the database (never its password)."""

    tables = PgTables

    def __init__(self, url: str, reactor=None):
        self.url = url
        self.path = _shown(url)
        self.reactor = reactor
        self._writer = self._reader = None

    def _open(self) -> None:
        driver = _driver()
        params = parse_url(self.url)
        links = [Link(params, self.path), Link(params, self.path)]
        try:
            writer, reader = (PgTables(link) for link in links)
            try:
                migrate(writer.link)
                writer.refresh_looks()
                reader.link.connect()
            except StoreUnavailable as e:
                raise StoreError(str(e)) from None
            except (driver.Error, SchemaError) as e:
                raise StoreError(f"cannot use the database {self.path}: {one_line(e)}") from None
        except StoreError:
            for link in links:
                link.close()
            raise
        if self.reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        self._writer = StatementThread(self.reactor, writer, "spchat-pg-writer")
        self._reader = StatementThread(self.reactor, reader, "spchat-pg-reader")

    def close(self) -> defer.Deferred:
        """After the work queued already, close both connections."""
        if self._writer is None:
            return defer.succeed(None)
        runners = [r for r in (self._writer, self._reader) if r is not None]
        self._writer = self._reader = None
        d = defer.gatherResults([runner.close() for runner in runners], consumeErrors=True)
        return d.addCallbacks(lambda _: None, lambda failure: failure.value.subFailure)
