"""The chat message schema: typed messages <-> bytes, with validation.

Pure: no I/O.  Every Noise transport message carries exactly one message,
encoded as a compact JSON object whose ``"t"`` member names its type.  JSON
because it is in the standard library, every language can speak it, a
captured plaintext is readable while debugging, and the validation below is
what makes it safe, not the format.

Each message type is a frozen dataclass registered in ``MESSAGES`` with a
schema (field -> rule).  ``decode`` checks every field's type and size and
raises ``WireError`` with a plain-words reason; it never raises anything else.
"""

from __future__ import annotations

import dataclasses
import json
import json.scanner
import re
import typing
from typing import Any, Callable, ClassVar

# A chat text may be long, but its envelope must still fit one Noise message
# (65535 bytes minus the 16-byte tag).  The configurable, smaller limit
# (CHAT_MAX_MESSAGE_BYTES) is enforced by the chat core with its own error.
MAX_TEXT_BYTES = 60000
MAX_NAME_CHARS = 64  # the core applies the real name rules (1-32 characters)
MAX_ID_CHARS = 64
MAX_REASON_CHARS = 500
MAX_INT = 2**53  # exactly representable in every JSON implementation


class WireError(ValueError):
    """A message that is not valid spchat wire format.

    ``kind``: the message type, when the message was one (with a field
    wrong) rather than garbage; ``cid``: its own id, when it had a valid
    one, so the answer can name it and the sender stop waiting for its
    acknowledgement.
    """

    def __init__(self, text: str, kind: str | None = None, cid: str | None = None,
                 field: str | None = None):
        super().__init__(text)
        self.kind = kind
        self.cid = cid
        self.field = field  # the field at fault, when check() found it


def clip(text: str, limit: int = 500) -> str:
    """``text`` cut to ``limit`` characters, marked if it was cut: for reasons
    and notices that quote what someone typed."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- field rules -------------------------------------------------------------
# A rule takes the decoded JSON value and returns the field value or raises
# WireError; the field name is added by the caller.


def _string(max_chars: int, *, optional: bool = False, max_bytes: int | None = None,
            min_chars: int = 0):
    def rule(value: Any) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise WireError("must be a string")
        if len(value) > max_chars:
            raise WireError(f"longer than {max_chars} characters")
        if len(value) < min_chars:
            raise WireError("must not be empty")
        # No lone surrogates here: the decoder refused them already.
        if max_bytes is not None and len(value.encode("utf-8")) > max_bytes:
            raise WireError(f"longer than {max_bytes} bytes")
        return value

    return rule


def _label(max_chars: int, *, optional: bool = False):
    """A string shown as it is (a client's agent, an id): printable
    characters only, so no terminal escape, newline or bidi control
    reaches a log or an administrator's screen."""
    check = _string(max_chars, optional=optional, min_chars=1)

    def rule(value: Any) -> str | None:
        value = check(value)
        if value is not None and not value.isprintable():
            bad = next(ch for ch in value if not ch.isprintable())
            raise WireError(f"contains the unprintable character {bad!a}")
        return value

    return rule


MIN_OUTBOX_CHARS, MAX_OUTBOX_CHARS = 16, 128
_outbox_label = _label(MAX_OUTBOX_CHARS, optional=True)


def _optional_outbox(value: Any) -> str | None:
    """A secret the client picked: long enough not to be guessed."""
    value = _outbox_label(value)
    if value is not None and len(value) < MIN_OUTBOX_CHARS:
        raise WireError(f"shorter than {MIN_OUTBOX_CHARS} characters")
    return value


def _integer(value: Any) -> int:
    # bool is an int subclass in Python; true/false are not sequence numbers.
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireError("must be an integer")
    if not 0 <= value <= MAX_INT:
        raise WireError("out of range")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise WireError("must be true or false")
    return value


PRESENCE_STATES = ("online", "idle", "reconnecting")
# A member's standing in a room, highest first.  "muted" is a member who may
# not speak there.
ROLES = ("owner", "operator", "member", "muted")


def _members(value: Any) -> tuple[tuple[str, str, str], ...]:
    """A member list: [[name, state, role], ...]."""
    if not isinstance(value, list):
        raise WireError("must be a list")
    if len(value) > 100000:
        raise WireError("too many entries")
    check = _string(MAX_NAME_CHARS)
    members = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 3):
            raise WireError("entries must be [name, state, role]")
        if item[1] not in PRESENCE_STATES:
            raise WireError(f"state must be one of {', '.join(PRESENCE_STATES)}")
        if item[2] not in ROLES:
            raise WireError(f"role must be one of {', '.join(ROLES)}")
        members.append((check(item[0]), item[1], item[2]))
    return tuple(members)


def _role(value: Any) -> str:
    if value not in ROLES:
        raise WireError(f"must be one of {', '.join(ROLES)}")
    return value


MAX_POSITIONS = 1000


def _optional_positions(value: Any) -> tuple[tuple[str, int], ...] | None:
    return None if value is None else _positions(value)


