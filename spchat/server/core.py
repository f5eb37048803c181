"""The chat core: sessions, names, the room, fan-out, sequence and time.

Sans-IO: it never imports the reactor and never touches a socket.  It gets a
clock (a callable returning seconds since the epoch) and talks to each
connection through two methods, ``send(message)`` and ``close(code, text)``,
so every rule of the chat is a plain unit test.
"""

from __future__ import annotations

import itertools
import secrets
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Protocol

from spchat import wire

LOBBY = "lobby"
NAME_MAX_CHARS = 32
# Characters allowed in a name besides letters and digits.
NAME_PUNCTUATION = frozenset("_-.")
# Text may span lines, but other control characters (terminal escapes above
# all) would let one user rewrite another user's screen.
TEXT_ALLOWED_CONTROLS = frozenset("\n\t")


class Connection(Protocol):
    """What the core needs from a network connection."""

    def send(self, message: wire.Message) -> None: ...

    def close(self, code: str, text: str) -> None: ...


class Refused(Exception):
    """A request the core will not carry out; becomes a wire ``error``."""

    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code = code
        self.text = text


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
    for ch in text:
        if unicodedata.category(ch) == "Cc" and ch not in TEXT_ALLOWED_CONTROLS:
            raise Refused("bad_text", "the message contains control characters")


@dataclass(eq=False)
class Session:
    """One client connection and, once logged in, its user."""

    conn: Connection
    address: str
    id: str
    connected_at: float
    name: str | None = None  # display form, set at login
    key: str | None = None  # comparison form
    last_activity: float = 0.0
    messages_sent: int = 0
    rooms: set[str] = field(default_factory=set)

    @property
    def logged_in(self) -> bool:
        return self.key is not None


class ChatCore:
    """All chat rules; the network adapters only parse and forward."""

    def __init__(self, clock: Callable[[], float], max_message_bytes: int = 8192):
        self.clock = clock
        self.max_message_bytes = max_message_bytes
        self.sessions: set[Session] = set()
        self.by_key: dict[str, Session] = {}
        self.rooms: dict[str, dict[str, Session]] = {LOBBY: {}}
        # One sequence for every stored message (room and direct), so a client
        # can later ask for "everything after N" in a single number.
        self._seq = itertools.count(1)
        self._handlers = {
            wire.Login: self._login,
            wire.Say: self._say,
            wire.Direct: self._direct,
            wire.Who: self._who,
            wire.Logout: self._logout,
        }

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- connection lifecycle, called by the protocol ------------------------

    def connect(self, conn: Connection, address: str) -> Session:
        now = self.clock()
        session = Session(
            conn, address, secrets.token_urlsafe(12), connected_at=now, last_activity=now
        )
        self.sessions.add(session)
        return session

    def receive(self, session: Session, msg: wire.Message) -> None:
        """Handle one message from a session; refusals go back as errors."""
        session.last_activity = self.clock()
        handler = self._handlers.get(type(msg))
        try:
            if handler is None:
                raise Refused("unexpected", f"a client may not send '{msg.TYPE}'")
            if not session.logged_in and handler != self._login:
                raise Refused("not_logged_in", "log in first")
            handler(session, msg)
        except Refused as refusal:
            session.conn.send(
                wire.Error(refusal.code, refusal.text, getattr(msg, "cid", None))
            )

    def disconnected(self, session: Session) -> None:
        """The connection is gone, for whatever reason."""
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        if session.logged_in:
            del self.by_key[session.key]
            for room in sorted(session.rooms):
                self._leave(session, room, f"{session.name} left")

    # --- handlers ------------------------------------------------------------

    def _login(self, session: Session, msg: wire.Login) -> None:
        if session.logged_in:
            raise Refused("already_logged_in", f"already logged in as {session.name}")
        display, key = normalise_name(msg.name)
        if key in self.by_key:
            raise Refused("name_taken", f"the name {display!r} is taken")
        session.name, session.key = display, key
        self.by_key[key] = session
        session.conn.send(wire.Welcome(display, session.id, LOBBY, self.now_ms()))
        self._join(session, LOBBY)

    def _say(self, session: Session, msg: wire.Say) -> None:
        members = self.rooms.get(msg.room)
        if members is None or session.key not in members:
            raise Refused("not_in_room", f"you are not in the room {msg.room!r}")
        check_text(msg.text, self.max_message_bytes)
        session.messages_sent += 1
        seq, ts = next(self._seq), self.now_ms()
        for member in members.values():
            cid = msg.cid if member is session else None
            member.conn.send(
                wire.RoomMessage(seq, ts, msg.room, session.name, msg.text, cid)
            )

    def _direct(self, session: Session, msg: wire.Direct) -> None:
        try:
            _, key = normalise_name(msg.to)
        except Refused:
            key = None
        target = self.by_key.get(key)
        if target is None:
            raise Refused("unknown_user", f"nobody called {msg.to!r} is here")
        check_text(msg.text, self.max_message_bytes)
        session.messages_sent += 1
        seq, ts = next(self._seq), self.now_ms()
        if target is not session:
            target.conn.send(
                wire.DirectMessage(seq, ts, session.name, target.name, msg.text)
            )
        # The sender's copy, with its cid, is the acknowledgement.
        session.conn.send(
            wire.DirectMessage(seq, ts, session.name, target.name, msg.text, msg.cid)
        )

    def _who(self, session: Session, msg: wire.Who) -> None:
        for room in sorted(session.rooms):
            session.conn.send(self._members(room))

    def _logout(self, session: Session, msg: wire.Logout) -> None:
        session.conn.close("logout", "logged out")
        self.disconnected(session)

    # --- rooms ---------------------------------------------------------------

    def _members(self, room: str) -> wire.Members:
        names = sorted((s.name for s in self.rooms[room].values()), key=str.casefold)
        return wire.Members(room, tuple(names))

    def _broadcast(self, room: str, message: wire.Message) -> None:
        for member in self.rooms[room].values():
            member.conn.send(message)

    def _join(self, session: Session, room: str) -> None:
        self.rooms[room][session.key] = session
        session.rooms.add(room)
        self._broadcast(room, wire.Notice(room, self.now_ms(), "join", f"{session.name} joined"))
        self._broadcast(room, self._members(room))

    def _leave(self, session: Session, room: str, text: str) -> None:
        self.rooms[room].pop(session.key, None)
        session.rooms.discard(room)
        self._broadcast(room, wire.Notice(room, self.now_ms(), "leave", text))
        self._broadcast(room, self._members(room))
