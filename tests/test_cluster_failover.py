"""Clients of a server of three nodes (one key, one PostgreSQL, one Redis
bus; real servers all) that lose their node: cut again and again, each
new connection going back to its node or to another one, or given the
nodes' addresses when theirs stops.  Nothing lost, nothing twice."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from spchat import wire

import cluster_nodes
from cluster_nodes import addresses, start_nodes, twistd_nodes
from conftest import connect_client, stop_servers, stop_services, wait_until
from cutting_proxy import CuttingProxy
from helpers import lines_in

three_nodes = cluster_nodes.three_nodes
ROOMS = ("lobby", "dev")
LINES = 100  # per client


@pytest.mark.parametrize("moving", [False, True], ids=["back-to-its-node", "onto-another-node"])
@pytest_twisted.inlineCallbacks
def test_clients_cut_again_and_again_lose_nothing_and_get_nothing_twice(
        tmp_path, pins, pg_url, redis_server, moving):
    # Flood control off the table: this test is about the network.
    nodes = start_nodes(tmp_path, 3, database=pg_url, bus=redis_server.url, **{
        "flood-burst": "10000", "flood-rate": "100000", "flood-queue": "10000",
        "default-rooms": "lobby,dev"})
    ports = [node.address.port for node in nodes]
    saved_by = watch_saves(nodes)
    proxies, listening = [], []
    try:
        yield wait_until(lambda: all(node.bus.subscribed for node in nodes), timeout=20)
        names = ("alice", "bob", "carol")
        clients = []
        for i, name in enumerate(names):
            # A proxy of its own for each client, each on its own node;
            # moving, its every connection goes to the next node.
            proxy = CuttingProxy(ports[i:] + ports[:i] if moving else [ports[i]],
                                 seed=20261201 + i)
            proxies.append(proxy)
            listening.append(reactor.listenTCP(0, proxy, interface="127.0.0.1"))
            clients.append((yield connect_client(
                None, pins, name, port=listening[-1].getHost().port, reconnect_delay=0.01,
                max_retries=10_000, presence=False)))
        for i in range(LINES):
            for client in clients:
                client.say(f"{client.name} {i}", ROOMS[i % 2])
        total = LINES * len(clients)

        def done():
            return all(not c.outbox and len(c.rec.of(wire.RoomMessage)) >= total
                       for c in clients)

        def gave_up():  # a client that will not come back by itself
            return any(c.status.state == "offline" for c in clients)

        def how_far():
            return "; ".join(f"{c.name}: {c.status} outbox={len(c.outbox)} "
                             f"got={len(c.rec.of(wire.RoomMessage))} "
                             f"missing={missing(c)}" for c in clients) + (
                f"; cuts={[p.cuts for p in proxies]}")

        def missing(client):
            got = {(m.room, m.seq) for m in client.rec.of(wire.RoomMessage)}
            lacking = [(room, seq) for room in ROOMS for seq in range(1, total // 2 + 1)
                       if (room, seq) not in got]
            return lacking[:10] + around(client, *lacking[0]) if lacking else []

        def around(client, room, seq):
            """What the client was told in ``room`` about where it lacks ``seq``."""
            told = [m.seq if isinstance(m, wire.RoomMessage) else f"state:{m.last_seq}"
                    for m in client.rec.events if getattr(m, "room", None) == room
                    and isinstance(m, (wire.RoomMessage, wire.RoomState))]
            after = next((i for i, t in enumerate(told) if isinstance(t, int) and t > seq),
                         len(told))
            return [f"told in {room}: {told[max(0, after - 6):after + 6]}"]

        try:
            yield wait_until(lambda: done() or gave_up(), timeout=90)
        except AssertionError:
            raise AssertionError(how_far()) from None
        assert not gave_up(), how_far()
    finally:
        for port in listening:
            yield port.stopListening()
        for proxy in proxies:
            for pipe in list(proxy.pipes):
                pipe.transport.abortConnection()
        rows = []
        for room in ROOMS:
            rows += (yield nodes[0].store.after("#" + room, 0, 10_000))
        yield stop_services(*nodes)

    copies = copies_saved(rows, saved_by) + "; " + "; ".join(map(copies_received, clients))
    expected = {f"{n} {i}" for n in names for i in range(LINES)}
    for client in clients:
        received = client.rec.of(wire.RoomMessage)
        texts = [m.text for m in received]
        assert len(texts) == total and set(texts) == expected, copies  # all, and each once
        for room in ROOMS:  # each room in its one order, numbered without gaps
            assert [m.seq for m in received if m.room == room] == list(
                range(1, total // 2 + 1)), copies
    # The log holds each line once, whatever was sent again on another node.
    assert sorted(r.text for r in rows) == sorted(expected), copies
    for proxy in proxies:
        assert proxy.cuts >= 5, proxy.cuts
        assert set(proxy.sent_to) == (set(ports) if moving else {proxy.sent_to[0]})


def watch_saves(nodes):
    """Which node saved each line, by (conversation, seq): told by each
    node's committer as it publishes a batch."""
    saved_by = {}
    for node in nodes:
        committer = node.core.messaging.committer
        publish = committer.on_committed

        def published(saved, again, publish=publish, name=node.core.node):
            saved_by.update(((r.conversation, r.seq), name) for r in saved)
            publish(saved, again)

        committer.on_committed = published
    return saved_by


