"""A room's state as the database has it, taken by the room here: what
another node changed (its topic, modes, roles, bans, mutes, voices, or the
room made or deleted), or what the node that made a room first chose.

Its members here are told as they are of a change made here: the room's
new state, their new standing, and a member banned meanwhile leaves.
"""

from __future__ import annotations

from typing import Callable

from spchat import wire
from spchat.server.records import RoomRecord
from spchat.server.rooms import Room, RoomDirectory
from spchat.server.rules import ban_text


def _settings(room) -> tuple:
    return (room.topic, room.private, room.topic_locked, room.password, room.member_limit,
            room.moderated)


class RoomSync:
    def __init__(self, clock, directory: RoomDirectory, session: Callable, remove: Callable,
                 close: Callable, on_change: Callable[[], None]):
        """``session(key)``: the session here of that name, or None;
        ``remove(room, session, kind, notice, code, text, by, reason)``:
        a member out of the room here; ``close(room, text)``: the room's
        members told and the room gone from here; ``on_change``: the admin
        tools' tables changed."""
        self.clock = clock
        self.directory = directory
        self.session = session
        self.remove = remove
        self.close = close
        self.on_change = on_change

    def apply(self, key: str, record: RoomRecord | None, notice: wire.Notice | None = None,
              leave: tuple[str, str, str] | None = None,
              invite: tuple[str, str] | None = None) -> None:
        """The room ``key`` is ``record`` now (None: deleted), after
        ``notice`` (told to its members here) made by another node, which
        put ``leave`` (a key, the code and the text a member leaving is
        told) out of the room if it is here, and let ``invite`` (a key, and
        what it is told) in."""
        room = self.directory.get(key)
        if record is None:
            if room is not None:
                self.close(room, f"#{room.name} was deleted by the administrator")
                self.on_change()
            return
        if room is None:
            self.add(record)
            return
        member = None if leave is None else room.members.get(leave[0])
        if member is not None and notice is not None and leave is not None:
            self.remove(room, member, notice.kind, notice.text, leave[1], leave[2],
                        notice.by, notice.reason)
        self.adopt(room, record)
        if notice is not None and member is None:
            self.directory.event(room, wire.Notice(room.name, self.now_ms(), notice.kind,
                                                   notice.text, notice.name, notice.by,
                                                   notice.reason))
        if invite is not None:
            self._invited(room, *invite, by=notice.by if notice is not None else "")

    def _invited(self, room: Room, key: str, text: str, by: str) -> None:
        room.invited.add(key)
        invitee = self.session(key)
        if invitee is not None and invitee.link is not None:
            invitee.link.conn.send(wire.Notice(room.name, self.now_ms(), "invite", text,
                                               invitee.name, by))

    def add(self, record: RoomRecord) -> Room:
        """A room made elsewhere: nobody is in it here yet."""
        record.last_seq = max(record.last_seq, self.directory.deleted_seqs.pop(record.key, 0))
        room = self.directory.add(Room(record))
        self.on_change()
        return room

    def adopt(self, room: Room, record: RoomRecord) -> None:
        """The room's settings and standings as kept; its members here told
        what changed for them."""
        settings = _settings(room)
        # Of its members here and on the other nodes.
        standing = {key: (room.role_of(key), room.has_voice(key))
                    for key in [*room.members, *self.directory.remote(room.key)]}
        before = (room.voices, room.roles, room.bans, room.mutes)
        room.topic, room.private, room.topic_locked = (record.topic, record.private,
                                                       record.topic_locked)
        room.password, room.member_limit, room.moderated = (record.password,
                                                            record.member_limit, record.moderated)
        room.voices, room.roles = dict(record.voices), dict(record.roles)
        room.bans, room.mutes = dict(record.bans), dict(record.mutes)
        if settings != _settings(room):
            self.directory.event(room, room.state())
        for key in sorted(standing.keys() - room.members.keys()):
            if standing[key] != (room.role_of(key), room.has_voice(key)):
                self.directory.remote_changed(room, key)
        for key, member in list(room.members.items()):
            if standing[key] != (room.role_of(key), room.has_voice(key)):
                self.directory.member_changed(room, member)
            ban = room.bans.get(key)
            now = self.clock.seconds()
            if ban is not None and (ban[1] is None or ban[1] > now):
                name, until, reason = ban
                self.remove(room, member, "ban", f"{member.name} was banned ({reason})",
                            "banned", ban_text(reason, until, now, f" from #{room.name}"), "",
                            reason)
        if settings != _settings(room) or before != (room.voices, room.roles, room.bans,
                                                      room.mutes):
            self.on_change()

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)