def _positions(value: Any) -> tuple[tuple[str, int], ...]:
    """Where a client is in each conversation: [["#room", seq], ["@name", seq], ...]."""
    if not isinstance(value, list) or len(value) > MAX_POSITIONS:
        raise WireError(f"must be a list of at most {MAX_POSITIONS} [conversation, seq]")
    check = _string(MAX_NAME_CHARS + 1)
    out = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2):
            raise WireError("entries must be [conversation, seq]")
        conversation = check(item[0])
        if not conversation[:1] in ("#", "@"):
            raise WireError("a conversation is '#room' or '@name'")
        out.append((conversation, _integer(item[1])))
    return tuple(out)


def _member_state(value: Any) -> str:
    if value not in (*PRESENCE_STATES, "gone"):
        raise WireError(f"must be one of {', '.join(PRESENCE_STATES)}, gone")
    return value


def _optional_number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1e7:
        raise WireError("must be a number of minutes")
    return float(value)


def _rows(what: str, rules: tuple, max_rows: int):
    """A list of fixed-length rows, each field checked by its rule."""

    def rule(value: Any) -> tuple[tuple, ...]:
        if not isinstance(value, list) or len(value) > max_rows:
            raise WireError(f"must be a list of at most {max_rows} {what}")
        rows = []
        for row in value:
            if not (isinstance(row, list) and len(row) == len(rules)):
                raise WireError(f"each of the {what} has {len(rules)} fields")
            rows.append(tuple(check(v) for check, v in zip(rules, row)))
        return tuple(rows)

    return rule


def _rows_of_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_POSITIONS:
        raise WireError(f"must be a list of at most {MAX_POSITIONS} names")
    check = _string(MAX_NAME_CHARS)
    return tuple(check(v) for v in value)


def _optional_integer(value: Any) -> int | None:
    return None if value is None else _integer(value)


_TEXT = _string(MAX_TEXT_BYTES, max_bytes=MAX_TEXT_BYTES)
_PASSWORD = _string(1024, optional=True)
_NAME = _string(MAX_NAME_CHARS)
# Ids are never empty: "" from every message would make them all one.
_ID = _label(MAX_ID_CHARS)
_OPTIONAL_ID = _label(MAX_ID_CHARS, optional=True)
_REASON = _string(MAX_REASON_CHARS)
_OPTIONAL_REASON = _string(MAX_REASON_CHARS, optional=True)
_CONVERSATION = _string(MAX_NAME_CHARS + 1)


# --- message types -----------------------------------------------------------

MESSAGES: dict[str, type[Message]] = {}


class Message:
    """Base of all wire messages; subclasses are frozen dataclasses."""

    TYPE: ClassVar[str]
    SCHEMA: ClassVar[dict[str, Callable[[Any], Any]]]
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    # Made by message() for each subclass: any message is a dataclass to
    # dataclasses.replace and dataclasses.fields.
    __dataclass_fields__: ClassVar[dict[str, Any]]


@typing.dataclass_transform(frozen_default=True)
def message(type_name: str, **schema: Callable[[Any], Any]):
    """Register a frozen dataclass as the message type ``type_name``, each
    field checked by its rule in ``schema``.  A field with a default in the
    class may be left out on the wire (the default is written once, there);
    dataclass_transform lets a type checker see the fields."""

    def register(cls):
        cls = dataclasses.dataclass(frozen=True, slots=True)(cls)
        fields = dataclasses.fields(cls)
        if {f.name for f in fields} != set(schema):
            raise TypeError(f"{cls.__name__}: the fields and the rules of {type_name!r} "
                            "differ")
        cls.TYPE = type_name
        cls.SCHEMA = schema
        cls.DEFAULTS = {f.name: f.default for f in fields
                        if f.default is not dataclasses.MISSING}
        MESSAGES[type_name] = cls
        return cls

    return register


# Handshake payloads (inside the Noise handshake messages).


# A client's or server's name and version, "spchat-client/1.2".
MAX_AGENT_CHARS = 100


@message("hello", agent=_label(MAX_AGENT_CHARS))
class Hello(Message):
    """Client -> server, in the first handshake message (not yet encrypted)."""

    agent: str


@message("server_hello", agent=_label(MAX_AGENT_CHARS), max_message_bytes=_integer)
class ServerHello(Message):
    """Server -> client, in the second handshake message (encrypted)."""

    agent: str
    max_message_bytes: int


# Client -> server.


@message(
    "login",
    name=_NAME,
    password=_PASSWORD,
    register=_boolean,
    positions=_optional_positions,
    since=_integer,
    outbox=_optional_outbox,
)
class Login(Message):
    """Log in as ``name``: a guest (no password), a registered user, or
    ``register`` the name with ``password`` now.

    ``positions``: the client was here before and has seen each listed
    conversation up to its number; the server sends what came after
    instead of the usual history on join (see ``Resume``).

    ``outbox``: a secret the client picked (16 to 128 printable
    characters) and keeps with its unsent lines. A guest's cids belong to
    its session; a guest that logs in again with the same outbox (its
    session lost, say to a server restart) has its re-sent lines taken as
    the copies they are, not as new lines.
    """

    name: str
    password: str | None = None
    register: bool = False
    positions: tuple[tuple[str, int], ...] | None = None
    since: int = 0
    outbox: str | None = None