def copies_saved(rows, saved_by) -> str:
    """The stored lines whose text is there more than once, told in full
    (numbers, cid, lineage, time, node): a copy not recognised as one."""
    by_text = {}
    for row in rows:
        by_text.setdefault(row.text, []).append(row)
    told = [f"{r.text!r} {r.conversation} seq={r.seq} cid={r.cid} lineage={r.lineage} "
            f"ts={r.ts} by {saved_by.get((r.conversation, r.seq), '?')}"
            for same in by_text.values() if len(same) > 1 for r in same]
    return "copies saved: " + ("; ".join(told) or "none")


def copies_received(client) -> str:
    """The lines a client was given more than once, each time told."""
    by_text = {}
    for message in client.rec.of(wire.RoomMessage):
        by_text.setdefault(message.text, []).append(message)
    told = [f"{m.text!r} #{m.room} seq={m.seq} history={m.history}"
            for same in by_text.values() if len(same) > 1 for m in same]
    return f"{client.name} was given again: " + (", ".join(told) or "none")


def say(sent, client, count):
    """``count`` lines from ``client``, each named by its place in ``sent``."""
    sent.extend(f"{client.name} {len(sent) + i}" for i in range(1, count + 1))
    for text in sent[-count:]:
        client.say(text)


@pytest_twisted.inlineCallbacks
def test_a_client_whose_node_stops_goes_on_on_another_node_of_the_list(three_nodes, pins):
    first, second, third = three_nodes
    yield wait_until(lambda: all(node.bus.subscribed for node in three_nodes), timeout=20)
    alice = yield connect_client(first, pins, "alice", host=addresses(three_nodes))
    carol = yield connect_client(third, pins, "carol")
    sent = []
    say(sent, alice, 5)
    say(sent, carol, 5)
    yield wait_until(lambda: len(lines_in(carol)) == 10 and not alice.outbox)
    say(sent, alice, 20)  # on their way as its node stops: some saved, some not, none acknowledged
    yield stop_servers(first)
    say(sent, alice, 5)  # while it moves: kept, then sent on the next node
    yield wait_until(lambda: alice.connected and alice.port == second.address.port, timeout=20)
    say(sent, carol, 5)
    say(sent, alice, 5)
    yield wait_until(lambda: len(lines_in(carol)) == len(sent) and not alice.outbox,
                     timeout=30)
    yield wait_until(lambda: len(lines_in(alice)) >= len(sent), timeout=30)
    log = lines_in(carol)
    assert [seq for seq, _ in log] == list(range(1, len(sent) + 1))
    assert sorted(text for _, text in log) == sorted(sent)  # each line once
    assert lines_in(alice) == log  # the same, in the same order, each once
    stored = [r.text for r in (yield second.store.after("#lobby", 0, 1000))]
    assert sorted(stored) == sorted(sent)


def logged(pg_url, conversation):
    """The texts of a conversation's lines in the database, in its order."""
    from contextlib import closing

    import psycopg2

    with closing(psycopg2.connect(pg_url)) as db, db.cursor() as cursor:
        cursor.execute("SELECT text FROM messages WHERE conversation = %s ORDER BY seq",
                       (conversation,))
        return [text for (text,) in cursor.fetchall()]


@pytest_twisted.inlineCallbacks
def test_kill_9_of_a_node_while_its_clients_send_loses_nothing(tmp_path, pins, pg_url,
                                                               redis_server):
    nodes = twistd_nodes(tmp_path, 3, pg_url, redis_server)
    ports = [node.port for node in nodes]
    try:
        clients = []
        for i, name in enumerate(("alice", "bob", "carol")):  # one on each node
            listed = ",".join(f"127.0.0.1:{port}" for port in ports[i:] + ports[:i])
            clients.append((yield connect_client(None, pins, name, port=ports[i], host=listed,
                                                 presence=False)))
        yield task.deferLater(reactor, 1.0, lambda: None)  # the nodes join the bus
        alice, bob, carol = clients
        sent = []
        sending = task.LoopingCall(lambda: (say(sent, alice, 1), say(sent, bob, 1)))
        sending.start(0.005)
        yield wait_until(lambda: len(sent) >= 200)
        say(sent, alice, 30)  # a burst on its way (some saved, none acknowledged yet) ...
        yield task.deferLater(reactor, 0.002, lambda: None)
        nodes[0].proc.kill()  # ... as alice's node dies
        yield wait_until(lambda: len(sent) >= 600)
        sending.stop()

        def everyone_has_everything():
            return (not alice.outbox and not bob.outbox
                    and all(len(lines_in(c, "lobby")) >= len(sent) for c in clients))

        yield wait_until(lambda: everyone_has_everything() or alice.status.state == "offline",
                         timeout=60)
        assert alice.status.state == "connected", alice.status
        assert alice.port != ports[0]
        yield task.deferLater(reactor, 0.5, lambda: None)  # a copy would come by now
    finally:
        yield stop_services()
        nodes[0].proc.kill()
        nodes[0].proc.wait()
        for node in nodes[1:]:
            node.stop()
    for node in nodes:
        assert "Traceback" not in "".join(node.log) and "Unhandled" not in "".join(node.log)
    log = logged(pg_url, "#lobby")
    assert sorted(log) == sorted(sent)  # every line once, acknowledged or not when it died
    for client in clients:
        assert [text for _, text in lines_in(client, "lobby")] == log, client.name
