"""A client given several addresses (the nodes of one server, or a name
with several A records) tries them in turn and fails over between them,
trusting the one key of the server on all of them.  Real servers on
loopback; a name's addresses come from a small resolver table, since the
tests may not write /etc/hosts.

The nodes here have a store each (no shared database): one key, not one
chat, so a client moving to another node logs in there afresh (its resume
token is unknown there), which is what it does after a server restart too.
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from spchat import wire
from spchat.client.addresses import (Address, Candidate, Failover, parse_addresses,
                                     system_resolver)
from spchat.client.connect import check_form, forget_command, key_change
from spchat.client.pins import PinMismatch, UnknownServer
from spchat.client.session import ClientError

from cluster_nodes import addresses, start_nodes
from helpers import dead_port
from conftest import (ServerProcess, connect_client, server_config, start_service,
                      stop_servers, stop_services, subprocess_env, wait_until)
from helpers import share_key
from local_servers import stop_process

FP1 = "SHA256:" + "1" * 43
FP2 = "SHA256:" + "2" * 43


def names(table):
    """A resolver that knows the names of ``table`` (name -> addresses),
    as a hosts file would; any other name does not exist."""

    def resolve(host, port):
        if host in table:
            return defer.succeed(list(table[host]))
        return defer.fail(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))

    return resolve


def said(client, room="lobby"):
    return [m.text for m in client.rec.of(wire.RoomMessage) if m.room == room]


# --- reading the list ------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("chat.example", [("chat.example", 5000)]),
    ("a,b,c", [("a", 5000), ("b", 5000), ("c", 5000)]),
    (" a:7000 , b:7001,c ", [("a", 7000), ("b", 7001), ("c", 5000)]),
    ("[::1]:7000,::1,[fe80::2]", [("::1", 7000), ("::1", 5000), ("fe80::2", 5000)]),
    ("a,a:5000,b", [("a", 5000), ("b", 5000)]),  # the same one twice is tried once
])
def test_a_list_of_addresses_each_with_its_port_or_the_default(text, expected):
    assert parse_addresses(text, 5000) == tuple(Address(h, p) for h, p in expected)


@pytest.mark.parametrize("text, problem", [
    ("", "enter the server's address"),
    ("a,,b", "the server address 'a,,b' has an empty item between its commas"),
    ("a,", "the server address 'a,' has an empty item between its commas"),
    ("my host,b", "the server address 'my host' has spaces in it"),
    ("a:x", "the port in 'a:x' must be a number 1-65535"),
    ("a:0", "the port in 'a:0' must be a number 1-65535"),
    ("a:65536", "the port in 'a:65536' must be a number 1-65535"),
    (":7000", "':7000' names no host before its port"),
    ("[::1", "'[::1': write an IPv6 address with a port as [::1]:7000"),
    ("[::1]7000", "'[::1]7000': write an IPv6 address with a port as [::1]:7000"),
    (",".join(f"n{i}" for i in range(33)), "give at most 32 server addresses, not 33"),
])
def test_a_list_that_cannot_be_read_says_what_to_fix(text, problem):
    with pytest.raises(ValueError) as e:
        parse_addresses(text, 5000)
    assert str(e.value) == problem


def test_the_connect_form_takes_a_list_and_says_what_is_wrong_in_it():
    assert check_form("a, b:7001", "5000", "ann", "", False).host == "a, b:7001"
    with pytest.raises(ValueError, match="the port in 'b:99999' must be a number 1-65535"):
        check_form("a,b:99999", "5000", "ann", "", False)


def test_the_command_line_refuses_a_bad_list_in_one_line(tmp_path):
    for argv in (["--cli", "--name", "ann", "--host", "a,,b"],
                 ["share", "--name", "ann", "--host", "a:0", "file"]):
        result = subprocess.run([sys.executable, "-m", "spchat.client", *argv],
                                env=subprocess_env(tmp_path), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 2
        assert result.stderr.splitlines()[-1].startswith("python -m spchat.client: error: --host: ")
        assert "Traceback" not in result.stderr


# --- the order of the tries ------------------------------------------------------


def tried(failover):
    """The candidates of one round, as dialed."""
    failover.new_round()  # the resolver table answers at once
    order = []
    while (candidate := failover.next()) is not None:
        order.append(str(candidate))
    return order


def test_a_round_tries_every_address_of_every_name_starting_after_the_last_used():
    failover = Failover(parse_addresses("chat.test,b:7001,gone.test", 5000),
                        names({"chat.test": ["10.0.0.1", "10.0.0.2"], "b": ["10.0.0.3"]}))
    first = tried(failover)
    assert first == ["chat.test:5000 (10.0.0.1)", "chat.test:5000 (10.0.0.2)", "b:7001 (10.0.0.3)"]
    assert failover.round_failure() == "gone.test: no such host"
    failover.current = Candidate(Address("chat.test", 5000), "10.0.0.1")  # on it, then lost
    assert tried(failover) == first[1:] + first[:1]  # the one it was on goes last
    assert failover.seen_several


def test_one_name_of_several_addresses_is_several_to_choose_from():
    one = Failover(parse_addresses("chat.test", 5000), names({"chat.test": ["10.0.0.1"]}))
    tried(one)
    assert not one.seen_several
    two = Failover(parse_addresses("chat.test", 5000),
                   names({"chat.test": ["10.0.0.1", "10.0.0.2"]}))
    tried(two)
    assert two.seen_several


@pytest_twisted.inlineCallbacks
def test_the_system_resolver_gives_every_address_of_a_name():
    resolve = system_resolver(reactor)
    assert (yield resolve("127.0.0.7", 1)) == ["127.0.0.7"]  # an address is itself
    assert "127.0.0.1" in (yield resolve("localhost", 1))
    with pytest.raises(socket.gaierror):
        yield resolve("no-such-host.invalid", 1)


# --- one key for the nodes of a list ---------------------------------------------


def test_a_key_pinned_for_one_node_is_the_key_of_the_others(pins):
    nodes = (("b", 7001), ("c", 7002))
    assert pins.check("a", 7000, FP1, same_server=nodes) is True  # first contact
    # Another node of the same list, never seen: known by the list, and pinned.
    assert pins.check("b", 7001, FP1, accept_new=False, same_server=(("a", 7000),)) is False
    assert "b:7001 " + FP1 in pins.path.read_text()
    # Another key on one of them is a changed key, naming the pin it disagrees with.
    with pytest.raises(PinMismatch) as changed:
        pins.check("c", 7002, FP2, same_server=(("a", 7000), ("b", 7001)))
    assert changed.value.where == "a:7000"
    assert (changed.value.pinned, changed.value.presented) == (FP1, FP2)
    assert "c:7002 presents another key than a:7000 of the same server" in str(changed.value)
    assert "--forget-server a:7000" in str(changed.value)
    assert "c:7002" not in pins.path.read_text()
    # Alone (not given with the others), c is a server of its own.
    assert pins.check("c", 7002, FP2) is True


def test_nodes_never_seen_are_asked_about_once(pins):
    with pytest.raises(UnknownServer):
        pins.check("b", 7001, FP1, accept_new=False, same_server=(("a", 7000),))
    assert not pins.path.exists()


# --- on loopback -----------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_the_first_address_refuses_and_the_client_gets_in_on_the_second(chat_server, pins):
    dead, live = dead_port(), chat_server.address.port
    client = yield connect_client(chat_server, pins, "alice",
                                  host=f"127.0.0.1:{dead},127.0.0.1:{live}")
    assert client.where == f"127.0.0.1:{live}"
    assert client.status == client.rec.statuses[-1]
    assert client.status.address == f"127.0.0.1:{live}"
    assert [s.state for s in client.rec.statuses] == ["connecting", "connected"]
    assert pins.path.read_text() == f"127.0.0.1:{live} {chat_server.fingerprint}\n"
    client.say("in")
    yield wait_until(lambda: said(client) == ["in"] and not client.outbox)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) here")
@pytest_twisted.inlineCallbacks
def test_an_ipv6_address_in_brackets_with_its_port(tmp_path, pins):
    node = start_service(server_config(tmp_path / "data", host="::1"))
    try:
        client = yield connect_client(node, pins, "alice",
                                      host=f"127.0.0.1:{dead_port()},[::1]:{node.address.port}")
        assert (client.where, client.server_ip) == (f"[::1]:{node.address.port}", "::1")
        client.say("over IPv6")
        yield wait_until(lambda: said(client) == ["over IPv6"] and not client.outbox)
    finally:
        yield stop_services(node)


@pytest_twisted.inlineCallbacks
def test_when_no_address_answers_the_first_connection_says_why_for_each(pins):
    one, two = dead_port(), dead_port()
    with pytest.raises(ClientError) as refused:
        yield connect_client(None, pins, "alice", port=one, host=f"127.0.0.1,127.0.0.1:{two}")
    assert str(refused.value) == (
        f"nothing is listening at 127.0.0.1:{one} (connection refused); "
        f"nothing is listening at 127.0.0.1:{two} (connection refused)")


@pytest_twisted.inlineCallbacks
def test_a_client_whose_node_stops_moves_to_another_and_keeps_chatting(tmp_path, pins):
    first, second = start_nodes(tmp_path, 2)
    try:
        alice = yield connect_client(first, pins, "alice", host=addresses([first, second]))
        bob = yield connect_client(second, pins, "bob")
        assert alice.where == f"127.0.0.1:{first.address.port}"
        alice.say("before")
        yield wait_until(lambda: said(alice) == ["before"] and not alice.outbox)
        yield stop_servers(first)
        alice.say("while moving")  # kept in the outbox, sent once it is in
        yield wait_until(lambda: alice.connected and alice.port == second.address.port,
                         timeout=20)
        assert alice.where == f"127.0.0.1:{second.address.port}"
        assert alice.status.address == alice.where and alice.status.resumed
        assert any(s.state == "reconnecting" for s in alice.rec.statuses)
        alice.say("after")
        yield wait_until(lambda: said(bob)[-2:] == ["while moving", "after"] and not alice.outbox)
        bob.say("welcome")
        yield wait_until(lambda: "welcome" in said(alice))
        # The second node's key was the first one's: accepted, and pinned for it.
        assert f"127.0.0.1:{second.address.port} {first.fingerprint}" in pins.path.read_text()
    finally:
        yield stop_services(first, second)


@pytest_twisted.inlineCallbacks
def test_a_node_with_another_key_is_refused_as_a_changed_key(tmp_path, pins):
    first = start_service(server_config(tmp_path / "a"))
    other = start_service(server_config(tmp_path / "b"))  # a key of its own
    try:
        alice = yield connect_client(first, pins, "alice", host=addresses([first, other]))
        yield stop_servers(first)
        yield wait_until(lambda: alice.status.state == "offline", timeout=20)
        assert alice.status.recovery == "never"
        assert isinstance(alice.trust_problem, PinMismatch)
        assert alice.trust_problem.where == f"127.0.0.1:{first.address.port}"
        assert alice.trust_problem.presented == other.fingerprint
        # The window's panel names both: the node that presented it, and the pin.
        there, pinned = f"127.0.0.1:{other.address.port}", f"127.0.0.1:{first.address.port}"
        assert key_change(alice.trust_problem).title == (
            f"{there} presents another key than {pinned}: not reconnecting")
        assert forget_command(pinned) in key_change(alice.trust_problem).text
        assert not other.core.table.by_id  # it never logged in there
        assert f":{other.address.port} " not in pins.path.read_text()
    finally:
        yield stop_services(first, other)


@pytest_twisted.inlineCallbacks
def test_one_name_with_two_addresses_the_client_tries_both(tmp_path, pins):
    # 127.0.0.2 and 127.0.0.3: two loopback addresses, one port number.
    dirs = share_key([tmp_path / "node2", tmp_path / "node3"])
    third = start_service(server_config(dirs[1], host="127.0.0.3"))
    port = third.address.port
    resolve = names({"chat.test": ["127.0.0.2", "127.0.0.3"]})
    second = None
    try:
        alice = yield connect_client(None, pins, "alice", host="chat.test", port=port,
                                     resolve=resolve)
        assert alice.where == f"chat.test:{port} (127.0.0.3)"  # after 127.0.0.2 refused
        assert alice.status.address == alice.where
        assert pins.path.read_text() == f"chat.test:{port} {third.fingerprint}\n"  # the name's
        second = start_service(server_config(dirs[0], host="127.0.0.2", **{"tcp-port": str(port)}))
        yield stop_servers(third)
        yield wait_until(lambda: alice.connected and "127.0.0.2" in alice.where, timeout=20)
        assert alice.where == f"chat.test:{port} (127.0.0.2)"
        alice.say("on the other address")
        yield wait_until(lambda: not alice.outbox and said(alice) == ["on the other address"])
    finally:
        yield stop_services(*filter(None, [third, second]))


class Lines:
    """A program's output, read on a thread: waiting for a line is bounded
    even when the program says nothing more."""

    def __init__(self, stream):
        self.queue = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def until(self, pattern, timeout=30):
        seen, deadline = [], time.monotonic() + timeout
        while True:
            try:
                line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in {seen!r}") from None
            if line is None:
                raise AssertionError(f"the output ended before {pattern!r}: {seen!r}")
            seen.append(line)
            if re.search(pattern, line):
                return seen


def admin(data_dir, port, *args):
    return subprocess.run(
        [sys.executable, "-m", "spchat.admin", "--port", str(port), "--data-dir", str(data_dir),
         *args], env=subprocess_env(data_dir.parent), capture_output=True, text=True, timeout=60)


def test_line_mode_moves_to_the_next_node_when_its_node_shuts_down(tmp_path):
    """Two ``twistd`` nodes with one copied server_key; ``shutdown`` stops
    the one the client is on, and the line-mode client says where it went."""
    (tmp_path / "a").mkdir()
    first = ServerProcess(tmp_path / "a")
    share_key([tmp_path / "a" / "data", tmp_path / "b" / "data"])
    second = ServerProcess(tmp_path / "b")
    assert second.fingerprint == first.fingerprint
    env = subprocess_env(tmp_path, CHAT_RECONNECT_DELAY="0.1")
    client = subprocess.Popen(
        [sys.executable, "-m", "spchat.client", "--cli", "--name", "alice",
         "--host", f"127.0.0.1:{first.port},127.0.0.1:{second.port}"],
        cwd=tmp_path, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    out = Lines(client.stdout)
    try:
        out.until(rf"\* logged in as alice on 127\.0\.0\.1:{first.port}$")
        down = admin(tmp_path / "a" / "data", first.port, "shutdown")
        assert down.returncode == 0, down.stderr
        lines = out.until(rf"\* reconnected to 127\.0\.0\.1:{second.port}$")
        assert any("shutting down" in line for line in lines), lines
        client.stdin.write("still here\n")
        client.stdin.flush()
        out.until(r"\] alice: still here$")
        client.stdin.close()
        assert client.wait(timeout=30) == 0, client.stderr.read()
    finally:
        stop_process(client)
        for server in (first, second):
            if server.proc.poll() is None:
                server.stop()
    for server in (first, second):
        assert "Traceback" not in "".join(server.log)


def test_share_and_get_take_a_list_and_the_relay_of_the_node_they_are_on(tmp_path):
    from client_processes import Peer, finished

    server = ServerProcess(tmp_path)
    listed = f"127.0.0.1:{dead_port()},127.0.0.1"  # the second on --port: the server's
    source = tmp_path / "notes.bin"
    source.write_bytes(os.urandom(300_000))
    peers = []
    try:
        sharer = Peer(tmp_path, server, ["share", str(source), "--name", "hidden"],
                      {"CHAT_P2P_DIRECT": "no"}, host=listed)
        peers.append(sharer)
        found = re.match(r"sharing .* as ([0-9a-f]{64})$", sharer.proc.stdout.readline().strip())
        assert found, "".join(sharer.err)
        getter = Peer(tmp_path, server, ["get", found.group(1)[:10], "--name", "getter",
                                         "--dir", str(tmp_path / "dl"), "--json"], host=listed)
        peers.append(getter)
        summary = finished(getter)
        assert summary["from"]["hidden"]["path"] == "relay"
        assert (tmp_path / "dl" / "notes.bin").read_bytes() == source.read_bytes()
    finally:
        for peer in peers:
            peer.stop()
        server.stop()


@pytest_twisted.inlineCallbacks
def test_sharing_dials_the_relay_of_the_node_it_is_on_not_the_name(tmp_path, pins):
    """A name's addresses may be different nodes: the relay is dialed at
    the address the client is on (here a name only the client's resolver
    knows: dialed by name, the relay would not be found at all)."""
    from spchat.p2p.node import SharingNode

    resolve = names({"chat.test": ["127.0.0.2", "127.0.0.3"]})
    node = start_service(server_config(tmp_path / "data", host="127.0.0.3"))
    nodes = []
    try:
        alice = yield connect_client(None, pins, "alice", host="chat.test",
                                     port=node.address.port, resolve=resolve)
        bob = yield connect_client(None, pins, "bob", host="chat.test",
                                   port=node.address.port, resolve=resolve)
        assert (alice.host, alice.server_ip) == ("chat.test", "127.0.0.3")
        # No direct connections: the relay carries it, or nothing does.
        nodes = [SharingNode(reactor, client, direct=False) for client in (alice, bob)]
        for sharing in nodes:
            sharing.start()
        source = tmp_path / "notes.bin"
        source.write_bytes(os.urandom(100_000))
        file_id, _ = yield nodes[0].share(source)
        (tmp_path / "got").mkdir()
        fetch = yield nodes[1].fetch(file_id, tmp_path / "got")
        yield fetch.result.addTimeout(30, reactor)
        assert (tmp_path / "got" / "notes.bin").read_bytes() == source.read_bytes()
        assert fetch.summary()["from"]["alice"]["path"] == "relay"
    finally:
        for sharing in nodes:
            yield sharing.stop()
        yield stop_services(node)
