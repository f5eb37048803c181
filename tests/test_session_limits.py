"""Kick, liveness, flood control, per-IP cap and slow readers over real
loopback sockets: each acts on one client while the others keep receiving."""

import time

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from spchat import wire
from spchat.client.protocol import ChatClientProtocol
from spchat.server.rules import TokenBucket

from conftest import connect_client, server_config, start_service, stop_services, wait_until


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
def test_kicked_client_shows_the_reason_and_stays_away(make_server, pins):
    server = make_server()
    alice = yield connect_client(server, pins, "alice")
    bob = yield connect_client(server, pins, "bob")
    assert server.core.kick("bob", "spamming links")
    yield wait_until(lambda: bob.status.state == "offline")
    assert bob.status.reason == "you were kicked: spamming links"
    assert bob.status.recovery == "never"
    yield sleep(0.3)  # many times the reconnect delay: nothing comes back
    assert "bob" not in server.core.by_key
    bob.reconnect()  # not even by hand
    yield sleep(0.1)
    assert "bob" not in server.core.by_key
    yield wait_until(lambda: any(n.text == "bob was kicked (spamming links)"
                                 for n in alice.rec.of(wire.Notice)))
    alice.say("peace at last")
    yield wait_until(lambda: "peace at last" in texts(alice))


@pytest_twisted.inlineCallbacks
def test_a_reader_keeps_its_place_past_many_timeouts_shown_idle(make_server, pins):
    server = make_server(**{"idle-timeout": "0.6", "idle-after": "0.5"})
    alice = yield connect_client(server, pins, "alice")
    bob = yield connect_client(server, pins, "bob")
    first = alice.proto
    yield sleep(4)  # six timeouts, four sweeps: alice only reads
    bob.say("still there?")
    yield wait_until(lambda: "still there?" in texts(alice))
    assert alice.proto is first and not alice.rec.disconnects  # never cut
    assert alice.keepalive.sent >= 10
    yield wait_until(lambda: ("alice", "idle") in server.core.presence_snapshot())
    yield wait_until(lambda: ("alice", "idle", "member") in bob.room_members("lobby"))


@pytest_twisted.inlineCallbacks
def test_a_silent_connection_is_freed_and_its_client_resumes(make_server, pins):
    server = make_server(**{"idle-timeout": "0.6"})
    alice = yield connect_client(server, pins, "alice")
    bob = yield connect_client(server, pins, "bob")
    silent = alice.proto
    alice.keepalive.stop()  # as if frozen: nothing more comes from it
    yield wait_until(lambda: alice.rec.disconnects)
    assert alice.rec.disconnects == ["nothing heard from this connection for 0.6 s"]
    assert not any(link.conn is silent for link in server.core.links)  # freed
    yield wait_until(lambda: alice.status.state == "connected" and alice.status.resumed)
    assert bob.status.state == "connected" and not bob.rec.disconnects
    bob.say("welcome back")
    yield wait_until(lambda: "welcome back" in texts(alice))
    assert not [n for n in bob.rec.of(wire.Notice) if n.kind in ("leave", "quit")]


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
def test_well_behaved_fast_sender_is_delayed_not_cut(make_server, pins):
    server = make_server(**{"flood-burst": "5", "flood-rate": "50", "flood-queue": "10"})
    alice = yield connect_client(server, pins, "alice")
    for i in range(60):
        alice.say(f"line {i}")  # the client keeps to its window by itself
    yield wait_until(lambda: len(texts(alice)) == 60, timeout=20)
    assert alice.status.state == "connected" and not alice.outbox


class Silent(protocol.Protocol):
    def connectionLost(self, reason):
        self.gone = True


@pytest_twisted.inlineCallbacks
def test_connections_per_ip_are_capped(make_server, pins):
    server = make_server(**{"max-connections-per-ip": "3"})
    alice = yield connect_client(server, pins, "alice")
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.address.port)
    held = []
    for _ in range(2):
        held.append((yield connectProtocol(endpoint, Silent())))
    refused = yield connectProtocol(endpoint, Silent())
    yield wait_until(lambda: getattr(refused, "gone", False))
    assert not any(getattr(p, "gone", False) for p in held)
    # Another address is not affected.
    other = TCP4ClientEndpoint(reactor, "127.0.0.1", server.address.port, bindAddress=("127.0.0.2", 0))
    accepted = yield connectProtocol(other, Silent())
    yield sleep(0.1)
    assert not getattr(accepted, "gone", False)
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


def test_the_wait_for_a_token_gives_one_whatever_the_clocks_rounding(clock):
    bucket = TokenBucket(50, 5, clock.seconds())
    while bucket.take(clock.seconds()):
        pass  # the burst spent
    for _ in range(100):
        clock.advance(bucket.wait(clock.seconds()))  # at 1.7e9 s, 0.02 s is not exact
        assert bucket.take(clock.seconds())
