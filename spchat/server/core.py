"""The chat core: sessions, names, the room, fan-out, sequence and time.

Sans-IO: it never imports the reactor and never touches a socket.  It gets a
clock (anything with ``seconds()`` and ``callLater()``: the reactor, or
``task.Clock`` in tests) and talks to each connection through two methods,
``send(message)`` and ``close(code, text)``, so every rule of the chat is a
plain unit test.

A *link* is one network connection; a *session* is one logged-in user and
outlives its links: when a connection drops without a logout the session
waits ``resume_grace`` seconds (state ``reconnecting``) for its client to
come back with the resume token, and replays what it missed.
"""

from __future__ import annotations

import enum
import hmac
import math
import re
import sqlite3
import secrets
import unicodedata
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

from spchat import wire
from spchat.beacon import BeaconKeys, ReplayWindow
from spchat.p2p.manifest import Manifest, ManifestError
from spchat.server.accounts import normalise_password
from spchat.server.history import ImmediateCommitter, MemoryHistory, Record
from spchat.server.tracker import (
    HEX_DIGITS, MAX_FILES_PER_SESSION, MIN_PREFIX, RELAY_TICKET_SECONDS, SharedFile, Tracker,
    host_of,
)

LOBBY = "lobby"
NAME_MAX_CHARS = 32
# Characters allowed in a name besides letters and digits.
NAME_PUNCTUATION = frozenset("_-.")
# Text may span lines, but other control characters (terminal escapes above
# all) would let one user rewrite another user's screen.
TEXT_ALLOWED_CONTROLS = frozenset("\n\t")
# Bidirectional overrides and isolates reorder what follows them on screen
# (text that reads differently than it is); line and paragraph separators
# break lines where a client does not expect it.
TEXT_FORBIDDEN = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
)
# Unicode's control characters (category Cc) are exactly U+0000-001F and
# U+007F-009F; a test checks that against unicodedata.
_CONTROLS = "".join(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)))
_BAD_TEXT = re.compile("[" + re.escape("".join(
    sorted(set(_CONTROLS) - TEXT_ALLOWED_CONTROLS | TEXT_FORBIDDEN))) + "]")
# What a user does (as opposed to what the client does by itself) counts as
# activity for idle detection.
USER_ACTIONS = (wire.Say, wire.Direct, wire.Who)
# Requests that cost the server work count against the flood limit.
FLOOD_LIMITED = USER_ACTIONS + (
    wire.PresenceRequest, wire.HistoryRequest, wire.Register, wire.ChangePassword,
    wire.Share, wire.Fetch, wire.ListFiles,
)


class Connection(Protocol):
    """What the core needs from a network connection."""

    def send(self, message: wire.Message) -> None: ...

    def send_encoded(self, data: bytes) -> None:
        """A message already encoded (once for every member of a room)."""

    def send_encoded_many(self, items: list[bytes]) -> None:
        """Encoded messages, in order."""

    def send_frames(self, frames: list[bytes]) -> None:
        """Frames' plaintexts (wire.pack) made once for every member."""

    def close(self, code: str, text: str) -> None: ...

    def started(self, session: Session, resumed: bool) -> None:
        """A session now runs on this connection."""


class State(enum.Enum):
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"


# The session lifecycle: the only transitions there are.
TRANSITIONS = {
    State.CONNECTED: {State.RECONNECTING, State.OFFLINE},
    State.RECONNECTING: {State.CONNECTED, State.OFFLINE},
    State.OFFLINE: set(),
}


HISTORY_PAGE_MAX = 200
# Join and leave notices and member updates wait this long, then go to the
# room together in frames made once: a storm of n joins costs each member a
# few frames instead of n (which made n joins cost n^2 encryptions).
ROOM_EVENT_SECONDS = 0.1
# A member list is sent in parts of at most this many bytes (one Noise
# message is 64 KiB).
MEMBERS_PART_BYTES = 48_000
# Most messages replayed after a reconnect; older ones are left to /history.
MAX_REPLAY = 10000
# Password hashes and checks waiting for a worker, beyond which logins are
# turned away for a moment.
MAX_PASSWORD_QUEUE = 64
# Sessions ended on purpose that are remembered, so a resume learns why.
MAX_ENDED = 10000


def ban_text(reason: str, until: float | None, now: float) -> str:
    if until is None:
        return f"you are banned: {reason}"
    minutes = math.ceil((until - now) / 60)
    return f"you are banned for another {minutes} minute{'s' * (minutes != 1)}: {reason}"


class Refused(Exception):
    """A request the core will not carry out; becomes a wire ``error``."""

    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code = code
        self.text = wire.clip(text, wire.MAX_REASON_CHARS)


def quoted(user_text: str) -> str:
    """What a user typed, quoted for an error message: short and printable."""
    return repr(wire.clip(user_text, 40))[:120]


