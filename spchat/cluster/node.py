"""This node on the bus: what it publishes after a commit, and what it does
with what it hears.  Sans-IO: the bus is an ``IBus`` (Redis in service,
an in-memory one in the tests)."""

from __future__ import annotations

from typing import Callable

from twisted.logger import Logger

from spchat.cluster import notices
from spchat.cluster.order import RoomOrder
from spchat.server.records import Record
from spchat.server.rooms import RoomDirectory

# Each node says its newest numbers this often: a notice lost without the
# bus noticing (a subscriber dropped by Redis, say) is a gap within this long.
TOPS_SECONDS = 5.0
# Rooms in one of those notices (a room key is at most some 100 bytes).
TOPS_PER_NOTICE = 200

log = Logger()


class ClusterNode:
    def __init__(self, clock, bus, read_after: Callable, directory: RoomDirectory,
                 deliver: Callable[[list[Record]], None]):
        """``bus``: an ``IBus``; ``read_after``: ``IMessageLog.after``;
        ``deliver(records)``: lines of one room to its members here."""
        self.clock = clock
        self.bus = bus
        self.directory = directory
        self.order = RoomOrder(clock, directory, read_after, deliver)
        self.ignored = 0  # notices that were not ours
        self._tops_call = clock.callLater(TOPS_SECONDS, self._tell_tops)
        bus.listen(self.heard, self.connected)

    def saved_here(self, key: str, records: list[Record]) -> None:
        """This node saved consecutive lines of the room ``key``."""
        self.order.offer(key, records)
        self.bus.publish(notices.saved(key, records))

    def heard(self, data) -> None:
        notice = notices.decode(data)
        if isinstance(notice, notices.Saved):
            if notice.records is not None:
                self.order.offer(notice.room, list(notice.records))
            else:
                self.order.announced(notice.room, notice.last)
        elif isinstance(notice, notices.Tops):
            for key, last in notice.tops.items():
                self.order.announced(key, last, grace=True)
        else:
            if not self.ignored:
                log.warn("ignoring a notice on the bus that is not spchat's")
            self.ignored += 1

    def connected(self) -> None:
        """(Re)connected to the bus: what was said meanwhile is lost."""
        self.order.resync()
        self._publish_tops()

    def stop(self) -> None:
        if self._tops_call.active():
            self._tops_call.cancel()
        self.order.stop()

    def _tell_tops(self) -> None:
        self._publish_tops()
        self._tops_call = self.clock.callLater(TOPS_SECONDS, self._tell_tops)

    def _publish_tops(self) -> None:
        numbers = [(key, room.last_seq) for key, room in self.directory.rooms.items()
                   if room.last_seq]
        for start in range(0, len(numbers), TOPS_PER_NOTICE):  # each notice bounded
            self.bus.publish(notices.tops(dict(numbers[start:start + TOPS_PER_NOTICE])))
