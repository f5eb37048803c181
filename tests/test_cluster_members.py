"""Who is where, across nodes on one PostgreSQL database and one Redis bus,
real servers all: every member list shows every member wherever it is
connected, comings and goings on one node reach the members on the
others, and a node that dies leaves their lists within ``SILENT_SECONDS``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest_twisted
from twisted.internet import reactor, task, threads

from spchat import wire
from spchat.cluster.roster import SILENT_SECONDS, SNAPSHOT_SECONDS

from helpers import node_dirs
from cluster_nodes import bus_state
from irc_peer import irc_peer
from conftest import ServerProcess, connect_client, server_config, start_service, \
    stop_services, subprocess_env, wait_until

ROOMS = {"red": ["alice", "bob", "carol", "dave"], "blue": ["carol", "erin", "frank", "alice"]}
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank"]


def nodes(dirs, pg_url, redis_server, **options):
    return [start_service(server_config(data_dir, database=pg_url, bus=redis_server.url,
                                        **{"default-rooms": " ", **options}))
            for data_dir in dirs]


def names_in(client, room):
    return sorted(member[0] for member in client.room_members(room))


def notices(client, kind, room):
    return [m.name for m in client.rec.of(wire.Notice) if m.kind == kind and m.room == room]


@pytest_twisted.inlineCallbacks
def spread(ports, pins):
    """The six clients, two on each node, in their rooms."""
    clients = {}
    for i, name in enumerate(NAMES):
        clients[name] = yield connect_client(None, pins, name, port=ports[i % len(ports)])
    for room, members in ROOMS.items():
        for name in members:
            clients[name].join(room)
    return clients


def lists_complete(clients, rooms=ROOMS):
    return all(names_in(clients[name], room) == sorted(members)
               for room, members in rooms.items() for name in members)


def admin_list(tmp_path, server, data_dir):
    """``python -m spchat.admin list --json`` against one node."""
    done = subprocess.run(
        [sys.executable, "-m", "spchat.admin", "--port", str(server.address.port),
         "--data-dir", str(data_dir), "--json", "list"],
        cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["sessions"]


@pytest_twisted.inlineCallbacks
def test_member_lists_and_comings_and_goings_span_three_nodes(tmp_path, pins, pg_url,
                                                              redis_server):
    dirs = node_dirs(tmp_path, 3)
    servers = nodes(dirs, pg_url, redis_server)
    try:
        yield wait_until(lambda: all(s.bus.joined for s in servers),
                         describe=lambda: bus_state(servers))
        clients = yield spread([s.address.port for s in servers], pins)
        yield wait_until(lambda: lists_complete(clients), timeout=20)
        # admin list on one node: every node's sessions, each with its node.
        rows = yield threads.deferToThread(admin_list, tmp_path, servers[1], dirs[1])
        assert sorted((row["name"], row["node"], row["state"]) for row in rows) == sorted(
            (name, servers[i % 3].core.node, "connected") for i, name in enumerate(NAMES))
        assert len({servers[i].core.node for i in range(3)}) == 3
        # Each one's own view of a room: the same, with everyone's state.
        assert {m[1] for m in clients["bob"].room_members("red")} == {"online"}
        # A join on node 2 (frank), a part on node 1 (bob), a quit on node 0 (dave).
        clients["frank"].join("red")
        yield wait_until(lambda: "frank" in names_in(clients["bob"], "red")
                         and "frank" in names_in(clients["alice"], "red"))
        assert "frank" in notices(clients["bob"], "join", "red")
        clients["bob"].part("red")
        yield wait_until(lambda: "bob" not in names_in(clients["carol"], "red")
                         and "bob" not in names_in(clients["frank"], "red"))
        assert "bob" in notices(clients["carol"], "leave", "red")
        yield clients["dave"].logout()
        yield wait_until(lambda: "dave" not in names_in(clients["carol"], "red")
                         and "dave" not in names_in(clients["frank"], "red"))
        assert "dave" in notices(clients["frank"], "quit", "red")
        assert sorted(servers[1].core.directory.member_rows(
            servers[1].core.directory.get("red"))) == [
            ("alice", "online", "member"), ("carol", "online", "member"),
            ("frank", "online", "member")]
        # The presence beacon's snapshot is everyone's, wherever they are.
        assert [name for name, _ in servers[2].core.presence_snapshot()] == [
            "alice", "bob", "carol", "erin", "frank"]
    finally:
        yield stop_services(*servers)


@pytest_twisted.inlineCallbacks
def test_a_killed_node_leaves_the_others_member_lists_in_time(tmp_path, pins, pg_url,
                                                              redis_server):
    dirs = node_dirs(tmp_path, 3)
    servers = nodes(dirs[:2], pg_url, redis_server)
    killed = ServerProcess(dirs[2], "--data-dir", str(dirs[2]), "--relay-port", "0",
                           "--database", pg_url, "--bus", redis_server.url,
                           "--default-rooms", " ")
    try:
        yield wait_until(lambda: all(s.bus.joined for s in servers))
        clients = yield spread([servers[0].address.port, servers[1].address.port,
                                killed.port], pins)
        yield wait_until(lambda: lists_complete(clients), timeout=20)
        # carol and frank are on the node killed (no goodbye from it)
        for name in ("carol", "frank"):
            clients[name].reconnect_delay = 3600
        killed.proc.send_signal(signal.SIGKILL)
        killed.proc.wait(timeout=10)
        gone = time.monotonic()
        yield wait_until(lambda: lists_complete(clients, {
            "red": ["alice", "bob", "dave"], "blue": ["erin", "alice"]}),
            timeout=SILENT_SECONDS + 2 * SNAPSHOT_SECONDS)
        took = time.monotonic() - gone
        assert took <= SILENT_SECONDS + SNAPSHOT_SECONDS + 1, took
        assert "carol" in notices(clients["alice"], "quit", "blue")
        assert "frank" in notices(clients["erin"], "quit", "blue")
    finally:
        yield stop_services(*servers)
        if killed.proc.poll() is None:
            killed.stop()
    yield task.deferLater(reactor, 0, lambda: None)


def directs(client):
    """(seq, sender, text) of the live direct lines a client was sent."""
    return [(m.seq, m.sender, m.text) for m in client.rec.of(wire.DirectMessage)
            if not m.history]


@pytest_twisted.inlineCallbacks
def test_direct_messages_between_two_nodes_arrive_once_live_in_order(tmp_path, pins, pg_url,
                                                                     redis_server):
    servers = nodes(node_dirs(tmp_path, 2), pg_url, redis_server)
    try:
        yield wait_until(lambda: all(s.bus.joined for s in servers))
        alice = yield connect_client(servers[0], pins, "alice")
        bob = yield connect_client(servers[1], pins, "bob")
        # Each node knows of the other's user (a name is found on the roster).
        yield wait_until(lambda: servers[0].core.roster.elsewhere("bob") is not None
                         and servers[1].core.roster.elsewhere("alice") is not None)
        sent = []
        for i in range(10):  # both ways, interleaved
            alice.direct("bob", f"a{i}")
            bob.direct("alice", f"b{i}")
            sent += [("alice", f"a{i}"), ("bob", f"b{i}")]
        yield wait_until(lambda: len(directs(alice)) == len(directs(bob)) == 20
                         and not alice.outbox and not bob.outbox, timeout=20)
        yield task.deferLater(reactor, 0.5, lambda: None)  # a copy would come by now
        # One conversation, one order: its numbers, each line once, for both.
        assert directs(alice) == directs(bob)
        assert [seq for seq, _, _ in directs(bob)] == list(range(1, 21))
        assert sorted((sender, text) for _, sender, text in directs(bob)) == sorted(sent)
    finally:
        yield stop_services(*servers)


@pytest_twisted.inlineCallbacks
def test_the_irc_gateway_names_tells_of_and_writes_to_users_on_other_nodes(
        tmp_path, pins, pg_url, redis_server):
    servers = nodes(node_dirs(tmp_path, 2), pg_url, redis_server,
                    irc="tcp:0:interface=127.0.0.1")
    try:
        yield wait_until(lambda: all(s.bus.joined for s in servers))
        alice = yield connect_client(servers[1], pins, "alice")
        alice.join("red")
        yield wait_until(lambda: servers[0].core.roster.elsewhere("alice") is not None
                         and "red" in servers[0].core.roster.elsewhere("alice").rooms)
        irc = yield irc_peer(servers[0].irc_port.getHost().port, nick="ircbob")
        irc.send("JOIN #red")
        # (the other node knows of ircbob once its node has told the others)
        yield wait_until(lambda: servers[1].core.roster.elsewhere("ircbob") is not None)
        yield wait_until(lambda: b" 366 " in irc.data)  # end of NAMES
        names = [line for line in irc.data.decode().split("\r\n") if " 353 " in line]
        # (ircbob made the room on its node: its owner there, "@".)
        assert sorted(n.lstrip("@+") for n in names[0].rpartition(":")[2].split()) == [
            "alice", "ircbob"]
        irc.send("WHO #red")
        yield wait_until(lambda: b" 315 " in irc.data)
        assert b" 352 ircbob #red alice " in irc.data
        irc.send("WHOIS alice", "ISON alice nobody")
        yield wait_until(lambda: b" 318 " in irc.data and b" 303 " in irc.data)
        replies = irc.data.decode().split("\r\n")
        assert any(" 319 ircbob alice " in r and r.endswith("#red") for r in replies)
        assert any(" 303 ircbob " in r and r.endswith("alice") for r in replies)
        irc.send("PRIVMSG alice :hello across")  # a direct line to the other node
        yield wait_until(lambda: [m.text for m in alice.rec.of(wire.DirectMessage)]
                         == ["hello across"])
        alice.direct("ircbob", "and back")
        yield wait_until(lambda: b"PRIVMSG ircbob :and back" in irc.data)
        carol = yield connect_client(servers[1], pins, "carol")
        carol.join("red")
        yield wait_until(lambda: b":carol!carol@" in irc.data and b" JOIN #red" in irc.data)
        carol.part("red")
        yield wait_until(lambda: b" PART #red" in irc.data)
        yield alice.logout()
        yield wait_until(lambda: b":alice!alice@" in irc.data and b" QUIT " in irc.data)
        irc.transport.loseConnection()
    finally:
        yield stop_services(*servers)