@dataclass(frozen=True)
class Limits:
    """The core's share of the configuration."""

    max_message_bytes: int = 8192
    resume_grace: float = 30.0
    idle_timeout: float = 60.0  # 0: never disconnect idle sessions
    idle_after: float = 30.0  # shown as idle after this long without activity
    flood_burst: int = 10
    flood_rate: float = 5.0
    flood_queue: int = 20
    history_in_memory: int = 10000  # without a store
    history_on_join: int = 50
    offline_retention: float = 600.0  # seconds an offline session stays listed
    udp_port: int = 0  # told to clients; 0: no presence beacon
    presence_interval: float = 2.0  # told to clients, for their beacon watchdog
    max_share_bytes: int = 4 * 1024**3  # largest shared file; 0: sharing off

    @property
    def max_in_flight(self) -> int:
        # A client that never has more unacknowledged messages than fit the
        # flood queue is delayed by flood control, never cut off by it.
        return max(1, self.flood_queue // 2)


def normalise_name(name: str) -> tuple[str, str]:
    """Return (display form, comparison key) or raise Refused.

    NFKC folds look-alike compatibility characters (fullwidth letters, ligatures)
    and casefold makes "Alice" and "ALICE" the same name.
    """
    display = unicodedata.normalize("NFKC", name)
    if not 1 <= len(display) <= NAME_MAX_CHARS:
        raise Refused(
            "name_invalid", f"a name must be 1 to {NAME_MAX_CHARS} characters long"
        )
    for ch in display:
        if not (ch.isalnum() or ch in NAME_PUNCTUATION):
            raise Refused(
                "name_invalid",
                f"a name may contain only letters, digits, '_', '-' and '.' (not {ch!r})",
            )
    return display, unicodedata.normalize("NFKC", display.casefold())


def check_text(text: str, max_bytes: int) -> None:
    size = len(text.encode("utf-8"))
    if size == 0 or not text.strip():
        raise Refused("empty", "the message is empty")
    if size > max_bytes:
        raise Refused(
            "too_long",
            f"the message is {size} bytes; the limit is {max_bytes} bytes (UTF-8)",
        )
    found = _BAD_TEXT.search(text)  # one C-speed scan, not a call per character
    if found is None:
        return
    ch = found.group()
    if ch in TEXT_FORBIDDEN:
        raise Refused(
            "bad_text", f"the message contains the invisible formatting character {ch!r}"
        )
    raise Refused("bad_text", "the message contains control characters")


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = float(burst), now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until the next token."""
        self._refill(now)
        return max(0.0, (1 - self.tokens) / self.rate)


@dataclass(eq=False, slots=True)
class Link:
    """One network connection, before and after login."""

    conn: Connection
    address: str
    opened_at: float
    beacon_keys: BeaconKeys | None = None
    session: Session | None = None
    login_pending: bool = False  # a password check for this link is running
    admin: bool = False  # proved the admin token: takes admin requests only
    agent: str = "?"  # client name and version


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
    state: State = State.CONNECTED
    link: Link | None = None
    offline_reason: str = ""
    agent: str = "?"
    messages_sent: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    rooms: set[str] = field(default_factory=set)
    backlog: deque = field(default_factory=deque)  # flood-delayed messages
    drain_call: object = None
    grace_call: object = None
    # Presence beacon peer (see spchat.server.presence): keys of the current
    # link, its replay window, the proven UDP endpoint, our datagram counter.
    keys: BeaconKeys | None = None
    window: ReplayWindow | None = None
    endpoint: tuple[str, int] | None = None
    send_counter: int = 0


class ChatCore:
    """All chat rules; the network adapters only parse and forward."""

    def __init__(
        self,
        clock,
        limits: Limits | None = None,
        history=None,
        registry=None,
        passwords=None,
        throttle=None,
        admin_token: str | None = None,
        audit: Callable[[str], None] = lambda line: None,
        on_shutdown: Callable[[], None] = lambda: None,
    ):
        """``history``: where messages are read back (the store, or memory);
        ``registry``: accounts and bans (the store; None: no accounts);
        ``passwords``: hashes off the reactor thread; ``throttle``: failed
        logins.  ``committer`` (set after construction when there is a store)
        saves messages and calls ``published`` once they are on disk."""
        self.clock = clock
        self.limits = limits or Limits()
        self.links: set[Link] = set()
        self.sessions: dict[str, Session] = {}  # by id; every session not offline
        self.by_key: dict[str, Session] = {}
        self.rooms: dict[str, dict[str, Session]] = {LOBBY: {}}
        if history is None:
            history = MemoryHistory(self.limits.history_in_memory)
            self.committer = ImmediateCommitter(history, self.published)
        self.history = history
        self.registry = registry
        self.passwords = passwords
        self.throttle = throttle
        self.admin_token = admin_token
        self.audit = audit  # one line per admin action and refusal
        self.on_shutdown = on_shutdown
        # Accepted but not yet on disk, by (sender key, cid): a copy re-sent
        # meanwhile is not a new message.
        self._unsaved: dict[tuple[str, str], Record] = {}
        # Names with a password check or hash in progress.
        self._claims: set[str] = set()
        self.offline: OrderedDict[str, Session] = OrderedDict()  # oldest first
        self._admin_push = None  # a pending push of the session table
        self.admin_links: set[Link] = set()
        # Sessions ended on purpose, by id: (token, bye code, bye text).
        self._ended: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self.presence_listeners: list[Callable[[], None]] = []
        self.stopped = False  # stop_timers() was called: the server is going down
        self._room_events: dict[str, list[bytes]] = {}  # encoded, waiting for the timer
        # Who gets a room's whole member list with its next events, by room.
        self._newcomers: dict[str, dict[str, Session]] = {}
        self._room_event_call = None
        # The file-sharing relay (spchat.server.relay): its port (0: none)
        # and the transfers it may carry, each until an expiry time.
        self.relay_port = 0
        self.relay_tickets: dict[str, float] = {}
        self.tracker = Tracker()  # who offers and holds which file
        self._handlers = {
            wire.Login: self._login,
            wire.Resume: self._resume,
            wire.Say: self._say,
            wire.Direct: self._direct,
            wire.Who: self._who,
            wire.PresenceRequest: self._who,
            wire.HistoryRequest: self._history,
            wire.Register: self._register,
            wire.ChangePassword: self._change_password,
            wire.Logout: self._logout,
            wire.Share: self._share,
            wire.Unshare: self._unshare,
            wire.ListFiles: self._list_files,
            wire.Fetch: self._fetch,
            wire.Holding: self._holding,
            wire.RelayRequest: self._relay_request,
        }

    def now(self) -> float:
        return self.clock.seconds()

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # --- connection lifecycle, called by the protocol ------------------------

    def open_link(
        self, conn: Connection, address: str, beacon_keys: BeaconKeys | None = None,
        agent: str = "?",
    ) -> Link:
        link = Link(conn, address, self.now(), beacon_keys, agent=agent)
        self.links.add(link)
        return link

    def receive(self, link: Link, msg: wire.Message) -> None:
        """Handle one message from a connection; refusals go back as errors."""
        if self.stopped:
            return  # the server is stopping: its store is closed
        if link.admin or isinstance(msg, (wire.AdminLogin, wire.AdminRequest)):
            self._admin(link, msg)
            return
        handler = self._handlers.get(type(msg))
        session = link.session
        try:
            if handler is None:
                raise Refused("unexpected", f"a client may not send '{msg.TYPE}'")
            if session is None:
                if not isinstance(msg, (wire.Login, wire.Resume)):
                    raise Refused("not_logged_in", "log in first")
                if link.login_pending:
                    raise Refused("busy", "a login is already in progress")
                handler(link, msg)
                return
            if isinstance(msg, (wire.Login, wire.Resume)):
                raise Refused("already_logged_in", f"already logged in as {session.name}")
            if isinstance(msg, USER_ACTIONS):
                session.last_activity = self.now()
            if isinstance(msg, FLOOD_LIMITED) and not self._admit(session, msg):
                return
            self._handle(session, msg)
        except Refused as refusal:
            link.conn.send(wire.Error(refusal.code, refusal.text, getattr(msg, "cid", None)))

    def _handle(self, session: Session, msg: wire.Message) -> None:
        try:
            self._handlers[type(msg)](session, msg)
        except Refused as refusal:
            self._send(session, wire.Error(refusal.code, refusal.text, getattr(msg, "cid", None)))

    def link_lost(self, link: Link) -> None:
        """The connection is gone, for whatever reason."""
        self.links.discard(link)
        self.admin_links.discard(link)
        session = link.session
        link.session = None
        if self.stopped:
            return  # stopping: no grace timers, no notices
        if session is None or session.link is not link:
            return
        session.link = None
        session.endpoint = None
        if self.limits.resume_grace > 0:
            self._set_state(session, State.RECONNECTING)
            session.grace_call = self.clock.callLater(
                self.limits.resume_grace, self._grace_expired, session
            )
            self._presence_changed()
        else:
            self._go_offline(session, "connection lost", f"{session.name} left (connection lost)")

    def traffic(self, link: Link, received: int = 0, sent: int = 0) -> None:
        session = link.session
        if session is not None:
            session.bytes_in += received
            session.bytes_out += sent

    # --- the relay asks ----------------------------------------------------

    def relay_allowed(self, transfer: str) -> bool:
        """May the relay carry this transfer (opened for it, not expired)?"""
        expiry = self.relay_tickets.get(transfer)
        return expiry is not None and self.now() < expiry

    def relay_used(self, transfer: str) -> None:
        """Both sides are connected through the relay: the ticket is spent."""
        self.relay_tickets.pop(transfer, None)

    # --- the lifecycle ------------------------------------------------------

    def _set_state(self, session: Session, state: State) -> None:
        if state not in TRANSITIONS[session.state]:
            raise RuntimeError(f"session {session.id}: {session.state} -> {state} is not allowed")
        session.state = state
        session.state_since = self.now()
        self._sessions_changed()

    def _attach(self, session: Session, link: Link) -> None:
        link.session = session
        session.link = link
        session.address = link.address
        session.agent = link.agent
        # Each connection has its own handshake, so its own beacon keys.
        session.keys = link.beacon_keys
        session.window = ReplayWindow() if link.beacon_keys else None
        session.endpoint = None
        session.send_counter = 0

    def _detach(self, session: Session) -> Link | None:
        link, session.link = session.link, None
        if link is not None:
            link.session = None
        session.endpoint = None
        return link

    def _grace_expired(self, session: Session) -> None:
        session.grace_call = None
        if session.state is State.RECONNECTING:
            self._go_offline(
                session, "did not reconnect", f"{session.name} left (connection lost)"
            )

    def stop_timers(self) -> None:
        """The server is stopping: no flood drain or grace timer may fire
        after the store has closed (a running reactor would still call them),
        and nothing that still arrives is handled.  Comings and goings still
        waiting go out first: the last "alice left" is news too."""
        call, self._room_event_call = self._room_event_call, None
        if call is not None and call.active():
            call.cancel()
        self._send_all_room_events()
        self.stopped = True
        for session in self.sessions.values():
            for call in (session.grace_call, session.drain_call):
                if call is not None and call.active():
                    call.cancel()
            session.grace_call = session.drain_call = None
        for call in (self._admin_push, self._room_event_call):
            if call is not None and call.active():
                call.cancel()
        self._admin_push = self._room_event_call = None

    def _go_offline(self, session: Session, reason: str, notice: str) -> None:
        self._set_state(session, State.OFFLINE)
        session.offline_reason = reason
        for call in (session.grace_call, session.drain_call):
            if call is not None and call.active():
                call.cancel()
        session.grace_call = session.drain_call = None
        session.backlog.clear()
        self._detach(session)
        del self.sessions[session.id]
        del self.by_key[session.key]
        # Kept a while, so an administrator sees who dropped.
        self.offline[session.id] = session
        self.tracker.forget_session(session.id)
        for room in sorted(session.rooms):
            self._leave(session, room, notice)

    def _end(self, session: Session, code: str, text: str, reason: str, notice: str) -> None:
        """Tell the client why, close its connection and take the session offline."""
        self._ended[session.id] = (session.token, code, text)
        while len(self._ended) > MAX_ENDED:
            self._ended.popitem(last=False)
        link = session.link
        self._go_offline(session, reason, notice)
        if link is not None:
            link.conn.close(code, text)

    def kick(self, name: str, reason: str) -> bool:
        """Take a user offline at once; the client is told and stays away."""
        try:
            _, key = normalise_name(name)
        except Refused:
            return False
        session = self.by_key.get(key)
        if session is None:
            return False
        reason = wire.clip(reason, 200)
        self._end(
            session, "kicked", f"you were kicked: {reason}",
            f"kicked: {reason}", f"{session.name} was kicked ({reason})",
        )
        return True

    def sweep(self) -> None:
        """Periodic: disconnect idle sessions, publish idle presence changes,
        forget old offline sessions and expired introductions and relay
        tickets, refresh the administrators' table."""
        now = self.now()
        while self.offline:
            oldest = next(iter(self.offline.values()))
            if now - oldest.state_since < self.limits.offline_retention:
                break
            self.offline.popitem(last=False)
        self._sessions_changed()
        self.tracker.expire(now)
        for transfer, expiry in list(self.relay_tickets.items()):
            if expiry <= now:
                del self.relay_tickets[transfer]
        timeout = self.limits.idle_timeout
        if timeout > 0:
            now = self.now()
            for session in list(self.sessions.values()):
                if session.state is State.CONNECTED and now - session.last_activity >= timeout:
                    self._end(
                        session, "idle",
                        f"disconnected after {timeout:g} s without activity",
                        "idle", f"{session.name} left (idle)",
                    )
        self._presence_changed()

    # --- flood control --------------------------------------------------------

    def _admit(self, session: Session, msg: wire.Message) -> bool:
        """True to handle ``msg`` now; otherwise it waits or the session ends."""
        if not session.backlog and session.bucket.take(self.now()):
            return True
        if len(session.backlog) >= self.limits.flood_queue:
            self._send(session, wire.Error(
                "flood", "too many messages too fast", getattr(msg, "cid", None)
            ))
            self._end(
                session, "flood", "disconnected for sending too many messages too fast",
                "flood", f"{session.name} left (flooding)",
            )
            return False
        session.backlog.append(msg)
        if session.drain_call is None:
            session.drain_call = self.clock.callLater(
                session.bucket.wait(self.now()), self._drain, session
            )
        return False

    def _drain(self, session: Session) -> None:
        session.drain_call = None
        if session.state is State.OFFLINE:
            return
        while session.backlog and session.bucket.take(self.now()):
            self._handle(session, session.backlog.popleft())
            if session.state is State.OFFLINE:
                return
        if session.backlog:
            session.drain_call = self.clock.callLater(
                session.bucket.wait(self.now()), self._drain, session
            )

    # --- handlers -------------------------------------------------------------

    def _send(self, session: Session, message: wire.Message) -> None:
        if session.link is not None:
            session.link.conn.send(message)

    def _welcome(self, session: Session, resumed: bool) -> wire.Welcome:
        return wire.Welcome(
            session.name, session.id, session.token, LOBBY, self.now_ms(),
            self.history.last_seq, self.limits.udp_port,
            int(self.limits.presence_interval * 1000), self.limits.max_in_flight, resumed,
        )

    def _login(self, link: Link, msg: wire.Login) -> None:
        display, key = normalise_name(msg.name)
        self._check_ban(key)
        ip = link.address.rpartition(":")[0]
        wait = self.throttle.retry_after(key, ip) if self.throttle is not None else None
        if wait:
            raise Refused("throttled", f"too many failed logins; try again in {math.ceil(wait)} s")
        if key in self._claims:
            raise Refused("name_taken", f"someone is logging in as {display!r} right now")
        account = self.registry.account(key) if self.registry is not None else None
        if msg.register:
            self._need_accounts()
            if account is not None:
                raise Refused(
                    "name_registered",
                    f"the name {display!r} is already registered; log in with its password",
                )
            self._check_free(display, key)
            self._check_password(msg.password)
            self._password_work(key, lambda: self.passwords.hash(msg.password),
                                self._registered_login, link, display, key, msg.after)
        elif account is not None:
            if msg.password is None:
                raise Refused(
                    "password_required",
                    f"the name {display!r} is registered; log in with its password",
                )
            # Shown as registered, whatever case or width it was typed in.
            self._password_work(key, lambda: self.passwords.verify(msg.password, account[1]),
                                self._verified_login, link, account[0], key, ip, msg.after)
        elif msg.password is not None:
            # The same words as a wrong password: no hint which names exist.
            raise Refused("login_failed", "wrong name or password")
        else:
            self._check_free(display, key)
            self._start_session(link, display, key, msg.after)

    def _check_free(self, display: str, key: str) -> None:
        if key in self.by_key:
            raise Refused("name_taken", f"the name {display!r} is taken")

    def _password_work(self, key, work, then, link, *args, login: bool = True) -> None:
        """Start ``work()`` (a password hash or check, off the reactor thread)
        and run ``then(result, link, *args)`` when it is done.

        For a login the link may not try again meanwhile, and ``then`` runs
        only if the link is still there and still not logged in.
        """
        if self.passwords.waiting >= MAX_PASSWORD_QUEUE:
            raise Refused("busy", "the server is busy; try again in a moment")
        self._claims.add(key)
        if login:
            link.login_pending = True

        def done(result):
            self._claims.discard(key)
            link.login_pending = False
            if login and (link not in self.links or link.session is not None):
                return  # gone, or logged in otherwise, while we hashed
            try:
                then(result, link, *args)
            except Refused as refusal:
                self._tell(link, wire.Error(refusal.code, refusal.text))
            except sqlite3.Error as e:  # the store is busy or broken
                self._tell(link, wire.Error("unavailable", wire.clip(f"the server cannot save: {e}")))

        def failed(failure):
            # The password workers are stopping (shutdown): say so, no traceback.
            self._claims.discard(key)
            link.login_pending = False
            self._tell(link, wire.Error("unavailable", "the server is busy; try again"))

        work().addCallbacks(done, failed)

    def _tell(self, link: Link, message: wire.Message) -> None:
        if link in self.links:
            link.conn.send(message)

    def _registered_login(self, encoded, link, display, key, after) -> None:
        self._check_free(display, key)
        self.registry.set_account(key, display, encoded, self.now_ms())
        self._start_session(link, display, key, after)
        self._account_notice(self.by_key[key], f"the name {display} is now registered to you")

    def _verified_login(self, ok, link, display, key, ip, after) -> None:
        if not ok:
            if self.throttle is not None:
                self.throttle.failed(key, ip)
            raise Refused("login_failed", "wrong name or password")
        if self.throttle is not None:
            self.throttle.succeeded(key, ip)
        old = self.by_key.get(key)
        if old is not None:
            # The owner of the name, proven by its password, wins over a
            # session left behind (a crashed client, another device).
            self._end(old, "replaced", "you logged in from somewhere else",
                      "logged in elsewhere", f"{old.name} left")
        self._start_session(link, display, key, after)

    def _start_session(self, link: Link, display: str, key: str, after: int | None) -> None:
        now = self.now()
        session = Session(
            id=secrets.token_urlsafe(12),
            token=secrets.token_urlsafe(24),
            name=display,
            key=key,
            address=link.address,
            first_connected_at=now,
            state_since=now,
            last_activity=now,
            bucket=TokenBucket(self.limits.flood_rate, self.limits.flood_burst, now),
        )
        self._attach(session, link)
        self.sessions[session.id] = session
        self.by_key[key] = session
        self._sessions_changed()
        link.conn.started(session, resumed=False)
        self._send(session, self._welcome(session, resumed=False))
        self._join(session, LOBBY)
        if after is not None:
            self._replay(session, after)  # it was here before: what it missed
        else:
            self._send_history(session, self.history.last_seq + 1, self.limits.history_on_join)

    def _resume(self, link: Link, msg: wire.Resume) -> None:
        session = self.sessions.get(msg.session)
        # compare_digest: the time taken says nothing about the token.
        if session is None or not hmac.compare_digest(
            session.token.encode(), msg.token.encode("utf-8", "surrogatepass")
        ):
            ended = self._ended.get(msg.session)
            if ended is not None and ended[0] == msg.token:
                # Kicked, banned, idle...: the client is told again, so its
                # automatic reconnect cannot undo it.
                link.conn.close(*ended[1:])
                return
            raise Refused("resume_failed", "that session has ended; log in again")
        old = self._detach(session)
        if old is not None:  # the client saw the drop before we did
            old.conn.close("replaced", "this session continues on a newer connection")
        if session.grace_call is not None and session.grace_call.active():
            session.grace_call.cancel()
        session.grace_call = None
        # The client sends again whatever was not acknowledged: what waited
        # here for flood control would otherwise count twice.
        session.backlog.clear()
        if session.drain_call is not None and session.drain_call.active():
            session.drain_call.cancel()
        session.drain_call = None
        # The token stays the same for the whole session: a new one could be
        # lost with the connection that carried it.
        self._attach(session, link)
        if session.state is State.RECONNECTING:
            self._set_state(session, State.CONNECTED)
        link.conn.started(session, resumed=True)
        self._send(session, self._welcome(session, resumed=True))
        self._replay(session, msg.last_seq)
        for room in sorted(session.rooms):
            self._members_soon(session, room)
        self._presence_changed()

    def _replay(self, session: Session, after: int) -> None:
        # A client gone for long gets at most the newest MAX_REPLAY (older
        # ones are in /history), not the whole table in one reactor turn.
        start = max(after, self.history.first_seq - 1, self.history.last_seq - MAX_REPLAY)
        if start > after:
            self._send(session, wire.Notice(
                LOBBY, self.now_ms(), "gap",
                f"{start - after} older messages are not replayed; /history shows what is kept",
            ))
        for record in self.history.after(start):
            if record.visible_to(session.key, session.rooms):
                self._send(session, record.for_recipient(session.key))

    def _send_history(self, session: Session, before: int, limit: int) -> None:
        records = self.history.before(before, limit, session.key, session.rooms)
        for record in records:
            self._send(session, record.for_recipient(session.key, history=True))
        oldest = records[0].seq if records else before
        self._send(session, wire.HistoryEnd(oldest, len(records) == limit and oldest > 1))

    def _store(self, record: Record) -> None:
        self._unsaved[(record.sender_key, record.cid)] = record
        self.committer.add(record)

    def published(self, records: list[Record],
                  again: list[tuple[Record, Record]] = ()) -> None:
        """Records are saved and numbered: now they go out, and the senders'
        copies ack them.  ``again``: messages re-sent after a reconnect,
        each with its copy saved before, which acknowledges it once more.

        Consecutive lines of one room go out together: encoded once, and
        handed to each member in one call, so a delivery costs no Python call
        of its own."""
        for resent, saved in again:
            self._unsaved.pop((resent.sender_key, resent.cid), None)
            session = self.by_key.get(saved.sender_key)
            if session is not None:
                self._send(session, saved.for_recipient(saved.sender_key))
        run: list[Record] = []
        for record in records:
            self._unsaved.pop((record.sender_key, record.cid), None)
            sender = self.by_key.get(record.sender_key)
            if sender is not None:
                sender.messages_sent += 1
            if run and record.room != run[0].room:
                self._fan_out(run)
                run = []
            if record.room is not None:
                run.append(record)
                continue
            # A direct line must not overtake its sender's (or anyone's) join.
            self._send_all_room_events()
            for key in {record.to_key, record.sender_key}:
                session = self.by_key.get(key)
                if session is not None:
                    self._send(session, record.for_recipient(key))
        if run:
            self._fan_out(run)

    def _fan_out(self, records: list[Record]) -> None:
        """Saved lines of one room, in order, to every member online."""
        room = records[0].room
        self._send_room_events(room)  # a join before the line it says
        everyone: list[bytes] = []
        own: dict[str, list[tuple[int, bytes]]] = {}  # sender -> its copies
        for i, r in enumerate(records):
            line, ack = wire.encode_room_line(r.seq, r.ts, room, r.sender, r.text, r.cid)
            everyone.append(line)
            own.setdefault(r.sender_key, []).append((i, ack))
        shared = None  # frames made once for the members who sent none of them
        for key, member in self.rooms.get(room, {}).items():
            if member.link is None:
                continue
            copies = own.get(key)
            if copies is None:
                if shared is None:
                    shared = wire.pack(everyone, wire.BATCH_FRAME_BYTES)
                member.link.conn.send_frames(shared)
                continue
            mine = everyone.copy()
            for i, ack in copies:
                mine[i] = ack
            member.link.conn.send_encoded_many(mine)

    def _say(self, session: Session, msg: wire.Say) -> None:
        members = self.rooms.get(msg.room)
        if members is None or session.key not in members:
            raise Refused("not_in_room", f"you are not in the room {quoted(msg.room)}")
        check_text(msg.text, self.limits.max_message_bytes)
        if (session.key, msg.cid) not in self._unsaved:  # else its ack is on its way
            self._accept(session, msg, room=msg.room)

    def _direct(self, session: Session, msg: wire.Direct) -> None:
        if (session.key, msg.cid) in self._unsaved:
            return  # its acknowledgement follows when it is saved
        try:
            _, key = normalise_name(msg.to)
        except Refused:
            key = None
        target = self.by_key.get(key)
        if target is None:
            # Sent before a drop, maybe, and the recipient left since.
            record = self.history.find_cid(session.key, msg.cid)
            if record is not None:
                self._send(session, record.for_recipient(session.key))
                return
            raise Refused("unknown_user", f"nobody called {quoted(msg.to)} is here")
        check_text(msg.text, self.limits.max_message_bytes)
        self._accept(session, msg, to=target.name, to_key=target.key)

    def _accept(self, session: Session, msg: wire.Say | wire.Direct, **where) -> None:
        """Stamp and store a new message; the committer numbers it (or finds
        it saved already, if re-sent), and it goes out once saved."""
        self._store(Record(
            0, self.now_ms(), session.name, session.key, msg.text, msg.cid, **where,
        ))

    def _who(self, session: Session, msg: wire.Who) -> None:
        for room in sorted(session.rooms):
            self._send_members(session, room)

    def _history(self, session: Session, msg: wire.HistoryRequest) -> None:
        self._send_history(session, msg.before, max(1, min(msg.limit, HISTORY_PAGE_MAX)))

    # --- file sharing: the server only keeps track and introduces -------------

    def _need_sharing(self) -> int:
        limit = self.limits.max_share_bytes
        if limit <= 0:
            raise Refused("sharing_off", "file sharing is off on this server")
        return limit

    def _linked(self, session_id: str) -> bool:
        """Online now, with a connection to reach it on (not reconnecting)."""
        session = self.sessions.get(session_id)
        return session is not None and session.link is not None

    def _may_hold(self, session: Session, file_id: str) -> None:
        if not self.tracker.may_hold(session.id, file_id):
            raise Refused("too_many_shares", f"you already share {MAX_FILES_PER_SESSION} "
                          "files; unshare one first")

    def _share(self, session: Session, msg: wire.Share) -> None:
        limit = self._need_sharing()
        data = msg.manifest.encode()
        try:
            manifest = Manifest.parse(data, limit)
        except ManifestError as e:
            raise self._manifest_refusal(data, e, limit) from None
        # The file id is the hash of the canonical text: any other spelling
        # would give one file two ids.
        if manifest.canonical() != data:
            raise Refused("bad_manifest", "the manifest is not in canonical form (sorted "
                          "keys, no spaces, a safe file name)")
        file_id = manifest.file_id
        self._may_hold(session, file_id)
        shared = self.tracker.files.get(file_id)
        if shared is None:
            shared = self.tracker.add(file_id, msg.manifest, manifest.name, manifest.size,
                                      len(manifest.pieces), session.name, LOBBY, self.now_ms())
            self.tracker.hold(shared, session.id, msg.port, shared.piece_count)
            self._broadcast(shared.room, shared.offer())
            return
        # Offered already (by this user before a reconnect, or by another):
        # one more source, and the offer again as this sharer's confirmation.
        self.tracker.hold(shared, session.id, msg.port, shared.piece_count)
        self._send(session, shared.offer())

    @staticmethod
    def _manifest_refusal(data: bytes, error: ManifestError, limit: int) -> Refused:
        try:  # is the size all that is wrong with it?
            size = Manifest.parse(data, wire.MAX_INT).size
        except ManifestError:
            return Refused("bad_manifest", str(error))
        return Refused("too_big", f"the file is {size} bytes; the limit on this server is "
                       f"{limit} bytes")

    def _unshare(self, session: Session, msg: wire.Unshare) -> None:
        # Not held (any more): nothing to do, and nothing worth an error.
        self.tracker.release(session.id, msg.file.lower())

    def _holding(self, session: Session, msg: wire.Holding) -> None:
        shared = self.tracker.files.get(msg.file.lower())
        if shared is None:
            raise Refused("no_such_file", f"no file {quoted(msg.file)} is offered here")
        if msg.pieces == 0:
            self.tracker.release(session.id, shared.file_id)
            return
        if msg.pieces > shared.piece_count:
            raise Refused("bad_request", f"{shared.name} has only {shared.piece_count} pieces")
        self._may_hold(session, shared.file_id)
        self.tracker.hold(shared, session.id, msg.port, msg.pieces)

    def _list_files(self, session: Session, msg: wire.ListFiles) -> None:
        self._send(session, wire.FileList(self.tracker.listing(self._linked)))

    def _find_file(self, ref: str) -> SharedFile:
        ref = ref.lower()
        if not set(ref) <= HEX_DIGITS:
            raise Refused("no_such_file", f"no file {quoted(ref)} is offered here")
        if len(ref) < MIN_PREFIX:
            raise Refused("no_such_file", f"give at least {MIN_PREFIX} hex digits of the "
                          "file's id")
        found = self.tracker.find(ref)
        if not found:
            raise Refused("no_such_file", f"no file {ref} is offered here")
        if len(found) > 1:
            raise Refused("ambiguous", f"{ref} matches {len(found)} files; give more of its id")
        return found[0]

    def _fetch(self, session: Session, msg: wire.Fetch) -> None:
        self._need_sharing()
        shared = self._find_file(msg.file)
        peers = self.tracker.pick(
            shared, lambda sid: sid != session.id and self._linked(sid)
        )
        if not peers:
            raise Refused("no_peers", f"nobody who has {shared.name} is online now")
        rows = []
        for holder_id, holder in peers:
            transfer = self.tracker.introduce(shared.file_id, session.id, holder_id, self.now())
            peer = self.sessions[holder_id]
            # The holder hears of the key before the downloader can use it.
            self._send(peer, wire.PeerRequest(
                transfer.id, transfer.key, shared.file_id, session.name, relay_port=0
            ))
            rows.append((peer.name, host_of(peer.link.address), holder.port,
                         transfer.id, transfer.key))
        self._send(session, wire.Swarm(shared.file_id, shared.manifest, msg.cid, tuple(rows)))

    def _relay_request(self, session: Session, msg: wire.RelayRequest) -> None:
        transfer = self.tracker.transfer(session.id, msg.transfer, self.now())
        if transfer is None:
            raise Refused("no_such_transfer", "no such transfer (it may have expired); "
                          "fetch the file again")
        if self.relay_port == 0:
            raise Refused("no_relay", "this server has no relay: peers must connect directly")
        if not (self._linked(transfer.holder)
                and self.tracker.holds(transfer.holder, transfer.file)):
            raise Refused("no_peers", "the peer of this transfer is not online now")
        holder = self.sessions[transfer.holder]
        if not self.relay_allowed(transfer.id):
            # One call to the relay per live ticket: asking again must not
            # make the holder dial the relay again and again.
            self.relay_tickets[transfer.id] = self.now() + RELAY_TICKET_SECONDS
            self._send(holder, wire.PeerRequest(
                transfer.id, transfer.key, transfer.file, session.name, self.relay_port
            ))
        self._send(session, wire.RelayOpen(transfer.id, self.relay_port))

    # --- administration -------------------------------------------------------

    def _admin(self, link: Link, msg: wire.Message) -> None:
        who = link.session.name if link.session is not None else link.address
        if isinstance(msg, wire.AdminLogin):
            ok = (
                link.session is None
                and self.admin_token is not None
                and hmac.compare_digest(
                    msg.token.encode("utf-8", "surrogatepass"), self.admin_token.encode()
                )
            )
            if not ok:
                self.audit(f"{who}: refused: wrong admin token")
                link.conn.close("not_admin", "that is not the admin token")
                return
            link.admin = True
            self.admin_links.add(link)
            link.conn.started(None, resumed=False)
            link.conn.send(wire.AdminReply("login", True, "admin"))
            return
        if not link.admin:
            op = getattr(msg, "op", msg.TYPE)
            self.audit(f"{who}: refused: {op} needs the admin token")
            link.conn.send(wire.Error(
                "not_admin", f"{op} is an admin operation; it needs the admin token"
            ))
            return
        if not isinstance(msg, wire.AdminRequest):
            link.conn.send(wire.Error("unexpected", f"an admin connection may not send {msg.TYPE}"))
            return
        try:
            text, rows = self._admin_op(msg)
        except Refused as refusal:
            self.audit(f"admin {link.address}: {msg.op} {msg.name or ''}: {refusal.text}")
            link.conn.send(wire.AdminReply(msg.rid, False, refusal.text))
            return
        if msg.op != "list":
            self.audit(f"admin {link.address}: {msg.op} {msg.name or ''}: {text}")
        parts = wire.row_parts(rows)
        for i, part in enumerate(parts):
            link.conn.send(wire.AdminReply(msg.rid, True, text, part, more=i < len(parts) - 1))
        if msg.op == "shutdown":
            self.on_shutdown()

    def _admin_op(self, msg: wire.AdminRequest) -> tuple[str, tuple]:
        reason = msg.reason or "no reason given"
        if msg.op == "list":
            rows = self.session_rows()
            return f"{len(rows)} sessions", rows
        if msg.op in ("kick", "ban", "unban") and not msg.name:
            raise Refused("bad_request", f"{msg.op} needs a name")
        if msg.op == "kick":
            if not self.kick(msg.name, reason):
                raise Refused("unknown_user", f"nobody called {quoted(msg.name)} is here")
            if msg.minutes is not None:
                self.ban(msg.name, msg.minutes, reason)
                return f"kicked {msg.name} and banned for {msg.minutes:g} minutes", ()
            return f"kicked {msg.name}", ()
        if msg.op == "ban":
            if not self.ban(msg.name, msg.minutes, reason):
                raise Refused("bad_request", f"cannot ban {quoted(msg.name)}")
            how_long = "for ever" if msg.minutes is None else f"for {msg.minutes:g} minutes"
            return f"banned {msg.name} {how_long}", ()
        if msg.op == "unban":
            if not self.unban(msg.name):
                raise Refused("unknown_user", f"{quoted(msg.name)} is not banned")
            return f"unbanned {msg.name}", ()
        if msg.op == "broadcast":
            if not msg.reason:
                raise Refused("bad_request", "broadcast needs a text")
            for room in self.rooms:
                self._broadcast(room, wire.Notice(
                    room, self.now_ms(), "broadcast", f"server: {wire.clip(msg.reason, 400)}"
                ))
            return f"broadcast to {len(self.sessions)} sessions", ()
        # disconnect_all, shutdown
        code, text = (
            ("shutdown", f"the server is shutting down: {reason}")
            if msg.op == "shutdown"
            else ("disconnected", f"the server disconnected everyone: {reason}")
        )
        count = len(self.sessions)
        for session in list(self.sessions.values()):
            self._end(session, code, text, code, f"{session.name} left ({code})")
        return f"disconnected {count} sessions", ()

    def session_rows(self) -> tuple[tuple, ...]:
        """The admin's table: one row per session, offline ones last (see
        wire.SESSION_FIELDS)."""
        now = self.now()
        live = sorted(self.sessions.values(), key=lambda s: s.name.casefold())
        gone = sorted(self.offline.values(), key=lambda s: -s.state_since)
        return tuple(
            (s.name, s.address, s.state.value, s.agent, round(now - s.state_since, 3),
             int(s.first_connected_at * 1000), int(s.last_activity * 1000),
             s.messages_sent, s.bytes_in, s.bytes_out)
            for s in live + gone
        )

    def _sessions_changed(self) -> None:
        """Push the table to administrators, once per reactor turn at most."""
        if self._admin_push is None and self.admin_links:
            self._admin_push = self.clock.callLater(0, self._push_sessions)

    def _push_sessions(self) -> None:
        self._admin_push = None
        parts = wire.row_parts(self.session_rows())
        for i, part in enumerate(parts):
            event = wire.AdminEvent(part, more=i < len(parts) - 1)
            for link in self.admin_links:
                link.conn.send(event)

    # --- accounts and bans ----------------------------------------------------

    def _need_accounts(self) -> None:
        if self.registry is None or self.passwords is None:
            raise Refused("no_accounts", "this server does not keep accounts")

    @staticmethod
    def _check_password(password: str | None) -> None:
        try:
            normalise_password(password or "")
        except ValueError as e:
            raise Refused("bad_password", str(e)) from None

    def _account_notice(self, session: Session, text: str) -> None:
        self._send(session, wire.Notice(LOBBY, self.now_ms(), "account", text))

    def _register(self, session: Session, msg: wire.Register) -> None:
        self._need_accounts()
        if self.registry.account(session.key) is not None:
            raise Refused("name_registered", f"the name {session.name!r} is already registered")
        self._check_password(msg.password)
        if session.key in self._claims:
            raise Refused("busy", "a password change is already in progress")
        link = session.link

        def save(encoded, link):
            self.registry.set_account(session.key, session.name, encoded, self.now_ms())
            self._account_notice(
                session, f"the name {session.name} is now registered to you; "
                "log in with its password from now on",
            )

        self._password_work(
            session.key, lambda: self.passwords.hash(msg.password), save, link, login=False
        )

    def _change_password(self, session: Session, msg: wire.ChangePassword) -> None:
        self._need_accounts()
        account = self.registry.account(session.key)
        if account is None:
            raise Refused("not_registered", "this name is not registered; use /register")
        self._check_password(msg.new)
        if session.key in self._claims:
            raise Refused("busy", "a password change is already in progress")
        ip = session.address.rpartition(":")[0]
        wait = self.throttle.retry_after(session.key, ip) if self.throttle is not None else None
        if wait:
            raise Refused("throttled", f"too many wrong passwords; try again in {math.ceil(wait)} s")

        def verified(ok, link):
            if not ok:
                if self.throttle is not None:
                    self.throttle.failed(session.key, ip)
                raise Refused("login_failed", "wrong password")
            self._password_work(
                session.key, lambda: self.passwords.hash(msg.new), saved, link, login=False
            )

        def saved(encoded, link):
            self.registry.set_account(session.key, session.name, encoded, self.now_ms())
            self._account_notice(session, "your password is changed")

        self._password_work(
            session.key, lambda: self.passwords.verify(msg.old, account[1]), verified,
            session.link, login=False,
        )

    def _check_ban(self, key: str) -> None:
        if self.registry is None:
            return
        ban = self.registry.ban(key)
        if ban is None:
            return
        _, until, reason = ban
        if until is not None and until <= self.now():
            self.registry.delete_ban(key)  # served its time
            return
        raise Refused("banned", ban_text(reason, until, self.now()))

    def ban(self, name: str, minutes: float | None, reason: str) -> bool:
        """Ban a name (for ``minutes``, or for ever); a user online goes at once."""
        if self.registry is None:
            return False
        try:
            display, key = normalise_name(name)
        except Refused:
            return False
        reason = wire.clip(reason, 200)
        until = None if minutes is None else self.now() + minutes * 60
        self.registry.set_ban(key, display, until, reason, self.now_ms())
        session = self.by_key.get(key)
        if session is not None:
            self._end(
                session, "banned", ban_text(reason, until, self.now()),
                f"banned: {reason}", f"{session.name} was banned ({reason})",
            )
        return True

    def unban(self, name: str) -> bool:
        try:
            _, key = normalise_name(name)
        except Refused:
            return False
        return self.registry is not None and self.registry.delete_ban(key)

    def _logout(self, session: Session, msg: wire.Logout) -> None:
        self._end(session, "logout", "logged out", "logout", f"{session.name} left")

    # --- rooms and presence ---------------------------------------------------

    def presence_state(self, session: Session, now: float | None = None) -> str:
        if session.state is State.RECONNECTING:
            return "reconnecting"
        if (self.now() if now is None else now) - session.last_activity >= self.limits.idle_after:
            return "idle"
        return "online"

    def presence_snapshot(self, room: str = LOBBY) -> tuple[tuple[str, str], ...]:
        sessions = sorted(self.rooms[room].values(), key=lambda s: s.name.casefold())
        now = self.now()
        return tuple((s.name, self.presence_state(s, now)) for s in sessions)

    def _presence_changed(self) -> None:
        """Someone joined, left or may have changed state: the listeners
        (the beacon) coalesce and compare; building a snapshot here on every
        join would make a join storm quadratic."""
        for listener in self.presence_listeners:
            listener()

    def beacon_peer(self, key_id: bytes) -> Session | None:
        # Linear, but only for hellos (a few per client per minute).
        for session in self.sessions.values():
            if session.keys is not None and session.keys.key_id == key_id:
                return session
        return None

    def beacon_peers(self):
        return [s for s in self.sessions.values() if s.endpoint is not None]

    def _send_members(self, session: Session, room: str) -> None:
        """The whole member list, now (asked for with /who)."""
        if session.link is not None:
            session.link.conn.send_encoded_many(self._member_list(room))

    def _members_soon(self, session: Session, room: str) -> None:
        """The whole member list for a newcomer (or a resumed session), with
        the room's next comings and goings: a storm of n joins builds and
        encodes it once per ROOM_EVENT_SECONDS instead of n times."""
        self._newcomers.setdefault(room, {})[session.key] = session
        self._room_events_soon()

    def _member_list(self, room: str) -> list[bytes]:
        """The whole member list, encoded in parts that each fit one Noise message."""
        part, size, parts = [], 0, []
        for entry in self.presence_snapshot(room):
            cost = len(entry[0].encode()) + len(entry[1]) + 8  # ["name","state"],
            if part and size + cost > MEMBERS_PART_BYTES:
                parts.append(part)
                part, size = [], 0
            part.append(entry)
            size += cost
        parts.append(part)
        return [wire.encode(wire.Members(room, tuple(members), more=i < len(parts) - 1))
                for i, members in enumerate(parts)]

    def _broadcast(self, room: str, message: wire.Message) -> None:
        self._send_room_events(room)  # what happened before goes first
        data = wire.encode(message)  # once, however many members
        for member in self.rooms[room].values():
            if member.link is not None:
                member.link.conn.send_encoded(data)

    def _room_event(self, room: str, message: wire.Message) -> None:
        """A join, a leave, a member update: sent with the others of the next
        ROOM_EVENT_SECONDS (or before the next chat line in that room)."""
        self._room_events.setdefault(room, []).append(wire.encode(message))
        self._room_events_soon()

    def _room_events_soon(self) -> None:
        if self._room_event_call is None:
            self._room_event_call = self.clock.callLater(ROOM_EVENT_SECONDS,
                                                         self._room_events_due)

    def _room_events_due(self) -> None:
        self._room_event_call = None
        self._send_all_room_events()

    def _send_all_room_events(self) -> None:
        for room in list(dict.fromkeys([*self._newcomers, *self._room_events])):
            self._send_room_events(room)

    def _send_room_events(self, room: str) -> None:
        newcomers = self._newcomers.pop(room, None)
        if newcomers:
            # The list first: the events after it change nothing in it, as
            # it already shows them (a client applies them idempotently).
            members, lists = self.rooms.get(room, {}), None
            for key, session in newcomers.items():
                if members.get(key) is session and session.link is not None:
                    lists = lists or self._member_list(room)
                    session.link.conn.send_encoded_many(lists)
        events = self._room_events.pop(room, None)
        if events:
            frames = wire.pack(events, wire.BATCH_FRAME_BYTES)  # made once for everyone
            for member in self.rooms.get(room, {}).values():
                if member.link is not None:
                    member.link.conn.send_frames(frames)

    def _join(self, session: Session, room: str) -> None:
        self.rooms[room][session.key] = session
        session.rooms.add(room)
        # The whole list to the newcomer, the news to the others: both with
        # the room's other comings and goings of the next moment.
        self._members_soon(session, room)
        self._room_event(room, wire.Notice(room, self.now_ms(), "join", f"{session.name} joined"))
        self._room_event(room, wire.MemberUpdate(room, session.name,
                                                 self.presence_state(session)))
        self._presence_changed()

    def _leave(self, session: Session, room: str, text: str) -> None:
        self.rooms[room].pop(session.key, None)
        session.rooms.discard(room)
        self._room_event(room, wire.Notice(room, self.now_ms(), "leave", text))
        self._room_event(room, wire.MemberUpdate(room, session.name, "gone"))
        self._presence_changed()
