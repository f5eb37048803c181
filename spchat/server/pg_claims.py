"""Names claimed across the nodes sharing one PostgreSQL database.

``INameClaims`` on the ``claims`` and ``nodes`` tables (``pg_schema``,
version 2).  A name is claimed with an ``INSERT ... ON CONFLICT DO
NOTHING``: of two nodes racing for a free name, the database lets one
in; a name already held is locked and judged by ``claims.may_take``
(its holder's node is dead if its last beat is older than the timeout,
on the database's clock).  The statements run on a thread of their own,
with a connection of their own (``pg_link``): a login never waits behind
a group commit, and the reactor never waits at all.
"""

from __future__ import annotations

from twisted.internet import defer
from zope.interface import implementer

from spchat.server.claims import NODE_TIMEOUT, Claim, Claimed, may_take
from spchat.server.interfaces import INameClaims
from spchat.server.pg_link import Link, parse_url
from spchat.server.threaded_store import StatementThread

_COLUMNS = "key, session, node, token_hash, name, registered, lineage, rooms, looks"
_ALIVE = "n.last_seen > clock_timestamp() - make_interval(secs => %s)"


def _claim(row) -> Claim:
    key, session, node, token, name, registered, lineage, rooms, looks = row
    return Claim(key, session, node, token, name, registered, lineage, tuple(rooms),
                 tuple(looks))


def _row(claim: Claim) -> tuple:
    return (claim.key, claim.session, claim.node, claim.token_hash, claim.name,
            claim.registered, claim.lineage, list(claim.rooms), list(claim.looks))


