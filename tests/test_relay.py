"""The file-sharing relay: its rules (pairing, timeouts, caps, the rate
cap) on in-memory connections and a fake clock; what crosses the network
(bytes both ways, back-pressure from a side that does not read, closing
after the last bytes, the chat server's relay port) over real sockets on
127.0.0.1."""

import hashlib
import os
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from spchat import config
from spchat.server import relay as relay_module
from spchat.server.relay import RelayFactory

from conftest import server_config, start_service, stop_services, wait_until
from helpers import run_until

UNCAPPED = 10**12  # bytes per second: the cap never bites


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


class Peer(Protocol):
    """One end, as a peer would be: counts and hashes what comes."""

    def __init__(self):
        self.received = 0
        self.head = b""  # the first bytes, kept as they came
        self.digest = hashlib.sha256()
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        if len(self.head) < 64:
            self.head += data[:64 - len(self.head)]
        self.received += len(data)
        self.digest.update(data)

    def connectionLost(self, reason):
        self.lost.callback(None)

    @property
    def closed(self):
        return self.lost.called


class Tickets:
    """The server's side of the relay's questions: tickets that expire."""

    def __init__(self, clock):
        self.clock = clock
        self.expiry = {}
        self.spent = []

    def issue(self, transfer, seconds=60.0):
        self.expiry[transfer] = self.clock.seconds() + seconds

    def allowed(self, transfer):
        return self.expiry.get(transfer, 0.0) > self.clock.seconds()

    def used(self, transfer):
        self.spent.append(transfer)
        self.expiry.pop(transfer, None)


@pytest.fixture
def tickets():
    return Tickets(reactor)


@pytest.fixture
def make_relay(tickets):
    """Start a RelayFactory on a free loopback port: make_relay(**options) -> factory."""
    ports = []

    def make(max_bps=UNCAPPED, **options):
        factory = RelayFactory(reactor, tickets.allowed, tickets.used, max_bps, **options)
        factory.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(factory)
        return factory

    yield make
    for factory in ports:
        factory.port.stopListening()
        factory.close_all()


def header(transfer, side):
    return f"spchat-relay {transfer} {side}\n".encode("ascii")


@defer.inlineCallbacks
def connect(factory, first=b""):
    """A Peer connected to ``factory``'s port that has sent ``first``."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", factory.port.getHost().port)
    peer = yield connectProtocol(endpoint, Peer())
    if first:
        peer.transport.write(first)
    return peer


@defer.inlineCallbacks
def pair(factory, transfer, fetch_first=b"", serve_first=b""):
    fetch = yield connect(factory, header(transfer, "fetch") + fetch_first)
    serve = yield connect(factory, header(transfer, "serve") + serve_first)
    yield wait_until(lambda: transfer in factory.relays
                     and factory.relays[transfer].spliced_at is not None, timeout=5)
    return fetch, serve


def sha(data):
    return hashlib.sha256(data).digest()


def relay_ends(factory, transfer):
    return factory.relays[transfer].ends


def buffered_in(factory):
    """Bytes the relay holds in its transports' send buffers, not yet sent:
    read from Twisted's own attributes, which only a test may do."""
    return sum(len(p.transport.dataBuffer) - p.transport.offset + p.transport._tempDataLen
               for p in factory.protocols)