@message("register", password=_string(1024))
class Register(Message):
    """Register the name this guest is using, with a password."""

    password: str


@message("change_password", old=_string(1024), new=_string(1024))
class ChangePassword(Message):
    old: str
    new: str


@message("history", before=_integer, limit=_integer,
         conversation=_CONVERSATION)
class HistoryRequest(Message):
    """Up to ``limit`` (at most 200) messages of ``conversation`` ("#room"
    or "@name") numbered below ``before``."""

    before: int
    limit: int
    conversation: str = "#lobby"


@message("resume", session=_ID, token=_ID, positions=_positions,
         since=_integer)
class Resume(Message):
    """Take back a session after a dropped connection.

    ``positions``: for each conversation the client knows ("#room",
    "@name"), the highest number it has seen there; the server replays what
    came after, conversation by conversation.  A room the session is in but
    the client did not list gets its recent history, as on a join; a direct
    conversation the client did not list is replayed from ``since`` (UTC
    ms: when the client's view began, its first welcome's ``server_time``).
    """

    session: str
    token: str
    positions: tuple[tuple[str, int], ...]
    since: int = 0


@message("say", room=_NAME, text=_TEXT, cid=_ID)
class Say(Message):
    """A room message; ``cid`` is the client's id for it, echoed as the ack."""

    text: str
    cid: str
    room: str = "lobby"


@message("direct", to=_NAME, text=_TEXT, cid=_ID)
class Direct(Message):
    to: str
    text: str
    cid: str


@message("who")
class Who(Message):
    """The user asks who is here; answered with ``members``."""


MAX_ROOM_PASSWORD_CHARS = 32
_ROOM_PASSWORD = _string(MAX_NAME_CHARS, optional=True)  # the core applies the rule


@message("join", room=_NAME, private=_boolean,
         cid=_OPTIONAL_ID, password=_ROOM_PASSWORD)
class Join(Message):
    """Join a room, creating it if it does not exist (``private``: invited
    people only, and not listed).  ``password``: the room's, if it has one
    (an invitation does without).  Answered with ``room``, or an ``error``
    carrying ``cid``."""

    room: str
    private: bool = False
    cid: str | None = None
    password: str | None = None


@message("part", room=_NAME, reason=_OPTIONAL_REASON,
         cid=_OPTIONAL_ID)
class Part(Message):
    """Leave a room.  Answered with ``left``."""

    room: str
    reason: str | None = None
    cid: str | None = None


@message("rooms")
class ListRooms(Message):
    """The public rooms; answered with ``room_list``."""


@message("topic", room=_NAME, text=_OPTIONAL_REASON,
         cid=_OPTIONAL_ID)
class Topic(Message):
    """Set a room's topic (``text``; "" clears it; None: send me the room's
    state)."""

    room: str
    text: str | None = None
    cid: str | None = None


ROOM_FLAGS = ("private", "topic_locked", "moderated")


def _room_flag(value: Any) -> str:
    if value not in ROOM_FLAGS:
        raise WireError(f"must be one of {', '.join(ROOM_FLAGS)}")
    return value


# Room settings with a value, set by ``mode`` with it (and cleared without).
ROOM_SETTINGS = ("password", "member_limit")
MODE_FLAGS = ROOM_FLAGS + ROOM_SETTINGS


def _mode_flag(value: Any) -> str:
    if value not in MODE_FLAGS:
        raise WireError(f"must be one of {', '.join(MODE_FLAGS)}")
    return value


@message("mode", room=_NAME, flag=_mode_flag, on=_boolean, cid=_OPTIONAL_ID,
         password=_ROOM_PASSWORD, limit=_optional_integer)
class Mode(Message):
    """Turn a room's flag on or off: ``private`` (invited people only, not
    listed), ``topic_locked`` (only operators set the topic) or
    ``moderated`` (only operators, owners and voices speak); or set a
    setting (``on``) or clear it: ``password`` (needed to join, given in
    ``password``) or ``member_limit`` (most members online, in ``limit``)."""

    room: str
    flag: str
    on: bool
    cid: str | None = None
    password: str | None = None
    limit: int | None = None


MODERATION_OPS = ("kick", "ban", "unban", "mute", "unmute", "invite", "op", "deop", "owner",
                  "voice", "devoice")


def _moderation_op(value: Any) -> str:
    if value not in MODERATION_OPS:
        raise WireError(f"must be one of {', '.join(MODERATION_OPS)}")
    return value


@message("moderate", room=_NAME,
         op=_moderation_op, name=_NAME, reason=_OPTIONAL_REASON, minutes=_optional_number,
         cid=_OPTIONAL_ID)
