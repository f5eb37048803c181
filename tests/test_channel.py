"""The encrypted channel in memory: framing, handshake, and hostile input.

Server and client protocols are the real ones; only the sockets are replaced
by StringTransports that the test pumps, so delivery can be cut into single
bytes and frames can be altered, replayed or invented.
"""

import struct

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from spchat import config, noise, wire
from spchat.client.protocol import ChatClientProtocol
from spchat.server.core import ROOM_EVENT_SECONDS, ChatCore, Limits
from spchat.server.protocol import MAX_MALFORMED, ChatServerFactory


class Listener:
    """What a client session would be: records what the protocol reports."""

    def __init__(self, name=None):
        self.name = name
        self.received = []
        self.lost = None
        self.proto = None

    def channel_open(self, proto):
        self.proto = proto
        if self.name:
            proto.send_message(wire.Login(self.name))

    def message_received(self, msg):
        self.received.append(msg)

    def connection_lost(self, reason, proto=None):
        self.lost = reason or "closed"

    def of(self, kind):
        return [m for m in self.received if isinstance(m, kind)]


def frames_in(data):
    frames = []
    while data:
        (n,) = struct.unpack(">I", data[:4])
        frames.append(data[4:4 + n])
        data = data[4 + n:]
    return frames


class Link:
    """A client and a server protocol joined by two StringTransports."""

    def __init__(self, factory, clock, name=None, port=40000, verify=lambda fp: None):
        self.listener = Listener(name)
        self.clock = clock
        self.server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        self.client = ChatClientProtocol(clock, verify, self.listener)
        self.s_tr = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        self.c_tr = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
        self.server.makeConnection(self.s_tr)
        self.client.makeConnection(self.c_tr)

    def pump(self, byte_at_a_time=False):
        """Move bytes both ways until nothing is left to move."""
        moved = True
        while moved:
            moved = False
            self.clock.advance(0)  # the end of the server's reactor turn: it writes
            for src, dst in ((self.c_tr, self.server), (self.s_tr, self.client)):
                data = src.value()
                if data:
                    src.clear()
                    moved = True
                    if byte_at_a_time:
                        for i in range(len(data)):
                            dst.dataReceived(data[i : i + 1])
                    else:
                        dst.dataReceived(data)

    def client_frames(self, action):
        """Run ``action`` and return the frames the client wrote meanwhile."""
        self.pump()
        action()
        data = self.c_tr.value()
        self.c_tr.clear()
        return frames_in(data)

    def to_server(self, frame):
        self.server.dataReceived(struct.pack(">I", len(frame)) + frame)

    @property
    def server_closed(self):
        return self.s_tr.disconnecting


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def factory(clock):
    key, _ = noise.generate_keypair()
    core = ChatCore(clock, Limits(max_message_bytes=8192))
    return ChatServerFactory(core, key, clock, handshake_timeout=10, max_connections_per_ip=4)


def test_byte_at_a_time_delivery_is_reassembled(factory, clock):
    link = Link(factory, clock, name="alice")
    link.pump(byte_at_a_time=True)
    assert link.listener.of(wire.Welcome)[0].name == "alice"
    link.listener.proto.send_message(wire.Say("one byte at a time", "c1"))
    link.pump(byte_at_a_time=True)
    (echo,) = link.listener.of(wire.RoomMessage)
    assert (echo.text, echo.cid, echo.seq) == ("one byte at a time", "c1", 1)
    assert not link.server_closed


def test_oversized_length_prefix_closes_at_once(factory, clock):
    link = Link(factory, clock, name="alice")
    link.pump()
    link.server.dataReceived(struct.pack(">I", noise.MAX_MESSAGE_LEN + 1))
    assert link.server_closed
    # Before the handshake, too.
    fresh = Link(factory, clock, port=40001)
    fresh.server.dataReceived(struct.pack(">I", 10_000_000) + b"x" * 100)
    assert fresh.server_closed and fresh.s_tr.disconnected