class PgClaimTables:
    """The statements, on the claims' thread."""

    def __init__(self, link: Link, node: str, node_timeout: float):
        self.link = link
        self.node = node
        self.node_timeout = node_timeout

    def close(self) -> None:
        self.link.close()

    def drop_own(self) -> None:
        with self.link.transaction() as cursor:
            cursor.execute("DELETE FROM claims WHERE node = %s", (self.node,))

    def claim(self, wanted: Claim, takeover: bool) -> Claimed:
        with self.link.transaction() as cursor:
            while True:
                cursor.execute(f"INSERT INTO claims ({_COLUMNS}) VALUES "
                               "(%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                               "ON CONFLICT (key) DO NOTHING RETURNING key", _row(wanted))
                if cursor.fetchone() is not None:
                    return Claimed(True)
                cursor.execute(
                    f"SELECT {', '.join('c.' + c for c in _COLUMNS.split(', '))}, {_ALIVE} "
                    "FROM claims c LEFT JOIN nodes n ON n.name = c.node "
                    "WHERE c.key = %s FOR UPDATE OF c", (self.node_timeout, wanted.key))
                row = cursor.fetchone()
                if row is None:
                    continue  # given back meanwhile: free again
                held, alive = _claim(row[:-1]), bool(row[-1])
                if not may_take(held, wanted, takeover, alive):
                    return Claimed(False)
                cursor.execute(f"UPDATE claims SET ({_COLUMNS}, claimed_at) = "
                               "(%s, %s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp()) "
                               "WHERE key = %s", (*_row(wanted), wanted.key))
                return Claimed(True, held if held.session != wanted.session else None)

    def update(self, claim: Claim) -> None:
        with self.link.transaction() as cursor:
            cursor.execute("UPDATE claims SET name = %s, registered = %s, lineage = %s, "
                           "rooms = %s WHERE key = %s AND session = %s AND node = %s",
                           (claim.name, claim.registered, claim.lineage, list(claim.rooms),
                            claim.key, claim.session, self.node))

    def release(self, key: str, session: str) -> None:
        with self.link.transaction() as cursor:
            cursor.execute("DELETE FROM claims WHERE key = %s AND session = %s AND node = %s",
                           (key, session, self.node))

    def resume(self, session: str, token_hash: str) -> Claim | None:
        with self.link.transaction() as cursor:
            cursor.execute(f"SELECT {_COLUMNS} FROM claims WHERE session = %s "
                           "AND token_hash = %s FOR UPDATE", (session, token_hash))
            row = cursor.fetchone()
            if row is None:
                return None
            cursor.execute("UPDATE claims SET node = %s, claimed_at = clock_timestamp() "
                           "WHERE session = %s", (self.node, session))
            return _claim(row)

    def hand_back(self, claim: Claim) -> bool:
        with self.link.transaction() as cursor:
            cursor.execute(f"SELECT {_ALIVE} FROM claims c LEFT JOIN nodes n ON n.name = %s "
                           "WHERE c.key = %s AND c.session = %s AND c.node = %s FOR UPDATE OF c",
                           (self.node_timeout, claim.node, claim.key, claim.session, self.node))
            row = cursor.fetchone()
            if row is None:
                return True  # moved on since
            if not row[0]:
                return False
            cursor.execute("UPDATE claims SET node = %s WHERE key = %s AND session = %s",
                           (claim.node, claim.key, claim.session))
            return True

    def lookalike(self, looks, key: str) -> str | None:
        with self.link.cursor() as cursor:
            cursor.execute(f"SELECT c.name FROM claims c JOIN nodes n ON n.name = c.node "
                           f"WHERE c.looks && %s AND c.key <> %s AND c.node <> %s AND {_ALIVE} "
                           "LIMIT 1", (list(looks), key, self.node, self.node_timeout))
            row = cursor.fetchone()
            return None if row is None else row[0]

    def beat(self) -> dict[str, str]:
        with self.link.transaction() as cursor:
            cursor.execute("INSERT INTO nodes (name, last_seen) VALUES (%s, clock_timestamp()) "
                           "ON CONFLICT (name) DO UPDATE SET last_seen = EXCLUDED.last_seen",
                           (self.node,))
            cursor.execute("SELECT session, key FROM claims WHERE node = %s", (self.node,))
            return dict(cursor.fetchall())


@implementer(INameClaims)
class PgClaims:
    """``INameClaims`` on a PostgreSQL database whose schema the store
    (``pg_store.PostgresStore``) has made."""

    shared = True

    def __init__(self, url: str, where: str, reactor, node: str,
                 node_timeout: float = NODE_TIMEOUT):
        """``where``: the database as messages name it (no password)."""
        self.url = url
        self.where = where
        self.reactor = reactor
        self.node = node
        self.node_timeout = node_timeout
        self._thread: StatementThread | None = None

    def open(self) -> defer.Deferred:
        if self._thread is None:  # else opened, and its start tried again
            tables = PgClaimTables(Link(parse_url(self.url), self.where), self.node,
                                   self.node_timeout)
            self._thread = StatementThread(self.reactor, tables, "spchat-pg-claims")
        # First in its queue: before any claim this node makes.
        return self._run(PgClaimTables.drop_own).addCallback(lambda _: self.beat()) \
            .addCallback(lambda _: None)

    def close(self) -> defer.Deferred:
        if self._thread is None:
            return defer.succeed(None)
        thread, self._thread = self._thread, None
        return thread.close()

    def _run(self, statement, *args) -> defer.Deferred:
        if self._thread is None:
            return defer.fail(RuntimeError("the claims are closed"))
        return self._thread.run(statement, *args)

    def claim(self, claim: Claim, takeover: bool) -> defer.Deferred:
        return self._run(PgClaimTables.claim, claim, takeover)

    def update(self, claim: Claim) -> defer.Deferred:
        return self._run(PgClaimTables.update, claim)

    def release(self, key: str, session: str) -> defer.Deferred:
        return self._run(PgClaimTables.release, key, session)

    def resume(self, session: str, token_hash: str) -> defer.Deferred:
        return self._run(PgClaimTables.resume, session, token_hash)

    def hand_back(self, claim: Claim) -> defer.Deferred:
        return self._run(PgClaimTables.hand_back, claim)

    def lookalike(self, looks, key: str) -> defer.Deferred:
        return self._run(PgClaimTables.lookalike, sorted(looks), key)

    def beat(self) -> defer.Deferred:
        return self._run(PgClaimTables.beat)