class Moderate(Message):
    """A room operation on a user: kick (out of the room), ban (for
    ``minutes``, or for ever), unban, mute, unmute, invite, op (make an
    operator), deop (make a plain member), owner (make an owner), voice
    (may speak while the room is moderated), devoice."""

    room: str
    op: str
    name: str
    reason: str | None = None
    minutes: float | None = None
    cid: str | None = None


@message("presence")
class PresenceRequest(Message):
    """The client asks for presence by itself (its UDP beacons stopped)."""


@message("keepalive")
class Keepalive(Message):
    """A sign of life from a client that has sent nothing else for
    ``keepalive_ms`` (from the ``welcome``); never answered."""


@message("logout")
class Logout(Message):
    pass


@message("admin_login", token=_string(200))
class AdminLogin(Message):
    """Make this connection an administrator's (instead of logging in)."""

    token: str


ADMIN_OPS = ("list", "kick", "ban", "unban", "broadcast", "disconnect_all", "shutdown",
             "rooms", "room_info", "room_delete", "room_moderate", "room_topic", "room_mode",
             "stats", "bans")


def _admin_op(value: Any) -> str:
    if value not in ADMIN_OPS:
        raise WireError(f"must be one of {', '.join(ADMIN_OPS)}")
    return value


def _admin_action(value: Any) -> str | None:
    if value is not None and value not in MODERATION_OPS + ROOM_FLAGS:
        raise WireError(f"must be one of {', '.join(MODERATION_OPS + ROOM_FLAGS)}")
    return value


def _optional_boolean(value: Any) -> bool | None:
    return None if value is None else _boolean(value)


@message(
    "admin",
    rid=_ID,
    op=_admin_op,
    name=_string(MAX_NAME_CHARS, optional=True),
    reason=_string(MAX_REASON_CHARS, optional=True),
    minutes=_optional_number,
    room=_string(MAX_NAME_CHARS, optional=True),
    action=_admin_action,
    on=_optional_boolean,
    node=_string(300, optional=True),  # CHAT_NODE, or host:port
)
class AdminRequest(Message):
    """One admin operation; ``reason`` is also the broadcast's text and the
    topic's.  The room operations name their ``room``; ``room_moderate``'s
    ``action`` is a ``moderate`` op (kick, ban, ...), ``room_mode``'s a room
    flag turned ``on`` or off.  ``node``: the one node a ``shutdown`` stops
    (without it, every node of the cluster stops)."""

    rid: str
    op: str
    name: str | None = None
    reason: str | None = None
    minutes: float | None = None
    room: str | None = None
    action: str | None = None
    on: bool | None = None
    node: str | None = None


# One row of the session table: name, address, state, seconds in that state,
# connected since (UTC ms), last activity (UTC ms), messages sent, bytes in,
# bytes out.
SESSION_FIELDS = (
    "name", "address", "state", "client", "in_state_s", "connected_since",
    "last_activity", "messages", "bytes_in", "bytes_out", "node",
)
# A node alone sends its rows without the last field, the node (as
# servers before clusters did).
_SESSION_FIELDS_ALONE = len(SESSION_FIELDS) - 1


def _session_rows(value: Any) -> tuple[tuple, ...]:
    if not isinstance(value, list) or len(value) > 100000:
        raise WireError("must be a list of rows")
    rows = []
    for row in value:
        if not (isinstance(row, list)
                and len(row) in (_SESSION_FIELDS_ALONE, len(SESSION_FIELDS))):
            raise WireError("rows must have the session fields")
        texts = tuple(_string(100)(v) for v in row[:4])
        numbers = row[4:_SESSION_FIELDS_ALONE]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):
            raise WireError("session numbers must be numbers")
        node = tuple(_string(100)(v) for v in row[_SESSION_FIELDS_ALONE:])
        rows.append((*texts, *numbers, *node))
    return tuple(rows)


# One row of the rooms table: name, members online, topic, private,
# topic-locked, newest message number.
ROOM_FIELDS = ("room", "members", "topic", "private", "topic_locked", "last_seq")
_ROOM_ROWS = _rows("rooms", (_NAME, _integer, _REASON, _boolean, _boolean, _integer), 100000)
# One member of a room: name, presence state, role.
MEMBER_FIELDS = ("name", "state", "role")
_MEMBER_ROWS = _rows("members", (_NAME, _member_state, _role), 100000)


