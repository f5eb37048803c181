"""One connection to PostgreSQL, kept up: what one store thread talks through.

A connection found lost (the server restarted, the network cut) at a
transaction's BEGIN, or under a read, is made again at once and the work
done on the new one; one lost in the middle of a write fails it with a
one-line ``StoreUnavailable`` (``CommitInDoubt`` if it was lost under
COMMIT, which may have landed: see ``pg_tables.append_rows``).  While the
server stays away, attempts are spaced out (``RETRY_FIRST`` doubling up
to ``RETRY_MOST`` seconds), and a statement asked for in between fails at
once with the same kind of error.  The caller decides what a failure
means: the group committer keeps its messages pending and tries again; a
read fails to its client ("unavailable").
"""

from __future__ import annotations

import contextlib
import time

from spchat.server.threaded_store import StoreError

RETRY_FIRST = 0.5
RETRY_MOST = 30.0
# Given unless the URL says otherwise: an unreachable server is an error in
# seconds, and a silent one (a cut cable) is found within about half a minute.
CONNECT_DEFAULTS = {"connect_timeout": "5", "keepalives": "1", "keepalives_idle": "10",
                    "keepalives_interval": "5", "keepalives_count": "3",
                    "application_name": "spchat"}


class StoreUnavailable(StoreError):
    """The database cannot be reached now; it may be later."""


class ConnectionLost(StoreUnavailable):
    """The connection broke under a statement (the server restarted, say)."""


class CommitInDoubt(ConnectionLost):
    """The connection broke under COMMIT: the transaction may have landed."""


def one_line(error: Exception) -> str:
    """A driver's message, which may run over several lines, as one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def parse_url(url: str) -> dict[str, str]:
    """The connection parameters of a ``postgresql://`` URL, with ours
    added; raise StoreError (one line) if libpq cannot read it."""
    import psycopg2.extensions

    try:
        params = psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError as e:
        raise StoreError(f"cannot read the database URL: {one_line(e)}") from None
    for name, value in CONNECT_DEFAULTS.items():
        params.setdefault(name, value)
    return params


class Link:
    """A psycopg2 connection (autocommit: transactions are explicit, BEGIN
    to COMMIT) that is made again after it is lost.  Used by one thread at
    a time."""

    def __init__(self, params: dict, where: str, clock=time.monotonic):
        """``where``: the database as messages name it (no password)."""
        self.params = params
        self.where = where
        self.clock = clock
        self.conn = None
        self._delay = RETRY_FIRST
        self._next_try = float("-inf")

    def connect(self):
        """The connection, made now if there is none; raise StoreUnavailable."""
        import psycopg2

        if self.conn is not None and not self.conn.closed:
            return self.conn
        self.conn = None
        wait = self._next_try - self.clock()
        if wait > 0:
            raise StoreUnavailable(f"the database {self.where} is unreachable; "
                                   f"trying again in {wait:.1f} s")
        try:
            self.conn = psycopg2.connect(**self.params)
            self.conn.autocommit = True
        except psycopg2.Error as e:
            self._next_try = self.clock() + self._delay
            self._delay = min(self._delay * 2, RETRY_MOST)
            raise StoreUnavailable(
                f"cannot connect to the database {self.where}: {one_line(e)}") from None
        self._delay = RETRY_FIRST
        return self.conn

    @contextlib.contextmanager
    def _lost_is_unavailable(self):
        import psycopg2

        try:
            yield
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
            if self.conn is None or self.conn.closed:  # not an error of the statement
                self.close()
                raise ConnectionLost(f"lost the database {self.where}: {one_line(e)}") from None
            raise

    @contextlib.contextmanager
    def cursor(self):
        """A cursor for one statement on its own (no transaction of ours)."""
        with self._lost_is_unavailable():
            with self.connect().cursor() as cursor:
                yield cursor

    @contextlib.contextmanager
    def transaction(self, snapshot: bool = False):
        """A cursor in a transaction, committed at the end of the block
        (rolled back on an error).  ``snapshot``: its reads see one state."""
        with self._lost_is_unavailable(), self._begun(snapshot) as cursor:
            try:
                yield cursor
            except BaseException:
                if not cursor.connection.closed:
                    cursor.execute("ROLLBACK")
                raise
            try:
                with self._lost_is_unavailable():
                    cursor.execute("COMMIT")
            except ConnectionLost as e:
                raise CommitInDoubt(f"{e} (during COMMIT)") from None

    def _begun(self, snapshot: bool):
        """A cursor whose BEGIN went through.  A connection found lost at
        BEGIN had nothing of this transaction yet: a new one, at once, so
        that the first write after the server came back does not fail."""
        for last in (False, True):
            try:
                with self._lost_is_unavailable():
                    cursor = self.connect().cursor()
                    cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ" if snapshot
                                   else "BEGIN")
                    return cursor
            except ConnectionLost:
                if last:
                    raise

    def read(self, work, snapshot: bool = False):
        """``work(cursor)``'s result: reads, so if the connection was found
        lost (the server restarted since the last one), once more on a new
        one, and a reader does not fail for a server that is back."""
        for last in (False, True):
            try:
                with self.transaction(snapshot=True) if snapshot else self.cursor() as cursor:
                    return work(cursor)
            except ConnectionLost:
                if last:
                    raise

    def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.close()
