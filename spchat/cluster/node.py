"""This node on the bus: what it publishes after a commit, and what it does
with what it hears.  Sans-IO: the bus is an ``IBus`` (Redis in service,
an in-memory one in the tests).

Every notice is sealed (``spchat.cluster.seal``) and has a kind; the
kinds about saved lines are handled here, and the other parts of the
server add theirs with ``on(kind, handler)`` and say things with
``send(kind, body)``.  A notice that is not sealed with our key, is
stale or heard twice, or of a kind nobody handles, is counted and
dropped."""

from __future__ import annotations

from typing import Callable

from spchat.cluster.seal import Seal
from twisted.logger import Logger

from spchat.cluster import notices
from spchat.cluster.order import RoomOrder
from spchat.server.metrics import BUS_LAG_SECONDS_BUCKETS, Histogram
from spchat.server.records import Record
from spchat.server.rooms import RoomDirectory

# Each node says its newest numbers this often: a notice lost without the
# bus noticing (a subscriber dropped by Redis, say) is a gap within this long.
TOPS_SECONDS = 5.0
# Rooms in one of those notices (a room key is at most some 100 bytes).
TOPS_PER_NOTICE = 200

log = Logger()


Handler = Callable[[str, dict], None]  # (the sending node's name, the body)


class ClusterNode:
    def __init__(self, clock, bus, seal: Seal, read_after: Callable, directory: RoomDirectory,
                 deliver: Callable[[list[Record]], None]):
        """``bus``: an ``IBus``; ``seal``: this node's name and the bus key;
        ``read_after``: ``IMessageLog.after``; ``deliver(records)``: lines
        of one room to its members here."""
        self.clock = clock
        self.bus = bus
        self.seal = seal
        self.directory = directory
        self.order = RoomOrder(clock, directory, read_after, deliver)
        self.ignored = 0  # notices dropped: not sealed by us, stale, unknown
        self.failed = 0  # notices whose handler raised
        self.twins = 0  # notices heard from another process under this node's name
        self.lag = Histogram(BUS_LAG_SECONDS_BUCKETS)  # of other nodes' lines, heard
        self._handlers: dict[str, Handler] = {
            notices.SAVED: self._heard_saved, notices.TOPS: self._heard_tops}
        # Called on each (re)connection to the bus, after the rooms' resync.
        self.on_connected: list[Callable[[], None]] = []
        self._tops_call = clock.callLater(TOPS_SECONDS, self._tell_tops)
        bus.listen(self.heard, self.connected)

    @property
    def name(self) -> str:
        """This node's name (``CHAT_NODE``)."""
        return self.seal.node

    @property
    def run(self) -> str:
        """This start of the node (a random id): a node heard from under
        another run has started again and lost what it knew."""
        return self.seal.run

    def on(self, kind: str, handler: Handler) -> None:
        """``handler(node, body)`` for each notice of ``kind`` (this
        node's own too: each handler decides what its own notices mean)."""
        if kind in self._handlers:
            raise ValueError(f"notices of kind {kind!r} already have a handler")
        self._handlers[kind] = handler

    def send(self, kind: str, body: dict) -> None:
        """Tell every node (this one too), if the bus is there now."""
        self.bus.publish(self.seal.seal(kind, body))

    def saved_here(self, key: str, records: list[Record]) -> None:
        """This node saved consecutive lines of the room ``key``."""
        self.order.offer(key, records)
        self.send(notices.SAVED, notices.saved(key, records))

    def heard(self, data) -> None:
        notice = self.seal.open(data)
        handler = None if notice is None else self._handlers.get(notice.kind)
        if notice is None or handler is None:
            self._drop("a notice on the bus that is not sealed by this cluster, or is stale")
            return
        if notice.node == self.name and notice.run not in ("", self.seal.run):
            self._twin()
        try:
            handler(notice.node, notice.body)
        except Exception:  # a notice must not cost the subscription (and its resync)
            if not self.failed:
                log.failure("a {kind} notice from {node} could not be handled (counted, "
                            "not logged again)", kind=notice.kind, node=notice.node)
            self.failed += 1

    def _heard_saved(self, node: str, body: dict) -> None:
        saved = notices.read_saved(body)
        if saved is None:
            self._drop("a saved-lines notice that does not parse")
        elif saved.records is not None:
            if node != self.name:
                self.lag.observe(max(0.0, self.clock.seconds() - saved.records[-1].ts / 1000))
            self.order.offer(saved.room, list(saved.records))
        else:
            self.order.announced(saved.room, saved.last)

    def _heard_tops(self, node: str, body: dict) -> None:
        tops = notices.read_tops(body)
        if tops is None:
            self._drop("a newest-numbers notice that does not parse")
            return
        for key, last in tops.tops.items():
            self.order.announced(key, last, grace=True)

    def _twin(self) -> None:
        """Another process calls itself this node: each takes the other's
        notices for its own, and their clients miss lines and names."""
        if not self.twins:
            log.error("another process on the bus is also node {node}: two nodes were "
                      "started with one name (--node, CHAT_NODE); give each node its own "
                      "(counted, not logged again)", node=self.name)
        self.twins += 1

    def drop(self, what: str) -> None:
        """A notice of another part's kind that does not parse: counted."""
        self._drop(what)

    def _drop(self, what: str) -> None:
        if not self.ignored:  # once: a stranger on the bus could fill the log
            log.warn("ignoring {what} (counted, not logged again)", what=what)
        self.ignored += 1

    def connected(self) -> None:
        """(Re)connected to the bus: what was said meanwhile is lost."""
        self.order.resync()
        self._publish_tops()
        for then in self.on_connected:
            then()

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
            self.send(notices.TOPS, notices.tops(dict(numbers[start:start + TOPS_PER_NOTICE])))
