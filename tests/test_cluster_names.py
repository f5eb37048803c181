"""Names and sessions across nodes, on real servers (PostgreSQL, Redis,
several chat nodes): a name is one user's in the whole cluster, a session
resumes on any node, a dead node's names come free after its timeout,
and the owner of a registered name replaces its session wherever it is."""

from __future__ import annotations

import time

import pytest_twisted
from twisted.internet import defer, reactor, task

from spchat import wire
from spchat.client.session import ChatClient

from helpers import lines_in, node_dirs
from conftest import ServerProcess, connect_client, server_config, start_service, \
    stop_services, wait_until


def nodes(tmp_path, count, pg_url, redis_server, **options):
    """``count`` named nodes in this process, on one database and one bus."""
    return [start_service(server_config(data_dir, database=pg_url, bus=redis_server.url,
                                        node=f"node{i}", **options))
            for i, data_dir in enumerate(node_dirs(tmp_path, count))]


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


def bus_up(*servers):
    return wait_until(lambda: all(server.bus.subscribed for server in servers))


def both(*ports):
    """Two nodes as a client is given them: after a cut it tries the other first."""
    return ",".join(f"127.0.0.1:{port}" for port in ports)


def cut(client):
    """The client's connection is gone from under it."""
    client.proto.transport.abortConnection()


@pytest_twisted.inlineCallbacks
def test_two_clients_racing_for_one_name_on_two_nodes_exactly_one_gets_it(tmp_path, pins,
                                                                           pg_url, redis_server):
    servers = nodes(tmp_path, 2, pg_url, redis_server)
    try:
        for turn in range(6):
            name = f"racer{turn}"
            outcomes = yield defer.DeferredList(
                [connect_client(server, pins, name) for server in servers], consumeErrors=True)
            won = [ok for ok, _ in outcomes if ok]
            refused = [str(result.value) for ok, result in outcomes if not ok]
            assert len(won) == 1 and len(refused) == 1, outcomes
            assert refused[0] == f"login refused: the name {name!r} is taken"
            holders = [server for server in servers if name in server.core.by_key]
            assert len(holders) == 1
    finally:
        yield stop_services(*servers)


@pytest_twisted.inlineCallbacks
def test_a_guest_resumes_on_another_node_with_its_name_rooms_and_lineage(tmp_path, pins,
                                                                         pg_url, redis_server):
    servers = nodes(tmp_path, 2, pg_url, redis_server)
    try:
        yield bus_up(*servers)
        alice = yield connect_client(servers[0], pins, "alice", reconnect_delay=2.0,
                                     host=both(*(server.address.port for server in servers)))
        carol = yield connect_client(servers[0], pins, "carol")
        bob = yield connect_client(servers[1], pins, "bob")
        alice.join("dev")  # made here: a room the other node reads when alice comes
        yield wait_until(lambda: alice.room("dev") is not None)
        alice.say("before")
        yield wait_until(lambda: lines_in(bob, "lobby") == [(1, "before")] and not alice.outbox)
        before = next(m for m in alice.rec.of(wire.RoomMessage) if m.text == "before")
        first = alice._welcome
        old = servers[0].core.by_key["alice"]
        lineage, rooms = old.lineage, set(old.rooms)
        cut(alice)  # it comes back on the other node
        bob.say("while away")  # alice misses it, then sees it once
        yield wait_until(lambda: not bob.outbox)
        yield wait_until(lambda: "alice" in servers[1].core.by_key, timeout=20)
        yield wait_until(lambda: alice.status.state == "connected")
        assert alice._welcome.session == first.session and alice._welcome.resumed
        there = servers[1].core.by_key["alice"]
        assert (there.id, there.lineage) == (old.id, lineage)
        assert there.rooms == rooms == {"lobby", "dev"}
        # Its old node ended its copy, and no one there was told it left.
        yield wait_until(lambda: "alice" not in servers[0].core.by_key)
        assert not [n for n in carol.rec.of(wire.Notice) if "alice" in n.text and "left" in n.text]
        yield wait_until(lambda: (2, "while away") in lines_in(alice, "lobby"))
        alice.say("still in dev", "dev")
        yield wait_until(lambda: lines_in(alice, "dev") == [(1, "still in dev")])
        # The line re-sent after the move is a copy of the line saved before.
        alice.proto.send_message(wire.Say("before", before.cid, "lobby"))
        alice.say("after")
        yield wait_until(lambda: (3, "after") in lines_in(bob, "lobby"))
        yield sleep(0.3)  # a copy would come by now
        assert [text for _, text in lines_in(alice, "lobby")] == ["before", "while away", "after"]
        assert lines_in(bob, "lobby") == lines_in(alice, "lobby")
        saved = yield servers[1].store.after("#lobby", 0, 100)
        assert [r.text for r in saved] == ["before", "while away", "after"]
    finally:
        yield stop_services(*servers)


