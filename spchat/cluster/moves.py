"""Sessions that leave this node for another: a resume there, or the owner
of a registered name logging in there.

The node that takes a session's claim says so on the bus (a ``taken``
notice); the node that had the session ends its copy, quietly if the
session lives on elsewhere, or as on one node if a login replaced it,
once the claims say the claim is no longer its own: the notice may come
late, after the client came back to this node (a resume here takes the
claim back first, wherever it is).
The bus is lossy, so every beat (``INameClaims.beat``, each
``node_timeout / BEATS_PER_TIMEOUT``) also says which claims this node
still holds: a session whose claim is gone was taken, the notice lost;
a claim with no session here (one not given back: the database was
away) is given back.  A claim may also be gone for a moment only: a
resume on another node whose client went while the claim moved there
hands it back (``INameClaims.hand_back``), and says nothing.  So a beat
alone ends a session whose client is connected here only if the next
beat says so too; a notice says the move was kept.  A notice that comes
while the session is arriving here is kept until it has arrived, then
checked: the other node's move may have come after this one's.
Sans-IO: the clock, the claims and the session table are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from twisted.logger import Logger

from spchat.server.claims import BEATS_PER_TIMEOUT, Claim
from spchat.server.sessions import Session, SessionTable

TAKEN = "taken"
MOVED = "moved"  # resumed on another node
REPLACED = "replaced"  # its registered name logged in on another node
_WHY = (MOVED, REPLACED)

log = Logger()


@dataclass(frozen=True)
class Taken:
    session: str  # its id
    key: str  # its name's
    why: str  # MOVED or REPLACED


def taken(claim: Claim, why: str) -> dict:
    return {"session": claim.session, "key": claim.key, "why": why}


def read_taken(body: dict) -> Taken | None:
    session, key, why = body.get("session"), body.get("key"), body.get("why")
    if not (isinstance(session, str) and isinstance(key, str) and why in _WHY):
        return None
    return Taken(session, key, why)


class SessionMoves:
    def __init__(self, clock, names, table: SessionTable, logging_in: set[str],
                 on_taken: Callable[[Session, str], None], release: Callable[[str, str], None],
                 cluster=None):
        """``names``: the ``INameClaims``; ``logging_in``: the name keys of
        logins under way here (claimed, no session yet); ``on_taken(session,
        why)`` ends a session taken by another node; ``release(key, id)``
        gives a claim back; ``cluster``: the ``ClusterNode`` (None: alone)."""
        self.clock = clock
        self.names = names
        self.table = table
        self.logging_in = logging_in
        self.on_taken = on_taken
        self.release = release
        self.cluster = cluster
        # Sessions resumed here whose claim is moving here (from another
        # node, or back to this one), by id: not a claim to give back, nor
        # a session whose claim went.
        self.arriving: set[str] = set()
        # When sessions here took their claims back (a resume here after
        # a move this node missed): a beat asked before says nothing of them.
        self._claimed_back: dict[str, float] = {}
        # Sessions with a client here whose claim the last beat did not
        # list: the next one says whether it came back.
        self._missed: set[str] = set()
        # Sessions another node said it took while they were arriving
        # here, by id: why.
        self._told_arriving: dict[str, str] = {}
        self.ignored = 0  # notices that did not parse
        self.beat_failures = 0
        if cluster is not None:
            cluster.on(TAKEN, self._heard)
        self._call = None
        if names.shared:
            self._call = clock.callLater(self.beat_seconds, self._beat)

    @property
    def beat_seconds(self) -> float:
        return self.names.node_timeout / BEATS_PER_TIMEOUT

    def tell(self, claim: Claim, why: str) -> None:
        """This node took ``claim`` from its node: that node ends its copy."""
        if self.cluster is not None:
            self.cluster.send(TAKEN, taken(claim, why))

    def claimed_back(self, session_id: str) -> None:
        """A session here took its claim back from another node."""
        self._claimed_back[session_id] = self.clock.seconds()

    def _heard(self, node: str, body: dict) -> None:
        if node == self.cluster.name:
            return  # ours: the session is here now
        notice = read_taken(body)
        if notice is None:
            if not self.ignored:
                log.warn("ignoring a taken-session notice that does not parse "
                         "(counted, not logged again)")
            self.ignored += 1
            return
        if notice.session in self.arriving:
            self._told_arriving[notice.session] = notice.why
            return
        session = self.table.by_id.get(notice.session)
        if session is not None and session.key == notice.key:
            # Late, maybe: the session may have come back here since.  The
            # claims say whose it is now.
            asked = self.clock.seconds()
            self.names.beat().addCallbacks(self._still_taken, self._failed,
                                           (session, notice.why, asked))

    def arrived(self, session_id: str) -> None:
        """A session's resume here has ended (``arriving`` no longer has
        it): if another node said meanwhile that it took the claim, the
        claims say now whose it is."""
        why = self._told_arriving.pop(session_id, None)
        session = self.table.by_id.get(session_id)
        if why is not None and session is not None:
            self.names.beat().addCallbacks(self._taken_meanwhile, self._failed,
                                           (session, why))

    def _taken_meanwhile(self, held: dict[str, str], session: Session, why: str) -> None:
        # Asked after the claim came here: if it is not here now, the other
        # node's move came later (unless a resume here is bringing it back).
        if (self.table.by_id.get(session.id) is session and session.id not in held
                and session.id not in self.arriving):
            self.on_taken(session, why)

    def _still_taken(self, held: dict[str, str], session: Session, why: str,
                     asked: float) -> None:
        # (It was here before the notice came: when it was made says nothing.)
        if self.table.by_id.get(session.id) is session and self._gone_from(
                session, held, asked, made=float("-inf")):
            self.on_taken(session, why)

    def _gone_from(self, session: Session, held: dict[str, str], asked: float,
                   made: float) -> bool:
        """Whether ``held`` (this node's claims when ``asked``) says the
        session's claim went elsewhere: not if the session claimed its name
        here (``made``), took it back, or is taking it back since."""
        if session.id in held or session.id in self.arriving:
            return False
        return max(made, self._claimed_back.get(session.id, float("-inf"))) < asked

    def _beat(self) -> None:
        asked = self.clock.seconds()
        self.names.beat().addCallbacks(self._held, self._failed, (asked,))
        self._call = self.clock.callLater(self.beat_seconds, self._beat)

    def _held(self, held: dict[str, str], asked: float) -> None:
        for session_id in [s for s in self._claimed_back if s not in self.table.by_id]:
            del self._claimed_back[session_id]
        missed, self._missed = self._missed, set()
        for session in list(self.table.by_id.values()):
            if not self._gone_from(session, held, asked, session.first_connected_at):
                continue
            if session.link is None or session.id in missed:
                self.on_taken(session, MOVED)
            else:
                self._missed.add(session.id)  # maybe on its way back
        for session_id, key in held.items():
            if (session_id not in self.table.by_id and key not in self.logging_in
                    and session_id not in self.arriving):
                self.release(key, session_id)

    def _failed(self, failure) -> None:
        if not self.beat_failures:
            log.warn("cannot tell the other nodes this one is alive: {error} "
                     "(counted, not logged again)", error=failure.getErrorMessage())
        self.beat_failures += 1

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
