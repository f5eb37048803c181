"""Hostile clients that try to make the server hold memory or connections,
over loopback from several 127.x.y.z addresses, while two others chat:

* connections that ask for all history and never read hold at most a part
  of it each (history and replays go at the pace the client reads);
* half-open connections from many addresses do not lock anyone out, guests
  cannot take the places kept for returning clients, and a sharer's port
  takes few connections from one address.

Each test checks that the chatters got every line exactly once and that a
new login still works.  The memory figures are printed (``pytest -s``).
"""

import resource
import socket

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from spchat.bench.servers import memory_kib
from spchat.p2p.node import SharingNode

from helpers import Silent
from conftest import ServerProcess, wait_until
from hostile import ATTACKERS, Chatters, HostileClient, HostileServer, hostile_client
from irc_peer import irc_peer

NO_FLOOD_LIMIT = ["--flood-burst", "1000000", "--flood-rate", "1000000",
                  "--flood-queue", "20000"]
SEND_BUFFER = 1 << 20  # CHAT_SEND_BUFFER_BYTES, the default
TEXT = "x" * 1500
SEEDED = 6000
DEAF = 20
MIB = 1 << 20


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes (from /proc)."""
    return memory_kib(pid, "VmRSS") * 1024


def soft_descriptor_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no descriptor limit")


def sleep(seconds: float):
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def seed(port: int, count: int, text: str = TEXT):
    """``count`` lines of ``text`` in #lobby, said as fast as the server takes them."""
    seeder = yield hostile_client(port, "127.0.0.1", name="seeder")
    for start in range(0, count, 40):
        seeder.send({"t": "batch", "m": [{"t": "say", "text": text, "cid": f"s{i}"}
                                         for i in range(start, min(start + 40, count))]})
    yield wait_until(lambda: sum(1 for m in seeder.of("message") if m.get("cid")) >= count,
                     timeout=180)
    seeder.send({"t": "logout"})
    yield seeder.lost


class DeafClient(HostileClient):
    """Logs in asking for everything since #lobby's first line, then reads
    nothing (and keeps its kernel's receive buffer small)."""

    def connectionMade(self):
        self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        super().connectionMade()

    def stop_reading(self, name: str) -> None:
        self.send({"t": "login", "name": name, "positions": [["#lobby", 0]], "since": 0})
        self.transport.pauseProducing()


@pytest_twisted.inlineCallbacks
def test_clients_that_ask_for_all_history_and_never_read_hold_little_memory(tmp_path, pins):
    server = ServerProcess(tmp_path, *NO_FLOOD_LIMIT, "--idle-timeout", "0",
                           "--store-sync", "normal")
    try:
        yield seed(server.port, SEEDED)
        chat = yield Chatters(server, pins).start()
        yield sleep(1.0)
        baseline = rss(server.proc.pid)
        deaf = []
        for i in range(DEAF):
            client = yield hostile_client(server.port, ATTACKERS[i % 5], make=DeafClient)
            client.stop_reading(f"deaf{i}")
            deaf.append(client)
        peak = baseline
        for _ in range(25):  # what a deaf client costs shows within a second
            yield sleep(0.2)
            peak = max(peak, rss(server.proc.pid))
        for client in deaf:
            client.abort()
        yield sleep(3.0)
        after = rss(server.proc.pid)
        print(f"\nserver RSS: baseline {baseline / MIB:.1f} MiB, with {DEAF} deaf clients "
              f"{peak / MIB:.1f} MiB (+{(peak - baseline) / MIB:.1f}), after they are cut "
              f"{after / MIB:.1f} MiB (+{(after - baseline) / MIB:.1f})")
        assert peak - baseline <= DEAF * SEND_BUFFER + 16 * MIB
        assert after - baseline <= 16 * MIB
        # A client that does read gets the whole replay, in order, once.
        reader = yield hostile_client(server.port, ATTACKERS[7])
        reader.send({"t": "login", "name": "reader", "positions": [["#lobby", 0]], "since": 0})
        yield wait_until(lambda: sum(1 for m in reader.of("message")
                                     if m["sender"] == "seeder") >= SEEDED, timeout=60)
        seqs = [m["seq"] for m in reader.of("message")]
        # (A field at its default is left out on the wire.)
        assert seqs == sorted(set(seqs))
        assert not any(m.get("history", False) for m in reader.of("message"))
        reader.abort()
        yield chat.check()
    finally:
        server.stop()


@defer.inlineCallbacks
def silent(port: int, source: str):
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10,
                                  bindAddress=(source, 0))
    return (yield connectProtocol(endpoint, Silent()))


def _low_descriptor_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (160, 256))


# Thirteen addresses of 20 connections: more than 256 descriptors hold.
FLOOD_ADDRESSES = tuple(f"127.{100 + i}.0.{i + 1}" for i in range(13))