@defer.inlineCallbacks
def connect_from(factory, host, first=b""):
    """A Peer connected from the source address ``host`` (127.x.y.z)."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", factory.port.getHost().port,
                                  bindAddress=(host, 0))
    peer = yield connectProtocol(endpoint, Peer())
    if first:
        peer.transport.write(first)
    return peer


@defer.inlineCallbacks
def transfer_through(factory, tickets, transfer, size=1 << 20):
    """A real pair from two other addresses moves ``size`` bytes; returns seconds."""
    tickets.issue(transfer)
    started = time.monotonic()
    fetch = yield connect_from(factory, "127.0.9.1", header(transfer, "fetch"))
    serve = yield connect_from(factory, "127.0.9.2", header(transfer, "serve"))
    data = os.urandom(size)
    serve.transport.write(data)
    yield wait_until(lambda: fetch.received == size or fetch.closed, timeout=15)
    assert fetch.received == size and fetch.digest.digest() == sha(data)
    fetch.transport.loseConnection()
    return time.monotonic() - started


@pytest_twisted.inlineCallbacks
def test_bytes_go_both_ways_unchanged_and_are_counted(make_relay, tickets):
    factory = make_relay()
    tickets.issue("t-both-ways")
    down, up = os.urandom(4 << 20), os.urandom(3 << 20)
    fetch, serve = yield pair(factory, "t-both-ways")
    assert tickets.spent == ["t-both-ways"] and not tickets.allowed("t-both-ways")
    started = time.monotonic()
    serve.transport.write(down)
    fetch.transport.write(up)
    yield wait_until(lambda: fetch.received == len(down) and serve.received == len(up))
    seconds = time.monotonic() - started
    assert fetch.digest.digest() == sha(down) and serve.digest.digest() == sha(up)
    assert factory.relayed_bytes == len(down) + len(up)
    assert factory.relays["t-both-ways"].sent == {"serve": len(down), "fetch": len(up)}
    print(f"relayed {len(down) + len(up)} bytes in {seconds:.3f} s")
    fetch.transport.loseConnection()
    yield wait_until(lambda: serve.closed and factory.relays == {})


@pytest_twisted.inlineCallbacks
def test_a_side_that_does_not_read_pauses_the_other(make_relay, tickets):
    factory = make_relay()
    tickets.issue("t-slow")
    fetch, serve = yield pair(factory, "t-slow")
    fetch.transport.pauseProducing()  # the downloader stops reading
    data = os.urandom(64 << 20)  # more than the kernel's buffers hold
    serve.transport.write(data)
    end = relay_ends(factory, "t-slow")["serve"]
    yield wait_until(lambda: relay_module.PEER in end.holds, timeout=10)
    buffered, carried = [], []
    for _ in range(10):
        yield sleep(0.1)
        buffered.append(buffered_in(factory))
        carried.append(factory.relayed_bytes)
    assert max(buffered) < 512 << 10, buffered  # the relay holds little ...
    assert carried[0] == carried[-1] < len(data), carried  # ... and stopped reading
    assert serve.transport.dataBuffer or serve.transport._tempDataLen  # the sender still has more
    fetch.transport.resumeProducing()
    yield wait_until(lambda: fetch.received == len(data), timeout=60)
    assert fetch.digest.digest() == sha(data)


@pytest_twisted.inlineCallbacks
def test_one_end_closing_closes_the_other_after_its_bytes(make_relay, tickets):
    lines = []

    def observe(event):
        if event.get("log_namespace", "").startswith("spchat.server.relay"):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        factory = make_relay()
        tickets.issue("abcdefgh-closing")
        fetch, serve = yield pair(factory, "abcdefgh-closing")
        data = os.urandom(2 << 20)
        serve.transport.write(data)
        serve.transport.loseConnection()
        yield wait_until(lambda: fetch.closed, timeout=10)
        assert fetch.received == len(data) and fetch.digest.digest() == sha(data)
        yield wait_until(lambda: factory.relays == {})
    finally:
        globalLogPublisher.removeObserver(observe)
    assert len(lines) == 1
    assert lines[0].startswith(f"relay abcdefgh: {len(data)} bytes to fetch, ")
    assert lines[0].endswith(" s")
    assert factory.protocols == set()


# --- the chat server's relay -------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_the_chat_server_runs_the_relay_on_its_own_port(tmp_path):
    service = start_service(server_config(tmp_path / "data"))
    try:
        port = service.ports.relay
        assert port not in (0, 5002, service.address.port)
        assert port == service.relay_port.getHost().port
        assert service.relay.max_bps == config.Config().relay_max_bps
        service.core.relay_tickets["t-chat"] = service.core.now() + 60
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        fetch = yield connectProtocol(endpoint, Peer())
        fetch.transport.write(header("t-chat", "fetch"))
        serve = yield connectProtocol(endpoint, Peer())
        serve.transport.write(header("t-chat", "serve") + b"through the server")
        yield wait_until(lambda: fetch.received == 18)
        assert fetch.head == b"through the server"
        assert not service.core.relay_allowed("t-chat")  # the ticket is spent
    finally:
        stop_services(service)
    yield wait_until(lambda: fetch.closed and serve.closed)


@pytest.mark.parametrize("settings", [{"CHAT_RELAY_MAX_BPS": "0"}, {"CHAT_MAX_SHARE_BYTES": "0"}])
def test_no_relay_when_it_or_sharing_is_off(tmp_path, settings):
    data = tmp_path / "data"
    cfg, _ = config.load_config(
        options={"host": "127.0.0.1", "tcp-port": "0", "udp-port": "0", "data-dir": str(data)},
        environ=settings, dotenv_path=tmp_path / "no.env")
    service = start_service(cfg)
    try:
        assert service.relay is None and service.relay_port is None
        assert service.ports.relay == 0
    finally:
        stop_services(service)


# --- what a hostile peer can hold ----------------------------------------------


@pytest_twisted.inlineCallbacks
def test_one_address_holds_at_most_max_per_ip_connections(make_relay, tickets):
    factory = make_relay()  # the defaults: 200 relays, 8 per address
    silent = []
    for _ in range(200):  # the whole relay's worth, none sending a header
        silent.append((yield connect_from(factory, "127.0.3.1")))
    yield wait_until(lambda: sum(not p.closed for p in silent) == relay_module.MAX_PER_IP)
    assert factory.unpaired == relay_module.MAX_PER_IP
    assert factory.refusals["per-ip 127.0.3.1"] == 200 - relay_module.MAX_PER_IP
    seconds = yield transfer_through(factory, tickets, "t-beside-a-flood")
    print(f"1 MiB through the relay beside 200 silent connections: {seconds:.2f} s")
    for peer in silent:
        peer.transport.loseConnection()


# --- in memory, on a fake clock: the relay's rules -----------------------------


class RelaySideTransport(StringTransport):
    """The relay's transport to a ``MemoryPeer``: keeps what the relay
    writes; tells the peer when reading resumes and when the relay closes."""

    def __init__(self, peer, address):
        super().__init__(peerAddress=address)
        self.peer = peer

    def write(self, data):
        if not self.peer.closed:  # as a closed socket, it takes no more
            super().write(data)

    def resumeProducing(self):
        super().resumeProducing()
        self.peer.read_soon()

    def loseConnection(self):
        if not self.disconnecting:
            super().loseConnection()
            self.peer.clock.callLater(0, self.peer.lost)


class MemoryPeer:
    """One end on an in-memory connection to the relay, on a fake clock.

    As over a socket, the relay reads what the peer sent a read at a time
    and only while it has not paused reading (the kernel would keep the
    rest); a close on either side ends the connection on the next turn.
    """

    READ_BYTES = 65536  # what the reactor takes from a socket at once

    def __init__(self, factory, clock, host="127.0.0.1"):
        self.clock = clock
        self.unread = b""
        self.hanging_up = False
        self.reading = None
        self.relay_end = factory.buildProtocol(IPv4Address("TCP", host, 40000))
        self.transport = RelaySideTransport(self, IPv4Address("TCP", host, 40000))
        self.closed = self.relay_end is None  # refused: closed at once
        if not self.closed:
            self.relay_end.makeConnection(self.transport)

    @property
    def received(self):
        return len(self.transport.value())

    @property
    def head(self):
        return self.transport.value()[:64]

    def send(self, data):
        self.unread += data
        self.read_soon()

    def hang_up(self):
        """Close this side once the relay has read what it sent."""
        self.hanging_up = True
        self.read_soon()

    def read_soon(self):
        if self.reading is None and not self.closed:
            self.reading = self.clock.callLater(0, self._read)

    def _read(self):
        self.reading = None
        if self.closed or self.transport.producerState != "producing":
            return  # read again when the relay resumes
        if self.unread:
            chunk, self.unread = self.unread[:self.READ_BYTES], self.unread[self.READ_BYTES:]
            self.relay_end.dataReceived(chunk)
            self.read_soon()
        elif self.hanging_up:
            self.lost()

    def lost(self):
        if not self.closed:
            self.closed = True
            self.relay_end.connectionLost(Failure(ConnectionDone()))


@pytest.fixture
def fake_tickets(clock):
    return Tickets(clock)


@pytest.fixture
def memory_relay(clock, fake_tickets):
    """A RelayFactory on the fake clock: memory_relay(**options) -> factory."""

    def make(max_bps=UNCAPPED, **options):
        return RelayFactory(clock, fake_tickets.allowed, fake_tickets.used, max_bps, **options)

    return make


def connect_in_memory(factory, clock, first=b"", host="127.0.0.1"):
    """A MemoryPeer that has sent ``first``, once the relay has read it."""
    peer = MemoryPeer(factory, clock, host)
    if first:
        peer.send(first)
    clock.advance(0)  # a turn of the reactor: every read that can happen does
    return peer


def pair_in_memory(factory, clock, transfer):
    fetch = connect_in_memory(factory, clock, header(transfer, "fetch"))
    serve = connect_in_memory(factory, clock, header(transfer, "serve"))
    assert factory.relays[transfer].spliced_at is not None
    return fetch, serve


def test_bytes_sent_before_pairing_are_kept_and_not_read_until_then(memory_relay, fake_tickets,
                                                                     clock):
    factory = memory_relay()
    fake_tickets.issue("t-early")
    # The first side's early bytes arrive with its header, in one read.
    fetch = connect_in_memory(factory, clock, header("t-early", "fetch") + b"hello from fetch")
    end = relay_ends(factory, "t-early")["fetch"]
    assert end.header == b"hello from fetch"
    # More bytes while it waits: the relay does not read them.
    more = os.urandom(256 << 10)
    fetch.send(more)
    clock.advance(20)
    assert end.header == b"hello from fetch" and end.holds == {relay_module.WAITING}
    assert len(fetch.unread) == len(more)
    serve = connect_in_memory(factory, clock, header("t-early", "serve") + b"serve was late")
    assert serve.received == 16 + len(more) and fetch.received == 14
    assert serve.transport.value() == b"hello from fetch" + more
    assert fetch.head == b"serve was late"
    assert factory.relayed_bytes == 16 + len(more) + 14


def test_unknown_expired_and_malformed_are_closed(memory_relay, fake_tickets, clock):
    factory = memory_relay()
    fake_tickets.issue("t-old", seconds=-1)  # expired
    fake_tickets.issue("t-ok")
    refused = [
        header("t-unknown", "fetch"),
        header("t-old", "serve"),
        header("t-ok", "upload"),  # no such side
        b"spchat-relay t-ok\n",
        b"spchat-relay t-ok fetch extra\n",
        b"spchat-relay  t-ok fetch\n",
        b"other-relay t-ok fetch\n",
        "spchat-relay t-\u00e9 fetch\n".encode(),
        b"spchat-relay " + b"x" * 120 + b" fetch\n",  # longer than 128 bytes
        b"x" * 200,  # no line end within 128 bytes
    ]
    peers = [connect_in_memory(factory, clock, first) for first in refused]
    assert all(peer.closed for peer in peers)  # at once, not by a timeout
    assert all(peer.received == 0 for peer in peers)
    assert factory.relays == {} and factory.unpaired == 0 and fake_tickets.spent == []


def test_a_side_taken_twice_is_refused_and_the_first_still_pairs(memory_relay, fake_tickets,
                                                                 clock):
    factory = memory_relay()
    fake_tickets.issue("t-twice")
    first = connect_in_memory(factory, clock, header("t-twice", "serve"))
    second = connect_in_memory(factory, clock, header("t-twice", "serve"))
    assert second.closed and not first.closed
    fetch = connect_in_memory(factory, clock, header("t-twice", "fetch") + b"ping")
    first.send(b"pong")
    clock.advance(0)
    assert (first.head, fetch.head) == (b"ping", b"pong")


def test_a_third_connection_after_pairing_is_refused(memory_relay, fake_tickets, clock):
    factory = memory_relay()
    fake_tickets.issue("t-third")
    fetch, serve = pair_in_memory(factory, clock, "t-third")
    for side in ("fetch", "serve"):
        assert connect_in_memory(factory, clock, header("t-third", side)).closed
    # Even with a ticket again, both sides of a spliced relay are taken.
    fake_tickets.issue("t-third")
    assert connect_in_memory(factory, clock, header("t-third", "fetch")).closed
    assert not fetch.closed and not serve.closed
    serve.send(b"still here")
    clock.advance(0)
    assert fetch.received == 10


def test_header_and_pairing_time_out(memory_relay, fake_tickets, clock):
    factory = memory_relay(header_timeout=3, pair_timeout=30)
    fake_tickets.issue("t-alone", seconds=120)
    silent = connect_in_memory(factory, clock)
    partial = connect_in_memory(factory, clock, b"spchat-relay t-alone")
    alone = connect_in_memory(factory, clock, header("t-alone", "fetch"))
    clock.advance(2.9)
    assert not any(peer.closed for peer in (silent, partial, alone))
    clock.advance(0.2)
    assert silent.closed and partial.closed and not alone.closed
    clock.advance(26.8)  # 29.9 s since its header
    assert not alone.closed
    clock.advance(0.2)
    assert alone.closed
    assert factory.relays == {} and factory.unpaired == 0
    # The ticket was not spent: the transfer can still be relayed.
    pair_in_memory(factory, clock, "t-alone")
    assert fake_tickets.spent == ["t-alone"]


def test_the_rate_cap_holds_each_direction(memory_relay, fake_tickets, clock):
    rate = 500_000
    factory = memory_relay(max_bps=rate)
    fake_tickets.issue("t-capped")
    fetch, serve = pair_in_memory(factory, clock, "t-capped")
    data = os.urandom(1_500_000)
    serve.send(data)
    fetch.send(data[:100_000])
    seconds = run_until(clock, lambda: fetch.received == len(data))
    # At the cap, less the burst and the last read (which needs no wait).
    burst = rate * relay_module.BURST_SECONDS
    assert (len(data) - burst - MemoryPeer.READ_BYTES) / rate <= seconds <= len(data) / rate
    assert fetch.transport.value() == data
    assert serve.received == 100_000  # the other direction had its own budget


def test_the_wait_for_a_debt_pays_it_whatever_the_clocks_rounding(clock):
    bucket = relay_module.ByteBucket(500_000, clock.seconds())
    wait = bucket.spend(65536, clock.seconds())
    assert wait > 0
    clock.advance(wait)  # at 1.7e9 s, 0.13 s is not exact
    assert bucket.spend(0, clock.seconds()) == 0.0


def test_the_cap_and_back_pressure_do_not_undo_each_other(memory_relay, fake_tickets, clock):
    factory = memory_relay()
    fake_tickets.issue("t-holds")
    fetch, serve = pair_in_memory(factory, clock, "t-holds")
    end = relay_ends(factory, "t-holds")["serve"]
    end.hold(relay_module.CAP)  # as if over the cap
    end.pauseProducing()  # as if the fetch side's buffer were full
    end.resumeProducing()  # ... and drained: the cap still holds
    serve.send(b"held")
    clock.advance(1)
    assert fetch.received == 0 and end.holds == {relay_module.CAP}
    end.pauseProducing()
    end.release(relay_module.CAP)  # the cap lets go: back-pressure still holds
    clock.advance(1)
    assert fetch.received == 0
    end.resumeProducing()
    clock.advance(0)
    assert fetch.received == 4 and end.holds == set()


def test_at_most_max_relays_at_once(memory_relay, fake_tickets, clock):
    factory = memory_relay(max_relays=2)
    for transfer in ("t-1", "t-2", "t-3"):
        fake_tickets.issue(transfer)
    waiting = [connect_in_memory(factory, clock, header(transfer, "fetch"))
               for transfer in ("t-1", "t-2")]
    assert len(factory.relays) == 2
    assert connect_in_memory(factory, clock, header("t-3", "fetch")).closed
    # Two connections still sending their headers: a third takes the
    # place of the one that has waited longest.
    idle = [connect_in_memory(factory, clock), connect_in_memory(factory, clock)]
    assert factory.unpaired == 2
    extra = connect_in_memory(factory, clock)
    assert idle[0].closed
    assert factory.unpaired == 2 and not idle[1].closed and not extra.closed
    for peer in (idle[1], extra):
        peer.hang_up()
    clock.advance(0)
    assert factory.unpaired == 0
    # The other sides of the two relays still pair.
    serve = connect_in_memory(factory, clock, header("t-1", "serve") + b"ok")
    assert waiting[0].received == 2
    assert not any(peer.closed for peer in waiting + [serve])


def test_silent_connections_from_many_addresses_give_way_to_real_peers(memory_relay,
                                                                       fake_tickets, clock):
    factory = memory_relay(max_relays=20)
    silent = [connect_in_memory(factory, clock, host=f"127.0.4.{i + 1}")
              for i in range(5) for _ in range(4)]  # 5 addresses x 4: every header slot taken
    assert factory.unpaired == 20
    fake_tickets.issue("t-through-the-crowd")
    # Both connect before either header is read.
    fetch, serve = MemoryPeer(factory, clock, "127.0.9.1"), MemoryPeer(factory, clock, "127.0.9.2")
    data = os.urandom(1 << 20)
    fetch.send(header("t-through-the-crowd", "fetch"))
    serve.send(header("t-through-the-crowd", "serve") + data)
    clock.advance(0)
    assert fetch.transport.value() == data
    # The two oldest made way for the pair; the rest still wait.
    assert [p.closed for p in silent[:2]] == [True, True]
    assert not any(p.closed for p in silent[2:])


def test_a_relay_that_carries_nothing_is_cut(memory_relay, fake_tickets, clock):
    factory = memory_relay(idle_timeout=60)
    fake_tickets.issue("t-quiet")
    fake_tickets.issue("t-busy")
    quiet = pair_in_memory(factory, clock, "t-quiet")
    busy = pair_in_memory(factory, clock, "t-busy")

    def carry(seconds):  # a byte every 20 s keeps the busy one
        busy[1].send(b".")
        clock.advance(seconds)

    carry(20)
    carry(20)
    carry(19.9)
    assert not any(peer.closed for peer in quiet)
    clock.advance(0.2)
    assert all(peer.closed for peer in quiet)
    for _ in range(5):
        carry(20)
    assert not any(peer.closed for peer in busy)
    assert "t-quiet" not in factory.relays and busy[0].received == 8