def test_garbage_before_the_handshake_closes_at_once(factory, clock):
    link = Link(factory, clock)
    link.c_tr.clear()  # drop the genuine first handshake message
    link.to_server(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 40)
    assert link.server_closed and link.s_tr.disconnected
    assert not factory.core.links


def test_altered_ciphertext_closes_with_the_reason(factory, clock):
    link = Link(factory, clock, name="alice")
    link.pump()
    (frame,) = link.client_frames(lambda: link.listener.proto.send_message(wire.Say("hi", "c1")))
    link.to_server(frame[:-1] + bytes([frame[-1] ^ 1]))
    assert link.server_closed
    link.pump()
    (bye,) = link.listener.of(wire.Bye)
    assert bye.code == "protocol_error" and "failed authentication" in bye.text
    assert not link.listener.of(wire.RoomMessage)


def test_replayed_frame_closes(factory, clock):
    link = Link(factory, clock, name="alice")
    link.pump()
    (frame,) = link.client_frames(lambda: link.listener.proto.send_message(wire.Say("hi", "c1")))
    link.to_server(frame)
    link.to_server(frame)
    assert link.server_closed
    link.pump()
    assert len(link.listener.of(wire.RoomMessage)) == 1
    assert "replayed" in link.listener.of(wire.Bye)[0].text


def test_reordered_frames_close(factory, clock):
    link = Link(factory, clock, name="alice")
    link.pump()
    proto = link.listener.proto
    frames = link.client_frames(
        lambda: (proto.send_message(wire.Say("1", "c1")), proto.send_message(wire.Say("2", "c2")))
    )
    link.to_server(frames[1])
    assert link.server_closed


def test_frames_buffered_after_close_are_ignored(factory, clock, monkeypatch):
    link = Link(factory, clock, name="alice")
    link.pump()
    reached_core = []
    receive = factory.core.receive
    monkeypatch.setattr(
        factory.core, "receive", lambda l, m: (reached_core.append(m), receive(l, m))
    )
    proto = link.listener.proto
    frames = link.client_frames(
        lambda: (proto.send_message(wire.Logout()), proto.send_message(wire.Say("late", "c2")))
    )
    # Both frames arrive in one read: the second must not reach the core.
    link.server.dataReceived(b"".join(struct.pack(">I", len(f)) + f for f in frames))
    assert link.server_closed
    assert reached_core == [wire.Logout()]


def test_a_peer_that_never_reads_is_aborted_after_a_polite_close(factory, clock):
    link = Link(factory, clock, name="alice")
    link.pump()
    link.listener.proto.send_message(wire.Logout())
    link.pump()
    assert link.s_tr.disconnecting and not link.s_tr.disconnected  # polite: flush first
    clock.advance(5)  # the peer never drained its buffer
    assert link.s_tr.disconnected
    link.server.connectionLost(None)
    assert clock.getDelayedCalls() == []  # no timer outlives the connection


def test_closing_leaves_no_timers_behind(factory, clock):
    link = Link(factory, clock, name="alice")
    link.pump()
    clock.advance(ROOM_EVENT_SECONDS)  # "alice joined" has gone out
    link.server.connectionLost(None)
    # Only the session's resume grace is left (no login or close timers).
    (grace,) = clock.getDelayedCalls()
    assert grace.getTime() == clock.seconds() + 30
    clock.advance(30)  # the session goes offline
    clock.advance(ROOM_EVENT_SECONDS)  # and "alice left" goes out
    assert not factory.core.sessions and clock.getDelayedCalls() == []


def test_malformed_messages_name_their_cid_and_too_many_close(factory, clock):
    link = Link(factory, clock, name="alice")
    link.pump()
    cipher = link.client._send_cipher
    link.client.sendString(cipher.encrypt_with_ad(b"", b'{"t": "say", "text": 5, "cid": "c7"}'))
    link.pump()
    assert link.listener.of(wire.Error)[-1].cid == "c7"
    for _ in range(10):
        link.client.sendString(cipher.encrypt_with_ad(b"", b"junk"))
    link.pump()
    assert link.server_closed
    assert "more than 10 malformed" in link.listener.of(wire.Bye)[-1].text


