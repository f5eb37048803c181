"""The administrator and the rooms' operators across nodes, on real servers
(PostgreSQL, Redis, twistd or in-process nodes): what is asked of one node
is done where the user is."""

from __future__ import annotations

import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import threads

from spchat import wire
from spchat.client.session import ClientError

from conftest import OPEN_CLIENTS, ServerProcess, connect_client, subprocess_env, wait_until
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
        assert said.stdout.strip() == "broadcast to 1 sessions on node a; sent to every node"
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
    assert "audit: admin act from node a: broadcast: broadcast to 1 sessions here" \
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
    assert "audit: admin act from node a: shutdown: disconnected 1 sessions here" \
        in "".join(c.log)
