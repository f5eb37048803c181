"""The presence beacon: its rules (cookies, rate limits, replays, moved
endpoints) on an in-memory UDP network and a fake clock; what crosses the
network (a real client served, a large room in parts, a closed port's
ICMP) over real UDP sockets on 127.0.0.1."""

import os
import socket

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from spchat import beacon
from spchat.client.presence import PresenceClient
from spchat.server.presence import CHANGE_GAP_SECONDS, PresenceServer

from conftest import wait_until
from helpers import run_for, run_until

ROOM = [("alice", "online"), ("bob", "idle"), ("carol", "reconnecting")]


# --- test doubles -------------------------------------------------------------


class Peer:
    def __init__(self, name):
        self.name = name
        self.keys = beacon.derive_keys(os.urandom(32))
        self.window = beacon.ReplayWindow()
        self.endpoint = None
        self.send_counter = 0


class Directory:
    """What the chat core offers the presence server."""

    def __init__(self, room=ROOM):
        self.room = list(room)
        self.peers = {}

    def add(self, name):
        peer = Peer(name)
        self.peers[peer.keys.key_id] = peer
        return peer

    def beacon_peer(self, key_id):
        return self.peers.get(key_id)

    def beacon_peers(self):
        return list(self.peers.values())

    def presence_snapshot(self):
        return list(self.room)


class Sink(DatagramProtocol):
    """A socket that records what it receives (an attacker, a NAT's new port)."""

    def __init__(self):
        self.datagrams = []

    @property
    def received_bytes(self):
        return sum(len(d) for d, _ in self.datagrams)

    def datagramReceived(self, data, addr):
        self.datagrams.append((data, addr))

    def send(self, data, addr):
        self.transport.write(data, addr)


class Relay(DatagramProtocol):
    """Forwards between one client and the server, keeping what the client sent."""

    def __init__(self, server):
        self.server = server
        self.client = None
        self.captured = []

    def datagramReceived(self, data, addr):
        if addr == self.server:
            if self.client is not None:
                self.transport.write(data, self.client)
        else:
            self.client = addr
            self.captured.append(data)
            self.transport.write(data, self.server)


class FakeUDPTransport:
    def __init__(self):
        self.written = []

    def write(self, data, addr=None):
        self.written.append((data, addr))

    def connect(self, host, port):
        self.connected = (host, port)


def serve_on_clock(directory, clock, interval):
    """A presence server on a fake clock, writing to a FakeUDPTransport."""
    server = PresenceServer(directory, clock, interval=interval)
    transport = FakeUDPTransport()
    server.makeConnection(transport)
    return server, transport


class Net:
    """Every port a test opens, closed at the end."""

    def __init__(self, clock=reactor):
        self.clock = clock
        self.ports = []

    def listen(self, proto):
        port = reactor.listenUDP(0, proto, interface="127.0.0.1")
        self.ports.append(port)
        return port

    @staticmethod
    def addr(port):
        return ("127.0.0.1", port.getHost().port)

    def serve(self, directory, interval, **kw):
        server = PresenceServer(directory, self.clock, interval=interval, **kw)
        return server, self.addr(self.listen(server))

    def client(self, peer, server_addr, interval=0.1):
        rec = {"snapshots": [], "silences": 0}

        def silent():
            rec["silences"] += 1

        client = PresenceClient(peer.keys, server_addr, self.clock, interval,
                                rec["snapshots"].append, silent)
        client.rec = rec
        client.port = self.listen(client)
        return client


class MemoryPort:
    """A UDP port of a MemoryNet, and its protocol's transport."""

    def __init__(self, net, proto, number):
        self.net, self.proto = net, proto
        self.address = ("127.0.0.1", number)

    def getHost(self):
        return IPv4Address("UDP", *self.address)

    def write(self, data, addr):
        self.net.carry(data, self.address, tuple(addr))

    def stopListening(self):
        if self.net.bound.get(self.address) is self:
            del self.net.bound[self.address]
            self.proto.doStop()


