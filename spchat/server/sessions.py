"""Links and sessions, and the table of who is on the server.

A *link* is one network connection; a *session* is one logged-in user and
outlives its links: when a connection drops without a logout the session
waits ``resume_grace`` seconds (state ``reconnecting``) for its client to
come back with the resume token.  The lifecycle is a small state machine:
``TRANSITIONS`` lists the only moves there are, and ``SessionTable.set_state``
refuses any other.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

from twisted.internet.interfaces import IDelayedCall

from spchat.beacon import BeaconKeys, ReplayWindow
from spchat.server.catch_up import CatchUp, Hold
from spchat.server.interfaces import IChatClient
from spchat.server.lookalikes import looks
from spchat.server.records import account_lineage
from spchat.server.rules import TokenBucket

# Sessions ended on purpose that are remembered, so a resume learns why.
MAX_ENDED = 10000


class State(enum.Enum):
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"


TRANSITIONS = {
    State.CONNECTED: {State.RECONNECTING, State.OFFLINE},
    State.RECONNECTING: {State.CONNECTED, State.OFFLINE},
    State.OFFLINE: set(),
}


def lineage_of(key: str, registered: bool, outbox: str | None, session_id: str) -> str:
    """``Session.lineage`` for a session begun with these."""
    if registered:
        return account_lineage(key)
    if outbox is not None:
        # Hashed: the secret itself is never stored or shown.
        digest = hashlib.blake2b(f"{key}\0{outbox}".encode(), digest_size=16)
        return f"outbox:{digest.hexdigest()}"
    return f"guest:{session_id}"


@dataclass(eq=False, slots=True)
class Link:
    """One network connection, before and after login."""

    conn: IChatClient
    address: str
    opened_at: float
    beacon_keys: BeaconKeys | None = None
    session: Session | None = None
    login_pending: bool = False  # a login for this link is under way
    admin: bool = False  # proved the admin token: takes admin requests only
    agent: str = "?"  # client name and version
    # When it last sent anything: a connection is alive while it speaks
    # (the reference client sends a keepalive when it has nothing to say).
    last_heard: float = 0.0
    local: str = ""  # this server's end of it, "host:port" (where the client reached it)


@dataclass(eq=False, slots=True)
class Session:
    """One logged-in user, across reconnects, until it goes offline."""

    id: str
    token: str
    name: str  # display form
    key: str  # comparison form
    address: str
    first_connected_at: float
    state_since: float
    last_activity: float
    bucket: TokenBucket
    registered: bool = False
    outbox: str | None = None  # the guest's client's outbox secret (wire.Login)
    # A guest's lineage as the node it began on made it (a session resumed
    # here from another node: its outbox secret was not passed on).
    kept_lineage: str | None = None
    looks: frozenset = frozenset()  # its name's skeletons (spchat.server.lookalikes)
    state: State = State.CONNECTED
    link: Link | None = None
    offline_reason: str = ""
    agent: str = "?"
    messages_sent: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    rooms: set[str] = field(default_factory=set)  # room keys
    # Names told to be offline when it messaged them (spchat.server.waiting).
    told_waiting: set[str] = field(default_factory=set)
    # Its waiting lines' marks that they were had, still being written
    # (Deferreds): what waits for its login is read once they are.
    marking: set = field(default_factory=set)
    # What its last replay started from, for direct conversations: their
    # positions (by conversation key), and the time (ms) the others were
    # replayed from; None: no replay (spchat.cluster.directs' floors).
    replayed_from: dict[str, int] = field(default_factory=dict)
    replayed_since: int | None = None
    # Conversations whose history or replay is being read: their live lines
    # wait here, so they cannot overtake what came before them.
    catching_up: dict[str, Hold] = field(default_factory=dict)
    catch_up: CatchUp | None = None  # its queue of reads, on its connection
    # Reads of the store under way for this session, and what waits for
    # them to be answered (a logout right after /history).
    reads: int = 0
    after_reads: list = field(default_factory=list)
    # Its direct lines that wait for a store read an earlier one of them
    # needs (None: none does), so that they keep their order.
    directs_queued: list | None = None
    direct_reads: int = 0
    backlog: deque = field(default_factory=deque)  # flood-delayed messages
    drain_call: IDelayedCall | None = None
    grace_call: IDelayedCall | None = None
    # Presence beacon peer (see spchat.server.presence): keys of the current
    # link, its replay window, the proven UDP endpoint, our datagram counter.
    keys: BeaconKeys | None = None
    window: ReplayWindow | None = None
    endpoint: tuple[str, int] | None = None
    send_counter: int = 0

    @property
    def lineage(self) -> str:
        """Whose client message ids these are: a registered account's, for
        all its sessions; a guest's session's, resumes included (the next
        holder of the name is someone else), or, if its client named an
        outbox, that outbox's under this name, so that lines re-sent after
        the session was lost (a server restart) are known as copies."""
        if not self.registered and self.kept_lineage is not None:
            return self.kept_lineage
        return lineage_of(self.key, self.registered, self.outbox, self.id)

    def stop_catching_up(self, answer: bool = True) -> None:
        """Its connection is gone or replaced: drop the reads queued for it
        (``answer`` False: and what waits for them: the server stops)."""
        if self.catch_up is not None:
            self.catch_up.stop(answer)
            self.catch_up = None
        self.catching_up.clear()

    def cancel_timers(self) -> None:
        for call in (self.grace_call, self.drain_call):
            if call is not None and call.active():
                call.cancel()
        self.grace_call = self.drain_call = None


def new_ids() -> tuple[str, str]:
    """A new session's id and resume token."""
    return secrets.token_urlsafe(12), secrets.token_urlsafe(24)