@pytest_twisted.inlineCallbacks
def test_a_node_killed_frees_its_names_after_the_timeout_and_its_clients_resume_elsewhere(
        tmp_path, pins, pg_url, redis_server):
    dirs = node_dirs(tmp_path, 2)
    timeout = 2.0
    doomed = ServerProcess(dirs[0], "--data-dir", str(dirs[0]), "--relay-port", "0",
                           "--database", pg_url, "--bus", redis_server.url, "--node", "doomed",
                           "--node-timeout", str(timeout))
    survivor = start_service(server_config(dirs[1], database=pg_url, bus=redis_server.url,
                                           node="survivor", **{"node-timeout": str(timeout)}))
    try:
        alice = yield connect_client(None, pins, "alice", port=doomed.port, max_retries=20,
                                     host=both(doomed.port, survivor.address.port))
        yield connect_client(None, pins, "erin", port=doomed.port, max_retries=0)
        alice.say("said on the doomed node")
        yield wait_until(lambda: not alice.outbox)
        session = alice._welcome.session
        doomed.proc.kill()  # kill -9
        killed = time.monotonic()
        doomed.proc.wait()
        # Its client resumes on the survivor at once: the token is proof.
        yield wait_until(lambda: "alice" in survivor.core.by_key, timeout=20)
        assert survivor.core.by_key["alice"].id == session
        yield wait_until(lambda: alice.status.state == "connected")
        assert alice._welcome.resumed
        # erin's name is held while the dead node may still be alive...
        try:
            yield connect_client(survivor, pins, "erin")
            taken_early = False
        except Exception as refused:
            taken_early = "taken" in str(refused)
        # ... (unless this machine was so slow that the timeout has passed)
        assert taken_early or time.monotonic() - killed >= timeout
        while True:  # ... and free once the timeout has passed
            try:
                yield connect_client(survivor, pins, "erin")
                break
            except Exception as refused:
                assert "taken" in str(refused)
                assert time.monotonic() - killed < timeout + 10, "erin's name stayed taken"
                yield sleep(0.2)
        assert time.monotonic() - killed >= timeout - 0.5  # not before (its last beat)
        alice.say("said on the survivor")
        yield wait_until(lambda: not alice.outbox)
        saved = yield survivor.store.after("#lobby", 0, 100)
        assert [r.text for r in saved] == ["said on the doomed node", "said on the survivor"]
    finally:
        yield stop_services(survivor)
        if doomed.proc.poll() is None:
            doomed.proc.kill()


@pytest_twisted.inlineCallbacks
def test_a_registered_name_logging_in_on_another_node_ends_its_session_on_the_first(
        tmp_path, pins, pg_url, redis_server):
    servers = nodes(tmp_path, 2, pg_url, redis_server)
    try:
        yield bus_up(*servers)
        first = yield connect_client(servers[0], pins, "alice", password="correct horse",
                                     register=True)
        second = yield connect_client(servers[1], pins, "alice", password="correct horse")
        yield wait_until(lambda: first.status.state == "offline")
        assert first.status.reason == "you logged in from somewhere else"
        assert first.status.recovery == "never"
        assert second.status.state == "connected"
        yield wait_until(lambda: "alice" not in servers[0].core.by_key)
        assert servers[1].core.by_key["alice"].id == second._welcome.session
    finally:
        yield stop_services(*servers)


@pytest_twisted.inlineCallbacks
def test_a_client_that_moves_while_its_old_connection_is_open_resumes_and_the_old_one_closes(
        tmp_path, pins, pg_url, redis_server):
    servers = nodes(tmp_path, 2, pg_url, redis_server)
    try:
        yield bus_up(*servers)
        old = yield connect_client(servers[0], pins, "alice")
        old.say("from the first node")
        yield wait_until(lambda: not old.outbox)
        # The same client (its session and token), now through the other node.
        new = ChatClient(reactor, "127.0.0.1", servers[1].address.port, "alice", pins)
        new._welcome = old._welcome
        yield new.connect()
        try:
            assert new._welcome.resumed and new._welcome.session == old._welcome.session
            yield wait_until(lambda: old.status.state == "offline")
            assert old.status.reason == "this session continues on another node"
            assert "alice" not in servers[0].core.by_key
            new.say("from the second node")
            yield wait_until(lambda: not new.outbox)
            saved = yield servers[1].store.after("#lobby", 0, 100)
            assert [r.text for r in saved] == ["from the first node", "from the second node"]
        finally:
            new.logout()
    finally:
        yield stop_services(*servers)
