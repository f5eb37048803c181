"""Nothing lost, nothing twice: real clients reconnect through a proxy that
keeps cutting their connections, often in the middle of a frame."""

import pytest
import pytest_twisted
from twisted.internet import reactor

from spchat import wire

from conftest import connect_client, server_config, start_service, stop_services, wait_until
from cutting_proxy import CuttingProxy


ROOMS = ("lobby", "dev")


@pytest.fixture
def fast_server(tmp_path):
    # Flood control off the table: this test is about the network.  Two
    # rooms everyone is in: each keeps its own numbers through the cuts.
    service = start_service(server_config(
        tmp_path / "data", **{"flood-burst": "10000", "flood-rate": "100000",
                              "flood-queue": "10000", "default-rooms": "lobby,dev"}
    ))
    yield service
    stop_services(service)


@pytest_twisted.inlineCallbacks
def test_every_message_arrives_exactly_once_through_a_cutting_proxy(fast_server, pins):
    proxy = CuttingProxy(fast_server.address.port, seed=20261124)
    listening = reactor.listenTCP(0, proxy, interface="127.0.0.1")
    port = listening.getHost().port
    try:
        names = ("alice", "bob", "carol")
        clients = []
        for name in names:
            client = yield connect_client(
                fast_server, pins, name, port=port, reconnect_delay=0.01, max_retries=10_000,
                presence=False,
            )
            clients.append(client)
        for i in range(200):
            for client in clients:
                client.say(f"{client.name} {i}", ROOMS[i % 2])

        def done():
            return all(
                not c.outbox and len(c.rec.of(wire.RoomMessage)) >= 600 for c in clients
            )

        try:
            yield wait_until(done, timeout=60)
        except AssertionError:
            raise AssertionError("; ".join(
                f"{c.name}: {c.status} outbox={len(c.outbox)} "
                f"got={len(c.rec.of(wire.RoomMessage))} positions={c.positions.as_wire()}"
                for c in clients) + f"; cuts={proxy.cuts} errors={[e for c in clients for e in c.rec.of(wire.Error)][:5]}")
    finally:
        yield listening.stopListening()
        for pipe in list(proxy.pipes):
            pipe.transport.abortConnection()

    expected = {f"{n} {i}" for n in names for i in range(200)}
    for client in clients:
        received = client.rec.of(wire.RoomMessage)
        texts = [m.text for m in received]
        assert len(texts) == 600 and set(texts) == expected  # all, and each once
        for room in ROOMS:  # each room in its own order, numbered without gaps
            seqs = [m.seq for m in received if m.room == room]
            assert seqs == list(range(1, 301))
            assert all(int(m.text.split()[1]) % 2 == ROOMS.index(room)
                       for m in received if m.room == room)
        # Each client's own messages in the order it typed them.
        # Each client's own lines in each room in the order it typed them
        # (a replay goes room by room, so not across rooms).
        for room in ROOMS:
            own = [int(m.text.split()[1]) for m in received
                   if m.room == room and m.text.startswith(client.name + " ")]
            assert own == list(range(ROOMS.index(room), 200, 2))
        assert any(s.state == "reconnecting" for s in client.rec.statuses)
    # The server stored each message once, whatever was re-sent.
    stored = []
    for room in ROOMS:
        stored += [r.text for r in (yield fast_server.store.after("#" + room, 0, 1000))]
    assert sorted(stored) == sorted(expected)
    assert proxy.cuts >= 20, proxy.cuts