class MemoryNet(Net):
    """Net on a fake clock: each datagram reaches the port bound at its
    address on the next turn (none is lost; to an unbound port, nowhere)."""

    def __init__(self, clock):
        super().__init__(clock)
        self.bound = {}
        self.numbers = iter(range(40000, 50000))

    def listen(self, proto):
        port = MemoryPort(self, proto, next(self.numbers))
        self.bound[port.address] = port
        proto.makeConnection(port)
        return port

    def carry(self, data, source, destination):
        self.clock.callLater(0, self._deliver, data, source, destination)

    def _deliver(self, data, source, destination):
        port = self.bound.get(destination)
        if port is not None:
            port.proto.datagramReceived(data, source)


@pytest.fixture
def memory_net(clock):
    return MemoryNet(clock)


@pytest_twisted.async_yield_fixture
async def net():
    n = Net()
    yield n
    await defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in n.ports])


def pause(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


def flip_last(data):
    return data[:-1] + bytes([data[-1] ^ 1])


def open_snapshot(peer, datagram):
    counter, plaintext = peer.keys.s2c_cipher.open(datagram)
    return counter, beacon.decode_snapshot(plaintext)


def open_cookie(peer, datagram):
    counter, plaintext = peer.keys.s2c_cipher.open(datagram)
    return counter, beacon.parse_cookie_reply(plaintext)


def hello(peer, counter, cookie=None):
    return peer.keys.c2s_cipher.seal(peer.keys.key_id, counter, beacon.cookie_hello(cookie))


# --- real sockets -------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_client_proves_its_endpoint_and_receives_snapshots(net):
    directory = Directory()
    alice = directory.add("alice")
    server, server_addr = net.serve(directory, interval=0.05)
    client = net.client(alice, server_addr, interval=0.05)
    got = client.rec["snapshots"]

    yield wait_until(lambda: len(got) >= 3)
    assert got[0] == tuple(ROOM)
    assert alice.endpoint == Net.addr(client.port)
    # hello, cookie, the hello echoing it, then snapshots; later hellos are
    # keepalives from the proven endpoint and need no cookie.
    assert client.cookies == 1 == server.cookies_sent
    assert server.accepted >= 2 and not server.dropped
    assert client.server_interval == 0.05 and not client.dropped

    directory.room[1] = ("bob", "online")
    directory.room.append(("dave", "idle"))
    yield wait_until(lambda: got[-1] == (*ROOM[:1], ("bob", "online"), ROOM[2], ("dave", "idle")))
    assert client.rec["silences"] == 0


def test_changed_is_delivered_at_once_and_coalesced(memory_net, clock):
    directory = Directory()
    alice = directory.add("alice")
    server, server_addr = memory_net.serve(directory, interval=60)  # the loop never fires here
    client = memory_net.client(alice, server_addr, interval=60)
    got = client.rec["snapshots"]
    run_until(clock, lambda: len(got) == 1)

    directory.room.pop()
    for _ in range(3):
        server.changed()
    clock.advance(0)  # at once: no wait on the clock
    assert len(got) == 2
    assert got[1] == tuple(ROOM[:2])
    run_for(clock, 0.2)
    # one cookie, the first snapshot, the coalesced one
    assert len(got) == 2 and server.sent == 3 == alice.send_counter
    assert server.cookies_sent == 1 and client.hellos == 2


def test_snapshots_go_only_to_proven_endpoints(memory_net, clock):
    directory = Directory()
    alice, bob = directory.add("alice"), directory.add("bob")
    server, server_addr = memory_net.serve(directory, interval=0.02)
    client = memory_net.client(alice, server_addr)
    run_until(clock, lambda: len(client.rec["snapshots"]) >= 5)
    server.changed()
    run_for(clock, 0.05)
    assert bob.endpoint is None and bob.send_counter == 0
    assert server.sent == alice.send_counter >= 5


def test_a_replayed_hello_from_another_port_gets_nothing(memory_net, clock):
    directory = Directory()
    alice = directory.add("alice")
    server, server_addr = memory_net.serve(directory, interval=0.02)
    relay = Relay(server_addr)
    relay_addr = Net.addr(memory_net.listen(relay))
    client = memory_net.client(alice, relay_addr)
    run_until(clock, lambda: client.rec["snapshots"])
    hello = relay.captured[0]
    assert beacon.open_datagram(alice.keys.c2s, hello) == (0, beacon.HELLO)

    attacker = Sink()
    memory_net.listen(attacker)
    for _ in range(3):
        attacker.send(hello, server_addr)
    run_until(clock, lambda: server.dropped["replayed"] == 3)
    run_for(clock, 0.1)  # several beacon periods
    assert attacker.received_bytes == 0
    assert alice.endpoint == relay_addr
    assert len(client.rec["snapshots"]) >= 3  # the real client is still served


def test_bad_and_unproven_datagrams_get_no_answer_and_are_counted(memory_net, clock):
    directory = Directory()
    alice, carol = directory.add("alice"), directory.add("carol")
    server, server_addr = memory_net.serve(directory, interval=0.02)
    client = memory_net.client(alice, server_addr)  # keeps the broadcast busy
    run_until(clock, lambda: client.rec["snapshots"])

    attacker = Sink()
    memory_net.listen(attacker)
    stranger = beacon.derive_keys(os.urandom(32))
    bad = {
        "truncated": [b"", b"x", carol.keys.key_id, os.urandom(31)],
        "unknown": [os.urandom(40), stranger.c2s_cipher.seal(stranger.key_id, 0, beacon.HELLO)],
        "forged": [
            carol.keys.key_id + os.urandom(40),
            carol.keys.s2c_cipher.seal(carol.keys.key_id, 0, beacon.HELLO),  # wrong direction
            beacon.seal(stranger.c2s, carol.keys.key_id, 0, beacon.HELLO),  # wrong key
            flip_last(carol.keys.c2s_cipher.seal(carol.keys.key_id, 0, beacon.HELLO)),
        ],
        # authentic, but not a hello: counted, never answered
        "garbage": [carol.keys.c2s_cipher.seal(carol.keys.key_id, 1, b"S\x00\xc8\x00\x01")],
    }
    for datagrams in bad.values():
        for d in datagrams:
            attacker.send(d, server_addr)
    expected = {reason: len(ds) for reason, ds in bad.items()}
    run_until(clock, lambda: dict(server.dropped) == expected)
    run_for(clock, 0.1)
    assert attacker.received_bytes == 0
    assert carol.endpoint is None and carol.send_counter == 0
    assert server.accepted >= 1  # alice's hellos only


def test_a_newer_hello_from_a_new_address_moves_the_endpoint_once_it_echoes_the_cookie(memory_net, clock):
    """NAT rebinding: the client's next hello comes from another port."""
    directory = Directory()
    alice = directory.add("alice")
    # No rate limit here: the rebinding follows the first proof within a second.
    server, server_addr = memory_net.serve(directory, interval=60, cookie_every=0)
    client = memory_net.client(alice, server_addr, interval=60)
    run_until(clock, lambda: client.rec["snapshots"])
    client_addr = Net.addr(client.port)
    assert alice.send_counter == 2  # the cookie, the first snapshot

    rebound, late = Sink(), Sink()
    rebound_addr = Net.addr(memory_net.listen(rebound))
    memory_net.listen(late)
    rebound.send(hello(alice, 100), server_addr)
    run_until(clock, lambda: rebound.datagrams)
    counter, cookie = open_cookie(alice, rebound.datagrams[0][0])
    assert counter == 2 and alice.endpoint == client_addr  # not moved yet

    rebound.send(hello(alice, 101, cookie), server_addr)
    run_until(clock, lambda: len(rebound.datagrams) == 2)
    assert alice.endpoint == rebound_addr
    assert open_snapshot(alice, rebound.datagrams[1][0]) == (3, (60.0, tuple(ROOM)))

    # An older hello that UDP delivered late is authentic and fresh, but it
    # must not move the endpoint back, and it is not answered.  Nor is a
    # cookie made for another address.
    late.send(hello(alice, 90), server_addr)
    late.send(hello(alice, 102, cookie), server_addr)
    run_until(clock, lambda: server.accepted == 5 and server.dropped["bad_cookie"] == 1)
    server.broadcast()  # the periodic beacon: it goes to the endpoint that proved itself
    run_until(clock, lambda: len(rebound.datagrams) == 3)
    assert alice.endpoint == rebound_addr and late.received_bytes == 0
    assert len(client.rec["snapshots"]) == 1


def test_a_client_moved_to_a_new_socket_proves_it_and_is_served_there(memory_net, clock):
    """NAT rebinding with the real client: a new port, a new cookie, snapshots."""
    directory = Directory()
    alice = directory.add("alice")
    server, server_addr = memory_net.serve(directory, interval=0.05)  # the default rate limit
    client = memory_net.client(alice, server_addr, interval=0.05)
    got = client.rec["snapshots"]
    run_until(clock, lambda: len(got) >= 2)
    old_addr = Net.addr(client.port)
    assert alice.endpoint == old_addr

    client.port.stopListening()
    moved = memory_net.listen(client)  # the same client, hellos continue from a new port
    new_addr = Net.addr(moved)
    assert new_addr != old_addr
    before = len(got)
    # The first hello from there may find the cookie rate limit (one a second
    # per peer) still closed; a later periodic hello gets the cookie.
    run_until(clock, lambda: len(got) >= before + 3)
    assert alice.endpoint == new_addr
    assert client.cookies == 2 == server.cookies_sent
    assert server.dropped.keys() <= {"rate_limited"} and not client.dropped


def test_a_forged_source_gets_one_cookie_no_larger_than_the_hello_and_never_a_snapshot(memory_net, clock):
    """A key holder sends authentic hellos with a victim's source address."""
    directory = Directory()
    alice = directory.add("alice")
    # No rate limit: one hello, one cookie, whatever else the peer asked for.
    server, server_addr = memory_net.serve(directory, interval=0.02, cookie_every=0)
    client = memory_net.client(alice, server_addr)  # the proven endpoint, kept busy
    run_until(clock, lambda: client.rec["snapshots"])
    client_addr = Net.addr(client.port)

    # The victim's socket stands for the forged source: the hello arrives
    # from it, and it never echoes what it receives.
    victim = Sink()
    memory_net.listen(victim)
    forged = hello(alice, 1000)
    victim.send(forged, server_addr)
    run_until(clock, lambda: victim.datagrams)
    run_for(clock, 0.2)  # ten beacon periods
    assert len(victim.datagrams) == 1
    cookie_datagram = victim.datagrams[0][0]
    assert len(cookie_datagram) <= len(forged)
    open_cookie(alice, cookie_datagram)  # a cookie, not a snapshot
    assert alice.endpoint == client_addr
    assert server.cookies_sent == 2  # the client's and the victim's
    assert len(client.rec["snapshots"]) >= 5  # the real client is still served


def test_an_unproven_address_never_receives_more_than_it_sent(memory_net, clock):
    directory = Directory()
    carol = directory.add("carol")
    server, server_addr = memory_net.serve(directory, interval=0.02)
    victim = Sink()
    memory_net.listen(victim)
    sent = 0
    counter = 0
    # A stream of authentic hellos, some echoing wrong cookies, for 1.5 s:
    # the rate limit lets two cookies through.
    for _ in range(30):
        for cookie in (None, os.urandom(16)):
            d = hello(carol, counter, cookie)
            counter += 1
            victim.send(d, server_addr)
            sent += len(d)
        run_for(clock, 0.05)
        assert victim.received_bytes <= sent
    run_for(clock, 0.1)
    assert victim.received_bytes <= sent
    assert len(victim.datagrams) == 2 == server.cookies_sent
    assert {len(d) for d, _ in victim.datagrams} == {len(beacon.HELLO) + 32}
    for d, _ in victim.datagrams:
        open_cookie(carol, d)
    assert carol.endpoint is None
    assert server.dropped["bad_cookie"] == counter // 2
    assert server.dropped["rate_limited"] == counter // 2 - 2


def test_a_wrong_cookie_is_dropped_counted_and_not_answered(memory_net, clock):
    directory = Directory()
    alice, bob = directory.add("alice"), directory.add("bob")
    server, server_addr = memory_net.serve(directory, interval=0.02, cookie_every=0)
    a, b = Sink(), Sink()
    a_addr = Net.addr(memory_net.listen(a))
    memory_net.listen(b)
    a.send(hello(alice, 0), server_addr)
    b.send(hello(bob, 0), server_addr)
    run_until(clock, lambda: a.datagrams and b.datagrams)
    _, cookie = open_cookie(alice, a.datagrams[0][0])
    _, bobs = open_cookie(bob, b.datagrams[0][0])
    wrong = [
        hello(alice, 1, flip_last(cookie)),
        hello(alice, 2, os.urandom(16)),
        hello(alice, 3, bobs),  # another session's cookie
    ]
    for d in wrong:
        a.send(d, server_addr)
    b.send(hello(alice, 4, cookie), server_addr)  # echoed from another address
    run_until(clock, lambda: server.dropped["bad_cookie"] == 4)
    run_for(clock, 0.1)
    assert len(a.datagrams) == len(b.datagrams) == 1
    assert alice.endpoint is None is bob.endpoint
    assert server.accepted == 2

    a.send(hello(alice, 5, cookie), server_addr)  # the right one still works
    run_until(clock, lambda: len(a.datagrams) >= 3)
    assert alice.endpoint == a_addr
    assert open_snapshot(alice, a.datagrams[1][0])[1] == (0.02, tuple(ROOM))


@pytest_twisted.inlineCallbacks
def test_a_large_room_arrives_in_parts_and_is_put_back_together(net):
    room = [(f"member{i:04d}", beacon.STATES[i % 3]) for i in range(600)]
    directory = Directory(room)
    alice = directory.add("alice")
    server, server_addr = net.serve(directory, interval=60)
    client = net.client(alice, server_addr, interval=60)
    yield wait_until(lambda: client.rec["snapshots"])
    assert client.rec["snapshots"] == [tuple(room)]
    assert alice.send_counter == 1 + len(beacon.encode_snapshot_parts(60, room)) > 2


@pytest_twisted.inlineCallbacks
def test_a_closed_server_port_does_not_kill_the_client(net):
    """ICMP port unreachable must not stop the hellos or the watchdog.

    (On a connected UDP socket the epoll reactor would close the port.)
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()
    s.close()
    client = net.client(Directory().add("alice"), closed, interval=0.02)
    yield wait_until(lambda: client.hellos >= 4 and client.rec["silences"] >= 2)
    assert client.port.connected and not client.dropped
    client.connectionRefused()  # should a reactor report it anyway
    assert client.refused == 1


# --- timers, on a task.Clock --------------------------------------------------


def test_watchdog_reports_silence_every_three_intervals():
    clock = task.Clock()
    net = MemoryNet(clock)
    alice = Directory().add("alice")
    silent_server = Sink()
    server_addr = Net.addr(net.listen(silent_server))
    snapshots, silences = [], []
    client = PresenceClient(alice.keys, server_addr, clock, 1.0, snapshots.append,
                            lambda: silences.append(clock.seconds()))
    net.listen(client)

    clock.advance(2.9)
    assert silences == []
    clock.advance(0.1)
    assert silences == [3.0]
    clock.advance(3.0)
    assert silences == [3.0, 6.0]

    # A valid beacon resets the watchdog.
    datagram = alice.keys.s2c_cipher.seal(alice.keys.key_id, 0, beacon.encode_snapshot(1.0, ROOM))
    client.datagramReceived(datagram, server_addr)
    assert snapshots == [tuple(ROOM)]
    clock.advance(2.9)
    assert silences == [3.0, 6.0]
    clock.advance(0.1)
    assert silences == [3.0, 6.0, 9.0]

    # Meanwhile a hello went out at start and every three intervals.
    assert len(silent_server.datagrams) == 4
    hellos = [beacon.open_datagram(alice.keys.c2s, d) for d, _ in silent_server.datagrams]
    assert hellos == [(c, beacon.HELLO) for c in range(4)]

    client.stop()
    clock.advance(100)
    assert len(silences) == 3 and not clock.getDelayedCalls()


def test_client_drops_what_is_not_a_fresh_authentic_beacon():
    clock = task.Clock()
    alice = Directory().add("alice")
    got = []
    client = PresenceClient(alice.keys, ("127.0.0.1", 9), clock, 1.0, got.append, lambda: None)
    client.makeConnection(FakeUDPTransport())
    seal = alice.keys.s2c_cipher.seal
    key_id = alice.keys.key_id
    good = seal(key_id, 5, beacon.encode_snapshot(1.0, ROOM))
    for d in [
        b"short",
        os.urandom(40),
        key_id + os.urandom(40),
        alice.keys.c2s_cipher.seal(key_id, 0, beacon.HELLO),  # our own hello reflected
        good,
        good,  # replayed
        seal(key_id, 4, beacon.encode_snapshot(1.0, [])),  # older than what was shown
        seal(key_id, 6, b"nonsense"),
    ]:
        client.datagramReceived(d, ("127.0.0.1", 9))
    assert got == [tuple(ROOM)]
    assert dict(client.dropped) == {
        "truncated": 1, "unknown": 1, "forged": 2, "replayed": 1, "stale": 1, "garbage": 1,
    }
    client.stop()


def test_server_coalesces_changes_and_broadcasts_on_its_clock():
    clock = task.Clock()
    directory = Directory()
    alice, bob = directory.add("alice"), directory.add("bob")
    alice.endpoint = ("127.0.0.1", 4000)
    server, transport = serve_on_clock(directory, clock, 2.0)

    for _ in range(5):
        server.changed()
    assert transport.written == []
    clock.advance(0)
    assert len(transport.written) == 1 and transport.written[0][1] == ("127.0.0.1", 4000)
    clock.advance(2.0)
    clock.advance(2.0)
    assert [open_snapshot(alice, d)[0] for d, _ in transport.written] == [0, 1, 2]
    assert bob.send_counter == 0

    server.changed()
    server.doStop()  # the port closed: the loop and the pending send are cancelled
    assert not clock.getDelayedCalls()
    clock.advance(10)
    server.changed()
    clock.advance(0)
    assert len(transport.written) == 3


def test_change_sends_are_spaced_and_only_when_the_snapshot_differs():
    # A join storm calls changed() for every join: the beacon must not build
    # and send a snapshot each time.
    clock = task.Clock()
    directory = Directory()
    alice = directory.add("alice")
    alice.endpoint = ("127.0.0.1", 4000)
    server, transport = serve_on_clock(directory, clock, 60.0)
    server.changed()
    clock.advance(0)
    assert len(transport.written) == 1
    for name in ("dan", "eve", "fay"):
        directory.room.append((name, "online"))
        server.changed()
        clock.advance(0)
    assert len(transport.written) == 1  # within the gap: held back
    clock.advance(CHANGE_GAP_SECONDS)
    assert len(transport.written) == 2  # one snapshot with all three
    assert len(open_snapshot(alice, transport.written[1][0])[1][1]) == len(ROOM) + 3
    clock.advance(1)
    server.changed()  # nothing actually changed
    clock.advance(0)
    assert len(transport.written) == 2
    server.doStop()


def test_server_survives_a_failing_directory_and_logs_drops_sparingly():
    clock = task.Clock()
    events = []

    class Broken(Directory):
        def beacon_peer(self, key_id):
            raise RuntimeError("boom")

        def presence_snapshot(self):
            raise RuntimeError("boom")

    directory = Broken()
    directory.add("alice").endpoint = ("127.0.0.1", 4000)
    server = PresenceServer(directory, clock, interval=1.0)
    server.log = Logger(observer=events.append)
    server.makeConnection(FakeUDPTransport())
    server.datagramReceived(os.urandom(40), ("127.0.0.1", 5))
    assert server.dropped["error"] == 1
    for _ in range(3):
        clock.advance(1.0)  # the loop survives every failure...
    assert server._loop.running
    # ...and a persistent bug is logged once a minute, not once a beacon
    assert [e["log_format"] for e in events] == [
        "presence datagram from {addr} failed", "presence broadcast failed"]

    def drop_lines():
        return [e for e in events if "dropped" in e["log_format"]]

    for _ in range(100):
        server.datagramReceived(b"x", ("127.0.0.1", 5))
    clock.advance(59)
    server.datagramReceived(b"x", ("127.0.0.1", 5))
    assert len(drop_lines()) == 1
    clock.advance(1)
    server.datagramReceived(b"x", ("127.0.0.1", 5))
    assert [e["total"] for e in drop_lines()] == [1, 102]
    assert server.dropped["truncated"] == 102
    server.doStop()


@pytest.mark.parametrize("interval", [0, 1000])
def test_server_refuses_an_interval_a_snapshot_cannot_carry(interval):
    with pytest.raises(ValueError):
        PresenceServer(Directory(), task.Clock(), interval=interval)


def test_the_cookie_exchange_on_a_clock():
    clock = task.Clock()
    clock.advance(1000)
    directory = Directory()
    alice = directory.add("alice")
    server, transport = serve_on_clock(directory, clock, 60)
    here, there = ("127.0.0.1", 4000), ("127.0.0.1", 4001)

    first = hello(alice, 0)
    server.datagramReceived(first, here)
    [(reply, to)] = transport.written
    assert to == here and len(reply) == len(first) == 49
    _, cookie = open_cookie(alice, reply)
    assert alice.endpoint is None

    # The cookie lives for this 60 s bucket and the next.
    clock.advance(121)
    server.datagramReceived(hello(alice, 1, cookie), here)
    assert server.dropped == {"bad_cookie": 1} and len(transport.written) == 1
    server.datagramReceived(hello(alice, 2), here)
    _, cookie = open_cookie(alice, transport.written[1][0])
    clock.advance(60)
    server.datagramReceived(hello(alice, 3, cookie), here)
    assert alice.endpoint == here
    assert open_snapshot(alice, transport.written[2][0]) == (2, (60.0, tuple(ROOM)))

    # A keepalive from the proven endpoint triggers nothing, a hello from
    # elsewhere only a cookie, and the endpoint stays until that is echoed.
    server.datagramReceived(hello(alice, 4), here)
    assert len(transport.written) == 3
    clock.advance(1)
    server.datagramReceived(hello(alice, 5), there)
    assert transport.written[3][1] == there and alice.endpoint == here
    _, cookie = open_cookie(alice, transport.written[3][0])
    server.datagramReceived(hello(alice, 6, cookie), there)
    assert alice.endpoint == there and transport.written[4][1] == there
    assert server.accepted == 6 and server.cookies_sent == 3
    server.doStop()


def test_cookie_replies_are_rate_limited_per_peer():
    clock = task.Clock()
    directory = Directory()
    alice, bob = directory.add("alice"), directory.add("bob")
    server, transport = serve_on_clock(directory, clock, 0.5)
    victim = ("127.0.0.1", 4000)

    def cookies_to(peer):
        return sum(1 for d, _ in transport.written if d[:8] == peer.keys.key_id)

    counter = 0
    for _ in range(30):  # a hello every 0.1 s for 3 s
        server.datagramReceived(hello(alice, counter), victim)
        counter += 1
        clock.advance(0.1)
    # cookies at 0.0, 1.0, 2.0 (floating point may put them a step later)
    assert cookies_to(alice) == 3 == server.cookies_sent
    assert server.dropped["rate_limited"] == 27
    server.datagramReceived(hello(bob, 0), victim)  # another peer has its own limit
    assert cookies_to(bob) == 1
    assert all(len(d) == 49 for d, _ in transport.written)
    # The table of recent replies does not grow without bound.
    clock.advance(2)
    assert server._cookie_times == {}
    server.doStop()


def test_a_new_endpoint_meanwhile_does_not_swallow_a_held_back_change():
    clock = task.Clock()
    clock.advance(1000)
    directory = Directory()
    alice, bob = directory.add("alice"), directory.add("bob")
    alice.endpoint = ("127.0.0.1", 4000)
    server, transport = serve_on_clock(directory, clock, 60.0)
    server.changed()
    clock.advance(0)

    def to_alice():
        return [d for d, to in transport.written if to == alice.endpoint]

    assert len(to_alice()) == 1
    clock.advance(0.05)
    directory.room.append(("dan", "online"))  # a real change, held back by the gap
    server.changed()
    bob_at = ("127.0.0.1", 4001)  # meanwhile bob proves his endpoint
    server.datagramReceived(hello(bob, 0), bob_at)
    _, cookie = open_cookie(bob, transport.written[-1][0])
    server.datagramReceived(hello(bob, 1, cookie), bob_at)
    assert bob.endpoint == bob_at
    clock.advance(CHANGE_GAP_SECONDS)
    assert len(to_alice()) == 2  # alice hears of dan too
    assert ("dan", "online") in open_snapshot(alice, to_alice()[-1])[1][1]
    server.doStop()
