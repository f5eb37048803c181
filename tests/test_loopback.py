"""Real clients and a real server over 127.0.0.1 sockets."""

import socket
import struct

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol

from spchat import noise, wire
from spchat.client.session import ClientError

from helpers import RawPeer, Silent
from conftest import connect_client, wait_until


def room_messages(client):
    return client.rec.of(wire.RoomMessage)


@pytest_twisted.inlineCallbacks
def test_each_line_reaches_exactly_the_members_of_its_room_once_in_its_order(
        chat_server, pins):
    alice = yield connect_client(chat_server, pins, "alice")
    bob = yield connect_client(chat_server, pins, "bob")
    carol = yield connect_client(chat_server, pins, "carol")
    for client in (alice, bob):
        client.join("#dev")
    yield wait_until(lambda: alice.room("dev") and bob.room("dev"))
    mallory = yield connect_client(chat_server, pins, "mallory")
    sent = {"lobby": [], "dev": []}
    for i in range(10):
        for client, room in ((alice, "dev"), (bob, "dev"), (carol, "lobby"),
                             (alice, "lobby")):
            text = f"{client.name} {room} {i}"
            client.say(text, room)
            sent[room].append(text)
    mallory.say("not a member", "dev")  # refused: mallory is not in #dev
    yield wait_until(lambda: not any(c.outbox for c in (alice, bob, carol))
                     and mallory.rec.of(wire.Error), timeout=20)
    # Every line of each room has reached everyone who should see it.
    yield wait_until(lambda: all(
        set(sent[room]) <= {m.text for m in room_messages(c) if m.room == room}
        for c in (alice, bob, carol) for room in ("lobby", "dev") if c.room(room)))
    for client in (alice, bob, carol):
        for room in ("lobby", "dev"):
            lines = [m for m in room_messages(client) if m.room == room and not m.history]
            if client.room(room) is None:
                assert lines == []  # carol is not in #dev
                continue
            seqs = [m.seq for m in lines]
            assert seqs == sorted(set(seqs))  # each once, in the room's order
            mine = [m.text for m in lines if m.text.split()[1] == room]
            # Each client's own lines in its order; everyone's, all of them.
            assert sorted(mine) == sorted(sent[room])
            for name in ("alice", "bob", "carol"):
                own = [t for t in mine if t.startswith(name + " ")]
                assert own == [t for t in sent[room] if t.startswith(name + " ")]
    assert mallory.rec.of(wire.Error)[-1].code == "not_in_room"


