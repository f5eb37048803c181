"""Several nodes on one PostgreSQL database and one Redis bus, real servers
all (started by the tests, see tests/postgres.py and tests/redis_server.py):
every line is seen once, in its room's order, by exactly its room's
members, whichever node each is on, and a bus that goes away loses nothing."""

from __future__ import annotations

import subprocess

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from spchat import wire
from spchat.server.store import StoreError

from helpers import lines_in, node_dirs
from conftest import (ServerProcess, connect_client, server_config, start_service,
                      stop_services, subprocess_env, twistd_command, wait_until)


def nodes(tmp_path, count, pg_url, redis_server, **options):
    """``count`` chat servers in this process, each with its own data
    directory, on one database and one bus."""
    return [start_service(server_config(data_dir, database=pg_url, bus=redis_server.url,
                                        **options))
            for data_dir in node_dirs(tmp_path, count)]


@pytest_twisted.inlineCallbacks
def test_three_nodes_deliver_each_room_once_in_order_to_its_members(tmp_path, pins, pg_url,
                                                                  redis_server):
    servers = nodes(tmp_path, 3, pg_url, redis_server, **{"default-rooms": " "})
    try:
        rooms = {"red": ["alice", "bob", "carol", "dave"],
                 "blue": ["carol", "erin", "frank", "alice"]}
        names = ["alice", "bob", "carol", "dave", "erin", "frank"]
        clients = {}
        for i, name in enumerate(names):  # two on each node
            server = servers[i % 3]
            clients[name] = yield connect_client(server, pins, name)
        for room, members in rooms.items():
            for name in members:
                clients[name].join(room)
        yield wait_until(lambda: all(clients[name].room(room) is not None
                                     for room, members in rooms.items() for name in members))
        sent = {room: [] for room in rooms}
        for turn in range(15):  # interleaved, from every node at once
            for room, members in rooms.items():
                for name in members:
                    text = f"{name} {turn}"
                    clients[name].say(text, room)
                    sent[room].append(text)

        def everyone_has_everything():
            return all(len(lines_in(clients[name], room)) >= len(sent[room])
                       for room, members in rooms.items() for name in members)

        yield wait_until(everyone_has_everything, timeout=30)
        yield task.deferLater(reactor, 0.5, lambda: None)  # a copy would come by now
        for room, members in rooms.items():
            log = lines_in(clients[members[0]], room)
            # The room's order: its numbers, gapless; every line sent, once.
            assert [seq for seq, _ in log] == list(range(1, len(sent[room]) + 1))
            assert sorted(text for _, text in log) == sorted(sent[room])
            for name in members:
                assert lines_in(clients[name], room) == log, (name, room)
            for name in set(names) - set(members):
                assert lines_in(clients[name], room) == [], (name, room)
        assert not any(client.outbox for client in clients.values())
    finally:
        yield stop_services(*servers)


@pytest_twisted.inlineCallbacks
def test_a_restarted_bus_pauses_deliveries_then_they_catch_up_from_the_database(
        tmp_path, pins, pg_url, redis_server):
    servers = nodes(tmp_path, 2, pg_url, redis_server)
    try:
        alice = yield connect_client(servers[0], pins, "alice")
        bob = yield connect_client(servers[1], pins, "bob")
        yield wait_until(lambda: servers[0].bus.subscribed and servers[1].bus.subscribed)
        sent = []

        def say(client, count):
            for _ in range(count):
                sent.append(f"{client.name} {len(sent) + 1}")
                client.say(sent[-1])

        say(alice, 3)
        say(bob, 2)
        yield wait_until(lambda: len(lines_in(alice, "lobby")) == len(lines_in(bob, "lobby")) == 5)
        redis_server.stop_server()
        yield wait_until(lambda: not servers[1].bus.subscribed)
        say(alice, 5)
        # Saved, acknowledged and delivered on alice's node; bob's waits.
        yield wait_until(lambda: len(lines_in(alice, "lobby")) == 10 and not alice.outbox)
        yield task.deferLater(reactor, 1.0, lambda: None)
        assert len(lines_in(bob, "lobby")) == 5
        redis_server.start()
        # Once the bus is back, bob's node reads what it missed.
        yield wait_until(lambda: len(lines_in(bob, "lobby")) == 10, timeout=30)
        say(bob, 2)
        say(alice, 2)
        yield wait_until(lambda: len(lines_in(alice, "lobby")) == len(lines_in(bob, "lobby")) == 14,
                         timeout=30)
        yield task.deferLater(reactor, 0.5, lambda: None)  # a copy would come by now
        # One order for both, the room's numbers; every line once.
        log = lines_in(alice, "lobby")
        assert lines_in(bob, "lobby") == log
        assert [seq for seq, _ in log] == list(range(1, len(sent) + 1))
        assert sorted(text for _, text in log) == sorted(sent)
    finally:
        yield stop_services(*servers)


