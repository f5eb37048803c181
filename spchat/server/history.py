"""Message history: what replay after a reconnect and "messages after N" read.

``MemoryHistory`` keeps the newest messages in memory; the persistent store
(SQLite) offers the same methods.  Every stored message has a sequence number
from one server-wide counter, so "everything after N" is one number.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator, NamedTuple

from spchat import wire


class Record(NamedTuple):
    """A room message (``room`` set) or a direct message (``to_key`` set).

    ``seq`` is 0 until the committer numbers it, as it saves it.  A tuple in
    the order of the store's columns: a row is a record and a record a row,
    with no conversion (and no frozen-dataclass __init__) on the hot path."""

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

    def for_recipient(self, key: str, history: bool = False) -> wire.Message:
        """The wire message for one recipient; only the sender's copy has the cid."""
        cid = self.cid if key == self.sender_key else None
        if self.room is not None:
            return wire.RoomMessage(
                self.seq, self.ts, self.room, self.sender, self.text, cid, history
            )
        return wire.DirectMessage(
            self.seq, self.ts, self.sender, self.to, self.text, cid, history
        )


class MemoryHistory:
    """The newest ``limit`` records, in sequence order: the history of a
    server without a store (and of the core's unit tests).  Offers the same
    reading methods as ``spchat.server.store.Store``."""

    def __init__(self, limit: int = 10000):
        self.limit = limit
        self._records: deque[Record] = deque()
        self._by_cid: dict[tuple[str, str], Record] = {}
        self.last_seq = 0

    def append(self, record: Record) -> None:
        self._records.append(record)
        self._by_cid[(record.sender_key, record.cid)] = record
        self.last_seq = record.seq
        if len(self._records) > self.limit:
            old = self._records.popleft()
            self._by_cid.pop((old.sender_key, old.cid), None)

    def find_cid(self, sender_key: str, cid: str) -> Record | None:
        return self._by_cid.get((sender_key, cid))

    def before(self, seq: int, limit: int, key: str, rooms: set[str]) -> list[Record]:
        found = []
        for record in reversed(self._records):
            if len(found) >= limit:
                break
            if record.seq < seq and record.visible_to(key, rooms):
                found.append(record)
        return found[::-1]

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


class ImmediateCommitter:
    """Numbers and commits at once, in memory: for a server without a store."""

    def __init__(self, history: MemoryHistory, on_committed):
        self.history = history
        self.on_committed = on_committed

    def add(self, record: Record) -> None:
        old = self.history.find_cid(record.sender_key, record.cid)
        if old is not None:  # re-sent after a reconnect: acknowledged again
            self.on_committed([], [(record, old)])
            return
        record = record._replace(seq=self.history.last_seq + 1)
        self.history.append(record)
        self.on_committed([record], [])

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
