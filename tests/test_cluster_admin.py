"""The administrator and the rooms' operators across nodes, on real servers
(PostgreSQL, Redis, twistd or in-process nodes): what is asked of one node
is done where the user is."""

from __future__ import annotations

import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads

from spchat import wire
from spchat.client.session import ClientError

from conftest import (OPEN_CLIENTS, ServerProcess, connect_client, server_config,
                      start_service, stop_services, subprocess_env, wait_until)
from helpers import node_dirs


def admin_command(port, data_dir, tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "spchat.admin", "--port", str(port), "--data-dir", str(data_dir),
         *args],
        cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60)


def twistd_nodes(tmp_path, pg_url, redis_server, names):
    processes = []
    for name, data_dir in zip(names, node_dirs(tmp_path, len(names))):
        process = ServerProcess(data_dir, "--data-dir", str(data_dir), "--relay-port", "0",
                                "--database", pg_url, "--bus", redis_server.url,
                                "--node", name)
        process.data_dir = data_dir
        processes.append(process)
    return processes


@pytest_twisted.inlineCallbacks
def test_admin_acts_asked_of_node_a_act_on_users_of_node_b(tmp_path, pins, pg_url,
                                                           redis_server):
    a, b = twistd_nodes(tmp_path, pg_url, redis_server, ["a", "b"])

    def admin(*args):
        return threads.deferToThread(admin_command, a.port, a.data_dir, tmp_path, *args)

    try:
        alice = yield connect_client(None, pins, "alice", port=a.port, max_retries=0)
        users = {}
        for name in ("bob", "carol", "dave"):
            users[name] = yield connect_client(None, pins, name, port=b.port, max_retries=0)
        bob, carol, dave = users.values()
        # Both nodes hear the bus once a line crosses it.
        alice.say("hello")
        yield wait_until(lambda: any(m.text == "hello" for m in dave.rec.of(wire.RoomMessage)),
                         timeout=20)

        kicked = yield admin("kick", "bob", "--reason", "spam")
        assert kicked.returncode == 0, kicked.stderr
        assert kicked.stdout.strip() == "the kick of bob was sent to every node"
        yield wait_until(lambda: bob.status.state == "offline")
        assert bob.status.reason == "you were kicked: spam"

        banned = yield admin("ban", "carol", "--reason", "flood")
        assert banned.returncode == 0, banned.stderr
        yield wait_until(lambda: carol.status.state == "offline")
        assert "banned" in carol.status.reason and "flood" in carol.status.reason
        # The ban is in the database: node b refuses carol's next login at once.
        with pytest.raises(ClientError, match="login refused: you are banned: flood"):
            yield connect_client(None, pins, "carol", port=b.port, max_retries=0)

        said = yield admin("broadcast", "maintenance at noon")
        assert said.returncode == 0, said.stderr
        assert said.stdout.strip() == "broadcast to 1 session on node a; sent to every node"
        for client in (alice, dave):
            yield wait_until(lambda c=client: any(
                n.text == "server: maintenance at noon" for n in c.rec.of(wire.Notice)))

        gone = yield admin("disconnect-all", "--reason", "moving")
        assert gone.returncode == 0, gone.stderr
        for client in (alice, dave):
            yield wait_until(lambda c=client: c.status.state == "offline")
            assert "disconnected everyone: moving" in client.status.reason
    finally:
        while OPEN_CLIENTS:
            OPEN_CLIENTS.pop().logout()
        for process in (a, b):
            process.stop()
    for process in (a, b):
        log = "".join(process.log)
        assert "Traceback" not in log and "Unhandled" not in log, log
    assert "audit: admin act from node a: kick bob: kicked here" in "".join(b.log)
    assert "audit: admin act from node a: broadcast: broadcast to 1 session here" \
        in "".join(b.log)