@pytest_twisted.inlineCallbacks
def test_three_clients_see_every_message_in_the_same_order(chat_server, pins):
    clients = []
    for name in ("alice", "bob", "carol"):
        clients.append((yield connect_client(chat_server, pins, name)))
    assert pins.path.read_text().split() == [
        f"127.0.0.1:{chat_server.address.port}", chat_server.fingerprint
    ]
    sent = {}
    for round_ in range(3):
        for client in clients:
            text = f"{client.name} says {round_}"
            sent[client.say(text)] = (client.name, text)
    yield wait_until(lambda: all(len(room_messages(c)) == 9 for c in clients))

    orders = [[(m.seq, m.sender, m.text) for m in room_messages(c)] for c in clients]
    assert orders[0] == orders[1] == orders[2]
    seqs = [seq for seq, _, _ in orders[0]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 9
    for client in clients:
        for m in room_messages(client):
            assert m.ts > 1_600_000_000_000  # a server timestamp in UTC ms
            if m.sender == client.name:
                assert sent[m.cid] == (m.sender, m.text)  # own copy = the ack
            else:
                assert m.cid is None
        assert not client.outbox
    assert clients[0].rec.of(wire.Members)[-1].names == ("alice", "bob", "carol")
    for client in clients:
        yield client.logout()
    assert chat_server.core.sessions == {}


@pytest_twisted.inlineCallbacks
def test_hostile_connections_are_cut_while_others_keep_chatting(chat_server, pins):
    alice = yield connect_client(chat_server, pins, "alice")
    bob = yield connect_client(chat_server, pins, "bob")
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", chat_server.address.port)

    hostile = [
        b"\x00\x00\x00\x10" + b"random garbage!!",  # not a handshake message
        struct.pack(">I", 1 << 30),  # a length prefix far above the limit
        b"\xff" * 64,
    ]
    for payload in hostile:
        peer = yield connectProtocol(endpoint, RawPeer())
        peer.transport.write(payload)
        yield wait_until(lambda: peer.lost.called, timeout=5)  # the server hung up on it
        assert peer.received == b""  # and never said anything to it

    # An authenticated client whose next frame is altered, then one replayed.
    mallory = yield connect_client(chat_server, pins, "mallory")
    cipher = mallory.proto._send_cipher
    frame = cipher.encrypt_with_ad(b"", wire.encode(wire.Say("x", "m1")))
    mallory.proto.sendString(frame[:-1] + bytes([frame[-1] ^ 0x80]))
    yield wait_until(lambda: mallory.rec.disconnects)
    assert "failed authentication" in mallory.rec.disconnects[0]

    trudy = yield connect_client(chat_server, pins, "trudy")
    frame = trudy.proto._send_cipher.encrypt_with_ad(b"", wire.encode(wire.Say("once", "t1")))
    trudy.proto.sendString(frame)
    trudy.proto.sendString(frame)
    yield wait_until(lambda: trudy.rec.disconnects)
    assert "failed authentication" in trudy.rec.disconnects[0]

    alice.say("still here?")
    bob.say("yes")
    yield wait_until(lambda: len(room_messages(alice)) >= 3)
    texts = [m.text for m in room_messages(alice)]
    assert texts == ["once", "still here?", "yes"]  # trudy's first copy was genuine
    names = {s.name for s in chat_server.core.sessions.values() if s.link is not None}
    assert {"alice", "bob"} <= names
    yield alice.logout()
    yield bob.logout()


@pytest_twisted.inlineCallbacks
def test_changed_server_key_is_refused_with_both_fingerprints(chat_server, pins):
    alice = yield connect_client(chat_server, pins, "alice")
    port = chat_server.address.port
    # The pin says another key: as if the server had been replaced.
    _, other_public = noise.generate_keypair()
    old = noise.fingerprint(other_public)
    pins.forget("127.0.0.1", port)
    pins.check("127.0.0.1", port, old)
    with pytest.raises(ClientError) as refused:
        yield connect_client(chat_server, pins, "bob")
    text = str(refused.value)
    assert "CHANGED" in text and old in text and chat_server.fingerprint in text
    assert f"--forget-server 127.0.0.1:{port}" in text
    assert "bob" not in chat_server.core.by_key
    alice.say("unaffected")
    yield wait_until(lambda: room_messages(alice))
    yield alice.logout()


@pytest_twisted.inlineCallbacks
def test_taken_and_invalid_names_are_refused_over_the_network(chat_server, pins):
    alice = yield connect_client(chat_server, pins, "Alice")
    for name, says in [("ALICE", "is taken"), ("no spaces", "may contain only"), ("", "1 to 32")]:
        with pytest.raises(ClientError) as refused:
            yield connect_client(chat_server, pins, name)
        assert "login refused" in str(refused.value) and says in str(refused.value)
    yield alice.logout()


@pytest_twisted.inlineCallbacks
def test_unreachable_server_is_a_clear_error(pins):
    with socket.socket() as s:  # find a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    class Nowhere:
        address = type("A", (), {"port": port})

    with pytest.raises(ClientError) as refused:
        yield connect_client(Nowhere, pins, "alice")
    assert str(refused.value) == f"nothing is listening at 127.0.0.1:{port} (connection refused)"


@pytest_twisted.inlineCallbacks
def refusal_from(protocol, pins, timeout):
    """(port, why the client could not log in) at a server speaking ``protocol``."""
    listening = reactor.listenTCP(0, Factory.forProtocol(protocol), interface="127.0.0.1")
    port = listening.getHost().port

    class Other:
        address = type("A", (), {"port": port})

    try:
        with pytest.raises(ClientError) as refused:
            yield connect_client(Other, pins, "alice", connect_timeout=timeout)
    finally:
        yield listening.stopListening()
    return port, str(refused.value)


@pytest_twisted.inlineCallbacks
def test_a_server_that_never_answers_is_a_clear_error(pins):
    port, why = yield refusal_from(Silent, pins, 0.3)
    assert why == (f"no answer from 127.0.0.1:{port} within 0.3 s "
                   "(is it an spchat server, and the right port?)")


class Banner(Protocol):
    """Another protocol's server: it speaks first (as SSH does)."""

    def connectionMade(self):
        self.transport.write(b"SSH-2.0-OpenSSH_9.6\r\n")


@pytest_twisted.inlineCallbacks
def test_a_server_of_another_protocol_is_named_so(pins):
    port, why = yield refusal_from(Banner, pins, 5)
    assert why == f"127.0.0.1:{port} is not an spchat server (it answered in another protocol)"


@pytest_twisted.inlineCallbacks
def test_presence_beacons_carry_members_and_states(tmp_path, pins):
    from conftest import server_config, start_service, stop_services

    server = start_service(server_config(tmp_path / "data", **{"presence-interval": "0.2"}))
    try:
        alice = yield connect_client(server, pins, "alice")
        bob = yield connect_client(server, pins, "bob")
        both = (("alice", "online"), ("bob", "online"))
        yield wait_until(lambda: alice.presence is not None and alice.presence.members == both)
        bob.max_retries = 0  # bob stays away
        bob.proto.transport.abortConnection()  # bob's network goes away
        yield wait_until(
            lambda: alice.presence.members == (("alice", "online"), ("bob", "reconnecting"))
        )
        assert server.presence.accepted >= 2 and not server.presence.dropped
    finally:
        stop_services(server)


@pytest_twisted.inlineCallbacks
def test_a_client_whose_udp_is_blocked_gets_presence_over_tcp(tmp_path, pins):
    import socket as socket_module

    from conftest import server_config, start_service, stop_services

    server = start_service(server_config(tmp_path / "data", **{"presence-interval": "0.1"}))
    with socket_module.socket(socket_module.AF_INET, socket_module.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))  # datagrams sent here go nowhere
        server.ports.udp = hole.getsockname()[1]
        try:
            alice = yield connect_client(server, pins, "alice")
            yield connect_client(server, pins, "bob")
            yield wait_until(lambda: len(alice.members) == 2)  # bob's join, over TCP
            before = len(alice.rec.of(wire.Members))
            # No beacon comes; after three intervals alice asks over TCP.
            yield wait_until(lambda: len(alice.rec.of(wire.Members)) > before, timeout=5)
            assert alice.presence.snapshots == 0 and alice.presence.silences >= 1
            assert alice.members == (("alice", "online"), ("bob", "online"))
            # Asking by itself is not activity: alice can still go idle.
            assert server.core.by_key["alice"].last_activity < server.core.now() - 0.2
        finally:
            stop_services(server)


@pytest_twisted.inlineCallbacks
def test_reconnect_by_hand_during_an_automatic_attempt_does_not_dial_twice(chat_server, pins):
    alice = yield connect_client(chat_server, pins, "alice", reconnect_delay=0.2)
    alice.proto.transport.abortConnection()
    yield wait_until(lambda: alice.status.state == "reconnecting")
    alice.reconnect()  # the user is impatient
    alice.reconnect()
    yield wait_until(lambda: alice.status.state == "connected")
    yield task.deferLater(reactor, 0.5, lambda: None)  # the automatic retry was due meanwhile
    assert alice.status.state == "connected"
    assert len(chat_server.core.links) == 1
    alice.say("still one of me")
    yield wait_until(lambda: room_messages(alice))