def _figure(value: Any) -> int | float:
    """A metric's value: a finite number, 0 or more."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 <= value <= MAX_INT:
        raise WireError("must be a number from 0 to 2^53")
    return value


# One figure of ``admin stats``: its Prometheus name, its labels
# ("kind=chat"; "" for none), its value.
STAT_FIELDS = ("metric", "labels", "value")
_STAT_ROWS = _rows("stats", (_string(100), _string(200), _figure), 1000)


# One server-wide ban of ``admin bans``: the name as banned, when it ends
# (UTC ms; null: for ever), why.
BAN_FIELDS = ("name", "until", "reason")
_BAN_ROWS = _rows("bans", (_NAME, _optional_integer, _REASON), 100000)


@message("admin_reply", rid=_ID,
         ok=_boolean, text=_REASON, sessions=_session_rows, more=_boolean, rooms=_ROOM_ROWS,
         members=_MEMBER_ROWS, stats=_STAT_ROWS, bans=_BAN_ROWS)
class AdminReply(Message):
    """``more``: a long table comes in parts; the next reply with the same
    ``rid`` continues it.  ``rooms`` (see ROOM_FIELDS) and ``members`` (see
    MEMBER_FIELDS) answer the room operations, ``stats`` (see STAT_FIELDS)
    the ``stats`` operation, ``bans`` (see BAN_FIELDS) the ``bans`` one."""

    rid: str
    ok: bool
    text: str
    sessions: tuple = ()
    more: bool = False
    rooms: tuple = ()
    members: tuple = ()
    stats: tuple = ()
    bans: tuple = ()


@message("admin_event", sessions=_session_rows, more=_boolean,
         rooms=_ROOM_ROWS)
class AdminEvent(Message):
    """Pushed to admin connections when sessions change (at most once a
    second for counters alone): the whole table, offline ones included, in
    parts if it is long (``more``: the next event continues this one), and
    with the last part the rooms table."""

    sessions: tuple
    more: bool = False
    rooms: tuple = ()


# The tables an admin_reply or admin_event may carry, in the order they are cut.
TABLES = ("sessions", "rooms", "members", "stats", "bans")


def table_parts(tables: dict[str, tuple], max_bytes: int = 48_000) -> list[dict[str, tuple]]:
    """Tables (by field: ``TABLES``) cut into parts that each fit one Noise
    message: their rows in order, one table after the other."""
    parts: list[dict[str, list]] = []
    part: dict[str, list] = {}
    size = 0
    for field in TABLES:
        for row in tables.get(field, ()):
            cost = len(json.dumps(row, ensure_ascii=False).encode()) + 1
            if size and size + cost > max_bytes:
                parts.append(part)
                part, size = {}, 0
            part.setdefault(field, []).append(row)
            size += cost
    parts.append(part)
    return [{field: tuple(rows) for field, rows in p.items()} for p in parts]


class RowCollector:
    """Puts tables sent in parts back together: ``add`` returns the whole
    message once its last part is in, else None."""

    def __init__(self):
        self._rows: dict[str, list] = {}

    def add(self, msg):
        fields = [f for f in TABLES if hasattr(msg, f)]
        for field in fields:
            self._rows.setdefault(field, []).extend(getattr(msg, field))
        if msg.more:
            return None
        rows, self._rows = self._rows, {}
        return dataclasses.replace(msg, **{f: tuple(rows.get(f, ())) for f in fields})

    def reset(self) -> None:
        self._rows = {}


# Server -> client.


@message(
    "welcome",
    name=_NAME,
    session=_ID,
    token=_ID,
    rooms=_rows_of_names,
    server_time=_integer,
    udp_port=_integer,
    presence_ms=_integer,
    max_in_flight=_integer,
    resumed=_boolean,
    keepalive_ms=_integer,
    shares_kept=_boolean,
)
class Welcome(Message):
    """Login (or resume) accepted.

    ``name`` is the display form the server will use; ``session`` and
    ``token`` resume the session after a dropped connection; ``rooms``
    are the rooms the session is in, each of which follows as a ``room``
    message; ``udp_port`` is the presence beacon's port (0: none), which sends every
    ``presence_ms`` milliseconds; a client keeps at
    most ``max_in_flight`` messages unacknowledged, so flood control delays
    it instead of cutting it off; a client that has sent nothing for
    ``keepalive_ms`` milliseconds sends a ``keepalive`` (0: it need not).
    ``shares_kept`` False: a session resumed where its file offers are not
    known (its node died, or restarted): the client offers them again.
    """

    name: str
    session: str
    token: str
    rooms: tuple[str, ...]
    server_time: int
    udp_port: int
    presence_ms: int
    max_in_flight: int
    resumed: bool = False
    keepalive_ms: int = 0
    shares_kept: bool = True


@message("room", room=_NAME, topic=_REASON, private=_boolean, topic_locked=_boolean,
         last_seq=_integer, password=_string(MAX_NAME_CHARS), member_limit=_integer,
         moderated=_boolean)
class RoomState(Message):
    """You are in this room (after a join, a login or a resume), or its
    settings changed.  ``last_seq``: the room's newest message number."""

    room: str
    topic: str
    private: bool
    topic_locked: bool
    last_seq: int
    password: str = ""  # "" for none; members know it (IRC shows it them too)
    member_limit: int = 0  # 0 for no limit
    moderated: bool = False  # only operators, owners and voices speak


@message("left", room=_NAME, code=_string(32), text=_REASON, by=_NAME, reason=_REASON)
class RoomLeft(Message):
    """You are no longer in this room: ``code`` is part, kicked, banned or
    deleted; ``by`` and ``reason``: who did it and why ("" if nobody did)."""

    room: str
    code: str
    text: str
    by: str = ""
    reason: str = ""


# One listed room: name, members, topic.
ROOM_LIST_FIELDS = ("room", "members", "topic")


