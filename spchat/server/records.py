"""What the stores keep: messages and rooms, as plain values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from spchat import wire


def room_conversation(room_key: str) -> str:
    return "#" + room_key


def direct_conversation(key_a: str, key_b: str) -> str:
    # Names cannot hold spaces, so the pair is unambiguous.
    return "@" + " ".join(sorted((key_a, key_b)))


def reader_of(conversation: str, lineage: str) -> str | None:
    """The ``reader`` for a store read of a conversation by this lineage: a
    room's lines are for whoever is in it, a direct line is its two's."""
    return lineage if conversation.startswith("@") else None


def account_lineage(key: str) -> str:
    return "account:" + key


def account_of(lineage: str) -> str | None:
    """The account key of an account's lineage; None for a guest's."""
    prefix = account_lineage("")
    return lineage[len(prefix):] if lineage.startswith(prefix) else None


class Record(NamedTuple):
    """A room message (``room`` set: the room's key) or a direct message
    (``to_key`` set).

    ``seq`` is the message's number in its conversation, 0 until the store
    numbers it as it saves it.  A tuple in the order of the store's columns:
    a row is a record and a record a row, with no conversion (and no
    frozen-dataclass __init__) on the hot path."""

    seq: int
    ts: int
    sender: str  # display form
    sender_key: str  # comparison form: who may see the cid (the ack)
    text: str
    cid: str
    room: str | None = None
    to: str | None = None
    to_key: str | None = None
    # Whose client message ids these are (Session.lineage); None: by the
    # sender's name, as before there were lineages.
    lineage: str | None = None
    # A direct message's recipient's lineage: with ``lineage``, whose the
    # message is (``readable_by``); None before there were lineages.
    to_lineage: str | None = None
    # A direct message to an account nobody was logged in as: it waits for
    # the account's next login (``spchat.server.waiting``), then is had.
    waiting: bool = False

    @property
    def sent_as(self) -> tuple[str, str]:
        """What makes two copies one message: the cid within its lineage."""
        return (self.lineage or "name:" + self.sender_key, self.cid)

    def readable_by(self, lineage: str) -> bool:
        """May the session of this lineage read this direct message?  It
        belongs to the two lineages that took part, not to their names: a
        guest's are gone with its session (the next holder of the name is
        someone else), an account's stay with the account.  Lines from
        before lineages belong to the name's account, if it has one."""
        if lineage in (self.lineage, self.to_lineage):
            return True
        owner = account_of(lineage)
        return owner is not None and (
            (self.sender_key == owner and self.lineage is None)
            or (self.to_key == owner and self.to_lineage is None))

    @property
    def conversation(self) -> str:
        if self.room is not None:
            return "#" + self.room
        assert self.to_key is not None, "a record is a room's line or a direct one"
        return direct_conversation(self.sender_key, self.to_key)

    def for_recipient(self, key: str, room_name: str | None = None,
                      history: bool = False) -> wire.Message:
        """The wire message for one recipient; only the sender's copy has the
        cid.  ``room_name``: the room's display form (the record holds its key)."""
        cid = self.cid if key == self.sender_key else None
        if self.room is not None:
            return wire.RoomMessage(self.seq, self.ts, room_name or self.room, self.sender,
                                    self.text, cid, history)
        assert self.to is not None, "a record is a room's line or a direct one"
        return wire.DirectMessage(self.seq, self.ts, self.sender, self.to, self.text, cid,
                                  history)


@dataclass
class RoomRecord:
    """A room as stored: settings, standing of names in it, newest number.

    ``roles``: registered accounts' roles other than member, key -> (name,
    role); ``bans``: key -> (name, until or None for ever, reason);
    ``mutes``: key -> name."""

    key: str
    name: str
    topic: str = ""
    private: bool = False
    topic_locked: bool = False
    created: int = 0  # UTC ms
    roles: dict[str, tuple[str, str]] = field(default_factory=dict)
    bans: dict[str, tuple[str, float | None, str]] = field(default_factory=dict)
    mutes: dict[str, str] = field(default_factory=dict)
    last_seq: int = 0
    password: str = ""  # to join (IRC's +k); "" for none
    member_limit: int = 0  # most members online (IRC's +l); 0 for no limit
    moderated: bool = False  # only operators and voices speak (IRC's +m)
    voices: dict[str, str] = field(default_factory=dict)  # key -> name (IRC's +v)


def read_rooms(rows) -> list[RoomRecord]:
    """Rooms with their standing and newest number, by key, as both SQL
    engines keep them: ``rows(sql, column)`` runs ``sql`` (for one room:
    with ``WHERE column = key`` added) and returns its rows."""
    rooms = {
        key: RoomRecord(key, name, topic, bool(private), bool(locked), created,
                        password=password, member_limit=member_limit, moderated=bool(moderated))
        for key, name, topic, private, locked, created, password, member_limit, moderated
        in rows("SELECT key, name, topic, private, topic_locked, created, password, "
                "member_limit, moderated FROM rooms", "key")
    }
    for room, key, name in rows("SELECT room, key, name FROM room_voices", "room"):
        rooms[room].voices[key] = name
    for room, key, name, role in rows("SELECT room, key, name, role FROM room_roles", "room"):
        rooms[room].roles[key] = (name, role)
    for room, key, name, until, reason in rows(
            "SELECT room, key, name, until, reason FROM room_bans", "room"):
        rooms[room].bans[key] = (name, until, reason)
    for room, key, name in rows("SELECT room, key, name FROM room_mutes", "room"):
        rooms[room].mutes[key] = name
    for room, last_seq in rows(
            "SELECT r.key, c.last_seq FROM rooms AS r "
            "JOIN conversations AS c ON c.conversation = '#' || r.key", "r.key"):
        rooms[room].last_seq = last_seq
    return [rooms[key] for key in sorted(rooms)]
