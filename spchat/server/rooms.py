"""Rooms: who is in each, their roles, the room's settings, and how its
comings and goings reach its members.

A room's joins, leaves and member updates wait ``ROOM_EVENT_SECONDS`` and
then go to its members together, made once (a storm of n joins costs each
member a few frames instead of n).  A newcomer gets the whole member list
with the next of these, and of the events only those that came after it
did: the list already shows everything until then, so it never hears that
someone left whom it never saw.
"""

from __future__ import annotations

from typing import Callable

from spchat import wire
from spchat.server.events import SharedEvents
from spchat.server.records import RoomRecord
from spchat.server.lookalikes import looks
from spchat.server.rules import Refused, normalise_room
from spchat.server.sessions import Session

ROOM_EVENT_SECONDS = 0.1
# A member list is sent in parts of at most this many bytes (one Noise
# message is 64 KiB).
MEMBERS_PART_BYTES = 48_000
# How much each role may do; the server's administrator outranks them all.
RANKS = {"muted": 0, "member": 1, "operator": 2, "owner": 3}
ADMIN_RANK = 4


class Room:
    """One room's settings, standing of names in it, and members online."""

    def __init__(self, record: RoomRecord):
        self.key = record.key
        self.name = record.name  # display form
        self.topic = record.topic
        self.private = record.private
        self.topic_locked = record.topic_locked
        self.password = record.password
        self.member_limit = record.member_limit
        self.moderated = record.moderated
        self.voices = dict(record.voices)  # key -> name: may speak while moderated
        # A guest's voice lasts while it is in the room, as a guest's role
        # does: the name may be someone else's tomorrow.
        self.guest_voices: set[str] = set()
        self.created = record.created
        # Registered accounts' roles (kept by the store): key -> (name, role).
        self.roles = dict(record.roles)
        # A guest's role lasts as long as its session: the name may be
        # someone else's tomorrow.
        self.guest_roles: dict[str, str] = {}
        self.bans = dict(record.bans)  # key -> (name, until or None, reason)
        self.mutes = dict(record.mutes)  # key -> name
        self.invited: set[str] = set()  # keys that may join while private
        self.members: dict[str, Session] = {}  # by key, online or reconnecting
        self.last_seq = record.last_seq
        self.pending: list[wire.Message] = []  # events waiting for the timer
        # Who gets the whole list with the next events, and from which event on.
        self.newcomers: dict[str, tuple[Session, int]] = {}

    def role_of(self, key: str) -> str:
        role = self.roles.get(key)
        if role is not None:
            return role[1]
        guest_role = self.guest_roles.get(key)
        if guest_role is not None:
            return guest_role
        return "muted" if key in self.mutes else "member"

    def rank_of(self, key: str) -> int:
        return RANKS[self.role_of(key)]

    def may_speak(self, key: str) -> bool:
        """Not muted, and (the room moderated) an operator, owner or voice."""
        rank = self.rank_of(key)
        return rank > RANKS["muted"] and (
            not self.moderated or self.has_voice(key) or rank >= RANKS["operator"])

    def has_voice(self, key: str) -> bool:
        return key in self.voices or key in self.guest_voices

    def state(self) -> wire.RoomState:
        return wire.RoomState(self.name, self.topic, self.private, self.topic_locked,
                              self.last_seq, self.password, self.member_limit, self.moderated)

    def record(self) -> RoomRecord:
        """The settings, as the store keeps them."""
        return RoomRecord(self.key, self.name, self.topic, self.private, self.topic_locked,
                          self.created, password=self.password,
                          member_limit=self.member_limit, moderated=self.moderated)