def test_malformed_messages_now_and_then_do_not_close_a_long_connection(factory, clock):
    link = Link(factory, clock, name="alice")
    link.pump()
    cipher = link.client._send_cipher
    for _ in range(3 * MAX_MALFORMED):  # one every 7 s: ten take more than the window
        link.client.sendString(cipher.encrypt_with_ad(b"", b"junk"))
        link.pump()
        clock.advance(7)
        link.listener.proto.send_message(wire.Keepalive())  # a live client
        link.pump()
    assert not link.server_closed
    assert len(link.listener.of(wire.Error)) == 3 * MAX_MALFORMED
    # A burst is still too many: the window counts the newest ten.
    for _ in range(MAX_MALFORMED):
        link.client.sendString(cipher.encrypt_with_ad(b"", b"junk"))
    link.pump()
    assert link.server_closed
    assert "more than 10 malformed messages in 60 seconds" in link.listener.of(wire.Bye)[-1].text


def test_malformed_message_gets_an_error_and_the_connection_stays(factory, clock):
    link = Link(factory, clock, name="alice")
    link.pump()
    send_cipher = link.client._send_cipher
    link.c_tr.clear()
    for bad in (b"not json", b'{"t": "say", "text": 5, "cid": "1"}'):
        link.client.sendString(send_cipher.encrypt_with_ad(b"", bad))
        link.pump()
    errors = link.listener.of(wire.Error)
    assert [e.code for e in errors] == ["malformed", "malformed"]
    assert "say.text must be a string" in errors[1].text
    link.listener.proto.send_message(wire.Say("still here", "c2"))
    link.pump()
    assert link.listener.of(wire.RoomMessage)[0].text == "still here"
    assert not link.server_closed


@pytest.mark.parametrize("prologue", [b"spchat/1", b"spchat/3"])
def test_other_protocol_version_fails_the_handshake(factory, clock, monkeypatch, prologue):
    # A client of the one-room release (its numbers meant something else),
    # or of a future version.
    monkeypatch.setattr(
        ChatClientProtocol,
        "make_handshake",
        lambda self: noise.HandshakeState(noise.CHAT_PROTOCOL, True, prologue=prologue),
    )
    link = Link(factory, clock, name="alice")
    link.pump()
    assert link.c_tr.disconnecting  # the client could not read the server's reply
    assert "handshake failed" in link.client.failure
    assert not link.listener.of(wire.Welcome) and not factory.core.by_key


def test_refused_server_key_ends_the_handshake(factory, clock):
    def refuse(fingerprint):
        raise Exception(f"key {fingerprint} is not the pinned one")

    link = Link(factory, clock, name="alice", verify=refuse)
    link.pump()
    assert link.c_tr.disconnecting
    assert "is not the pinned one" in link.client.failure
    assert not link.listener.of(wire.Welcome)


def test_no_login_within_the_timeout_closes(factory, clock):
    idle = Link(factory, clock, port=40001)  # handshakes, never logs in
    idle.pump()
    working = Link(factory, clock, name="alice", port=40002)
    working.pump()
    clock.advance(10.5)
    assert idle.server_closed
    idle.pump()
    assert "no login within 10 s" in idle.listener.of(wire.Bye)[0].text
    assert not working.server_closed


def test_connections_per_ip_are_capped(factory, clock):
    links = [Link(factory, clock, name=f"u{i}", port=40000 + i) for i in range(4)]
    same_ip = IPv4Address("TCP", "127.0.0.1", 40010)
    assert factory.buildProtocol(same_ip) is None  # Twisted drops it at once
    assert factory.buildProtocol(same_ip) is None
    assert factory.refused["127.0.0.1"] == 2
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.2", 40010)) is not None
    links[0].server.connectionLost(None)
    assert factory.buildProtocol(same_ip) is not None  # a slot is free again