@message("room_list", rooms=_rows("rooms", (_NAME, _integer, _REASON), 100000))
class RoomList(Message):
    """The public rooms (and the private ones you are in), by name."""

    rooms: tuple


@message("members", room=_NAME, members=_members, more=_boolean)
class Members(Message):
    """Who is in a room, each with a presence state and a role.

    A long list comes in parts (one Noise message holds a few thousand
    names): ``more`` says that the next Members message continues this one.
    """

    room: str
    members: tuple[tuple[str, str, str], ...]
    more: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(member[0] for member in self.members)


@message("member", room=_NAME, name=_NAME, state=_member_state,
         role=_role)
class MemberUpdate(Message):
    """One member joined or changed (their state and role), or left
    (``gone``): a room's member list travels whole only to a member who
    joins or asks, so a join costs the others one small message."""

    room: str
    name: str
    state: str
    role: str = "member"


@message(
    "message",
    seq=_integer,
    ts=_integer,
    room=_NAME,
    sender=_NAME,
    text=_TEXT,
    cid=_OPTIONAL_ID,
    history=_boolean,
)
class RoomMessage(Message):
    """A room message as stored and delivered; ``ts`` is UTC milliseconds.

    The sender's own copy carries its ``cid``: that is the acknowledgement.
    ``history``: sent as history (on join, or asked for), not as it happened.
    """

    seq: int
    ts: int
    room: str
    sender: str
    text: str
    cid: str | None = None
    history: bool = False


@message(
    "direct_message",
    seq=_integer,
    ts=_integer,
    sender=_NAME,
    to=_NAME,
    text=_TEXT,
    cid=_OPTIONAL_ID,
    history=_boolean,
)
class DirectMessage(Message):
    seq: int
    ts: int
    sender: str
    to: str
    text: str
    cid: str | None = None
    history: bool = False


@message("history_end", oldest=_integer, more=_boolean,
         conversation=_CONVERSATION)
class HistoryEnd(Message):
    """The end of a page of ``conversation``'s history; ``oldest`` is the
    next ``before``."""

    oldest: int
    more: bool
    conversation: str = "#lobby"


@message("notice", room=_NAME, ts=_integer, kind=_string(32), text=_REASON, name=_NAME,
         by=_NAME, reason=_REASON)
class Notice(Message):
    """Something that happened in a room, in words (``text``) and, for a
    front-end that shows it its own way, in parts: ``kind`` (join, leave,
    quit, kick, ban, topic, mode, invite, role, mute, ...), ``name`` (whom
    it is about), ``by`` (who did it) and ``reason``, each "" where it does
    not apply.  ``room`` is "" for news of no room (an account change)."""

    room: str
    ts: int
    kind: str
    text: str
    name: str = ""
    by: str = ""
    reason: str = ""


@message("error", code=_string(32), text=_REASON, cid=_OPTIONAL_ID)
class Error(Message):
    """A request was refused; the connection stays usable.

    ``cid`` names the refused message when there was one.
    """

    code: str
    text: str
    cid: str | None = None


@message("bye", code=_string(32), text=_REASON)
class Bye(Message):
    """The server is closing this connection, and says why.

    After a bye whose code is in ``NO_RECONNECT_CODES`` the client must not
    reconnect by itself: a kick that auto-reconnect undoes is no kick.
    """

    code: str
    text: str


NO_RECONNECT_CODES = frozenset(
    {"logout", "kicked", "flood", "replaced", "banned", "disconnected", "shutdown",
     "not_admin"}
)


# --- file sharing (the server is the tracker; see spchat.p2p) ----------------
# A manifest travels as its canonical JSON text.  It must fit one Noise
# message with room to spare, so a sharer picks a piece size that keeps the
# piece count low (spchat.p2p.manifest.piece_size_for).
MAX_MANIFEST_BYTES = 48_000
MAX_FILE_NAME_BYTES = 255
MAX_PEERS = 40  # a swarm message names at most this many peers
_FILE_ID = _label(64)
_FILE_NAME = _string(MAX_FILE_NAME_BYTES, max_bytes=MAX_FILE_NAME_BYTES)
_MANIFEST = _string(MAX_MANIFEST_BYTES, max_bytes=MAX_MANIFEST_BYTES)


def _port(value: Any) -> int:
    value = _integer(value)
    if value > 65535:
        raise WireError("must be a port number (0-65535)")
    return value


@message("share", manifest=_MANIFEST, port=_port, cid=_ID, room=_NAME)
class Share(Message):
    """Offer a file to a room's members.  ``manifest``: its canonical JSON;
    ``port``: where this client takes peer connections (0: nowhere, so
    peers reach it through the server's relay)."""

    manifest: str
    port: int
    cid: str
    room: str = "lobby"


@message("unshare", file=_FILE_ID)
class Unshare(Message):
    """Stop offering a file (or serving the pieces of it this client has)."""

    file: str


@message("files")
class ListFiles(Message):
    """Which files are offered in your rooms; answered with ``file_list``."""