class RoomDirectory:
    """Every room, and the delivery of their events to members online."""

    def __init__(self, clock, presence_state: Callable[[Session, float], str]):
        self.clock = clock
        self.presence_state = presence_state
        self.rooms: dict[str, Room] = {}
        self._by_name: dict[str, Room] = {}  # by display form
        self._by_look: dict[str, Room] = {}  # by each skeleton of its name
        self._waiting: dict[str, Room] = {}  # rooms with events or newcomers waiting
        # Rooms not here, by key: their newest number known (deleted in this
        # run, or made on another node), where a room made here starts.
        self.deleted_seqs: dict[str, int] = {}
        self._call = None
        # With other nodes (``spchat.cluster.remote_members``): the members
        # of a room connected elsewhere, by key (each with a ``name`` and a
        # ``state``), and who is told that a member here left a room.
        self.remote: Callable[[str], dict] = lambda key: {}
        self.on_leave: Callable[[Room, Session, wire.Notice], None] = lambda r, s, n: None
        # A session joined or left a room (its claim says which it is in).
        self.rooms_changed: Callable[[Session], None] = lambda session: None

    def get(self, key: str) -> Room | None:
        return self.rooms.get(key)

    def named(self, name: str) -> Room | None:
        """The room a client names, as the server spells it (the usual case:
        a dict lookup) or in any other spelling (folded by the rules)."""
        room = self._by_name.get(name)
        if room is not None:
            return room
        try:
            return self.rooms.get(normalise_room(name)[1])
        except Refused:
            return None

    def add(self, room: Room) -> Room:
        self.rooms[room.key] = room
        self._by_name[room.name] = room
        for look in looks(room.name, room.key):
            self._by_look.setdefault(look, room)  # rooms from before the rule may share one
        return room

    def remove(self, room: Room) -> None:
        del self.rooms[room.key]
        del self._by_name[room.name]
        for look in looks(room.name, room.key):
            if self._by_look.get(look) is room:
                del self._by_look[look]
        self._waiting.pop(room.key, None)
        self.deleted_seqs[room.key] = room.last_seq

    def lookalike(self, display: str, key: str) -> Room | None:
        """A room (not ``key``'s) whose name looks like ``display``."""
        for look in looks(display, key):
            room = self._by_look.get(look)
            if room is not None and room.key != key:
                return room
        return None

    # --- membership ---------------------------------------------------------

    def join(self, room: Room, session: Session) -> None:
        """``session`` is in ``room`` now: it gets the whole list soon, the
        others the news."""
        self._add(room, session)
        self.joined(room, session.name, session.key,
                    self.presence_state(session, self.clock.seconds()))

    def joined(self, room: Room, name: str, key: str, state: str) -> None:
        """The news of a join, here or on another node."""
        self.event(room, wire.Notice(room.name, self.now_ms(), "join", f"{name} joined", name))
        self.updated(room, name, key, state)

    def arrive(self, room: Room, session: Session) -> None:
        """``session`` is in ``room`` here, with no news of a join: it was in
        the room already, on another node."""
        self._add(room, session)
        self.member_changed(room, session)

    def _add(self, room: Room, session: Session) -> None:
        room.members[session.key] = session
        session.rooms.add(room.key)
        self.rooms_changed(session)
        self.newcomer(room, session)

    def newcomer(self, room: Room, session: Session) -> None:
        """The whole member list for ``session`` with the room's next events
        (a storm of n joins builds and encodes it once, not n times)."""
        room.newcomers[session.key] = (session, len(room.pending))
        self._soon(room)

    def leave(self, room: Room, session: Session, kind: str, text: str, by: str = "",
              reason: str = "") -> None:
        self.depart(room, session)
        self.rooms_changed(session)
        notice = self.left(room, session.name, session.key, kind, text, by, reason)
        self.on_leave(room, session, notice)

    def depart(self, room: Room, session: Session) -> None:
        """``session`` is no longer in ``room`` here, with no news: it goes
        on in the room on another node."""
        room.members.pop(session.key, None)
        room.newcomers.pop(session.key, None)
        session.rooms.discard(room.key)
        room.guest_roles.pop(session.key, None)
        room.guest_voices.discard(session.key)

    def left(self, room: Room, name: str, key: str, kind: str, text: str, by: str = "",
             reason: str = "") -> wire.Notice:
        """The news of a member leaving, here or on another node."""
        notice = wire.Notice(room.name, self.now_ms(), kind, text, name, by, reason)
        self.event(room, notice)
        self.updated(room, name, key, "gone")
        return notice

    def member_changed(self, room: Room, session: Session) -> None:
        """A member's state or role changed."""
        self.updated(room, session.name, session.key,
                     self.presence_state(session, self.clock.seconds()))

    def remote_changed(self, room: Room, key: str) -> None:
        """The role of a member on another node changed: told here as for
        a member here (nothing if it is not in the room there)."""
        member = self.remote(room.key).get(key)
        if member is not None and key not in room.members:
            self.updated(room, member.name, key, member.state)

    def updated(self, room: Room, name: str, key: str, state: str) -> None:
        """A member's state or role, here or on another node."""
        self.event(room, wire.MemberUpdate(room.name, name, state, room.role_of(key)))

    # --- events ---------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def event(self, room: Room, message: wire.Message) -> None:
        """Sent with the room's other events of the next ROOM_EVENT_SECONDS
        (or before the next line in the room)."""
        room.pending.append(message)
        self._soon(room)

    def _soon(self, room: Room) -> None:
        self._waiting[room.key] = room
        if self._call is None:
            self._call = self.clock.callLater(ROOM_EVENT_SECONDS, self._due)

    def _due(self) -> None:
        self._call = None
        self.flush_all()

    def flush_all(self) -> None:
        """Every room's waiting events (called before each direct line: only
        the rooms with something waiting are looked at, not all of them)."""
        while self._waiting:
            self.flush(next(iter(self._waiting.values())))

    def flush(self, room: Room) -> None:
        """The room's waiting events to its members online, now."""
        self._waiting.pop(room.key, None)
        newcomers, room.newcomers = room.newcomers, {}
        pending, room.pending = room.pending, []
        if not newcomers and not pending:
            return
        events = SharedEvents(pending)
        lists = None
        since: dict[int, SharedEvents] = {}  # the events after each newcomer's join
        for key, member in room.members.items():
            conn = member.link.conn if member.link is not None else None
            if conn is None:
                continue
            came = newcomers.get(key)
            if came is None or came[0] is not member:
                if pending:
                    conn.send_shared(events)
                continue
            lists = lists or self.member_list(room)
            conn.send_shared(lists)
            start = came[1]
            if start < len(pending):
                part = since.get(start)
                if part is None:
                    part = since[start] = events.suffix(start)
                conn.send_shared(part)

    def broadcast(self, room: Room, message: wire.Message) -> None:
        """One message to every member online, after the room's events."""
        self.flush(room)
        shared = SharedEvents([message])
        for member in room.members.values():
            if member.link is not None:
                member.link.conn.send_shared(shared)

    def member_list(self, room: Room) -> SharedEvents:
        """The whole member list, in parts that each fit one Noise message."""
        now = self.clock.seconds()
        entries = [(s.name, self.presence_state(s, now), room.role_of(key))
                   for key, s in room.members.items()]
        entries += [(s.name, s.state, room.role_of(key))
                    for key, s in self.remote(room.key).items() if key not in room.members]
        entries.sort(key=lambda entry: entry[0].casefold())
        part: list[tuple[str, str, str]] = []
        size, parts = 0, []
        for entry in entries:
            cost = len(entry[0].encode()) + len(entry[1]) + len(entry[2]) + 12
            if part and size + cost > MEMBERS_PART_BYTES:
                parts.append(part)
                part, size = [], 0
            part.append(entry)
            size += cost
        parts.append(part)
        return SharedEvents([wire.Members(room.name, tuple(members), more=i < len(parts) - 1)
                             for i, members in enumerate(parts)])

    def listing(self, viewer_rooms: set[str]) -> tuple[tuple[str, int, str], ...]:
        """Public rooms, and the private ones the viewer is in, by name."""
        return tuple(
            (room.name, self.count(room), room.topic)
            for room in sorted(self.rooms.values(), key=lambda r: r.key)
            if not room.private or room.key in viewer_rooms
        )

    def count(self, room: Room) -> int:
        """Its members, here and on the other nodes."""
        remote = self.remote(room.key)
        return len(room.members) + sum(1 for key in remote if key not in room.members)

    def full(self, room: Room) -> bool:
        """At its member limit (``+l``), counting its members on every node."""
        return 0 < room.member_limit <= self.count(room)

    def rows(self) -> tuple[tuple, ...]:
        """The administrators' table of rooms (see wire.ROOM_FIELDS)."""
        return tuple((room.name, self.count(room), room.topic, room.private,
                      room.topic_locked, room.last_seq)
                     for room in sorted(self.rooms.values(), key=lambda r: r.key))

    def member_rows(self, room: Room) -> tuple[tuple, ...]:
        """A room's members online, with state and role (see wire.MEMBER_FIELDS)."""
        return tuple(member for part in self.member_list(room).messages
                     if isinstance(part, wire.Members) for member in part.members)

    def stop(self) -> None:
        """The server is stopping: what waits goes out now, and no timer stays."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.flush_all()
