"""Kick, liveness, flood control, per-IP cap and slow readers: each acts
on one client while the others keep receiving. The rules between client
and server (a kick, keepalives against the idle timeout, a fast sender's
window) run on in-memory connections and a fake clock; a flood, the
per-IP cap and a client that does not read over real loopback sockets."""

import time

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim

from spchat import wire
from spchat.client.pins import PinStore
from spchat.client.protocol import ChatClientProtocol
from spchat.client.session import ChatClient
from spchat.server.core import ChatCore
from spchat.server.identity import load_or_create_server_key
from spchat.server.protocol import ChatServerFactory
from spchat.server.rules import TokenBucket
from spchat.tap import SWEEP_SECONDS, core_limits

from helpers import Silent
from conftest import (Recorder, connect_client, server_config, start_service, stop_services,
                      wait_until)


@pytest.fixture
def make_server(tmp_path):
    services = []

    def make(**options):
        services.append(start_service(server_config(tmp_path / f"data{len(services)}", **options)))
        return services[-1]

    yield make
    stop_services(*services)


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


def texts(client):
    return [m.text for m in client.rec.of(wire.RoomMessage)]


@pytest_twisted.inlineCallbacks
def test_flooding_client_is_cut_while_others_keep_receiving(make_server, pins):
    server = make_server(**{"flood-burst": "5", "flood-rate": "5", "flood-queue": "10"})
    alice = yield connect_client(server, pins, "alice")
    mallory = yield connect_client(server, pins, "mallory")
    # A client that ignores the window it was given.
    for i in range(40):
        mallory.proto.send_message(wire.Say(f"spam {i}", f"m{i}"))
    yield wait_until(lambda: mallory.status.state == "offline")
    assert mallory.status.reason == "disconnected for sending too many messages too fast"
    assert "flood" in [e.code for e in mallory.rec.of(wire.Error)]
    alice.say("still fine")
    yield wait_until(lambda: "still fine" in texts(alice))
    assert len([t for t in texts(alice) if t.startswith("spam")]) == 5  # only the burst


@pytest_twisted.inlineCallbacks
def test_connections_per_ip_are_capped(make_server, pins):
    server = make_server(**{"max-connections-per-ip": "3"})
    alice = yield connect_client(server, pins, "alice")
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.address.port)
    held = []
    for _ in range(2):
        held.append((yield connectProtocol(endpoint, Silent())))
    refused = yield connectProtocol(endpoint, Silent())
    yield wait_until(lambda: not refused.open)
    assert all(p.open for p in held)
    # Another address is not affected.
    other = TCP4ClientEndpoint(reactor, "127.0.0.1", server.address.port, bindAddress=("127.0.0.2", 0))
    accepted = yield connectProtocol(other, Silent())
    yield sleep(0.1)
    assert accepted.open
    alice.say("hello")
    yield wait_until(lambda: "hello" in texts(alice))
    for p in held + [accepted]:
        p.transport.loseConnection()


class NeverReads:
    """A logged-in client whose socket is never read again."""

    def channel_open(self, proto):
        proto.send_message(wire.Login("sleepy"))

    def message_received(self, msg):
        if isinstance(msg, wire.Welcome):
            self.proto.transport.pauseProducing()  # stop reading: the kernel buffers fill

    def connection_lost(self, reason, proto=None):
        pass


@pytest_twisted.inlineCallbacks
def test_a_client_that_does_not_read_is_cut_and_the_others_are_not(make_server, pins):
    server = make_server(**{
        "send-buffer-bytes": "65536", "flood-burst": "10000", "flood-rate": "100000",
        "flood-queue": "10000", "max-message-bytes": "8000",
    })
    alice = yield connect_client(server, pins, "alice")
    bob = yield connect_client(server, pins, "bob")
    sleepy = NeverReads()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.address.port)
    sleepy.proto = yield connectProtocol(
        endpoint, ChatClientProtocol(reactor, lambda fp: None, sleepy)
    )
    yield wait_until(lambda: "sleepy" in server.core.by_key)
    session = server.core.by_key["sleepy"]
    big = "x" * 7900
    sent = 0
    # Until the server gives up on sleepy: the kernel buffers take a few MB,
    # then its buffer must stay undrained for SLOW_READER_SECONDS.
    deadline = time.monotonic() + 20
    while session.link is not None and time.monotonic() < deadline:
        for _ in range(20):
            alice.say(f"{sent} {big}")
            sent += 1
        yield sleep(0.02)
    assert session.state.value == "reconnecting"  # cut by the server, may resume
    try:
        yield wait_until(lambda: not alice.outbox and len(texts(bob)) == sent, timeout=30)
    except AssertionError:
        raise AssertionError(f"sent {sent}, bob has {len(texts(bob))}, outbox {len(alice.outbox)}, {alice.status}")
    assert [int(t.split()[0]) for t in texts(bob)] == list(range(sent))
    sleepy.proto.transport.abortConnection()


# --- in memory, on a fake clock: the rules between client and server ---------