@pytest_twisted.inlineCallbacks
def test_shutdown_of_one_node_stops_it_alone_and_without_a_node_stops_all(tmp_path, pins,
                                                                          pg_url, redis_server):
    a, b, c = twistd_nodes(tmp_path, pg_url, redis_server, ["a", "b", "c"])

    def admin(*args):
        return threads.deferToThread(admin_command, a.port, a.data_dir, tmp_path, *args)

    try:
        clients = []
        for name, node in (("alice", a), ("bob", b), ("carol", c)):
            clients.append((yield connect_client(None, pins, name, port=node.port,
                                                 max_retries=0)))
        alice, bob, carol = clients
        alice.say("hello")
        yield wait_until(lambda: all(any(m.text == "hello" for m in x.rec.of(wire.RoomMessage))
                                     for x in (bob, carol)), timeout=20)

        down = yield admin("shutdown", "--node", "b", "--reason", "upgrade")
        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == "shutdown sent to node b; this node (a) stays up"
        assert b.proc.wait(timeout=20) == 0  # a clean exit
        yield wait_until(lambda: bob.status.state == "offline")
        assert bob.status.reason == "the server is shutting down: upgrade"
        assert a.proc.poll() is None and c.proc.poll() is None
        assert alice.status.state == carol.status.state == "connected"

        every = yield admin("shutdown", "--reason", "the end")
        assert every.returncode == 0, every.stderr
        assert a.proc.wait(timeout=20) == 0 and c.proc.wait(timeout=20) == 0
        for client in (alice, carol):
            yield wait_until(lambda x=client: x.status.state == "offline")
            assert client.status.reason == "the server is shutting down: the end"
    finally:
        while OPEN_CLIENTS:
            OPEN_CLIENTS.pop().logout()
        for process in (a, b, c):
            if process.proc.poll() is None:
                process.stop()
    assert "audit: admin act from node a: shutdown: disconnected 1 session here" \
        in "".join(c.log)


# --- the rooms' state, on in-process nodes ---------------------------------------


def nodes(tmp_path, pg_url, redis_server, names=("a", "b")):
    """Chat servers in this process on one database and one bus, each named
    (on port 0 they would all be called host:0)."""
    return [start_service(server_config(data_dir, database=pg_url, bus=redis_server.url,
                                        node=name))
            for name, data_dir in zip(names, node_dirs(tmp_path, len(names)))]


def in_room(client, room):
    return lambda: client.room(room) is not None


@defer.inlineCallbacks
def made_and_joined(a, b, pins, room, *others):
    """alice on node a makes ``room`` (she owns it); bob, and ``others``,
    on node b join it once b knows of it."""
    alice = yield connect_client(a, pins, "alice")
    yield wait_until(lambda: a.bus.subscribed and b.bus.subscribed)
    alice.join(room)
    yield wait_until(lambda: b.core.directory.get(room) is not None)
    clients = []
    for name in ("bob", *others):
        clients.append((yield connect_client(b, pins, name)))
        clients[-1].join(room)
    yield wait_until(lambda: all(c.room(room) is not None for c in clients))
    return alice, *clients


@pytest_twisted.inlineCallbacks
def test_an_operator_on_node_a_kicks_bans_and_mutes_members_on_node_b(tmp_path, pins, pg_url,
                                                                      redis_server):
    a, b = nodes(tmp_path, pg_url, redis_server)
    try:
        alice, bob, carol, dave = yield made_and_joined(a, b, pins, "ops", "carol", "dave")

        alice.moderate("ops", "kick", "bob", "rude")
        yield wait_until(lambda: bob.room("ops") is None)
        left = bob.rec.of(wire.RoomLeft)[-1]
        assert (left.code, left.by, left.reason) == ("kicked", "alice", "rude")
        alice.moderate("ops", "ban", "carol", "spam")
        yield wait_until(lambda: carol.room("ops") is None)
        assert carol.rec.of(wire.RoomLeft)[-1].code == "banned"
        carol.join("ops")
        yield wait_until(lambda: any(e.code == "banned" for e in carol.rec.of(wire.Error)))
        alice.moderate("ops", "mute", "dave")
        yield wait_until(lambda: any(m.role == "muted" and m.name == "dave"
                                     for m in dave.rec.of(wire.MemberUpdate)))
        dave.say("can I speak?", "ops")
        yield wait_until(lambda: any(e.code == "muted" for e in dave.rec.of(wire.Error)))
        texts = [n.text for n in dave.rec.of(wire.Notice) if n.room == "ops"]
        assert "bob was kicked by alice (rude)" in texts and "alice muted dave (no reason " \
            "given)" in texts
    finally:
        yield stop_services(a, b)


