"""Names claimed by sessions: who holds each name, whichever node it is on.

A node knows only its own sessions; the nodes sharing one database learn
who holds a name from its *claims* (``INameClaims``), since the bus between
them is lossy.  A login claims its name before it is welcomed, a session
gives its claim back when it ends, and a resume on another node moves the
claim there (and hands it back if its client went meanwhile).  The rule of who may take a claimed name is ``may_take``, one
function for every engine: the one here, for a node alone (its sessions
decide, as they always have), and the PostgreSQL one
(``spchat.server.pg_claims``), where every node's claims meet.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from spchat.server.interfaces import INameClaims
from spchat.server.sessions import Session, State

# A node not heard from for this long is taken for dead: the names its
# sessions held may be taken by others (its clients resume elsewhere).
NODE_TIMEOUT = 20.0
# Each node says it is alive this many times per NODE_TIMEOUT.
BEATS_PER_TIMEOUT = 4


def token_hash(token: str) -> str:
    """What the claims keep of a resume token: enough to check one, not to
    make one."""
    return hashlib.blake2b(token.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Claim:
    """A session's hold on its name, and what another node needs to carry
    the session on after a resume there."""

    key: str  # the name's comparison form
    session: str  # the session's id
    node: str  # where it runs
    token_hash: str
    name: str  # display form
    registered: bool
    lineage: str  # whose cids its lines carry (``Session.lineage``)
    rooms: tuple[str, ...] = ()  # room keys
    looks: tuple[str, ...] = ()  # its name's skeletons (spchat.server.lookalikes)


@dataclass(frozen=True)
class Claimed:
    """A claim's outcome: ``granted``, and the other session it replaced
    (on this node or another), if any."""

    granted: bool
    replaced: Claim | None = None


def claim_of(session: Session, node: str) -> Claim:
    """The claim of a session of ``node`` as it is now."""
    return Claim(session.key, session.id, node, token_hash(session.token), session.name,
                 session.registered, session.lineage, tuple(sorted(session.rooms)),
                 tuple(sorted(session.looks)))


def may_take(held: Claim | None, wanted: Claim, takeover: bool, holder_alive: bool) -> bool:
    """Whether ``wanted`` may have the name ``held`` holds.  ``takeover``:
    the owner of a registered name, its password checked, replaces whoever
    holds it (as on one node: "you logged in from somewhere else")."""
    if held is None or held.session == wanted.session:
        return True
    if held.node == wanted.node:
        # This node's own sessions decide (the login checked them): a claim
        # of this node with no session behind it is one not given back.
        return True
    return takeover or not holder_alive


@implementer(INameClaims)
class LocalClaims:
    """The claims of the nodes sharing one in-memory ``ClaimBook``: of one
    node alone, whose own sessions decide; several, in tests of the rules."""

    def __init__(self, clock, node: str, book: ClaimBook | None = None,
                 node_timeout: float = NODE_TIMEOUT):
        """``book``: the claims shared with other nodes (None: this node's alone)."""
        self.clock = clock
        self.node = node
        # Alone, a session is found on the node it runs on, nowhere else.
        self.shared = book is not None
        self.book = book or ClaimBook()
        self.node_timeout = node_timeout

    def open(self) -> defer.Deferred:
        self.book.claims = {key: claim for key, claim in self.book.claims.items()
                            if claim.node != self.node}
        return self.beat().addCallback(lambda _: None)

    def close(self) -> defer.Deferred:
        return defer.succeed(None)

    def _alive(self, node: str) -> bool:
        seen = self.book.seen.get(node)
        return seen is not None and self.clock.seconds() - seen < self.node_timeout

    def claim(self, wanted: Claim, takeover: bool) -> defer.Deferred:
        held = self.book.claims.get(wanted.key)
        if not may_take(held, wanted, takeover, held is not None and self._alive(held.node)):
            return defer.succeed(Claimed(False))
        self.book.claims[wanted.key] = wanted
        replaced = held if held is not None and held.session != wanted.session else None
        return defer.succeed(Claimed(True, replaced))

    def _mine(self, key: str, session: str) -> Claim | None:
        held = self.book.claims.get(key)
        if held is not None and held.session == session and held.node == self.node:
            return held
        return None

    def update(self, claim: Claim) -> defer.Deferred:
        if self._mine(claim.key, claim.session) is not None:
            self.book.claims[claim.key] = claim
        return defer.succeed(None)

    def release(self, key: str, session: str) -> defer.Deferred:
        if self._mine(key, session) is not None:
            del self.book.claims[key]
        return defer.succeed(None)

    def resume(self, session: str, token_hash: str) -> defer.Deferred:
        for claim in self.book.claims.values():
            if claim.session == session and claim.token_hash == token_hash:
                self.book.claims[claim.key] = replace(claim, node=self.node)
                return defer.succeed(claim)
        return defer.succeed(None)

    def hand_back(self, claim: Claim) -> defer.Deferred:
        held = self._mine(claim.key, claim.session)
        if held is None:
            return defer.succeed(True)  # moved on since
        if not self._alive(claim.node):
            return defer.succeed(False)
        self.book.claims[claim.key] = replace(held, node=claim.node)
        return defer.succeed(True)

    def lookalike(self, looks, key: str) -> defer.Deferred:
        for claim in self.book.claims.values():
            if (claim.node != self.node and claim.key != key and self._alive(claim.node)
                    and set(claim.looks) & set(looks)):
                return defer.succeed(claim.name)
        return defer.succeed(None)

    def beat(self) -> defer.Deferred:
        self.book.seen[self.node] = self.clock.seconds()
        return defer.succeed({claim.session: claim.key for claim in self.book.claims.values()
                              if claim.node == self.node})


class ClaimBook:
    """The claims and the nodes' last beats, in memory."""

    def __init__(self):
        self.claims: dict[str, Claim] = {}
        self.seen: dict[str, float] = {}


class ClaimRefresher:
    """Keeps the claims of this node's sessions up to date (their rooms,
    registered or not), for a node that may resume them: one update per
    session per turn of the clock, however many rooms it joined."""

    log = Logger()

    def __init__(self, clock, names):
        self.clock = clock
        self.names = names
        self._due: dict[str, Session] = {}
        self._call = None

    def changed(self, session: Session) -> None:
        if not self.names.shared or session.state is State.OFFLINE:
            return  # alone, no other node reads them
        self._due[session.id] = session
        if self._call is None:
            self._call = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._call = None
        due, self._due = self._due, {}
        for session in due.values():
            if session.state is not State.OFFLINE:
                self.write(claim_of(session, self.names.node))

    def write(self, claim: Claim) -> defer.Deferred:
        """Write ``claim`` now; fires when written (or not: a failure is
        logged, and the session's next change writes it again)."""
        return self.names.update(claim).addErrback(
            lambda f: self.log.warn("cannot update a claim: {error}", error=f.getErrorMessage()))

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
