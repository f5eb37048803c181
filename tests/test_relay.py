"""The file-sharing relay over real sockets on 127.0.0.1."""

import hashlib
import os
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import formatEvent, globalLogPublisher

from spchat import config
from spchat.server import relay as relay_module
from spchat.server.relay import RelayFactory

from conftest import server_config, start_service, stop_services, wait_until

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

    def __init__(self):
        self.expiry = {}
        self.spent = []

    def issue(self, transfer, seconds=60.0):
        self.expiry[transfer] = reactor.seconds() + seconds

    def allowed(self, transfer):
        return self.expiry.get(transfer, 0.0) > reactor.seconds()

    def used(self, transfer):
        self.spent.append(transfer)
        self.expiry.pop(transfer, None)


@pytest.fixture
def tickets():
    return Tickets()


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
def test_bytes_sent_before_pairing_are_kept_and_not_read_until_then(make_relay, tickets):
    factory = make_relay()
    tickets.issue("t-early")
    # The first side's early bytes arrive with its header, in one write.
    fetch = yield connect(factory, header("t-early", "fetch") + b"hello from fetch")
    yield wait_until(lambda: "t-early" in factory.relays)
    end = relay_ends(factory, "t-early")["fetch"]
    yield wait_until(lambda: end.header == b"hello from fetch")
    # More bytes while it waits: the relay does not read them.
    more = os.urandom(256 << 10)
    fetch.transport.write(more)
    yield sleep(0.3)
    assert end.header == b"hello from fetch" and end.holds == {relay_module.WAITING}
    serve = yield connect(factory, header("t-early", "serve") + b"serve was late")
    yield wait_until(lambda: serve.received == 16 + len(more) and fetch.received == 14)
    assert serve.head.startswith(b"hello from fetch")
    assert serve.digest.digest() == sha(b"hello from fetch" + more)
    assert fetch.head == b"serve was late"
    assert factory.relayed_bytes == 16 + len(more) + 14


@pytest_twisted.inlineCallbacks
def test_unknown_expired_and_malformed_are_closed(make_relay, tickets):
    factory = make_relay()
    tickets.issue("t-old", seconds=-1)  # expired
    tickets.issue("t-ok")
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
    peers = []
    for first in refused:
        peers.append((yield connect(factory, first)))
    yield wait_until(lambda: all(peer.closed for peer in peers), timeout=5)
    assert all(peer.received == 0 for peer in peers)
    assert factory.relays == {} and factory.unpaired == 0 and tickets.spent == []


@pytest_twisted.inlineCallbacks
def test_a_side_taken_twice_is_refused_and_the_first_still_pairs(make_relay, tickets):
    factory = make_relay()
    tickets.issue("t-twice")
    first = yield connect(factory, header("t-twice", "serve"))
    yield wait_until(lambda: "t-twice" in factory.relays)
    second = yield connect(factory, header("t-twice", "serve"))
    yield wait_until(lambda: second.closed)
    assert not first.closed
    fetch = yield connect(factory, header("t-twice", "fetch") + b"ping")
    yield wait_until(lambda: first.received == 4)
    first.transport.write(b"pong")
    yield wait_until(lambda: fetch.received == 4)
    assert (first.head, fetch.head) == (b"ping", b"pong")


@pytest_twisted.inlineCallbacks
def test_a_third_connection_after_pairing_is_refused(make_relay, tickets):
    factory = make_relay()
    tickets.issue("t-third")
    fetch, serve = yield pair(factory, "t-third")
    for side in ("fetch", "serve"):
        third = yield connect(factory, header("t-third", side))
        yield wait_until(lambda: third.closed)
    # Even with a ticket again, both sides of a spliced relay are taken.
    tickets.issue("t-third")
    third = yield connect(factory, header("t-third", "fetch"))
    yield wait_until(lambda: third.closed)
    assert not fetch.closed and not serve.closed
    serve.transport.write(b"still here")
    yield wait_until(lambda: fetch.received == 10)


@pytest_twisted.inlineCallbacks
def test_header_and_pairing_time_out(make_relay, tickets):
    factory = make_relay(header_timeout=0.3, pair_timeout=0.5)
    tickets.issue("t-alone")
    silent = yield connect(factory)
    partial = yield connect(factory, b"spchat-relay t-alone")
    alone = yield connect(factory, header("t-alone", "fetch"))
    started = time.monotonic()
    yield wait_until(lambda: silent.closed and partial.closed, timeout=5)
    assert 0.2 < time.monotonic() - started < 2.0 and not alone.closed
    yield wait_until(lambda: alone.closed, timeout=5)
    assert 0.4 < time.monotonic() - started < 3.0
    assert factory.relays == {} and factory.unpaired == 0
    # The ticket was not spent: the transfer can still be relayed.
    fetch, serve = yield pair(factory, "t-alone")
    assert tickets.spent == ["t-alone"]