@pytest_twisted.inlineCallbacks
def test_a_topic_and_modes_set_on_node_a_reach_members_and_newcomers_on_node_b(
        tmp_path, pins, pg_url, redis_server):
    a, b = nodes(tmp_path, pg_url, redis_server)
    try:
        alice, bob = yield made_and_joined(a, b, pins, "dev")
        alice.topic("dev", "the plan")
        alice.mode("dev", "moderated", True)
        alice.set_member_limit("dev", 10)
        yield wait_until(lambda: (bob.room("dev").topic, bob.room("dev").moderated,
                                  bob.room("dev").member_limit) == ("the plan", True, 10))
        assert "alice set the topic: the plan" in [n.text for n in bob.rec.of(wire.Notice)]
        carol = yield connect_client(b, pins, "carol")  # a newcomer on b
        carol.join("dev")
        yield wait_until(in_room(carol, "dev"))
        assert (carol.room("dev").topic, carol.room("dev").moderated) == ("the plan", True)
    finally:
        yield stop_services(a, b)


@pytest_twisted.inlineCallbacks
def test_two_nodes_making_one_room_at_once_end_with_one_room_and_its_first_maker(
        tmp_path, pins, pg_url, redis_server):
    a, b = nodes(tmp_path, pg_url, redis_server)
    try:
        alice = yield connect_client(a, pins, "alice")
        bob = yield connect_client(b, pins, "bob")
        yield wait_until(lambda: a.bus.subscribed and b.bus.subscribed)
        rooms = [f"race{i}" for i in range(5)]
        for room in rooms:  # in one turn of the reactor: neither node knows of the other's
            alice.join(room)  # public
            bob.join(room, private=True)
        yield wait_until(lambda: all(a.core.directory.get(r) and b.core.directory.get(r)
                                     for r in rooms), timeout=20)
        yield task.deferLater(reactor, 1.0, lambda: None)  # notices and reads settle
        records = {r.key: r for r in (yield a.core.store.load())}
        winners = []
        for room in rooms:
            on_a, on_b = a.core.directory.get(room), b.core.directory.get(room)
            kept = records[room]
            alice_won = not kept.private  # the settings are the first maker's
            winners.append("alice" if alice_won else "bob")
            assert on_a.private == on_b.private == kept.private, room
            assert on_a.created == on_b.created == kept.created, room
            # Its owner: the first maker only (guests' roles are kept by their node).
            assert on_a.role_of("alice") == ("owner" if alice_won else "member"), room
            assert on_b.role_of("bob") == ("member" if alice_won else "owner"), room
            # The second maker stays in it if it could have joined it.
            assert bob.room(room) is not None, room
            assert (alice.room(room) is not None) == alice_won, room
            if not alice_won:
                assert alice.rec.of(wire.RoomLeft)[-1].code == "invite_only"
        print("first makers:", winners)
    finally:
        yield stop_services(a, b)


@pytest_twisted.inlineCallbacks
def test_a_room_change_told_while_a_node_was_off_the_bus_is_caught_up(tmp_path, pins, pg_url,
                                                                      redis_server):
    a, b = nodes(tmp_path, pg_url, redis_server)
    try:
        alice, bob = yield made_and_joined(a, b, pins, "dev")
        redis_server.stop_server()
        yield wait_until(lambda: not b.bus.subscribed)
        alice.topic("dev", "said while the bus was away")
        alice.moderate("dev", "ban", "bob", "later")
        yield wait_until(lambda: alice.room("dev").topic == "said while the bus was away")
        yield task.deferLater(reactor, 1.0, lambda: None)
        assert bob.room("dev").topic == ""
        redis_server.start()
        yield wait_until(lambda: bob.room("dev") is None, timeout=30)
        assert bob.rec.of(wire.RoomLeft)[-1].code == "banned"
        assert b.core.directory.get("dev").topic == "said while the bus was away"
    finally:
        yield stop_services(a, b)