@pytest_twisted.inlineCallbacks
def test_nodes_start_without_their_bus_and_join_when_it_comes(tmp_path, pins, pg_url,
                                                              redis_server):
    redis_server.stop_server()
    servers = nodes(tmp_path, 2, pg_url, redis_server)
    try:
        alice = yield connect_client(servers[0], pins, "alice")
        bob = yield connect_client(servers[1], pins, "bob")
        alice.say("alone")
        yield wait_until(lambda: lines_in(alice, "lobby") == [(1, "alone")] and not alice.outbox)
        assert lines_in(bob, "lobby") == []
        redis_server.start()
        yield wait_until(lambda: lines_in(bob, "lobby") == [(1, "alone")], timeout=30)
        bob.say("together")
        yield wait_until(lambda: lines_in(alice, "lobby") == [(1, "alone"), (2, "together")])
        assert lines_in(bob, "lobby") == [(1, "alone"), (2, "together")]
    finally:
        yield stop_services(*servers)


@pytest_twisted.inlineCallbacks
def test_a_room_made_on_another_node_shows_its_earlier_lines_as_history(tmp_path, pins,
                                                                        pg_url, redis_server):
    servers = nodes(tmp_path, 2, pg_url, redis_server)
    try:
        alice = yield connect_client(servers[0], pins, "alice")
        bob = yield connect_client(servers[1], pins, "bob")
        alice.join("late")
        yield wait_until(lambda: alice.room("late") is not None)
        for i in range(3):
            alice.say(f"early {i}", "late")
        def b_knows_three():  # of a room it was told of, or only of its lines
            room = servers[1].core.directory.get("late")
            return (room.last_seq if room is not None
                    else servers[1].core.directory.deleted_seqs.get("late")) == 3

        yield wait_until(b_knows_three)
        bob.join("late")
        yield wait_until(lambda: [m.text for m in bob.rec.of(wire.RoomMessage)]
                         == ["early 0", "early 1", "early 2"])
        alice.say("now", "late")
        yield wait_until(lambda: lines_in(bob, "late") == [(4, "now")])
        assert all(m.history for m in bob.rec.of(wire.RoomMessage) if m.seq < 4)
    finally:
        yield stop_services(*servers)


@pytest_twisted.inlineCallbacks
def test_two_twistd_nodes_on_the_command_line_share_a_room(tmp_path, pins, pg_url,
                                                           redis_server):
    processes = []
    try:
        for data_dir in node_dirs(tmp_path, 2):
            # Its data directory given last: the one with the shared key.
            processes.append(ServerProcess(data_dir, "--data-dir", str(data_dir),
                                           "--relay-port", "0",
                                           "--database", pg_url, "--bus", redis_server.url))
        alice = yield connect_client(None, pins, "alice", port=processes[0].port)
        bob = yield connect_client(None, pins, "bob", port=processes[1].port)
        yield task.deferLater(reactor, 1.0, lambda: None)  # the nodes join the bus
        alice.say("across")
        yield wait_until(lambda: lines_in(bob, "lobby") == [(1, "across")], timeout=20)
        bob.say("back")
        yield wait_until(lambda: lines_in(alice, "lobby") == [(1, "across"), (2, "back")])
    finally:
        yield stop_services()
        for process in processes:
            process.stop()
    for process in processes:
        log = "".join(process.log)
        assert "Traceback" not in log and "Unhandled" not in log, log


def test_a_bus_without_a_shared_database_is_refused_in_one_line(tmp_path):
    from spchat.tap import make_bus

    with pytest.raises(StoreError, match="CHAT_DATABASE_URL") as refused:
        make_bus(server_config(tmp_path, bus="redis://127.0.0.1:6379"), reactor)
    assert "\n" not in str(refused.value)
    result = subprocess.run(
        twistd_command() + ["-n", "--pidfile=", "spchat", "--data-dir", str(tmp_path / "data"),
                            "--tcp-port", "0", "--udp-port", "0", "--relay-port", "0",
                            "--bus", "redis://127.0.0.1:6379"],
        cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"spchat: error: {refused.value}"]
    assert "Traceback" not in result.stdout + result.stderr
