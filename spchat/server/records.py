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

    @property
    def sent_as(self) -> tuple[str, str]:
        """What makes two copies one message: the cid within its lineage."""
        return (self.lineage or "name:" + self.sender_key, self.cid)

    @property
    def conversation(self) -> str:
        if self.room is not None:
            return "#" + self.room
        return direct_conversation(self.sender_key, self.to_key)

    def for_recipient(self, key: str, room_name: str | None = None,
                      history: bool = False) -> wire.Message:
        """The wire message for one recipient; only the sender's copy has the
        cid.  ``room_name``: the room's display form (the record holds its key)."""
        cid = self.cid if key == self.sender_key else None
        if self.room is not None:
            return wire.RoomMessage(self.seq, self.ts, room_name or self.room, self.sender,
                                    self.text, cid, history)
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
