"""A room's settings: its topic and modes (private, topic-locked,
moderated, a password to join, a member limit), checked and kept, and told
to its members."""

from __future__ import annotations

import unicodedata
from typing import Callable

from spchat import wire
from spchat.server.room_permissions import MEMBER, OPERATOR, need
from spchat.server.rooms import Room, RoomDirectory
from spchat.server.rules import Refused, check_text
from spchat.server.sessions import Session

MAX_MEMBER_LIMIT = 100_000
# A topic is shown above the conversation: one line, a few sentences.
MAX_TOPIC_BYTES = 300


def room_password_form(password: str) -> str:
    """As passwords are kept and compared: NFC, so an é typed as one
    character and an é sent as e + accent are the same."""
    return unicodedata.normalize("NFC", password)


def check_room_password(password: str) -> str:
    """A room password must be typed after ``/join #room`` (and IRC's JOIN):
    one word of printable characters."""
    password = room_password_form(password)
    if not 1 <= len(password) <= wire.MAX_ROOM_PASSWORD_CHARS:
        raise Refused("bad_mode_value", "a room password is 1 to "
                      f"{wire.MAX_ROOM_PASSWORD_CHARS} characters")
    if not password.isprintable() or any(ch.isspace() for ch in password):
        raise Refused("bad_mode_value", "a room password is one word: no spaces or "
                      "unprintable characters")
    return password


def check_member_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_MEMBER_LIMIT:
        raise Refused("bad_mode_value", f"a member limit is 1 to {MAX_MEMBER_LIMIT}")
    return limit


def parse_member_limit(text: str) -> int:
    """A member limit as typed (IRC's MODE +l)."""
    if not text.strip().isdecimal():
        raise Refused("bad_mode_value", f"a member limit is a number, 1 to {MAX_MEMBER_LIMIT}")
    return check_member_limit(int(text))


class RoomSettings:
    def __init__(self, clock, store, directory: RoomDirectory, room_for: Callable,
                 saved: Callable, on_change: Callable[[], None],
                 told: Callable = lambda room, notice: None):
        """``room_for(session, name)``: the room and the one who asks;
        ``saved(d, room_key)``: a store write's failure is logged;
        ``told(room, notice)``: a change made and told here (the other
        nodes are told too)."""
        self.clock = clock
        self.store = store
        self.directory = directory
        self.room_for = room_for
        self.saved = saved
        self.on_change = on_change
        self.told = told

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def topic(self, session: Session | None, msg: wire.Topic) -> str:
        room, actor = self.room_for(session, msg.room)
        if msg.text is None:  # asked, not set
            if session is None:
                raise Refused("bad_request", "a topic needs a text (\"\" clears it)")
            if session.link is not None:
                session.link.conn.send(room.state())
            return room.topic
        rank = OPERATOR if room.topic_locked else MEMBER
        need(actor, room, rank, "set the topic" + (" (the topic is locked)"
                                                   if room.topic_locked else ""))
        topic = " ".join(msg.text.split("\n")).strip()
        if topic:  # "" clears it; any other topic is text like a chat line's
            check_text(topic, MAX_TOPIC_BYTES)
        room.topic = topic
        self.changed(room, "topic", f"{actor.name} set the topic: {room.topic}" if room.topic
                      else f"{actor.name} cleared the topic", actor.name)
        return f"set the topic of #{room.name}"

    def mode(self, session: Session | None, msg: wire.Mode) -> str:
        room, actor = self.room_for(session, msg.room)
        need(actor, room, OPERATOR, "change the room's modes")
        if msg.flag in wire.ROOM_SETTINGS:
            value = msg.password if msg.flag == "password" else msg.limit
            if msg.on and value is None:
                raise Refused("bad_mode_value", f"setting the room's {msg.flag.replace('_', ' ')} "
                              "needs its value")
            if msg.flag == "password":
                return self._set_password(room, actor, msg.password if msg.on else None)
            return self._set_limit(room, actor, msg.limit if msg.on else None)
        setattr(room, msg.flag, msg.on)
        what = {"private": "private (invited people only)",
                "topic_locked": "topic-locked (only operators set the topic)",
                "moderated": "moderated (only operators and voices speak)"}[msg.flag]
        self.changed(room, "mode", f"{actor.name} made the room {'' if msg.on else 'no longer '}"
                      f"{what}", actor.name)
        return f"#{room.name} is {'' if msg.on else 'no longer '}{msg.flag.replace('_', '-')}"

    def _set_password(self, room: Room, actor, password: str | None) -> str:
        if password is None:
            room.password = ""
            self.changed(room, "mode", f"{actor.name} removed the room's password", actor.name)
            return f"#{room.name} needs no password now"
        room.password = check_room_password(password)
        self.changed(room, "mode", f"{actor.name} set a password for the room", actor.name)
        return f"#{room.name} needs its password now"

    def _set_limit(self, room: Room, actor, limit: int | None) -> str:
        if limit is None:
            room.member_limit = 0
            self.changed(room, "mode", f"{actor.name} lifted the room's member limit",
                          actor.name)
            return f"#{room.name} has no member limit now"
        room.member_limit = check_member_limit(limit)
        self.changed(room, "mode", f"{actor.name} limited the room to {limit} members online",
                      actor.name)
        return f"#{room.name} takes at most {limit} members now"

    def changed(self, room: Room, kind: str, text: str, by: str) -> None:
        self.on_change()
        self.saved(self.store.save_room(room.record()), room.key)
        self.directory.event(room, room.state())
        notice = wire.Notice(room.name, self.now_ms(), kind, text, by=by)
        self.directory.event(room, notice)
        self.told(room, notice)