def test_longest_allowed_message_fits_even_when_json_doubles_it(clock):
    key, _ = noise.generate_keypair()
    limit = config.MAX_MESSAGE_BYTES_LIMIT  # the largest CHAT_MAX_MESSAGE_BYTES allowed
    core = ChatCore(clock, Limits(max_message_bytes=limit))
    factory = ChatServerFactory(core, key, clock)
    link = Link(factory, clock, name="alice")
    link.pump()
    worst = ('"\\\n' * limit)[:limit]  # every character escaped in JSON
    assert len(worst.encode()) == limit
    link.listener.proto.send_message(wire.Say(worst, "c1"))
    link.pump()
    (echo,) = link.listener.of(wire.RoomMessage)
    assert echo.text == worst and echo.cid == "c1"


def test_slow_reader_is_cut_only_if_its_buffer_stays_full(clock):
    key, _ = noise.generate_keypair()
    factory = ChatServerFactory(ChatCore(clock, Limits()), key, clock, send_buffer_bytes=65536)
    link = Link(factory, clock, name="alice")
    link.pump()
    server = link.server
    big = wire.Notice("lobby", 0, "join", "x" * 400)
    # A burst the client is reading: the buffer fills, then drains.
    server.pauseProducing()
    for _ in range(300):  # ~130 KB
        server.send(big)
    clock.advance(1)
    server.resumeProducing()
    assert not link.server_closed
    # A client that stops reading: past the cap, and full for 2 s.
    server.pauseProducing()
    clock.advance(1)
    server.pauseProducing()  # said again on every write: the first one counts
    clock.advance(1)
    for _ in range(300):
        server.send(big)
    clock.advance(0)  # the end of the reactor turn: the writes happen
    assert link.server_closed and link.s_tr.disconnected



def test_what_one_turn_sends_goes_in_few_frames_and_in_order(factory, clock):
    from spchat.server.protocol import BATCH_FRAME_BYTES

    link = Link(factory, clock, name="alice")
    link.pump()
    link.listener.received.clear()
    sent = [wire.Notice("lobby", i, "join", f"line {i} " + "y" * 150) for i in range(40)]
    for msg in sent:
        link.server.send(msg)
    assert link.s_tr.value() == b""  # nothing until the end of the turn
    clock.advance(0)
    frames = frames_in(link.s_tr.value())
    # 40 lines of ~200 bytes: a handful of frames, none over the batch size.
    assert 3 <= len(frames) <= 6
    assert all(len(f) <= BATCH_FRAME_BYTES + noise.TAG_LEN for f in frames)
    link.pump()
    assert link.listener.received == sent
    # A message longer than a batch still goes, alone.
    long = wire.RoomMessage(1, 0, "lobby", "bob", "z" * 3000)
    link.server.send(long)
    clock.advance(0)
    assert len(frames_in(link.s_tr.value())) == 1
    link.pump()
    assert link.listener.received[-1] == long


def test_a_slow_reader_is_cut_once_and_nothing_more_is_written(clock):
    from twisted.logger import Logger

    key, _ = noise.generate_keypair()
    factory = ChatServerFactory(ChatCore(clock, Limits()), key, clock, send_buffer_bytes=4096)
    link = Link(factory, clock, name="alice")
    link.pump()
    server = link.server
    events = []
    server.log = Logger(observer=events.append)
    aborts = []
    real_abort = link.s_tr.abortConnection
    link.s_tr.abortConnection = lambda: (aborts.append(1), real_abort())
    server.pauseProducing()
    clock.advance(3)
    before = len(link.s_tr.value())
    for _ in range(100):
        server.send(wire.Notice("lobby", 0, "join", "x" * 400))
    clock.advance(0)
    lines = [e for e in events if "unsent" in e.get("log_format", "")]
    assert len(lines) == 1 and len(aborts) == 1
    assert len(link.s_tr.value()) == before  # the turn's frames were not written