@message("fetch", file=_FILE_ID, cid=_ID)
class Fetch(Message):
    """Download a file: its id, or the first 6 or more hex digits of it.
    Answered with ``swarm`` (or an error carrying ``cid``)."""

    file: str
    cid: str


@message("holding", file=_FILE_ID, pieces=_integer, port=_port)
class Holding(Message):
    """This client has ``pieces`` pieces of ``file`` to serve, at ``port``
    (0: through the relay only); a downloader says so as it goes."""

    file: str
    pieces: int
    port: int


@message("relay", transfer=_ID)
class RelayRequest(Message):
    """No direct connection for this transfer: run it through the server."""

    transfer: str


# One offered file: id, name, size, sharer, peers holding pieces of it.
FILE_FIELDS = ("file", "name", "size", "sharer", "holders")


@message("offer", room=_NAME, ts=_integer, file=_FILE_ID, name=_FILE_NAME, size=_integer,
         sharer=_NAME)
class Offer(Message):
    """Someone shared a file in the room (also the sharer's confirmation)."""

    room: str
    ts: int
    file: str
    name: str
    size: int
    sharer: str


@message("file_list", files=_rows("files", (_FILE_ID, _FILE_NAME, _integer, _NAME, _integer),
                                  10000))
class FileList(Message):
    files: tuple


@message("swarm", file=_FILE_ID, manifest=_MANIFEST, cid=_ID,
         peers=_rows("peers", (_NAME, _string(64), _port, _ID, _ID), MAX_PEERS))
class Swarm(Message):
    """The answer to ``fetch``: the manifest and whom to ask.  Each peer is
    [name, host, port, transfer id, key]: connect to host:port (port 0:
    ask for the relay) and prove the key (64 hex digits, fresh for this
    pair) in the peer handshake."""

    file: str
    manifest: str
    cid: str
    peers: tuple


@message("peer_request", transfer=_ID, key=_ID, file=_FILE_ID, name=_NAME,
         relay_port=_port, relay_host=_string(255))
class PeerRequest(Message):
    """To a peer that holds ``file``: ``name`` will connect for it with this
    transfer id and key, directly, or through the relay at ``relay_port``
    (not 0) where this peer connects too: at ``relay_host`` (the relay of
    the downloader's node), or, if empty, at this server's address."""

    transfer: str
    key: str
    file: str
    name: str
    relay_port: int
    relay_host: str = ""


@message("relay_open", transfer=_ID, port=_port)
class RelayOpen(Message):
    """To the downloader: the relay for ``transfer`` is at this port of the
    server's address."""

    transfer: str
    port: int


# What the server sends about file sharing (a client's sharing node takes them).
SHARING_MESSAGES = (Offer, FileList, Swarm, PeerRequest, RelayOpen)


# --- codec -------------------------------------------------------------------


# One encoder for every message: json.dumps would build a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# The C scanner behind json.loads, without json.loads' checks of its
# argument: a third of the cost of decoding a chat line.
_DECODER = json.JSONDecoder()
_SCAN = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]  # typeshed: a scanner; it is a decoder
# A JSON string literal, as _ENCODER writes one (ensure_ascii=False).
_quote = json.encoder.encode_basestring


def encode(msg: Message) -> bytes:
    """Serialise a message; the output always decodes back to an equal one."""
    body = {"t": msg.TYPE}
    for name in msg.SCHEMA:
        body[name] = _json_value(getattr(msg, name))
    return _ENCODER.encode(body).encode("utf-8")


def check(msg: Message) -> None:
    """Raise WireError (its ``field`` named) if the other side would refuse
    ``msg`` as malformed: a sender finds out before sending, not from the
    answer."""
    for name, rule in msg.SCHEMA.items():
        try:
            rule(_json_value(getattr(msg, name)))
        except WireError as e:
            raise WireError(f"{msg.TYPE}.{name} {e}", msg.TYPE, getattr(msg, "cid", None),
                            field=name) from None


def _json_value(value):
    """A field's value as JSON has it (a tuple of tuples is a list of lists)."""
    if isinstance(value, tuple):
        return [list(v) if isinstance(v, tuple) else v for v in value]
    return value


def encode_room_line(seq: int, ts: int, room: str, sender: str, text: str,
                     cid: str) -> tuple[bytes, bytes]:
    """A live room message encoded once for every member, and its sender's
    copy: the same plus the ``cid``, which is the acknowledgement.  Both
    decode to ``RoomMessage`` (the fields left out take their defaults)."""
    # What _ENCODER makes of the same dict, without building one per call
    # (a third of the cost of a delivered line).
    everyone = (f'{{"t":"message","seq":{int(seq)},"ts":{int(ts)},"room":{_quote(room)},'
                f'"sender":{_quote(sender)},"text":{_quote(text)}}}').encode("utf-8")
    return everyone, everyone[:-1] + b',"cid":' + _quote(cid).encode("utf-8") + b"}"


def decode(data: bytes) -> Message:
    """Parse and validate one message; raise WireError saying what is wrong."""
    body, escapes = _json(data)
    return _from_body(body, escapes)