@pytest_twisted.inlineCallbacks
def test_the_rate_cap_holds_each_direction(make_relay, tickets):
    factory = make_relay(max_bps=500_000)
    tickets.issue("t-capped")
    fetch, serve = yield pair(factory, "t-capped")
    data = os.urandom(1_500_000)
    started = time.monotonic()
    serve.transport.write(data)
    fetch.transport.write(data[:100_000])
    yield wait_until(lambda: fetch.received == len(data), timeout=30)
    seconds = time.monotonic() - started
    assert seconds >= 2.4, seconds  # 3 s at the cap, less the burst and one read
    assert fetch.digest.digest() == sha(data)
    assert serve.received == 100_000  # the other direction had its own budget
    print(f"1.5 MB at a 500 kB/s cap took {seconds:.2f} s")


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
def test_the_cap_and_back_pressure_do_not_undo_each_other(make_relay, tickets):
    factory = make_relay()
    tickets.issue("t-holds")
    fetch, serve = yield pair(factory, "t-holds")
    end = relay_ends(factory, "t-holds")["serve"]
    end.hold(relay_module.CAP)  # as if over the cap
    end.pauseProducing()  # as if the fetch side's buffer were full
    end.resumeProducing()  # ... and drained: the cap still holds
    serve.transport.write(b"held")
    yield sleep(0.3)
    assert fetch.received == 0 and end.holds == {relay_module.CAP}
    end.pauseProducing()
    end.release(relay_module.CAP)  # the cap lets go: back-pressure still holds
    yield sleep(0.3)
    assert fetch.received == 0
    end.resumeProducing()
    yield wait_until(lambda: fetch.received == 4)
    assert end.holds == set()


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


@pytest_twisted.inlineCallbacks
def test_at_most_max_relays_at_once(make_relay, tickets):
    factory = make_relay(max_relays=2)
    for transfer in ("t-1", "t-2", "t-3"):
        tickets.issue(transfer)
    waiting = []
    for transfer in ("t-1", "t-2"):
        waiting.append((yield connect(factory, header(transfer, "fetch"))))
    yield wait_until(lambda: len(factory.relays) == 2)
    newcomer = yield connect(factory, header("t-3", "fetch"))
    yield wait_until(lambda: newcomer.closed)
    # Two connections still sending their headers: a third takes the
    # place of the one that has waited longest.
    idle = [(yield connect(factory)), (yield connect(factory))]
    yield wait_until(lambda: factory.unpaired == 2)
    extra = yield connect(factory)
    yield wait_until(lambda: idle[0].closed)
    assert factory.unpaired == 2 and not idle[1].closed and not extra.closed
    for peer in (idle[1], extra):
        peer.transport.loseConnection()
    yield wait_until(lambda: factory.unpaired == 0)
    # The other sides of the two relays still pair.
    serve = yield connect(factory, header("t-1", "serve") + b"ok")
    yield wait_until(lambda: waiting[0].received == 2)
    assert not any(peer.closed for peer in waiting + [serve])


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


@pytest_twisted.inlineCallbacks
def test_silent_connections_from_many_addresses_give_way_to_real_peers(make_relay, tickets):
    factory = make_relay(max_relays=20)
    silent = []
    for i in range(5):  # 5 addresses x 4: every header slot taken
        for _ in range(4):
            silent.append((yield connect_from(factory, f"127.0.4.{i + 1}")))
    yield wait_until(lambda: factory.unpaired == 20)
    yield transfer_through(factory, tickets, "t-through-the-crowd")
    # The two oldest made way for the pair; the rest still wait.
    assert [p.closed for p in silent[:2]] == [True, True]
    assert not any(p.closed for p in silent[2:])
    for peer in silent:
        peer.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_a_relay_that_carries_nothing_is_cut(make_relay, tickets):
    factory = make_relay(idle_timeout=0.6)
    tickets.issue("t-quiet")
    tickets.issue("t-busy")
    quiet = yield pair(factory, "t-quiet")
    busy = yield pair(factory, "t-busy")
    started = time.monotonic()
    while time.monotonic() - started < 1.5:  # a byte every 0.2 s keeps it
        busy[1].transport.write(b".")
        yield sleep(0.2)
    assert all(peer.closed for peer in quiet)
    assert not any(peer.closed for peer in busy)
    assert "t-quiet" not in factory.relays and busy[0].received >= 7
    for peer in busy:
        peer.transport.loseConnection()



def test_the_wait_for_a_debt_pays_it_whatever_the_clocks_rounding(clock):
    bucket = relay_module.ByteBucket(500_000, clock.seconds())
    wait = bucket.spend(65536, clock.seconds())
    assert wait > 0
    clock.advance(wait)  # at 1.7e9 s, 0.13 s is not exact
    assert bucket.spend(0, clock.seconds()) == 0.0