class MemoryWorld:
    """A chat server and its clients on one MemoryReactorClock: every timer
    (keepalives, idle sweeps, retries, flood windows) on the fake clock, each
    connection an iosim pump. The bytes are the real protocol's, Noise and
    all; only the sockets are not there."""

    PORT = 5000

    def __init__(self, data_dir, **options):
        cfg = server_config(data_dir, **options)
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_700_000_000)
        self.core = ChatCore(self.reactor, core_limits(cfg))
        self.factory = ChatServerFactory(
            self.core, load_or_create_server_key(data_dir), self.reactor,
            handshake_timeout=cfg.handshake_timeout, send_buffer_bytes=cfg.send_buffer_bytes,
            max_connections_per_ip=cfg.max_connections_per_ip)
        self.addresses = (IPv4Address("TCP", "127.0.0.1", port) for port in range(40000, 50000))
        self.sweeps = task.LoopingCall(self.core.sweep)  # as the service runs them
        self.sweeps.clock = self.reactor
        self.sweeps.start(SWEEP_SECONDS, now=False)
        self.pins = PinStore(data_dir / "client-config")
        self.pumps = []

    def client(self, name, **options):
        rec = Recorder()
        client = ChatClient(self.reactor, "127.0.0.1", self.PORT, name, self.pins,
                            on_event=rec.events.append, on_status=rec.statuses.append,
                            presence=False, **options)
        client.rec = rec
        client.connect()
        self.run_until(lambda: client.status.state == "connected")
        return client

    def turn(self, seconds):
        """Connect what asks to, carry every byte, then move the clock on."""
        while self.reactor.tcpClients:
            self._accept(*self.reactor.tcpClients.pop(0)[:3])
            self.reactor.connectors.pop(0)
        for pump in self.pumps:
            pump.flush(advanceClock=False)
        self.pumps = [p for p in self.pumps if not (p.clientIO.disconnected
                                                     and p.serverIO.disconnected)]
        self.reactor.advance(seconds)

    def _accept(self, host, port, client_factory):
        address = next(self.addresses)
        server = self.factory.buildProtocol(address)
        client = client_factory.buildProtocol(IPv4Address("TCP", host, port))
        self.pumps.append(iosim.connect(
            server, iosim.FakeTransport(server, True, peerAddress=address),
            client, iosim.FakeTransport(client, False), greet=False, clock=self.reactor))

    def run_for(self, seconds, step=0.05):
        end = self.reactor.seconds() + seconds
        while self.reactor.seconds() < end:
            self.turn(min(step, end - self.reactor.seconds()))

    def run_until(self, predicate, limit=60.0, step=0.05):
        started = self.reactor.seconds()
        self.turn(0)
        while not predicate():
            assert self.reactor.seconds() - started < limit, f"not within {limit} s: {predicate}"
            self.turn(step)


@pytest.fixture
def world(tmp_path):
    made = []

    def make(**options):
        made.append(MemoryWorld(tmp_path / f"world{len(made)}", **options))
        return made[-1]

    return make


def test_the_wait_for_a_token_gives_one_whatever_the_clocks_rounding(clock):
    bucket = TokenBucket(50, 5, clock.seconds())
    while bucket.take(clock.seconds()):
        pass  # the burst spent
    for _ in range(100):
        clock.advance(bucket.wait(clock.seconds()))  # at 1.7e9 s, 0.02 s is not exact
        assert bucket.take(clock.seconds())


def test_kicked_client_shows_the_reason_and_stays_away(world):
    server = world()
    alice, bob = server.client("alice"), server.client("bob")
    assert server.core.kick("bob", "spamming links")
    server.run_until(lambda: bob.status.state == "offline")
    assert bob.status.reason == "you were kicked: spamming links"
    assert bob.status.recovery == "never"
    server.run_for(30)  # many times the reconnect delay: nothing comes back
    assert "bob" not in server.core.by_key
    bob.reconnect()  # not even by hand
    server.run_for(5)
    assert "bob" not in server.core.by_key
    server.run_until(lambda: any(n.text == "bob was kicked (spamming links)"
                                 for n in alice.rec.of(wire.Notice)))
    alice.say("peace at last")
    server.run_until(lambda: "peace at last" in texts(alice))


def test_a_reader_keeps_its_place_past_many_timeouts_shown_idle(world):
    server = world(**{"idle-timeout": "60", "idle-after": "50"})
    alice, bob = server.client("alice"), server.client("bob")
    first = alice.proto
    server.run_for(400, step=1)  # six timeouts, hundreds of sweeps: alice only reads
    bob.say("still there?")
    server.run_until(lambda: "still there?" in texts(alice))
    assert alice.proto is first and not alice.rec.disconnects  # never cut
    assert alice.keepalive.sent >= 10
    assert ("alice", "idle") in server.core.presence_snapshot()  # what the beacon tells


def test_a_silent_connection_is_freed_and_its_client_resumes(world):
    server = world(**{"idle-timeout": "60"})
    alice, bob = server.client("alice"), server.client("bob")
    silent = alice.proto
    alice.keepalive.stop()  # as if frozen: nothing more comes from it
    server.run_for(59)
    assert not alice.rec.disconnects
    server.run_until(lambda: alice.rec.disconnects, limit=3)  # the next sweep
    assert alice.rec.disconnects == ["nothing heard from this connection for 60 s"]
    assert not any(link.conn is silent for link in server.core.links)  # freed
    server.run_until(lambda: alice.status.state == "connected" and alice.status.resumed)
    assert bob.status.state == "connected" and not bob.rec.disconnects
    bob.say("welcome back")
    server.run_until(lambda: "welcome back" in texts(alice))
    assert not [n for n in bob.rec.of(wire.Notice) if n.kind in ("leave", "quit")]


def test_well_behaved_fast_sender_is_delayed_not_cut(world):
    server = world(**{"flood-burst": "5", "flood-rate": "50", "flood-queue": "10"})
    alice = server.client("alice")
    started = server.reactor.seconds()
    for i in range(60):
        alice.say(f"line {i}")  # the client keeps to its window by itself
    server.run_until(lambda: len(texts(alice)) == 60, step=0.01)
    # The burst at once, the rest at the rate.
    assert (60 - 5) / 50 - 0.1 <= server.reactor.seconds() - started <= 60 / 50 + 0.2
    assert alice.status.state == "connected" and not alice.outbox