def loads(data: bytes, what: str = "message"):
    """Any JSON text (a manifest, say) as Python values, by the messages'
    rule: a string that is not proper Unicode is a WireError."""
    body, escapes = _json(data, what)
    if escapes and _improper_text(body):
        raise WireError(f"a string in the {what} is not valid Unicode (a lone surrogate)")
    return body


# Several messages for one recipient, sent in one frame: the server gathers
# everything for a connection in one reactor turn and encrypts it once.
BATCH_TYPE = "batch"
_BATCH_HEAD = b'{"t":"batch","m":['
_BATCH_TAIL = b"]}"
BATCH_OVERHEAD = len(_BATCH_HEAD) + len(_BATCH_TAIL)
# Frames of up to this many bytes: a dozen chat lines share one encryption
# and one write, and a frame stays small enough to get through before a
# flaky link drops (16 KiB saved a little CPU under load, but a link that
# dies every few KiB then never passed a whole frame, and never caught up).
BATCH_FRAME_BYTES = 2048


def batch(encoded: list[bytes]) -> bytes:
    """One frame's plaintext for already encoded messages (each a JSON object)."""
    if len(encoded) == 1:
        return encoded[0]
    return _BATCH_HEAD + b",".join(encoded) + _BATCH_TAIL


def pack(encoded: list[bytes], frame_bytes: int) -> list[bytes]:
    """Frames' plaintexts for encoded messages, in order: batches of up to
    ``frame_bytes`` (a longer message goes alone)."""
    limit = frame_bytes - BATCH_OVERHEAD
    if sum(map(len, encoded)) + len(encoded) <= limit:  # the usual case, at C speed
        return [batch(encoded)] if encoded else []
    frames, start, size = [], 0, 0
    for i, data in enumerate(encoded):
        if i > start and size + len(data) + 1 > limit:
            frames.append(batch(encoded[start:i]))
            start, size = i, 0
        size += len(data) + 1
    if start < len(encoded):
        frames.append(batch(encoded[start:]))
    return frames


def decode_frame(data: bytes) -> list[Message | WireError]:
    """The messages of one frame: one, or a batch of them.  A bad message
    in a batch is a WireError in its place; the others still count."""
    body, escapes = _json(data)
    if not (isinstance(body, dict) and body.get("t") == BATCH_TYPE):
        return [_from_body(body, escapes)]
    items = body.get("m")
    if not isinstance(items, list):
        raise WireError("batch.m must be a list")
    out: list[Message | WireError] = []
    for item in items:
        try:
            out.append(_from_body(item, escapes))
        except WireError as e:
            out.append(e)
    return out


# UTF-8 cannot carry a surrogate, but JSON can: "\ud800" is valid JSON and
# no valid Unicode.  Only a text with such an escape needs a closer look.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _json(data: bytes, what: str = "message") -> tuple[Any, bool]:
    """The JSON value, and whether it may hold lone surrogates."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(f"not a JSON {what}") from None
    escapes = _SURROGATE_ESCAPE.search(text) is not None
    try:
        # The usual case: one object and nothing around it.
        body, end = _SCAN(text, 0)
        if end == len(text):
            return body, escapes
    except (StopIteration, ValueError, RecursionError):
        pass
    try:  # anything else gets json.loads' own rules (whitespace, errors)
        return json.loads(text), escapes
    except (ValueError, RecursionError):
        raise WireError(f"not a JSON {what}") from None


def _improper_text(value) -> bool:
    """Is there a lone surrogate in any string (or key) of a JSON value?"""
    stack = [value]
    while stack:  # no recursion: the parser allows deeper nesting than we would
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return False


def _from_body(body, escapes: bool = False) -> Message:
    if not isinstance(body, dict):
        raise WireError("a message must be a JSON object")
    type_name = body.get("t")
    cls = MESSAGES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise WireError(f"unknown message type {str(type_name)[:32]!a}",
                        cid=_readable_cid(body))
    if escapes:
        for name, value in body.items():
            if _improper_text(name) or _improper_text(value):
                raise WireError(f"{type_name}.{ascii(name)[1:-1]} is not valid Unicode "
                                "(a lone surrogate)", type_name, _readable_cid(body))
    fields = {}
    for name, rule in cls.SCHEMA.items():
        if name in body:
            try:
                fields[name] = rule(body[name])
            except WireError as e:
                raise WireError(f"{type_name}.{name} {e}", type_name,
                                _readable_cid(body)) from None
        elif name in cls.DEFAULTS:
            fields[name] = cls.DEFAULTS[name]
        else:
            raise WireError(f"{type_name}.{name} is missing", type_name, _readable_cid(body))
    # Unknown members are ignored so a newer peer can add optional fields.
    return cls(**fields)


def _readable_cid(body: dict) -> str | None:
    """A refused message's cid, if it is a valid one (and proper Unicode)."""
    try:
        cid = _ID(body.get("cid"))
    except WireError:
        return None
    return None if _SURROGATE.search(cid) else cid
