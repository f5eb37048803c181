"""Clients of a server of three nodes (one key, one PostgreSQL, one Redis
bus; real servers all) whose connections are cut again and again, each
new one going to another node: nothing lost, nothing twice."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from spchat import wire

from cluster_nodes import start_nodes
from conftest import connect_client, stop_services, wait_until
from cutting_proxy import CuttingProxy

ROOMS = ("lobby", "dev")
LINES = 100  # per client


@pytest_twisted.inlineCallbacks
def test_clients_cut_again_and_again_come_back_on_another_node_and_lose_nothing(
        tmp_path, pins, pg_url, redis_server):
    # Flood control off the table: this test is about the network.
    nodes = start_nodes(tmp_path, 3, database=pg_url, bus=redis_server.url, **{
        "flood-burst": "10000", "flood-rate": "100000", "flood-queue": "10000",
        "default-rooms": "lobby,dev"})
    ports = [node.address.port for node in nodes]
    proxies, listening = [], []
    try:
        yield wait_until(lambda: all(node.bus.subscribed for node in nodes), timeout=20)
        names = ("alice", "bob", "carol")
        clients = []
        for i, name in enumerate(names):
            # A proxy of its own for each client: its every connection goes
            # to the next node, starting on a different one for each client.
            proxy = CuttingProxy(ports[i:] + ports[:i], seed=20261201 + i)
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

        try:
            yield wait_until(done, timeout=90)
        except AssertionError:
            raise AssertionError("; ".join(
                f"{c.name}: {c.status} outbox={len(c.outbox)} "
                f"got={len(c.rec.of(wire.RoomMessage))}" for c in clients)
                + f"; cuts={[p.cuts for p in proxies]}") from None
    finally:
        for port in listening:
            yield port.stopListening()
        for proxy in proxies:
            for pipe in list(proxy.pipes):
                pipe.transport.abortConnection()
        stored = {}
        for room in ROOMS:
            stored[room] = [r.text for r in (yield nodes[0].store.after("#" + room, 0, 10_000))]
        yield stop_services(*nodes)

    expected = {f"{n} {i}" for n in names for i in range(LINES)}
    for client in clients:
        received = client.rec.of(wire.RoomMessage)
        texts = [m.text for m in received]
        assert len(texts) == total and set(texts) == expected  # all, and each once
        for room in ROOMS:  # each room in its one order, numbered without gaps
            assert [m.seq for m in received if m.room == room] == list(range(1, total // 2 + 1))
    # The log holds each line once, whatever was sent again on another node.
    assert sorted(stored["lobby"] + stored["dev"]) == sorted(expected)
    for proxy in proxies:
        assert proxy.cuts >= 5, proxy.cuts
        assert set(proxy.sent_to) == set(ports)  # it went to every node
