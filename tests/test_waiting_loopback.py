"""Direct messages to a registered user who is offline, over real sockets:
on one node with SQLite, across a restart, and across two nodes on
PostgreSQL and Redis (alice on one, bob logging in on the other)."""

import pytest_twisted
from twisted.internet import defer, reactor, task

from spchat import wire

from conftest import connect_client, server_config, start_service, stop_services, wait_until
from helpers import node_dirs

PASSWORD = "bob's password"


def a_moment():
    """Time for anything more to come (nothing should)."""
    return task.deferLater(reactor, 0.3, lambda: None)


def directs(client):
    return [(m.sender, m.text) for m in client.rec.of(wire.DirectMessage) if not m.history]


@defer.inlineCallbacks
def registered(server, pins, name):
    """``name`` registered, and logged out again."""
    client = yield connect_client(server, pins, name, password=PASSWORD, register=True)
    yield wait_until(lambda: any(n.kind == "account" for n in client.rec.of(wire.Notice)))
    yield client.logout()


@defer.inlineCallbacks
def sent_to_bob(alice, count):
    """``count`` lines from alice to bob, acknowledged."""
    for i in range(count):
        alice.direct("bob", f"while you were out {i}")
    yield wait_until(lambda: len(alice.rec.of(wire.DirectMessage)) == count)
    return alice.rec.of(wire.DirectMessage)


@pytest_twisted.inlineCallbacks
def test_bob_gets_what_was_sent_while_he_was_out_once_in_order_after_a_restart(tmp_path, pins):
    data = tmp_path / "data"
    server = start_service(server_config(data))
    try:
        yield registered(server, pins, "bob")
        alice = yield connect_client(server, pins, "alice")
        acks = yield sent_to_bob(alice, 3)
        assert not alice.rec.of(wire.Error)
        yield wait_until(lambda: [n for n in alice.rec.of(wire.Notice) if n.kind == "waiting"])
        yield stop_services(server)  # kept on disk, not in memory
        server = start_service(server_config(data))
        bob = yield connect_client(server, pins, "bob", password=PASSWORD)
        yield wait_until(lambda: len(directs(bob)) == 3)
        got = bob.rec.of(wire.DirectMessage)
        assert directs(bob) == [("alice", f"while you were out {i}") for i in range(3)]
        assert [(m.seq, m.ts) for m in got] == [(m.seq, m.ts) for m in acks]
        yield bob.logout()
        again = yield connect_client(server, pins, "bob", password=PASSWORD)
        yield a_moment()
        assert directs(again) == []
    finally:
        yield stop_services(server)


@pytest_twisted.inlineCallbacks
def test_a_guest_offline_is_refused_and_an_account_takes_no_more_than_its_limit(tmp_path,
                                                                               pins):
    server = start_service(server_config(tmp_path / "data", **{"max-waiting-directs": "2"}))
    try:
        yield registered(server, pins, "bob")
        alice = yield connect_client(server, pins, "alice")
        alice.direct("nobody", "hello?")
        yield sent_to_bob(alice, 2)
        alice.direct("bob", "one too many")
        yield wait_until(lambda: len(alice.rec.of(wire.Error)) == 2)
        codes = [(e.code, e.text) for e in alice.rec.of(wire.Error)]
        assert codes == [
            ("unknown_user", "nobody called 'nobody' is online, and direct messages are kept "
             "only for registered names: send it again when they are back"),
            ("inbox_full", "bob is offline and has 2 messages waiting already: send it again "
             "when they are back")]
        bob = yield connect_client(server, pins, "bob", password=PASSWORD)
        yield wait_until(lambda: len(directs(bob)) == 2)
        yield a_moment()
        assert [text for _, text in directs(bob)] == [
            "while you were out 0", "while you were out 1"]
    finally:
        yield stop_services(server)


@pytest_twisted.inlineCallbacks
def test_alice_on_one_node_bob_logs_in_on_the_other(tmp_path, pins, pg_url, redis_server):
    servers = [start_service(server_config(data_dir, database=pg_url, bus=redis_server.url,
                                           node=f"node{i}"))
               for i, data_dir in enumerate(node_dirs(tmp_path, 2))]
    try:
        yield wait_until(lambda: all(server.bus.subscribed for server in servers))
        yield registered(servers[1], pins, "bob")
        alice = yield connect_client(servers[0], pins, "alice")
        acks = yield sent_to_bob(alice, 3)
        assert not alice.rec.of(wire.Error)
        bob = yield connect_client(servers[1], pins, "bob", password=PASSWORD)
        yield wait_until(lambda: len(directs(bob)) == 3)
        assert [m.seq for m in bob.rec.of(wire.DirectMessage)] == [m.seq for m in acks]
        # Online now, wherever he is: a line goes to him live, once.
        yield wait_until(lambda: servers[0].core.roster.elsewhere("bob") is not None)
        alice.direct("bob", "welcome back")
        yield wait_until(lambda: len(directs(bob)) == 4)
        yield a_moment()
        assert [text for _, text in directs(bob)] == [
            "while you were out 0", "while you were out 1", "while you were out 2",
            "welcome back"]
        yield bob.logout()
        again = yield connect_client(servers[0], pins, "bob", password=PASSWORD)
        yield a_moment()
        assert directs(again) == []
    finally:
        yield stop_services(*servers)