class SessionTable:
    """Every session not offline (by id and by name key), the recently
    offline ones for the administrators, and why ended ones ended."""

    def __init__(self, clock, on_change: Callable[[], None] = lambda: None):
        self.clock = clock
        self.on_change = on_change  # the administrators' table is out of date
        self.by_id: dict[str, Session] = {}
        self.by_key: dict[str, Session] = {}
        # By each skeleton of their names: who a new name would look like.
        self.by_look: dict[str, dict[str, Session]] = {}
        self.offline: OrderedDict[str, Session] = OrderedDict()  # oldest first
        # Sessions ended on purpose, by id: (token, bye code, bye text).
        self.ended: OrderedDict[str, tuple[str, str, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.by_id)

    def create(self, link: Link, display: str, key: str, bucket: TokenBucket,
               registered: bool, outbox: str | None = None,
               ids: tuple[str, str] | None = None) -> Session:
        """``ids``: its id and resume token (``new_ids()``), if claimed already."""
        now = self.clock.seconds()
        session_id, token = ids or new_ids()
        session = Session(
            id=session_id, token=token, name=display,
            key=key, address=link.address, first_connected_at=now, state_since=now,
            last_activity=now, bucket=bucket, registered=registered, outbox=outbox,
            looks=looks(display, key),
        )
        self.attach(session, link)
        self.by_id[session.id] = session
        self.by_key[key] = session
        for look in session.looks:
            self.by_look.setdefault(look, {})[key] = session
        self.on_change()
        return session

    def set_state(self, session: Session, state: State) -> None:
        if state not in TRANSITIONS[session.state]:
            raise RuntimeError(f"session {session.id}: {session.state} -> {state} is not allowed")
        session.state = state
        session.state_since = self.clock.seconds()
        self.on_change()

    @staticmethod
    def attach(session: Session, link: Link) -> None:
        link.session = session
        session.link = link
        session.address = link.address
        session.agent = link.agent
        # Each connection has its own handshake, so its own beacon keys.
        session.keys = link.beacon_keys
        session.window = ReplayWindow() if link.beacon_keys else None
        session.endpoint = None
        session.send_counter = 0

    @staticmethod
    def detach(session: Session) -> Link | None:
        link, session.link = session.link, None
        if link is not None:
            link.session = None
        session.endpoint = None
        return link

    def remove(self, session: Session, reason: str) -> None:
        """The session is offline now: kept a while, for the administrators."""
        self.set_state(session, State.OFFLINE)
        session.offline_reason = reason
        session.cancel_timers()
        session.backlog.clear()
        session.stop_catching_up()
        self.detach(session)
        del self.by_id[session.id]
        del self.by_key[session.key]
        for look in session.looks:
            alike = self.by_look[look]
            del alike[session.key]
            if not alike:
                del self.by_look[look]
        self.offline[session.id] = session

    def lookalike(self, name_looks, key: str) -> Session | None:
        """A session whose name looks like one with these skeletons, other
        than ``key``'s own."""
        for look in name_looks:
            for other_key, session in self.by_look.get(look, {}).items():
                if other_key != key:
                    return session
        return None

    def remember_end(self, session: Session, code: str, text: str) -> None:
        self.ended[session.id] = (session.token, code, text)
        while len(self.ended) > MAX_ENDED:
            self.ended.popitem(last=False)

    def forget_old(self, retention: float) -> None:
        now = self.clock.seconds()
        while self.offline:
            oldest = next(iter(self.offline.values()))
            if now - oldest.state_since < retention:
                break
            self.offline.popitem(last=False)
