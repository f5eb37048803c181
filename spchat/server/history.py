"""Message history: what replay after a reconnect and "messages after N" read.

``MemoryHistory`` keeps the newest messages in memory; the persistent store
(SQLite) offers the same methods.  Every stored message has a sequence number
from one server-wide counter, so "everything after N" is one number.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterator

from spchat import wire


@dataclass(frozen=True, slots=True)
class Record:
    """A room message (``room`` set) or a direct message (``to_key`` set)."""

    seq: int
    ts: int
    sender: str  # display form
    sender_key: str  # comparison form: who may see the cid (the ack)
    text: str
    cid: str
    room: str | None = None
    to: str | None = None
    to_key: str | None = None

    def visible_to(self, key: str, rooms: set[str]) -> bool:
        if self.room is not None:
            return self.room in rooms
        return key in (self.sender_key, self.to_key)

    def for_recipient(self, key: str) -> wire.Message:
        """The wire message for one recipient; only the sender's copy has the cid."""
        cid = self.cid if key == self.sender_key else None
        if self.room is not None:
            return wire.RoomMessage(self.seq, self.ts, self.room, self.sender, self.text, cid)
        return wire.DirectMessage(self.seq, self.ts, self.sender, self.to, self.text, cid)


class MemoryHistory:
    """The newest ``limit`` records, in sequence order."""

    def __init__(self, limit: int = 10000):
        self.limit = limit
        self._records: deque[Record] = deque()
        self.last_seq = 0

    def append(self, record: Record) -> Record | None:
        """Store a record; return the one that fell out, if any."""
        self._records.append(record)
        self.last_seq = record.seq
        if len(self._records) > self.limit:
            return self._records.popleft()
        return None

    @property
    def first_seq(self) -> int:
        """The oldest sequence number still held (last_seq + 1 when empty)."""
        return self._records[0].seq if self._records else self.last_seq + 1

    def after(self, seq: int) -> Iterator[Record]:
        """Records with a sequence number above ``seq``, oldest first."""
        if not self._records or seq >= self.last_seq:
            return iter(())
        # Sequence numbers are consecutive, so the position is arithmetic.
        start = max(0, seq + 1 - self._records[0].seq)
        return (self._records[i] for i in range(start, len(self._records)))
