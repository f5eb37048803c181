"""Fakes shared by the core's tests: an in-memory chat client and logins.

``MemoryClient`` is the core's second ``IChatClient`` (the spchat protocol
is the first): it keeps every event as the wire message a client would
decode, so a test reads what a user would see.
"""

from __future__ import annotations

from twisted.internet import defer, protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from spchat import wire
from spchat.server.interfaces import IChatClient
from spchat.server.rooms import ROOM_EVENT_SECONDS


def _through_codec(message: wire.Message) -> wire.Message:
    # As on the network: whatever the core sends must be valid wire format
    # (a too-long error text would not be).
    return wire.decode(wire.encode(message))


@implementer(IChatClient)
class MemoryClient:
    """Stands where a network connection would: records what the core tells it."""

    def __init__(self):
        self.sent: list[wire.Message] = []
        self.closed: tuple[str, str] | None = None
        self.session = None

    def started(self, session, resumed):
        self.session = session

    def send(self, message):
        self.sent.append(_through_codec(message))

    def send_shared(self, events):
        self.sent.extend(_through_codec(m) for m in events.messages)

    def deliver(self, lines):
        self.sent.extend(_through_codec(m) for m in lines.messages_for(self.session.key))

    def when_drained(self, then):
        then()  # everything is taken at once

    def close(self, code, text):
        self.closed = (code, text)

    def of(self, kind):
        return [m for m in self.sent if isinstance(m, kind)]

    def clear(self):
        self.sent.clear()


class Deaf(MemoryClient):
    """A connection whose messages nobody looks at (not even decoded)."""

    def send(self, message):
        pass

    def send_shared(self, events):
        pass

    def deliver(self, lines):
        pass


def settle(core):
    """Let the rooms' comings and goings go out."""
    core.clock.advance(ROOM_EVENT_SECONDS)


def run_until(clock, predicate, limit=60.0, step=0.01):
    """Advance a fake ``clock`` a step at a time until ``predicate``; the
    fake seconds it took (the test fails past ``limit`` of them)."""
    started = clock.seconds()
    clock.advance(0)
    while not predicate():
        assert clock.seconds() - started < limit, f"not within {limit} s: {predicate}"
        clock.advance(step)
    return clock.seconds() - started


def run_for(clock, seconds, step=0.01):
    """Advance a fake ``clock`` by ``seconds``, a step at a time (as a
    reactor would turn: each periodic call runs in its turn)."""
    end = clock.seconds() + seconds
    while clock.seconds() + step < end:
        clock.advance(step)
    clock.advance(max(0.0, end - clock.seconds()))


def login(core, name, address="127.0.0.1:1", **options):
    conn = MemoryClient()
    link = core.open_link(conn, address)
    core.receive(link, wire.Login(name, **options))
    return link, conn


class Batching:
    """A committer that numbers and saves nothing until told: as the store's
    writer, which publishes everything of one transaction together."""

    def __init__(self, core):
        self.core, self.pending = core, []
        core.messaging.committer = self

    def add(self, record):
        self.pending.append(record)

    def commit(self):
        batch, self.pending = self.pending, []
        self.core.store.append(batch).addCallback(
            lambda result: self.core.messaging.published(*result))


def fired(d):
    """The result of a Deferred that has fired already (the memory store's)."""
    out = []
    d.addBoth(out.append)
    assert out, f"{d!r} has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


class InstantPasswords:
    """The password worker's interface, answered at once (the hashing is
    tested in test_accounts; here it would only cost time)."""

    waiting = 0

    def waiting_in(self, lane):
        return 0

    def hash(self, password, lane=None):
        return defer.succeed("hash:" + password)

    def verify(self, password, encoded):
        return defer.succeed(encoded == "hash:" + password)


def node_dirs(root, count: int) -> list:
    """Data directories for ``count`` nodes of one cluster: each its own,
    with one server key copied to all (as README's "Running several
    nodes" asks), so they seal notices alike and pinned clients trust all."""
    return share_key([root / f"node{i}" for i in range(count)])


def share_key(dirs: list) -> list:
    """The first data directory's server key (made if it has none) copied
    to the others, made if need be; returns ``dirs``."""
    from spchat.server.identity import share_server_key

    share_server_key(dirs)
    return dirs


def room_lines(client, history):
    """The texts of the room lines a test client got, of history or live."""
    return [m.text for m in client.rec.of(wire.RoomMessage) if m.history == history]


def dead_port() -> int:
    """A loopback port nobody listens on."""
    from spchat.bench.engines import free_port

    return free_port()  # free now, and nobody is to take it



class Silent(protocol.Protocol):
    """A TCP connection, at either end, that never says a word: a half-open
    handshake, a place held until cut, a port that is not spchat's or a
    stopped server.  ``open`` until it is lost; ``Silent.now_open``
    counts those open now, of all of them."""

    now_open = 0
    open = True

    def connectionMade(self):
        Silent.now_open += 1

    def connectionLost(self, reason=None):
        if self.open:
            Silent.now_open -= 1
        self.open = False

    def abort(self) -> None:
        if self.open:
            self.transport.abortConnection()


def lines_in(client, room="lobby"):
    """(seq, text) of the live lines a client was sent in ``room``."""
    return [(m.seq, m.text) for m in client.rec.of(wire.RoomMessage)
            if m.room == room and not m.history]


class RawPeer(protocol.Protocol):
    """A plain TCP connection at either end: sends what the test tells it
    to, keeps every byte that comes (``received``), and fires ``lost``."""

    def __init__(self):
        self.received = bytearray()
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason=None):
        if not self.lost.called:
            self.lost.callback(None)


class SharedBus:
    """One bus for every core: what one publishes, all hear at once (itself
    too), unless it is down (``up`` False); ``kept`` has every notice
    sent, and ``back()`` tells every core it is on the bus again."""

    def __init__(self):
        self.listeners = []  # (heard, connected) of each core
        self.kept = []
        self.up = True

    def port(self):
        bus = self

        class Port:
            def listen(self, heard, connected):
                bus.listeners.append((heard, connected))

            def publish(self, data):
                bus.kept.append(data)
                if bus.up:
                    for heard, _ in list(bus.listeners):
                        heard(data)

        return Port()

    def back(self):
        self.up = True
        for _, connected in list(self.listeners):
            connected()

    def deafen(self, core) -> None:
        """``core`` hears nothing more, and says nothing more (it died)."""
        self.listeners = [(heard, connected) for heard, connected in self.listeners
                          if getattr(heard, "__self__", None) is not core.cluster]
        core.cluster.bus.publish = lambda data: None