@pytest_twisted.inlineCallbacks
def test_half_open_connections_from_many_addresses_do_not_lock_anyone_out(tmp_path, pins):
    server = ServerProcess(tmp_path, "--handshake-timeout", "120",
                           preexec_fn=_low_descriptor_limit)
    half_open = []
    try:
        chat = yield Chatters(server, pins).start()
        for source in FLOOD_ADDRESSES:
            for _ in range(20):
                half_open.append((yield silent(server.port, source)))
        yield sleep(1.0)  # the server takes (or cannot take) them all
        # Someone new, from an address the server has never seen, gets in.
        newcomer = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", server.port, timeout=10,
                               bindAddress=("127.250.0.1", 0)), HostileClient())
        yield wait_until(lambda: newcomer.opened.called, timeout=10)
        assert hasattr(newcomer, "server_hello"), "the newcomer was locked out"
        yield newcomer.log_in("newbie")
        cut = sum(1 for conn in half_open if not conn.open)
        assert cut >= len(half_open) - 192
        assert any("cutting the oldest not logged in" in line for line in server.log)
        # The soft limit was raised to the hard one at start.
        assert soft_descriptor_limit(server.proc.pid) == 256
        assert any("at most 192 chat connections" in line for line in server.log)
        yield chat.check()
        newcomer.abort()
    finally:
        for conn in half_open:
            conn.abort()
        server.stop()


@pytest.fixture
def full_server(tmp_path):
    server = HostileServer(tmp_path, **{"max-connections": "24", "login-reserve": "4"})
    yield server
    server.stop()


@pytest_twisted.inlineCallbacks
def test_guests_cannot_take_the_places_kept_for_returning_clients(full_server, pins):
    server = full_server
    chat = yield Chatters(server, pins).start()
    guests = []
    for i in range(18):  # with the chatters: every place open to anyone
        guest = yield hostile_client(server.port, ATTACKERS[i % 4], name=f"guest{i}")
        guests.append(guest)
    # One more from elsewhere finds the server full: closed at once.
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port, timeout=10,
                                  bindAddress=(ATTACKERS[5], 0))
    late = yield connectProtocol(endpoint, HostileClient())
    late.opened.addErrback(lambda _: None)
    yield late.lost
    assert not hasattr(late, "server_hello")
    # Half-open connections cannot push anyone logged in out either.
    half_open = []
    for _ in range(10):
        half_open.append((yield silent(server.port, ATTACKERS[6])))
    yield sleep(0.3)
    assert not any(conn.open for conn in half_open)
    assert not any(g.closed for g in guests)
    assert len(server.service.factory.slots) == 20
    # From where a session is (the chatters'), the reserve lets one in.
    yield chat.check()
    for guest in guests:
        guest.abort()


def irc_port(server) -> int:
    return server.service.irc_port.getHost().port


@pytest_twisted.inlineCallbacks
def test_irc_connections_count_in_the_servers_cap(tmp_path):
    server = HostileServer(tmp_path, irc="tcp:0:interface=127.0.0.1",
                           **{"max-connections": "12", "login-reserve": "2"})
    peers, silent_ones = [], []
    try:
        for i in range(8):
            peers.append((yield irc_peer(irc_port(server), ATTACKERS[i % 4], f"irc{i}")))
        for _ in range(2):
            silent_ones.append((yield irc_peer(irc_port(server), ATTACKERS[4])))
        assert all(p.welcomed for p in peers) and len(server.service.factory.slots) == 10
        # Full for anyone new: a chat client pushes out the oldest IRC
        # connection that has not registered, not a registered one.
        chat = yield hostile_client(server.port, ATTACKERS[5], name="newcomer")
        yield wait_until(lambda: not silent_ones[0].open)
        assert silent_ones[1].open and all(p.open for p in peers)
        second = yield hostile_client(server.port, ATTACKERS[6], name="another")
        yield wait_until(lambda: not silent_ones[1].open)
        # Now every open place holds someone logged in: the next is refused,
        # by either protocol.
        late = yield irc_peer(irc_port(server), ATTACKERS[7])
        yield wait_until(lambda: not late.open)
        assert late.data == b"" and all(p.open for p in peers)
        assert len(server.service.factory.slots) == 10
        for peer in peers:
            peer.transport.abortConnection()
        yield wait_until(lambda: len(server.service.factory.slots) == 2)  # given back
        chat.abort()
        second.abort()
    finally:
        for peer in peers + silent_ones:
            if peer.open:
                peer.transport.abortConnection()
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_a_sharers_port_takes_few_connections_from_one_address(tmp_path, pins):
    server = HostileServer(tmp_path)
    chat = yield Chatters(server, pins).start()
    sharer = chat.clients[0]
    node = SharingNode(reactor, sharer)  # CHAT_P2P_MAX_PER_IP: 4
    node.start()
    conns = {}
    try:
        for source in ATTACKERS[:3]:
            for _ in range(10):
                conns.setdefault(source, []).append((yield silent(node.port, source)))
        yield sleep(0.5)
        for source in ATTACKERS[:3]:
            assert sum(1 for c in conns[source] if c.open) == 4, source
        yield chat.check()
    finally:
        for group in conns.values():
            for conn in group:
                conn.abort()
        yield node.stop()
        yield server.stop()
